import { afterAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/lib/logger.js';
import { EventNotices } from '../../src/queue/event-notices.js';
import { createRedis } from '../../src/queue/redis.js';
import { TEST_REDIS_URL } from '../helpers/env.js';

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
