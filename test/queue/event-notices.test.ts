import { afterAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/lib/logger.js';
import { eventsChannel } from '../../src/queue/channels.js';
import { EventNotices, SUBMITTED_MAX } from '../../src/queue/event-notices.js';
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

/**
 * An EventNotices on a subscriber of its own, with a publisher to its channel; called inside a
 * describe, which closes both connections after it.
 */
function noticesOnChannel(name: string) {
  const prefix = `{test-task-${name}-${process.pid}}`;
  const listening = createRedis({ REDIS_URL: TEST_REDIS_URL, REDIS_CLUSTER_NODES: [] }, 'subscriber', 'test');
  const publisher = createRedis({ REDIS_URL: TEST_REDIS_URL, REDIS_CLUSTER_NODES: [] }, 'producer', 'test');
  const notices = new EventNotices(listening, prefix, silentLogger());
  afterAll(() => {
    listening.disconnect();
    publisher.disconnect();
  });
  const notice = (tasks: string[], ended: string[]) => publisher.publish(eventsChannel(prefix), JSON.stringify({ tasks, ended }));
  /** Resolves once a notice is heard: the subscription is up. */
  const subscribed = async () => {
    let heard = false;
    const stop = notices.listen('t-probe', () => {
      heard = true;
    });
    await poll(
      async () => {
        await notice(['t-probe'], []);
        return heard;
      },
      { label: 'the events subscription' },
    );
    stop();
  };
  return { listening, notices, notice, subscribed };
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
  const { listening, notices, notice, subscribed } = noticesOnChannel('resubscribed');

  it("asks a long-poll's wait whether its task ended meanwhile (a notice published then never arrives), and goes on waiting when it had not", async () => {
    notices.start();
    await subscribed();
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
    await notice(['t-running'], ['t-running']);
    expect(await settlesWithin(stillWaiting, 10_000)).toBe(true);

    // Without a way to ask, a wait resolves when the subscription is back: its caller reads what there is.
    const plain = notices.waitForEnd('t-plain', 60_000, async () => false);
    returned = back();
    listening.disconnect(true);
    await returned;
    expect(await settlesWithin(plain, 10_000)).toBe(true);
  });
});

describe('EventNotices: the tasks submitted through this process', () => {
  const { listening, notices, notice, subscribed } = noticesOnChannel('submitted');

  it('remembers nothing before its subscription is up, then each task and its owner until the notice of its end', async () => {
    notices.submitting('t-early', 'alpha');
    expect(notices.unfinishedHere('t-early'), 'submitted with no subscription').toBeUndefined();
    notices.start();
    await subscribed();

    notices.submitting('t-one', 'alpha');
    notices.submitting('t-two', '');
    notices.submitting('t-refused', 'alpha');
    notices.forget('t-refused');
    expect(notices.unfinishedHere('t-one')).toBe('alpha');
    expect(notices.unfinishedHere('t-two')).toBe('');
    expect(notices.unfinishedHere('t-refused')).toBeUndefined();
    expect(notices.unfinishedHere('t-never')).toBeUndefined();

    // A notice of new events is not an end; the end's notice forgets the task.
    await notice(['t-one'], []);
    await notice(['t-one', 't-two'], ['t-one']);
    await poll(async () => notices.unfinishedHere('t-one') === undefined, { label: "t-one forgotten at its end's notice" });
    expect(notices.unfinishedHere('t-two')).toBe('');
  });

  it('forgets every task when the subscription is lost (their ends may be told while it is down)', async () => {
    await subscribed();
    notices.submitting('t-before-loss', 'alpha');
    const back = new Promise((resolve) => listening.once('ready', resolve));
    listening.disconnect(true);
    // Submitted as the connection goes: forgotten with the rest (no notice of its end could arrive).
    notices.submitting('t-while-down', 'alpha');
    await back;
    expect(notices.unfinishedHere('t-before-loss')).toBeUndefined();
    expect(notices.unfinishedHere('t-while-down')).toBeUndefined();
    await subscribed();
    notices.submitting('t-after', 'alpha');
    expect(notices.unfinishedHere('t-after')).toBe('alpha');
  });

  it(`remembers at most ${SUBMITTED_MAX} tasks, forgetting the oldest first`, async () => {
    await subscribed();
    for (let n = 0; n <= SUBMITTED_MAX; n += 1) notices.submitting(`t-many-${n}`, 'alpha');
    expect(notices.unfinishedHere('t-many-0')).toBeUndefined();
    expect(notices.unfinishedHere('t-many-1')).toBe('alpha');
    expect(notices.unfinishedHere(`t-many-${SUBMITTED_MAX}`)).toBe('alpha');
  });

  it('looks once, lookAfterMs into a wait, whether the task ended (its notice lost), and goes on waiting when it had not', async () => {
    /** A wait that began without reading its task, and how often it asked whether the task ended. */
    const looking = (taskId: string, ended: boolean) => {
      let asked = 0;
      const wait = notices.waitForEnd(
        taskId,
        60_000,
        async () => false,
        undefined,
        async () => {
          asked += 1;
          return ended;
        },
        100,
      );
      return { wait, asked: () => asked };
    };
    const ended = looking('t-look-ended', true);
    expect(await settlesWithin(ended.wait, 10_000)).toBe(true);
    expect(ended.asked()).toBe(1);
    const running = looking('t-look-running', false);
    await poll(async () => running.asked() === 1, { label: 'the look' });
    expect(await settlesWithin(running.wait, 500)).toBe(false);
    expect(running.asked()).toBe(1);
    await notice(['t-look-running'], ['t-look-running']);
    expect(await settlesWithin(running.wait, 10_000)).toBe(true);
  });
});
