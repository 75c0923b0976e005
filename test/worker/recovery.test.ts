import { Queue, UnrecoverableError, Worker } from 'bullmq';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type Core, openCore } from '../../src/composition.js';
import type { Transition } from '../../src/engine/state.js';
import { loadConfig } from '../../src/lib/config.js';
import { Metrics } from '../../src/observability/metrics.js';
import { stepJobId, toolQueueName } from '../../src/queue/jobs.js';
import { createRedis } from '../../src/queue/redis.js';
import { TaskQueues } from '../../src/queue/task-queues.js';
import { Runs } from '../../src/tasks/runs.js';
import { createHarness, type Harness, poll, submit, waitForTask } from '../helpers/harness.js';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js';

/**
 * The repairs that the chaos suites reach only by chance, each from a broken state built by
 * hand: a step job removed from Redis, a step job that failed outside the step processor, a
 * result committed whose effects were never carried out, jobs Redis refused after the task was
 * stored, a start claim that cannot reach PostgreSQL for longer than its retries, and an ending
 * that committed while its answer was lost.
 */

/** Takes one job of `queue` with a plain BullMQ worker (not the service's) and fails it for good. */
async function failNextJob(h: Harness, queue: string, reason: string): Promise<string> {
  const connection = createRedis(h.config, 'worker', 'test-breaker');
  let taken: string | undefined;
  const worker = new Worker(
    queue,
    async (job) => {
      taken = job.id;
      throw new UnrecoverableError(reason);
    },
    { connection, prefix: h.config.QUEUE_PREFIX, autorun: true },
  );
  try {
    await poll(() => taken, { label: `a job of ${queue} to be taken`, timeoutMs: 10_000 });
    await poll(async () => worker.isRunning() && (await h.redis.zscore(`${h.config.QUEUE_PREFIX}:${queue}:failed`, taken!)) !== null, {
      label: `job ${taken} to be failed`,
    });
  } finally {
    await worker.close();
    connection.disconnect();
  }
  return taken!;
}

