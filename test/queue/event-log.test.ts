import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Transition } from '../../src/engine/state.js';
import { eventsChannel } from '../../src/queue/channels.js';
import { EventLog, finishedStepsKey } from '../../src/queue/event-log.js';
import { createRedis, waitForRedis } from '../../src/queue/redis.js';
import { Shards } from '../../src/queue/shards.js';
import { TEST_REDIS_URL } from '../helpers/env.js';
import { poll } from '../helpers/harness.js';

const redis = createRedis({ REDIS_URL: TEST_REDIS_URL, REDIS_CLUSTER_NODES: [] }, 'producer', 'test');
const subscriber = createRedis({ REDIS_URL: TEST_REDIS_URL, REDIS_CLUSTER_NODES: [] }, 'subscriber', 'test');
// A producer's connection has no offline queue: a command sent before it is ready fails at once
// (a loaded CI run did that).
beforeAll(() => Promise.all([waitForRedis(redis, 30_000), waitForRedis(subscriber, 30_000)]));
afterAll(async () => {
  await redis.quit();
  subscriber.disconnect();
});

describe('EventLog.append', () => {
  // Three shards: one append spans several, each appended with its own script call.
  const shards = new Shards(`{test-event-log-${process.pid}}`, 3);
  const log = new EventLog(redis, shards, { ttlSeconds: 600, afterEndSeconds: 30 });
  const at = '2026-11-29T12:00:00.000Z';
  afterAll(() => redis.del(...shards.prefixes.map(finishedStepsKey)));

  it('appends every shard’s events in order, counts the finished steps, sets each stream’s expiry and publishes one notice per shard', async () => {
    // Two tasks in one shard and one in another.
    const first = shards.newTaskId(new Date(), 'echo', 0);
    const second = shards.newTaskId(new Date(), 'echo', 0);
    const other = shards.newTaskId(new Date(), 'echo', 1);
    const notices: { tasks: string[]; ended: string[] }[] = [];
    subscriber.on('message', (channel: string, raw: string) => {
      if (channel === eventsChannel(shards.base)) notices.push(JSON.parse(raw));
    });
    await subscriber.subscribe(eventsChannel(shards.base));
    const counted = async (shard: number) => Number((await redis.get(finishedStepsKey(shards.prefixes[shard]!))) ?? 0);
    const countedBefore = [await counted(0), await counted(1)];

    // A message with what a script's argument splitting or a MULTI's would get wrong: spaces, quotes, unicode, an empty string.
    const message = 'step "two" — 50 % done';
    const transitions: Transition[] = [
      { taskId: first, stepId: 'a', from: 'queued', status: 'running', at },
      { taskId: first, stepId: 'a', status: 'running', at, progress: { percent: 50, message } },
      { taskId: second, stepId: 'a', from: 'running', status: 'completed', at },
      { taskId: first, stepId: 'a', from: 'running', status: 'failed', at },
      { taskId: other, stepId: 'x', from: 'pending', status: 'skipped', at, reason: 'condition_false' },
      { taskId: second, from: 'running', status: 'completed', at },
      { taskId: first, stepId: 'b', status: 'running', at, progress: { percent: 0, message: '' } },
    ];
    await log.append(transitions);

    const strip = (events: Awaited<ReturnType<EventLog['read']>>) => events.map(({ id: _id, ...event }) => event);
    expect(strip(await log.read(first))).toEqual([
      { type: 'step', task_id: first, step_id: 'a', status: 'running', at },
      { type: 'progress', task_id: first, step_id: 'a', percent: 50, message, at },
      { type: 'step', task_id: first, step_id: 'a', status: 'failed', at },
      { type: 'progress', task_id: first, step_id: 'b', percent: 0, message: '', at },
    ]);
    expect(strip(await log.read(second))).toEqual([
      { type: 'step', task_id: second, step_id: 'a', status: 'completed', at },
      { type: 'task', task_id: second, status: 'completed', at },
    ]);
    expect(strip(await log.read(other))).toEqual([{ type: 'step', task_id: other, step_id: 'x', status: 'skipped', reason: 'condition_false', at }]);

    // A step's end counts once (a progress report or a start does not), in its own shard.
    expect([await counted(0), await counted(1)]).toEqual([countedBefore[0]! + 2, countedBefore[1]! + 1]);
    // The ended task's stream lasts afterEndSeconds; the others' ttlSeconds.
    const ttl = async (task: string) => redis.ttl(log.key(task));
    expect(await ttl(second)).toBeLessThanOrEqual(30);
    expect(await ttl(second)).toBeGreaterThan(20);
    expect(await ttl(first)).toBeGreaterThan(590);
    expect(await ttl(other)).toBeGreaterThan(590);

    await poll(async () => notices.length >= 2, { label: 'the two shards’ notices' });
    expect(notices).toHaveLength(2);
    expect(notices).toEqual(
      expect.arrayContaining([
        { tasks: [first, second], ended: [second] },
        { tasks: [other], ended: [] },
      ]),
    );
  });
});
