import { Writable } from 'node:stream';
import { Queue, Worker } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/lib/config.js';
import { createLogger } from '../../src/lib/logger.js';
import { createRedis, isConnectionError, type RedisClient } from '../../src/queue/redis.js';
import { RedisOutage, redisAddress } from '../../src/queue/redis-outage.js';
import { poll, uniqueName } from '../helpers/harness.js';
import { type RedisServer, startRedisServer } from '../helpers/redis-server.js';

interface Line {
  level: string;
  message: string;
  redis?: string;
  down_ms?: number;
  error?: string;
}

/**
 * What one process says while Redis is away, on real connections to a private redis-server that
 * the test stops: one warning, reminders no more often than asked (a minute in a deployment; a
 * second and a half here, to see several), each with the outage's length, and one line when every
 * connection is back.
 */
describe('RedisOutage', () => {
  let server: RedisServer;
  const lines: Line[] = [];
  const clients: RedisClient[] = [];
  let worker: Worker | undefined;
  let queue: Queue | undefined;

  beforeAll(async () => {
    server = await startRedisServer();
  });
  afterAll(async () => {
    // Forced: a graceful close QUITs the worker's blocking connection, which waits for it to have
    // reconnected after the restart (a CI run on a busy machine hung here past the hook's 60 s).
    await worker?.close(true).catch(() => undefined);
    await queue?.close().catch(() => undefined);
    for (const client of clients) client.disconnect();
    await server?.close();
  });

  it('says an outage once, then at most once per interval with its length, and once when it is over', async () => {
    const config = loadConfig({ REDIS_URL: `redis://user:secret-password@127.0.0.1:${server.port}`, LOG_FORMAT: 'json', LOG_LEVEL: 'info' });
    const logger = createLogger(
      config,
      new Writable({
        write(chunk: Buffer, _encoding, done) {
          lines.push(JSON.parse(chunk.toString('utf8')) as Line);
          done();
        },
      }),
    );
    expect(redisAddress(config)).toBe(`127.0.0.1:${server.port}`);
    const remindEveryMs = 1_500;
    const outage = new RedisOutage(logger, redisAddress(config), { remindEveryMs });
    // As a worker process has them: a worker connection, two subscribers, and a BullMQ worker on the first.
    const connection = outage.watch(createRedis({ ...config, REDIS_URL: server.url }, 'worker', 'outage-test'));
    const subscribers = [1, 2].map(() => outage.watch(createRedis({ ...config, REDIS_URL: server.url }, 'subscriber', 'outage-test')));
    clients.push(connection, ...subscribers);
    const prefix = `{${uniqueName('outage')}}`;
    queue = new Queue('outage', { connection, prefix });
    queue.on('error', () => undefined);
    worker = new Worker('outage', async () => undefined, { connection, prefix });
    const workerErrors: Error[] = [];
    worker.on('error', (error) => workerErrors.push(error));
    await worker.waitUntilReady();
    await poll(() => [connection, ...subscribers].every((client) => client.status === 'ready'), { label: 'the connections to be ready' });
    expect(lines).toEqual([]);

    await server.stop();
    const stoppedAt = Date.now();
    await poll(() => outage.down, { label: 'the outage to be noticed' });
    // The outage's length counts from when it was noticed, at the latest now (not from the stop).
    const noticedAt = Date.now();
    // Long enough for a few reminders, and for dozens of reconnect attempts.
    await poll(() => Date.now() - stoppedAt > 4 * remindEveryMs && workerErrors.length > 3, { label: 'reconnect attempts', timeoutMs: 30_000 });
    const during = [...lines];
    const elapsed = Date.now() - stoppedAt;
    expect(during[0]).toMatchObject({ level: 'warn', message: expect.stringMatching(/^Redis unreachable/), redis: `127.0.0.1:${server.port}` });
    expect(during[0]!.error).toMatch(/ECONNREFUSED/);
    const reminders = during.slice(1);
    expect(reminders.every((line) => line.level === 'warn' && line.message === 'Redis still unreachable')).toBe(true);
    expect(reminders.length).toBeGreaterThanOrEqual(1);
    expect(reminders.length).toBeLessThanOrEqual(Math.floor(elapsed / remindEveryMs));
    const lengths = reminders.map((line) => line.down_ms!);
    expect(lengths).toEqual([...lengths].sort((a, b) => a - b));
    expect(lengths[0]).toBeGreaterThanOrEqual(remindEveryMs);
    // BullMQ's own reports of the same outage are connection errors: a worker's listener leaves them to the outage.
    expect(workerErrors.every(isConnectionError)).toBe(true);
    // Credentials of REDIS_URL never reach a line.
    expect(JSON.stringify(lines)).not.toContain('secret-password');

    const downAtLeast = Date.now() - noticedAt;
    await server.start();
    await poll(() => !outage.down, { label: 'every connection to be back', timeoutMs: 30_000 });
    const after = lines.slice(during.length);
    expect(after.filter((line) => line.message === 'Redis still unreachable').length).toBeLessThanOrEqual(1);
    const back = after.filter((line) => line.message === 'Redis reachable again');
    expect(back).toHaveLength(1);
    expect(back[0]).toMatchObject({ level: 'info', redis: `127.0.0.1:${server.port}` });
    expect(back[0]!.down_ms).toBeGreaterThanOrEqual(downAtLeast);
    expect([connection, ...subscribers].every((client) => client.status === 'ready')).toBe(true);
    // The BullMQ worker fetches again too. Awaited before the close as well: BullMQ 6.7 resets a
    // blocking connection whose BZPOPMIN outlived the outage once Redis is back, and a close
    // during that reset left the connection reconnecting after it (taskforcesh/bullmq#4722's
    // review: the same race on master), for ever once the server below is gone.
    const done = new Promise<void>((resolve) => worker!.once('completed', () => resolve()));
    await queue.add('after-the-outage', {});
    await done;
  }, 90_000);
});