describe('repairs of broken runs', () => {
  let h: Harness;
  /** The service's worker starts only once a test has broken its run, and stops after the test. */
  const startWorker = async () => {
    h.worker = await h.startWorker();
  };
  beforeAll(async () => {
    h = await createHarness({ worker: false, env: { RECONCILE_INTERVAL_MS: '200', RECONCILE_AFTER_MS: '0' } });
    await h.request('POST', '/workflows', {
      name: 'pair',
      steps: [
        { id: 'first', tool: 'echo', input: { n: 1 } },
        { id: 'second', tool: 'echo', depends_on: ['first'], input: { from_first: '{{steps.first.output.n}}' } },
      ],
    });
    await h.request('POST', '/workflows', {
      name: 'pair_continue',
      steps: [
        { id: 'first', tool: 'echo', input: { n: 1 }, on_failure: 'continue' },
        { id: 'second', tool: 'echo', depends_on: ['first'], input: { first_status: '{{steps.first.status}}' } },
      ],
    });
  });
  afterEach(async () => {
    await h.worker?.close();
    h.worker = undefined;
  });
  afterAll(async () => {
    await h.close();
  });

  it("enqueues a workflow step's job again when it was removed, and the task completes", async () => {
    const id = await submit(h, { task_type: 'pair' });
    const echo = new Queue(toolQueueName('echo'), { connection: h.redis, prefix: h.config.QUEUE_PREFIX });
    expect(await echo.remove(stepJobId(id, 1, 'first'))).toBe(1);
    await echo.close();
    // The reconciler (every 200 ms here) finds the queued step without its job.
    await startWorker();
    const task = await waitForTask(h, id);
    expect(task.status).toBe('completed');
    expect(task.steps.map((step: { id: string; status: string }) => [step.id, step.status])).toEqual([
      ['first', 'completed'],
      ['second', 'completed'],
    ]);
  });

  it("enqueues a one-tool task's job again when it was removed (its run's only job), and the task completes", async () => {
    const id = await submit(h, { task_type: 'echo', params: { removed: true } });
    const echo = new Queue(toolQueueName('echo'), { connection: h.redis, prefix: h.config.QUEUE_PREFIX });
    expect(await echo.remove(stepJobId(id, 1, 'echo'))).toBe(1);
    await echo.close();
    await startWorker();
    const task = await waitForTask(h, id);
    expect(task).toMatchObject({ status: 'completed', result: { removed: true } });
  });

  it("records the failure of a step job that failed outside the step processor, with BullMQ's reason", async () => {
    const id = await submit(h, { task_type: 'pair' });
    expect(await failNextJob(h, toolQueueName('echo'), 'job stalled more than allowable limit')).toBe(stepJobId(id, 1, 'first'));
    await startWorker();
    const task = await waitForTask(h, id);
    expect(task.status).toBe('failed');
    expect(task.error).toMatchObject({ step: 'first', name: 'StepJobFailed', message: 'job stalled more than allowable limit' });
    expect(task.steps.map((step: { id: string; status: string }) => [step.id, step.status])).toEqual([
      ['first', 'failed'],
      ['second', 'skipped'],
    ]);
    const letters = await h.db.prisma.deadLetter.findMany({ where: { taskId: id } });
    expect(letters).toHaveLength(1);
    expect(letters[0]).toMatchObject({ stepId: 'first', error: { name: 'StepJobFailed' } });
  });

  it('goes on with the dependents of such a step under on_failure: continue', async () => {
    const id = await submit(h, { task_type: 'pair_continue' });
    expect(await failNextJob(h, toolQueueName('echo'), 'job stalled more than allowable limit')).toBe(stepJobId(id, 1, 'first'));
    await startWorker();
    const task = await waitForTask(h, id);
    expect(task.status).toBe('completed');
    expect(task.steps.find((step: { id: string }) => step.id === 'second')).toMatchObject({ status: 'completed', output: { first_status: 'failed' } });
  });

  it("records the failure of a one-tool task's job that failed outside the step processor (the reconciler)", async () => {
    const id = await submit(h, { task_type: 'echo', params: { single: 'broken' } });
    expect(await failNextJob(h, toolQueueName('echo'), 'poisoned')).toBe(stepJobId(id, 1, 'echo'));
    expect((await h.request('GET', `/result/${id}`)).body.status).toBe('queued');
    await startWorker();
    const task = await waitForTask(h, id);
    expect(task).toMatchObject({ status: 'failed', error: { step: 'echo', name: 'StepJobFailed', message: 'poisoned' } });
    expect(await h.db.prisma.deadLetter.count({ where: { taskId: id } })).toBe(1);
  });

  it('enqueues the dependents of a step whose result was committed but whose effects were never carried out', async () => {
    const id = await submit(h, { task_type: 'pair' });
    // The first step's result reaches PostgreSQL, and its worker dies before enqueueing what it
    // made ready (here: the jobs go to another prefix, where nobody looks); its job is delivered again.
    const elsewhere = loadConfig({ QUEUE_PREFIX: `${h.config.QUEUE_PREFIX}-lost` });
    const queues = new TaskQueues(h.redis, elsewhere, h.registry.names(), h.logger);
    const runs = new Runs({ sql: h.db.sql, queues, publish: async () => undefined, logger: h.logger, config: h.config });
    const now = new Date();
    const outcome = await runs.report({
      type: 'result',
      taskId: id,
      run: 1,
      stepId: 'first',
      attempt: 1,
      status: 'completed',
      output: { n: 41 },
      startedAt: now,
      finishedAt: now,
    });
    expect(outcome.recorded).toBe(true);
    // Claimed for its first delivery in that commit (its task runs); its job went where nobody looks.
    expect(await h.db.prisma.step.findFirst({ where: { taskId: id, stepId: 'second' } })).toMatchObject({ status: 'running', attempts: 1 });
    await queues.close();
    await startWorker();
    const task = await waitForTask(h, id);
    expect(task.status).toBe('completed');
    // The recorded output stands (the step did not run again) and reached its dependent.
    expect(task.steps.map((step: { id: string; output: unknown }) => [step.id, step.output])).toEqual([
      ['first', { n: 41 }],
      ['second', { from_first: 41 }],
    ]);
  });
});

