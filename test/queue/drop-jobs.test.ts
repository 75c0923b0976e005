import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ReadyStep } from '../../src/engine/types.js';
import { stepJobId } from '../../src/queue/jobs.js';
import { TaskQueues } from '../../src/queue/task-queues.js';
import { createHarness, type Harness } from '../helpers/harness.js';

/**
 * TaskQueues.dropJobs removes the jobs of queued steps and items in bulk (a cancelled map's,
 * up to 1,000): whatever its path, a parked job (its step ran; its result is still to be
 * written) stays, an active one stays, and a job that is gone is not reported removed.
 */
describe('dropping the jobs of steps that will not run', () => {
  let h: Harness;
  let queues: TaskQueues;
  beforeAll(async () => {
    h = await createHarness({ worker: false, api: false });
    queues = new TaskQueues(h.redis, h.config, ['echo'], h.logger);
  });
  afterAll(async () => {
    await queues.close();
    await h.close();
  });

  const item = (taskId: string, item: number): ReadyStep => ({
    taskId,
    run: 1,
    stepId: 'each',
    item,
    tool: 'echo',
    input: { item },
    retry: { attempts: 1, backoff: { type: 'fixed', delay_ms: 0 } },
    timeoutMs: 1_000,
    dependencies: {},
  });

  it('removes waiting jobs in bulk and keeps a parked one, an active one and nothing else', async () => {
    const taskId = randomUUID();
    const steps = Array.from({ length: 300 }, (_, n) => item(taskId, n));
    await queues.addSteps(steps);
    const queue = queues.toolQueue(taskId, 'echo');
    // Item 0 ran and parked its result (PostgreSQL was away), and its job is back in wait.
    const parked = (await queue.getJob(stepJobId(taskId, 1, 'each', 0)))!;
    await parked.updateData({
      ...parked.data,
      parked: { status: 'completed', output: {}, attempt: 1, startedAt: new Date().toISOString(), finishedAt: new Date().toISOString() },
    });
    await h.redis.hincrby(queue.toKey(parked.id!), 'ats', 1);
    // Item 1 was delivered before, not parked (its claim was postponed): removed all the same.
    await h.redis.hincrby(queue.toKey(stepJobId(taskId, 1, 'each', 1)), 'ats', 1);
    // Item 2 is running: a worker holds its lock.
    await h.redis.set(`${queue.toKey(stepJobId(taskId, 1, 'each', 2))}:lock`, 'a-token', 'PX', 30_000);
    const refs = steps.map((step) => ({ taskId, run: 1, stepId: step.stepId, item: step.item!, tool: 'echo' }));
    // Item 300 never had a job.
    refs.push({ taskId, run: 1, stepId: 'each', item: 300, tool: 'echo' });

    const dropped = await queues.dropJobs(refs);

    expect(dropped.map((ref) => ref.item)).toEqual([1, ...Array.from({ length: 297 }, (_, n) => n + 3)]);
    const left = (await h.redis.lrange(queue.toKey('wait'), 0, -1)).filter((id) => id.startsWith(`${taskId}.`));
    expect(left.sort()).toEqual([stepJobId(taskId, 1, 'each', 0), stepJobId(taskId, 1, 'each', 2)].sort());
    expect((await queue.getJob(stepJobId(taskId, 1, 'each', 0)))?.data.parked).toBeDefined();
    expect(await queue.getJob(stepJobId(taskId, 1, 'each', 5))).toBeUndefined();
  });
});
