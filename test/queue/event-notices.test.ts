import { afterAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/lib/logger.js';
import { eventsChannel } from '../../src/queue/channels.js';
import { EventNotices } from '../../src/queue/event-notices.js';
import { createRedis } from '../../src/queue/redis.js';
import { TEST_REDIS_URL } from '../helpers/env.js';
import { poll } from '../helpers/harness.js';

const subscriber = createRedis({ REDIS_URL: TEST_REDIS_URL, REDIS_CLUSTER_NODES: [] }, 'subscriber', 'test');
const events = new EventNotices(subscriber, `{test-task-events-${process.pid}}`, silentLogger());
afterAll(() => subscriber.disconnect());

/** Whether `wait` settles before `ms` (the wait under test is far longer than that). */
async function settlesWithin(wait: Promise<void>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([wait.then(() => true), bound]);
  } finally {
    clearTimeout(timer);
  }
}

describe('EventNotices.waitForEnd', () => {
  it('returns at once for a signal that had already fired (the client left before the wait began)', async () => {
    const signal = AbortSignal.abort();
    expect(
      await settlesWithin(
        events.waitForEnd('t-gone', 60_000, async () => false, signal),
        5_000,
      ),
    ).toBe(true);
  });

  it('returns when the signal fires during the wait, and not before', async () => {
    const controller = new AbortController();
    const wait = events.waitForEnd('t-later', 60_000, async () => false, controller.signal);
    expect(await settlesWithin(wait, 200)).toBe(false);
    controller.abort();
    expect(await settlesWithin(wait, 5_000)).toBe(true);
  });
});

describe('EventNotices: a subscription lost and back', () => {
  const prefix = `{test-task-resubscribed-${process.pid}}`;
  const listening = createRedis({ REDIS_URL: TEST_REDIS_URL, REDIS_CLUSTER_NODES: [] }, 'subscriber', 'test');
  const publisher = createRedis({ REDIS_URL: TEST_REDIS_URL, REDIS_CLUSTER_NODES: [] }, 'producer', 'test');
  const notices = new EventNotices(listening, prefix, silentLogger());
  afterAll(() => {
    listening.disconnect();
    publisher.disconnect();
  });

  it("asks a long-poll's wait whether its task ended meanwhile (a notice published then never arrives), and goes on waiting when it had not", async () => {
    notices.start();
    // Subscribed once a notice is heard.
    let heard = false;
    const stopProbe = notices.listen('t-probe', () => {
      heard = true;
    });
    await poll(
      async () => {
        await publisher.publish(eventsChannel(prefix), JSON.stringify({ tasks: ['t-probe'], ended: [] }));
        return heard;
      },
      { label: 'the events subscription' },
    );
    stopProbe();
    let ended = false;
    let asked = 0;
    const hasEnded = async () => {
      asked += 1;
      return ended;
    };
    const waiting = notices.waitForEnd('t-missed', 60_000, async () => false, undefined, hasEnded);
    const stillWaiting = notices.waitForEnd(
      't-running',
      60_000,
      async () => false,
      undefined,
      async () => false,
    );
    const back = () => new Promise((resolve) => listening.once('ready', resolve));

    // Lost: the task ends meanwhile, and its notice is published to nobody.
    let returned = back();
    listening.disconnect(true);
    ended = true;
    await returned;
    expect(await settlesWithin(waiting, 10_000)).toBe(true);
    expect(asked).toBeGreaterThanOrEqual(1);
    // The other task had not ended: its wait goes on, and ends with its notice.
    expect(await settlesWithin(stillWaiting, 300)).toBe(false);
    await publisher.publish(eventsChannel(prefix), JSON.stringify({ tasks: ['t-running'], ended: ['t-running'] }));
    expect(await settlesWithin(stillWaiting, 10_000)).toBe(true);

    // Without a way to ask, a wait resolves when the subscription is back: its caller reads what there is.
    const plain = notices.waitForEnd('t-plain', 60_000, async () => false);
    returned = back();
    listening.disconnect(true);
    await returned;
    expect(await settlesWithin(plain, 10_000)).toBe(true);
  });
});
