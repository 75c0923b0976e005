import { randomUUID } from 'node:crypto';
import { Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { finishPlan, initialSteps, type TaskPlan } from '../../src/engine/plan.js';
import type { ReadyStep } from '../../src/engine/types.js';
import { uuidv7 } from '../../src/lib/uuid7.js';
import { StepResults } from '../../src/persistence/step-results.js';
import { TaskStore } from '../../src/persistence/task-store.js';
import { stepJobId, toolQueueName } from '../../src/queue/jobs.js';
import { TaskQueues } from '../../src/queue/task-queues.js';
import { closeSingleRun } from '../../src/workers/runtime/single-run.js';
import { createHarness, type Harness } from '../helpers/harness.js';

const OPTIONS = { retry: { attempts: 3, backoff: { type: 'fixed' as const, delay_ms: 10 } }, timeout_ms: 5_000 };

/** A task of two independent echo steps, `a` and `b`: finishing one leaves the task running. */
function twoStepPlan(): TaskPlan {
  const step = (id: string) => ({
    id,
    tool: 'echo',
    dependsOn: [],
    dependents: [],
    onFailure: 'fail' as const,
    inputTemplate: null,
    input: { step: id },
    options: OPTIONS,
  });
  return finishPlan({ taskType: 'echo', params: {}, steps: [step('a'), step('b')] });
}

describe('StepResults: idempotent step writes', () => {
  let h: Harness;
  let store: TaskStore;
  let results: StepResults;

  beforeAll(async () => {
    // No API and no worker: this file drives the persistence layer by hand.
    h = await createHarness({ api: false, worker: false });
    store = new TaskStore(h.db.prisma);
    results = new StepResults(h.db.sql, h.logger);
  });
  afterAll(async () => {
    await results.idle();
    await h.close();
  });

  async function newTask(plan = twoStepPlan()): Promise<string> {
    const id = uuidv7();
    const [created] = await store.createMany([{ plan, task: { id, requestHash: 'test', priority: 0, delayMs: 0 } }]);
    expect(created!.created).toBe(true);
    return id;
  }

  const finish = (taskId: string, stepId: string, fields: { attempt?: number; run?: number; output?: unknown; status?: 'completed' | 'failed' } = {}) =>
    results.finish({
      taskId,
      run: fields.run ?? 1,
      stepId,
      tool: 'echo',
      attempt: fields.attempt ?? 1,
      status: fields.status ?? 'completed',
      ...(fields.status === 'failed' ? { error: { name: 'Error', message: 'late failure' } } : { output: fields.output ?? { from: 'first' } }),
      startedAt: new Date(Date.now() - 10),
      finishedAt: new Date(),
    });

  const stepRow = (taskId: string, stepId: string) => h.db.prisma.step.findFirstOrThrow({ where: { taskId, stepId } });
  const taskRow = (taskId: string) => h.db.prisma.task.findFirstOrThrow({ where: { id: taskId } });

  it('keeps the first result when the same step of the same run finishes again', async () => {
    const id = await newTask();
    expect(await results.start({ taskId: id, run: 1, stepId: 'a', attempt: 1, at: new Date() })).toEqual({ runnable: true });
    const first = await finish(id, 'a', { output: { from: 'first' } });
    expect(first).toMatchObject({ recorded: true, ready: [], skipped: false });
    expect(first.taskEnded).toBeUndefined();
    const before = await stepRow(id, 'a');

    const second = await finish(id, 'a', { attempt: 2, output: { from: 'second' } });
    expect(second.recorded).toBe(false);
    expect(second.taskEnded).toBeUndefined();
    const after = await stepRow(id, 'a');
    expect(after).toEqual(before);
    expect(after).toMatchObject({ status: 'completed', attempts: 1, output: { from: 'first' } });
    // The duplicate did not count as the other step finishing.
    expect(await taskRow(id)).toMatchObject({ status: 'running', stepsRemaining: 1 });
  });

  it('does not let a late failure overwrite a completed step, fail the task or write a dead letter', async () => {
    const id = await newTask();
    await results.start({ taskId: id, run: 1, stepId: 'a', attempt: 1, at: new Date() });
    await finish(id, 'a');
    const late = await finish(id, 'a', { attempt: 2, status: 'failed' });
    expect(late).toMatchObject({ recorded: false, skipped: false });
    expect(await stepRow(id, 'a')).toMatchObject({ status: 'completed', error: null });
    expect(await taskRow(id)).toMatchObject({ status: 'running', error: null });
    expect(await h.db.prisma.deadLetter.count({ where: { taskId: id } })).toBe(0);
  });

  it('records a result once even when two finishes of one step are committed in the same batch', async () => {
    const id = await newTask();
    // Added in the same tick: the batcher writes them in one transaction.
    const outcomes = await Promise.all([finish(id, 'a', { output: { from: 'one' } }), finish(id, 'a', { attempt: 2, output: { from: 'two' } })]);
    expect(outcomes.filter((outcome) => outcome.recorded)).toHaveLength(1);
    // Step b has not run, so the task must still be running with one step left.
    expect(await taskRow(id)).toMatchObject({ status: 'running', stepsRemaining: 1 });
  });

  it('ends the task with its last step, once', async () => {
    const id = await newTask();
    await finish(id, 'a');
    const last = await finish(id, 'b');
    expect(last).toMatchObject({ recorded: true, taskEnded: 'completed' });
    expect(await taskRow(id)).toMatchObject({ status: 'completed', stepsRemaining: 0 });
    const again = await finish(id, 'b', { attempt: 2 });
    expect(again.recorded).toBe(false);
    expect(again.taskEnded).toBeUndefined();
    expect(await taskRow(id)).toMatchObject({ status: 'completed', stepsRemaining: 0 });
  });

  it('ignores a result of an earlier run once the task was resumed', async () => {
    const id = await newTask();
    const failed = await finish(id, 'a', { status: 'failed' });
    expect(failed).toMatchObject({ recorded: true, taskEnded: 'failed' });
    const resumed = await store.resume(id, async () => undefined);
    expect(resumed).toEqual({ outcome: 'resumed', run: 2 });
    const stale = await finish(id, 'a', { run: 1, output: { from: 'run 1' } });
    expect(stale.recorded).toBe(false);
    expect(await stepRow(id, 'a')).toMatchObject({ status: 'queued', run: 2, output: null });
    expect(await results.start({ taskId: id, run: 1, stepId: 'b', attempt: 1, at: new Date() })).toEqual({ runnable: false });
    expect(await results.start({ taskId: id, run: 2, stepId: 'b', attempt: 1, at: new Date() })).toEqual({ runnable: true });
  });

  it('answers runnable: false to a start for a step of a cancelled task', async () => {
    const id = await newTask();
    expect(await store.cancel(id)).toMatchObject({ outcome: 'cancelled', run: 1 });
    expect(await results.start({ taskId: id, run: 1, stepId: 'a', attempt: 1, at: new Date() })).toEqual({ runnable: false });
    expect(await stepRow(id, 'a')).toMatchObject({ status: 'cancelled', attempts: 0, startedAt: null });
  });

  it('answers runnable: false to a start for a step of a finished task, and for a finished step', async () => {
    const id = await newTask();
    await finish(id, 'a');
    // The task still runs, but step a has its result: a redelivered job must not run it again.
    expect(await results.start({ taskId: id, run: 1, stepId: 'a', attempt: 2, at: new Date() })).toEqual({ runnable: false });
    await finish(id, 'b');
    expect((await taskRow(id)).status).toBe('completed');
    expect(await results.start({ taskId: id, run: 1, stepId: 'b', attempt: 2, at: new Date() })).toEqual({ runnable: false });
    expect(await stepRow(id, 'b')).toMatchObject({ status: 'completed', attempts: 1 });
  });

  it('lets a running step start again under a later delivery (after a lost lock), never an older one', async () => {
    const id = await newTask();
    expect(await results.start({ taskId: id, run: 1, stepId: 'a', attempt: 1, at: new Date() })).toEqual({ runnable: true });
    expect(await taskRow(id)).toMatchObject({ status: 'running' });
    // The same delivery again is a repeated write (its first answer was lost): still runnable.
    expect(await results.start({ taskId: id, run: 1, stepId: 'a', attempt: 1, at: new Date() })).toEqual({ runnable: true });
    expect(await results.start({ taskId: id, run: 1, stepId: 'a', attempt: 3, at: new Date() })).toEqual({ runnable: true });
    // Delivery 2 arrives late, after delivery 3 took the step: it must not run it too.
    expect(await results.start({ taskId: id, run: 1, stepId: 'a', attempt: 2, at: new Date() })).toEqual({ runnable: false });
    expect(await stepRow(id, 'a')).toMatchObject({ status: 'running', attempts: 3 });
  });

  it('starts a step once when two deliveries of it arrive in the same batch', async () => {
    const id = await newTask();
    const outcomes = await Promise.all([
      results.start({ taskId: id, run: 1, stepId: 'a', attempt: 1, at: new Date() }),
      results.start({ taskId: id, run: 1, stepId: 'a', attempt: 2, at: new Date() }),
    ]);
    expect(outcomes).toEqual([{ runnable: false }, { runnable: true }]);
  });

  it('answers runnable: false for a task that does not exist', async () => {
    expect(await results.start({ taskId: randomUUID(), run: 1, stepId: 'a', attempt: 1, at: new Date() })).toEqual({ runnable: false });
  });

  it('keeps one job when the same step job is enqueued twice (deterministic job id)', async () => {
    const queues = new TaskQueues(h.redis, h.config, h.registry.names(), h.logger);
    const raw = new Queue(toolQueueName('echo'), { connection: h.redis, prefix: h.config.QUEUE_PREFIX });
    try {
      const id = await newTask();
      const ref = { taskId: id, run: 1 };
      const plan = twoStepPlan();
      const [stepA] = initialSteps(plan) as [ReadyStep];
      await queues.startRun({ ...ref, taskType: 'echo' }, [stepA]);
      // Again as a dependent that became ready, twice, and once with other data by hand.
      await queues.addSteps(ref, [stepA]);
      await queues.addSteps(ref, [{ ...stepA, input: { step: 'changed' } }]);
      const again = await raw.add('a', { other: true }, { jobId: stepJobId(id, 1, 'a') });
      expect(again.id).toBe(stepJobId(id, 1, 'a'));

      const counts = await raw.getJobCounts('waiting', 'active', 'delayed', 'prioritized', 'waiting-children', 'completed', 'failed');
      expect(Object.values(counts).reduce((sum, n) => sum + n, 0)).toBe(1);
      const job = await raw.getJob(stepJobId(id, 1, 'a'));
      expect(job?.data).toMatchObject({ taskId: id, run: 1, stepId: 'a', input: { step: 'a' } });
      // The run's root waits for that one child only.
      const root = await queues.shardOf(id).tasks.getJob(`${id}.1`);
      expect(await root?.getDependenciesCount()).toMatchObject({ unprocessed: 1 });
    } finally {
      await raw.close();
      await queues.close();
    }
  });

  it("keeps a one-tool task's result refused before its retry committed, and writes it on the next try", async () => {
    // A retry enqueues the new run's job just before its transaction commits. A worker that runs
    // the job in between has its result refused (the statement reads the task as it was): the
    // run must not be closed over it, or the task would stay queued for ever.
    const queues = new TaskQueues(h.redis, h.config, h.registry.names(), h.logger);
    try {
      const single = finishPlan({ taskType: 'echo', params: {}, steps: [{ ...twoStepPlan().steps[0]!, id: 'echo' }] });
      const id = await newTask(single);
      expect(await finish(id, 'echo', { status: 'failed' })).toMatchObject({ recorded: true, taskEnded: 'failed' });
      const singleFinish = (run: number) =>
        results.finish(
          {
            taskId: id,
            run,
            stepId: 'echo',
            tool: 'echo',
            attempt: 1,
            status: 'completed',
            output: { ok: true },
            startedAt: new Date(),
            finishedAt: new Date(),
          },
          { single: true },
        );
      let refused: Awaited<ReturnType<typeof singleFinish>> | undefined;
      const resumed = await store.resume(id, async () => {
        refused = await singleFinish(2);
      });
      expect(resumed).toMatchObject({ outcome: 'resumed', run: 2 });
      expect(refused).toMatchObject({ recorded: false });
      const deps = { results, queues, config: h.config, logger: h.logger };
      await expect(closeSingleRun(deps, { taskId: id, run: 2 }, refused)).rejects.toThrow(/refused while that run is active/);
      // Its next delivery writes it, and the task ends.
      const again = await singleFinish(2);
      expect(again).toMatchObject({ recorded: true, taskEnded: 'completed' });
      await closeSingleRun(deps, { taskId: id, run: 2 }, again);
      expect((await taskRow(id)).status).toBe('completed');
    } finally {
      await queues.close();
    }
  });
});
