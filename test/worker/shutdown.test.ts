import { type Job, Queue, WaitingError, Worker } from 'bullmq';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { EventLog } from '../../src/queue/event-log.js';
import { type StepJobData, stepJobId, toolQueueName } from '../../src/queue/jobs.js';
import { createRedis } from '../../src/queue/redis.js';
import { Shards } from '../../src/queue/shards.js';
import { handBackStepsWhenClosing, handBackWhenClosing } from '../../workers/runtime/hand-back.js';
import { closeTestConnections, observationKey, testTools } from '../fixtures/tools.js';
import { type NodeProcess, runEntry } from '../helpers/child-process.js';
import { createHarness, type Harness, poll, submit, uniqueName, waitForTask } from '../helpers/harness.js';

/** Far longer than any drain below takes, so exiting before it shows that nothing waited it out. */
const SHUTDOWN_TIMEOUT_MS = 15_000;

describe('graceful shutdown of a worker process', () => {
  let h: Harness;
  const children: NodeProcess[] = [];

  beforeAll(async () => {
    // Only the child processes run steps.
    h = await createHarness({ worker: false, tools: testTools, env: { WORKER_SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS) } });
  });
  afterEach(async () => {
    for (const child of children.splice(0)) await child.kill();
  });
  afterAll(async () => {
    await h.close();
    await closeTestConnections();
  });

  async function startChild(env: Record<string, string> = {}): Promise<NodeProcess> {
    const child = runEntry('test/fixtures/worker-entry.ts', { ...h.env, ...env });
    children.push(child);
    // Starting a process takes long on a busy machine.
    await child.waitForOutput(/^ready$/m, 60_000);
    return child;
  }

  /**
   * A fetcher of `name`'s jobs made by hand (a worker that runs nothing itself: the test hands
   * what it fetches to a wrapped processor) and the queue, closed once `use` has ended.
   */
  async function withFetcher(name: string, use: (fetcher: Worker, queue: Queue) => Promise<void>, options: { obliterate?: boolean } = {}): Promise<void> {
    const connection = createRedis(h.config, 'worker', 'test-closing');
    const fetcher = new Worker(name, null, { connection, prefix: h.config.QUEUE_PREFIX, autorun: false });
    const queue = new Queue(name, { connection: h.redis, prefix: h.config.QUEUE_PREFIX });
    try {
      await use(fetcher, queue);
    } finally {
      await fetcher.close();
      await connection.quit().catch(() => undefined);
      if (options.obliterate) await queue.obliterate({ force: true });
      await queue.close();
    }
  }

  /** A processor that counts its runs, wrapped as the runtime wraps every processor, told that its worker is closing. */
  function closingProcessor<P>(wrap: (closing: () => boolean, processor: () => Promise<void>, logger: Harness['logger']) => P): {
    processor: P;
    ran: () => number;
  } {
    let ran = 0;
    const processor = wrap(
      () => true,
      async () => {
        ran += 1;
      },
      h.logger,
    );
    return { processor, ran: () => ran };
  }

  async function result(id: string) {
    const response = await h.request('GET', `/result/${id}`);
    expect(response.status).toBe(200);
    return response.body;
  }

  it('finishes the running step on SIGTERM, exits 0, and takes no new step meanwhile', async () => {
    const worker = await startChild();
    const first = await submit(h, { task_type: 'sleep', params: { ms: 3_000 } });
    await poll(async () => (await result(first)).steps[0].status === 'running', { label: 'the sleep step to run in the child' });

    const signalled = Date.now();
    worker.child.kill('SIGTERM');
    await worker.waitForOutput(/^closing$/m);
    // Submitted while the child drains: it must stay for another worker.
    const second = await submit(h, { task_type: 'sleep', params: { ms: 10 } });

    const exit = await worker.waitForExit(SHUTDOWN_TIMEOUT_MS + 5_000);
    expect(exit.code).toBe(0);
    expect(exit.at - signalled).toBeLessThan(SHUTDOWN_TIMEOUT_MS);
    expect(worker.output).toMatch(/closed drained=true/);

    // Committed before the process exited, so no waiting here.
    const done = await result(first);
    expect(done.status).toBe('completed');
    expect(done.steps[0]).toMatchObject({ status: 'completed', attempts: 1 });
    expect(done.steps[0].output.slept_ms).toBeGreaterThanOrEqual(3_000);
    // It was still running when the signal came: the drain is what let it finish.
    expect(Date.parse(done.steps[0].finished_at)).toBeGreaterThanOrEqual(signalled);

    const waiting = await result(second);
    expect(waiting.status).toBe('queued');
    expect(waiting.steps[0]).toMatchObject({ status: 'queued', attempts: 0, started_at: null });

    const next = await startChild();
    const finished = await waitForTask(h, second);
    expect(finished.status).toBe('completed');
    expect(finished.steps[0].attempts).toBe(1);
    expect((await next.signal('SIGTERM')).code).toBe(0);
  }, 120_000);

  it('hands a job that BullMQ gives it while closing back to the front of its queue, unrun; the step counts no attempt for it', async () => {
    // BullMQ 6.7 can still return a job from a blocking fetch that was on its way when close()
    // began. Here the job is fetched by hand, and given to the wrapper the runtime puts around
    // every processor, told that its worker is closing.
    const first = await submit(h, { task_type: 'sleep', params: { ms: 10 } });
    const { processor, ran } = closingProcessor(handBackStepsWhenClosing);
    let second = '';
    await withFetcher(toolQueueName('sleep'), async (fetcher, queue) => {
      const job = (await fetcher.getNextJob('closing-1')) as Job<StepJobData>;
      expect(job.id).toBe(stepJobId(first, 1, 'sleep'));
      await expect(processor(job, 'closing-1')).rejects.toBeInstanceOf(WaitingError);
      const back = (await queue.getJob(job.id!))!;
      expect(await back.getState()).toBe('waiting');
      expect(back.attemptsStarted).toBe(1);
      expect(back.data.heldDeliveries).toBe(1);
      // It goes before a job added after it, and a second hand-back counts no attempt either.
      second = await submit(h, { task_type: 'sleep', params: { ms: 10 } });
      const again = (await fetcher.getNextJob('closing-2')) as Job<StepJobData>;
      expect(again.id).toBe(job.id);
      await expect(processor(again, 'closing-2')).rejects.toBeInstanceOf(WaitingError);
      expect(ran()).toBe(0);
      expect((await queue.getJob(job.id!))!.data.heldDeliveries).toBe(2);
    });
    // Another worker runs both, each as its first attempt.
    const worker = await startChild();
    for (const id of [first, second]) {
      const done = await waitForTask(h, id);
      expect(done.steps[0]).toMatchObject({ status: 'completed', attempts: 1 });
    }
    expect((await worker.signal('SIGTERM')).code).toBe(0);
  }, 120_000);

  it('leaves a job it could not hand back active under its lock (the stall check delivers it again), and still runs nothing', async () => {
    const { processor, ran } = closingProcessor(handBackWhenClosing);
    await withFetcher(
      uniqueName('handback'),
      async (fetcher, queue) => {
        await queue.add('probe', { n: 1 });
        const job = (await fetcher.getNextJob('the-lock'))!;
        // A token that is not the job's lock: Redis refuses the move, as it would a worker whose lock lapsed.
        await expect(processor(job, 'not-the-lock')).rejects.toBeInstanceOf(WaitingError);
        expect(ran()).toBe(0);
        expect(await job.getState()).toBe('active');
        expect(await h.redis.get(`${queue.toKey(job.id!)}:lock`)).toBe('the-lock');
      },
      { obliterate: true },
    );
  });

  it('exits 0 at once on SIGTERM when it runs nothing', async () => {
    const worker = await startChild();
    const signalled = Date.now();
    const exit = await worker.signal('SIGTERM');
    expect(exit.code).toBe(0);
    // It did not wait out the shutdown timeout.
    expect(exit.at - signalled).toBeLessThan(SHUTDOWN_TIMEOUT_MS);
    expect(worker.output).toMatch(/closed drained=true/);
  }, 120_000);

  it('past WORKER_SHUTDOWN_TIMEOUT_MS aborts the running step, records nothing, exits 0; another worker takes the step over', async () => {
    // Short locks, so the takeover comes within seconds instead of 30 s; long enough that a
    // busy machine does not lose a lock that is still being renewed.
    const lock = { WORKER_LOCK_DURATION_MS: '3000' };
    const worker = await startChild({ ...lock, WORKER_SHUTDOWN_TIMEOUT_MS: '600' });
    const key = uniqueName('forced');
    // Hangs until aborted; its second call (the takeover) returns at once.
    const id = await submit(h, { task_type: 'hang', params: { key, release_on_call: 2 } });
    const observed = () => h.redis.lrange(observationKey(h.config.QUEUE_PREFIX, key), 0, -1);
    await poll(async () => (await observed()).includes('started:1') && (await result(id)).steps[0].status === 'running', {
      label: 'the hang step to run in the child',
    });

    const signalled = Date.now();
    worker.child.kill('SIGTERM');
    const exit = await worker.waitForExit(SHUTDOWN_TIMEOUT_MS + 10_000);
    expect(exit.code).toBe(0);
    expect(exit.at - signalled).toBeGreaterThanOrEqual(550);
    expect(worker.output).toMatch(/closed drained=false/);

    // The adapter's signal fired, with the forced stop as its reason.
    await poll(async () => (await observed()).includes('aborted:WorkerStoppingError'), { label: 'the hang tool to record its abort' });
    expect(await observed()).toEqual(['started:1', 'aborted:WorkerStoppingError']);
    // Nothing was recorded for that attempt: not in PostgreSQL, not in BullMQ.
    const stopped = await result(id);
    expect(stopped.status).toBe('running');
    expect(stopped.steps[0]).toMatchObject({ status: 'running', attempts: 1, finished_at: null });
    expect(stopped.steps[0].error ?? null).toBeNull();
    expect(stopped.steps[0].output ?? null).toBeNull();
    expect(await h.db.prisma.deadLetter.count({ where: { taskId: id } })).toBe(0);
    const queue = new Queue(toolQueueName('hang'), { connection: h.redis, prefix: h.config.QUEUE_PREFIX });
    try {
      const jobId = stepJobId(id, 1, 'hang');
      const held = await queue.getJob(jobId);
      expect(held!.attemptsMade).toBe(0);
      expect(held!.finishedOn ?? null).toBeNull();
      expect(held!.failedReason ?? null).toBeNull();
      expect(await held!.getState()).toBe('active');

      // Another worker takes the step over once the lock has expired, and completes it.
      // BullMQ runs a queue's stall check at most once per stalledInterval, across all its
      // workers: the earlier tests' workers (30 s locks) may have just taken that turn. Clear it,
      // so the takeover depends on this test's 3 s lock alone.
      await h.redis.del(queue.keys['stalled-check']!);
      const next = await startChild(lock);
      const done = await waitForTask(h, id);
      expect(done.status).toBe('completed');
      // Attempts counts deliveries: the aborted one and the takeover.
      expect(done.steps[0]).toMatchObject({ status: 'completed', attempts: 2, output: {} });
      expect(await observed()).toEqual(['started:1', 'aborted:WorkerStoppingError', 'started:1', 'released']);
      // PostgreSQL has the result before BullMQ acknowledges the job: wait for the acknowledgement.
      const finished = await poll(
        async () => {
          const job = await queue.getJob(jobId);
          return job?.finishedOn ? job : undefined;
        },
        { label: 'the job to be acknowledged' },
      );
      expect(finished!.processedBy).toBe(`hang@${next.child.pid}`);
      expect(finished).toMatchObject({ attemptsMade: 1, stalledCounter: 1 });
      // Its result was recorded once: one completion in the task's history.
      const history = await new EventLog(h.redis, Shards.of(h.config), {
        ttlSeconds: h.config.EVENTS_TTL_S,
        afterEndSeconds: h.config.EVENTS_KEEP_AFTER_END_S,
      }).read(id);
      expect(history.filter((event) => event.type === 'step').map((event) => event.status)).toEqual(['running', 'running', 'completed']);
      expect((await next.signal('SIGTERM')).code).toBe(0);
    } finally {
      await queue.close();
    }
  }, 120_000);
});