describe('jobs that Redis refuses after the task was stored', () => {
  let h: Harness;
  let proxy: TcpProxy;
  beforeAll(async () => {
    proxy = await startTcpProxy({ port: Number(new URL(process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379').port || 6379) });
    h = await createHarness({ worker: false, env: { REDIS_URL: `redis://127.0.0.1:${proxy.port}` } });
  });
  afterAll(async () => {
    proxy.resume();
    await h.close();
    await proxy.close();
  });

  it('answers 503 and removes the stored task, so nothing is half-created', async () => {
    // Redis goes away at the worst moment: right after the PostgreSQL insert committed.
    const queues = (h.api!.tasks as unknown as { deps: { queues: { addJobs: (...args: unknown[]) => Promise<unknown> } } }).deps.queues;
    const addJobs = queues.addJobs.bind(queues);
    queues.addJobs = async (...args: unknown[]) => {
      proxy.pause();
      return addJobs(...args);
    };
    const response = await h.request('POST', '/assign-task', { task_type: 'echo', params: { half: true }, idempotency_key: 'half-created' });
    queues.addJobs = addJobs;
    expect(response.status).toBe(503);
    expect(response.body.error).toMatchObject({ code: 'service_unavailable', details: { dependency: 'redis' } });
    expect(await h.db.prisma.task.count()).toBe(0);
    expect(await h.db.prisma.step.count()).toBe(0);
    proxy.resume();
    // The same key is free again: the client's retry creates the task.
    await poll(async () => (await h.request('GET', '/ready')).status === 200, { label: 'the API to see Redis again' });
    const retried = await h.request('POST', '/assign-task', { task_type: 'echo', params: { half: true }, idempotency_key: 'half-created' });
    expect(retried.status).toBe(202);
  });
});

describe('a step whose start cannot reach PostgreSQL for longer than its write retries', () => {
  let h: Harness;
  let proxy: TcpProxy;
  beforeAll(async () => {
    h = await createHarness({ worker: false });
    proxy = await startTcpProxy({ port: Number(new URL(h.config.DATABASE_URL).port || 5432) });
  });
  afterAll(async () => {
    proxy.resume();
    await h.close();
    await proxy.close();
  });

  it('is postponed without using up its one attempt, and completes once PostgreSQL is back', async () => {
    // echo has a single attempt: before, a failed start claim failed the task as LostStep.
    const id = await submit(h, { task_type: 'echo', params: { patient: true } });
    proxy.pause();
    const through = new URL(h.config.DATABASE_URL);
    through.port = String(proxy.port);
    h.worker = await h.startWorker({ DATABASE_URL: through.toString(), DB_WRITE_RETRY_MS: '200' });
    const jobKey = `${h.config.QUEUE_PREFIX}:${toolQueueName('echo')}:${stepJobId(id, 1, 'echo')}`;
    // Delivered, found PostgreSQL away, put back: twice, so the outage outlasts the write retries over and over.
    await poll(async () => Number(await h.redis.hget(jobKey, 'ats')) >= 2, { label: 'the step job to be delivered twice', timeoutMs: 20_000 });
    expect(await h.redis.hget(jobKey, 'atm')).toBeNull();
    expect((await h.request('GET', `/result/${id}`)).body.status).toBe('queued');
    proxy.resume();
    const task = await waitForTask(h, id, 60_000);
    expect(task).toMatchObject({ status: 'completed', result: { patient: true } });
  }, 90_000);
});

describe('an ending that committed while its answer was lost (a connection cut as it committed)', () => {
  let h: Harness;
  let core: Core;
  /** Records like a worker, and then does nothing more: its answer never came back. */
  let lost: Runs;
  const held = async () => [...(await core.quotas.counts()).values()].reduce((sum, n) => sum + n, 0);
  /** A step of `pair` completed, as its worker reports it. */
  const completed = (taskId: string, stepId: string, output: unknown) => {
    const now = new Date();
    return { type: 'result', taskId, run: 1, stepId, attempt: 1, status: 'completed', output, startedAt: now, finishedAt: now } as const;
  };
  beforeAll(async () => {
    h = await createHarness({ worker: false, env: { QUOTA_MAX_BACKLOG_PER_KEY: '50' } });
    await h.request('POST', '/workflows', {
      name: 'pair',
      steps: [
        { id: 'first', tool: 'echo', input: { n: 1 } },
        { id: 'second', tool: 'echo', depends_on: ['first'], input: { from_first: '{{steps.first.output.n}}' } },
      ],
    });
    await h.request('POST', '/workflows', { name: 'pair_parent', steps: [{ id: 'sub', workflow: 'pair' }] });
    // What a worker runs on, wired as in production (its quotas, its onEnded).
    core = await openCore({ config: h.config, logger: h.logger, metrics: new Metrics(), tools: h.registry, role: 'worker' });
    lost = new Runs({ sql: core.db.sql, queues: core.queues, publish: async () => undefined, logger: h.logger, config: h.config });
  });
  afterAll(async () => {
    await core?.close();
    await h?.close();
  });

  it("gives a one-tool task's quota back when its result is delivered again", async () => {
    const id = await submit(h, { task_type: 'echo', params: { answer: 'lost' } });
    expect(await held()).toBe(1);
    const now = new Date();
    const result = {
      taskId: id,
      run: 1,
      stepId: 'echo',
      tool: 'echo',
      attempt: 1,
      status: 'completed' as const,
      output: { ok: true },
      startedAt: now,
      finishedAt: now,
    };
    expect(await lost.finishSingle(result)).toMatchObject({ recorded: true, taskStatus: 'completed' });
    expect(await held(), 'the ending committed, its release was lost with the answer').toBe(1);
    // The job, not acknowledged, is delivered again: its result meets a run that has ended.
    expect(await core.runs.finishSingle(result)).toEqual({ recorded: false, endedBefore: true });
    await core.quotas.settled();
    expect(await held()).toBe(0);
    expect((await h.request('GET', `/result/${id}`)).body).toMatchObject({ status: 'completed', result: { ok: true } });
  });

  it("gives a workflow task's quota back when its last step's result is delivered again", async () => {
    const id = await submit(h, { task_type: 'pair' });
    expect(await held()).toBe(1);
    const step = (stepId: string, output: unknown) => completed(id, stepId, output);
    expect((await lost.report(step('first', { n: 1 }))).recorded).toBe(true);
    expect((await lost.report(step('second', { from_first: 1 }))).recorded).toBe(true);
    expect((await h.request('GET', `/result/${id}`)).body.status).toBe('completed');
    expect(await held(), 'the ending committed, its release was lost with the answer').toBe(1);
    expect((await core.runs.report(step('second', { from_first: 1 }))).recorded).toBe(false);
    await core.quotas.settled();
    expect(await held()).toBe(0);
  });

  it("gives a workflow task's quota back when its sub-workflow's end is reported again", async () => {
    // The parent ends with its child: the report of the child's end committed, its answer lost
    // (the chaos suite's severed connections), and the ledger's retry meets a parent that has ended.
    const id = await submit(h, { task_type: 'pair_parent' });
    const child = await poll(
      async () => {
        const { rows } = await h.db.pool.query<{ id: string }>('SELECT id::text AS id FROM tasks WHERE parent_task_id = $1', [id]);
        return rows[0]?.id;
      },
      { label: 'the child task' },
    );
    // A child counts in its parent's quota, not in one of its own.
    expect(await held()).toBe(1);
    const step = (stepId: string, output: unknown) => completed(child, stepId, output);
    expect((await lost.report(step('first', { n: 1 }))).recorded).toBe(true);
    expect((await lost.report(step('second', { from_first: 1 }))).recorded).toBe(true);
    expect((await h.request('GET', `/result/${id}`)).body.status).toBe('completed');
    expect(await held(), 'the ending committed, its release was lost with the answer').toBe(1);
    const again = { type: 'child', taskId: id, stepId: 'sub', childTaskId: child, status: 'completed', output: {}, at: new Date() } as const;
    expect((await core.runs.report(again)).recorded).toBe(false);
    await core.quotas.settled();
    expect(await held()).toBe(0);
  });

  it("gives a task's quota back when its cancel is asked again after the first one's answer was lost", async () => {
    const id = await submit(h, { task_type: 'pair' });
    expect(await held()).toBe(1);
    expect(await lost.cancel(id)).toMatchObject({ outcome: 'cancelled' });
    expect(await held(), 'the cancel committed, its release was lost with the answer').toBe(1);
    // The client, told 503, asks again: the task has ended.
    expect(await core.runs.cancel(id)).toEqual({ outcome: 'finished', status: 'cancelled' });
    await core.quotas.settled();
    expect(await held()).toBe(0);
  });

  it('publishes an ending and gives its quota back when a Redis effect of the ending fails after it committed', async () => {
    const id = await submit(h, { task_type: 'pair' });
    expect(await held()).toBe(1);
    const published: Transition[] = [];
    // Redis takes the ending's jobs and holds, then times out on the root's end mark.
    const queues = new Proxy(core.queues, {
      get: (target, name) => {
        if (name === 'markEnded') return async () => Promise.reject(new Error('Command timed out'));
        const value = Reflect.get(target, name);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    const runs = new Runs({
      sql: core.db.sql,
      queues,
      publish: async (transitions) => {
        published.push(...transitions);
      },
      logger: h.logger,
      config: h.config,
      onEnded: (ended) => core.quotas.release(ended.taskId, ended.run),
    });
    const step = (stepId: string, output: unknown) => completed(id, stepId, output);
    expect((await runs.report(step('first', { n: 1 }))).recorded).toBe(true);
    await expect(runs.report(step('second', { from_first: 1 }))).rejects.toThrow('Command timed out');
    expect(
      published.filter((transition) => transition.stepId === undefined),
      "the task's end is published",
    ).toContainEqual(expect.objectContaining({ taskId: id, status: 'completed' }));
    await core.quotas.settled();
    expect(await held(), 'the ending gave its quota back').toBe(0);
    expect((await h.request('GET', `/result/${id}`)).body.status).toBe('completed');
  });
});
