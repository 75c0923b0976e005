import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/lib/config.js';
import { createRedis, type RedisClient, subscribeWhenReady } from '../../src/queue/redis.js';
import { TEST_REDIS_URL } from '../helpers/env.js';
import { poll, uniqueName } from '../helpers/harness.js';

describe('subscribeWhenReady', () => {
  const config = loadConfig({ REDIS_URL: TEST_REDIS_URL });
  const open: RedisClient[] = [];
  const connect = (role: 'producer' | 'subscriber', name: string) => {
    const redis = createRedis(config, role, name);
    open.push(redis);
    return redis;
  };
  afterEach(() => {
    for (const redis of open.splice(0)) redis.disconnect();
  });

  /** Publishes until the subscriber has a message (a message sent before SUBSCRIBE took effect is gone). */
  async function delivered(publisher: RedisClient, channel: string, received: () => boolean, label: string): Promise<void> {
    await poll(
      async () => {
        await publisher.publish(channel, 'ping');
        return received();
      },
      { label, timeoutMs: 5_000, intervalMs: 50 },
    );
  }

  it('keeps a subscription asked for during the connection handshake, and after a reconnect', async () => {
    const name = uniqueName('sub');
    const channel = `{${name}}:channel`;
    const subscriber = connect('subscriber', name);
    const publisher = connect('producer', `${name}-pub`);
    let messages = 0;
    subscriber.on('message', (from: string) => {
      if (from === channel) messages += 1;
    });
    // The 'connect' event comes before the handshake's ready check: the moment a process that
    // subscribes at start often hits, and where a plain SUBSCRIBE is lost.
    await new Promise<void>((resolve) => {
      subscriber.once('connect', () => {
        expect(subscriber.status).toBe('connect');
        subscribeWhenReady(subscriber, channel, (error) => {
          throw error;
        });
        resolve();
      });
    });
    await delivered(publisher, channel, () => messages > 0, 'a message on a channel subscribed during the handshake');

    // Drop the subscriber's connection on the server side: it reconnects and listens again.
    const clients = String(await publisher.client('LIST'));
    const id = /id=(\d+) .*name=orchestrator:(\S+)/.exec(clients.split('\n').find((line) => line.includes(`name=orchestrator:${name} `)) ?? '')?.[1];
    expect(id, 'the subscriber in CLIENT LIST').toBeDefined();
    await publisher.client('KILL', 'ID', id!);
    const before = messages;
    await delivered(publisher, channel, () => messages > before && subscriber.status === 'ready', 'a message after the subscriber reconnected');
  });
});
