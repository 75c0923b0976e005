import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/lib/logger.js';
import { publishStop, STOP_REMEMBER_MS, stopChannel, stopKey } from '../../src/queue/channels.js';
import { createRedis, waitForRedis } from '../../src/queue/redis.js';
import { StopSignals } from '../../workers/runtime/stop-signals.js';
import { TEST_REDIS_URL } from '../helpers/env.js';
import { poll } from '../helpers/harness.js';

const redisOptions = { REDIS_URL: TEST_REDIS_URL, REDIS_CLUSTER_NODES: [] };

describe('StopSignals: a stop published while the subscriber was away', () => {
  const prefix = `{test-stop-signals-${process.pid}}`;
  const listening = createRedis(redisOptions, 'subscriber', 'test');
  const commands = createRedis(redisOptions, 'producer', 'test');
  const stops = new StopSignals(listening, commands, prefix, silentLogger());
  beforeAll(() => waitForRedis(commands));
  afterAll(() => {
    listening.disconnect();
    commands.disconnect();
  });

  it('keeps each stop in Redis beside its message, for as long as workers remember it', async () => {
    await publishStop(commands, prefix, { taskId: 't-kept', run: 2, reason: 'cancelled', spare: ['exit'] });
    expect(JSON.parse((await commands.get(stopKey(prefix, 't-kept')))!)).toEqual({ taskId: 't-kept', run: 2, reason: 'cancelled', spare: ['exit'] });
    const ttl = await commands.pttl(stopKey(prefix, 't-kept'));
    expect(ttl).toBeGreaterThan(STOP_REMEMBER_MS - 60_000);
    expect(ttl).toBeLessThanOrEqual(STOP_REMEMBER_MS);
  });

  it('aborts the running steps of a task stopped before it subscribed (the message went to nobody)', async () => {
    const before = new AbortController();
    stops.track('t-before', 1, 'a', before);
    await publishStop(commands, prefix, { taskId: 't-before', run: 1, reason: 'cancelled' });
    await stops.start();
    await poll(async () => before.signal.aborted, { label: 'the step of the task stopped before subscribing aborted' });
  });

  it('aborts the running steps of a task stopped while the subscriber reconnected, sparing its exit handler and other tasks', async () => {
    // Subscribed: a message is heard.
    stops.track('t-probe', 1, 'a', new AbortController());
    await poll(
      async () => {
        await publishStop(commands, prefix, { taskId: 't-probe', run: 1, reason: 'cancelled' });
        return stops.wasStopped('t-probe', 1, 'a');
      },
      { label: 'the stop subscription' },
    );

    const step = new AbortController();
    const exitHandler = new AbortController();
    const other = new AbortController();
    const retried = new AbortController();
    stops.track('t-missed', 1, 'a', step);
    stops.track('t-missed', 1, 'exit', exitHandler);
    stops.track('t-running', 1, 'b', other);
    // Cancelled in its run 1 lately, retried, and running again: the stop kept is not for this run.
    stops.track('t-retried', 2, 'a', retried);
    await publishStop(commands, prefix, { taskId: 't-retried', run: 1, reason: 'cancelled' });
    // Away for certain: disconnected by hand, and Redis counts no subscriber when the stop is published.
    listening.disconnect();
    await poll(async () => (await commands.pubsub('NUMSUB', stopChannel(prefix)))[1] === 0, { label: 'the subscriber gone' });
    await publishStop(commands, prefix, { taskId: 't-missed', run: 1, reason: 'cancelled', spare: ['exit'] });
    await listening.connect();
    await poll(async () => step.signal.aborted, { label: 'the step of the task stopped during the reconnect aborted' });
    expect(exitHandler.signal.aborted).toBe(false);
    expect(other.signal.aborted).toBe(false);
    expect(retried.signal.aborted).toBe(false);
    expect(stops.wasStopped('t-missed', 1, 'a')).toBe(true);
    expect(stops.wasStopped('t-missed', 1, 'exit')).toBe(false);
    expect(stops.wasStopped('t-missed', 2, 'a')).toBe(false);
  });
});
