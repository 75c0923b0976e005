import { type Job, Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type StepJobData, toolQueueName } from '../../src/queue/jobs.js';
import { closeTestConnections, observationKey, testTools } from '../fixtures/tools.js';
import { createHarness, type Harness, poll } from '../helpers/harness.js';
import {
  CHAOS_ENV,
  chaosSeed,
  checkOutcomes,
  defineChaosWorkflows,
  knob,
  type PlannedTask,
  report,
  seededRandom,
  submitPaced,
  WorkerFleet,
  waitForAllEnded,
} from './support.js';
import { sweep } from './sweep.js';

/**
 * Graceful drain: a worker process told to stop (SIGTERM) in the middle of a load finishes the
 * steps it holds within WORKER_SHUTDOWN_TIMEOUT_MS (each still at attempt 1, nothing run twice),
 * takes no new step after the signal, and exits 0. The other workers carry on.
 */

const CYCLES = knob('CHAOS_DRAIN_CYCLES', 2, 6);
/** Submissions go on at this rate until every drain is done. */
const SUBMIT_PER_SECOND = knob('CHAOS_DRAIN_SUBMIT_PER_SECOND', 12, 20);
const SHUTDOWN_TIMEOUT_MS = 10_000;
const STEP_QUEUES = ['record', 'sleep', 'echo'].map(toolQueueName);

/** Tasks that all succeed at their first attempt, with steps long enough to be caught in flight. */
function drainWorkload(count: number, random: () => number): PlannedTask[] {
  return Array.from({ length: count }, (_, index): PlannedTask => {
    const key = `drain-${index}`;
    const ms = 200 + Math.floor(random() * 1_300);
    if (index % 3 === 2) {
      const records = Object.fromEntries(['a', 'b'].map((id) => [id, { key: `${key}-${id}`, succeedOn: 1 }]));
      return { kind: 'chaos_chain', body: { task_type: 'chaos_chain', params: { key, ms, flaky: 1 } }, records };
    }
    if (index % 3 === 1) return { kind: 'sleep', body: { task_type: 'sleep', params: { ms } }, records: {} };
    return { kind: 'record', body: { task_type: 'record', params: { key, ms } }, records: { record: { key, succeedOn: 1 } } };
  });
}

interface Drained {
  pid: number;
  signalledAt: number;
  /** When the test saw the process print "closing": its shutdown had begun by then. */
  closingSeenAt: number;
  exitMs: number;
  /** Step jobs the process held when it was signalled. */
  inFlight: string[];
  output: string;
}

describe('graceful drain on SIGTERM under load', () => {
  let h: Harness;
  let fleet: WorkerFleet;
  let queues: Queue[];
  const seed = chaosSeed();

  beforeAll(async () => {
    // Keep every finished job, to see which process took each one and when.
    h = await createHarness({
      worker: false,
      tools: testTools,
      env: { ...CHAOS_ENV, QUEUE_KEEP_COMPLETED: '100000', WORKER_SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS) },
    });
    queues = STEP_QUEUES.map((name) => new Queue(name, { connection: h.redis, prefix: h.config.QUEUE_PREFIX }));
    fleet = new WorkerFleet(h.env);
    await fleet.start(3);
    await defineChaosWorkflows(h);
  }, 120_000);
  afterAll(async () => {
    await fleet?.destroy();
    for (const queue of queues ?? []) await queue.close();
    await h?.close();
    await closeTestConnections();
  }, 120_000);

  /** Jobs (ids) of the step queues that `pid` is running now. */
  async function activeJobsOf(pid: number): Promise<string[]> {
    const active = (await Promise.all(queues.map((queue) => queue.getJobs(['active'])))).flat();
    return active.filter((job) => job.processedBy?.endsWith(`@${pid}`)).map((job) => job.id!);
  }

  it(`drains ${CYCLES} worker(s) one after another: in-flight steps finish once, nothing new starts there`, async () => {
    const started = Date.now();
    const random = seededRandom(seed);
    let drainsDone = false;
    const submission = submitPaced(h, drainWorkload(CYCLES * 60 * SUBMIT_PER_SECOND, random), {
      perSecond: SUBMIT_PER_SECOND,
      concurrency: 8,
      shouldStop: () => drainsDone,
    });

    const drained: Drained[] = [];
    for (let cycle = 0; cycle < CYCLES; cycle += 1) {
      // Pick a worker and wait until it holds steps, so the signal lands mid-work.
      const victim = fleet.live[Math.floor(random() * fleet.live.length)]!;
      const pid = victim.child.pid!;
      const inFlight = await poll(
        async () => {
          const active = await activeJobsOf(pid);
          return active.length >= 2 ? active : undefined;
        },
        { label: `worker ${pid} to run steps`, timeoutMs: 30_000, intervalMs: 20 },
      );
      fleet.release(victim);
      const signalledAt = Date.now();
      victim.child.kill('SIGTERM');
      await victim.waitForOutput(/^closing$/m, 5_000);
      const closingSeenAt = Date.now();
      const exit = await victim.waitForExit(SHUTDOWN_TIMEOUT_MS + 10_000);
      expect(exit.code, victim.output).toBe(0);
      expect(victim.output).toMatch(/closed drained=true/);
      drained.push({ pid, signalledAt, closingSeenAt, exitMs: exit.at - signalledAt, inFlight, output: victim.output });
      await fleet.add();
    }
    drainsDone = true;
    const submitted = await submission;
    expect(submitted.unexpected).toEqual([]);

    await waitForAllEnded(h, 120_000, 'every task to end after the drains');
    const { problems, figures } = await checkOutcomes(h, submitted.accepted);
    expect(problems).toEqual([]);

    // Who ran what, and when it was taken (BullMQ's processedBy / processedOn).
    const jobs: Job[] = (await Promise.all(queues.map((queue) => queue.getJobs(['completed', 'failed'])))).flat();
    const byId = new Map(jobs.map((job) => [job.id!, job]));
    // Nothing retried needlessly: every step ran on its first delivery, and the tool once.
    const { rows: repeated } = await h.db.pool.query(`SELECT task_id, step_id, attempts FROM steps WHERE attempts <> 1`);
    expect(repeated, 'steps with more than one attempt').toEqual([]);
    // BullMQ counts a finished attempt in attemptsMade, whether it succeeded or failed. A job a
    // closing worker was handed (a fetch on its way when it began closing) went back unrun: BullMQ
    // counts that delivery as started, and the job as held back once (heldDeliveries).
    const handedBack = jobs.filter((job) => ((job.data as StepJobData).heldDeliveries ?? 0) > 0);
    const redone = jobs.filter(
      (job) => job.attemptsStarted !== 1 + ((job.data as StepJobData).heldDeliveries ?? 0) || job.attemptsMade !== 1 || job.stalledCounter !== 0,
    );
    expect(redone.map((job) => `${job.id}: started ${job.attemptsStarted}, made ${job.attemptsMade}, stalled ${job.stalledCounter}`)).toEqual([]);
    expect(figures.reexecuted).toBe(0);

    for (const worker of drained) {
      const mine = jobs.filter((job) => job.processedBy?.endsWith(`@${worker.pid}`));
      // Sanity: the drained process did take work (and jobs name their process as tool@pid).
      expect(mine.length, `jobs taken by drained worker ${worker.pid}`).toBeGreaterThan(0);
      // Its in-flight steps finished there, at attempt 1. A job Redis had moved to it whose
      // answer it had not read when the signal came had not started: it went back (above).
      const ranThere = worker.inFlight.filter((id) => !handedBack.some((job) => job.id === id));
      expect(ranThere.length, `steps worker ${worker.pid} held when signalled`).toBeGreaterThan(0);
      for (const id of ranThere) {
        const job = byId.get(id);
        expect(job?.finishedOn, `in-flight job ${id} of worker ${worker.pid}`).toBeGreaterThan(0);
        expect(job!.processedBy).toMatch(new RegExp(`@${worker.pid}$`));
        expect(job!.failedReason ?? null).toBeNull();
        expect(job, `job ${id}`).toMatchObject({ attemptsStarted: 1, attemptsMade: 1, stalledCounter: 0 });
        // Recorded once: completed at its first attempt; a record step's tool ran once.
        const { taskId, stepId, tool, input } = job!.data as StepJobData;
        expect(await h.db.prisma.step.findFirst({ where: { taskId, stepId } }), `step ${taskId}/${stepId}`).toMatchObject({ status: 'completed', attempts: 1 });
        if (tool === 'record') {
          const calls = await h.redis.lrange(observationKey(h.config.QUEUE_PREFIX, (input as { key: string }).key), 0, -1);
          expect(calls, `calls of record step ${taskId}/${stepId}`).toHaveLength(1);
        }
      }
      // The drain was real: some of those steps were still running when the signal came (the
      // list was read just before it), and the process waited for them.
      const runningAtSignal = ranThere.filter((id) => byId.get(id)!.finishedOn! >= worker.signalledAt);
      expect(runningAtSignal.length, `steps of worker ${worker.pid} that finished after its signal`).toBeGreaterThan(0);
      // Nothing run that was taken after its shutdown had begun. A fetch on its way when the
      // process began closing may still bring a job (processedOn: the worker's clock when it
      // asked Redis to move it to active, after the marker woke it); that job went back to its
      // queue, and the worker that ran it is its processedBy.
      const late = mine.filter((job) => job.processedOn! > worker.closingSeenAt);
      expect(late.map((job) => `${job.id} taken ${job.processedOn! - worker.closingSeenAt} ms after "closing"`)).toEqual([]);
      // Its drain fitted WORKER_SHUTDOWN_TIMEOUT_MS by the process's own clock ("drained=true",
      // checked above); the time to exit adds the teardown after it, which a busy machine
      // stretches, so it is reported rather than bounded.
    }

    const swept = await sweep(h);
    expect(fleet.crashes).toEqual([]);
    report('drain', {
      seed,
      tasks_run: submitted.accepted.size,
      ...figures,
      processes_drained: drained.length,
      in_flight_at_signal: drained.map((worker) => worker.inFlight.length),
      exit_ms: drained.map((worker) => worker.exitMs),
      jobs_taken_by_drained: drained.map((worker) => jobs.filter((job) => job.processedBy?.endsWith(`@${worker.pid}`)).length),
      jobs_handed_back: handedBack.length,
      problems: problems.length,
      total_ms: Date.now() - started,
      redis_keys_after: swept.keys,
    });
  }, 400_000);
});
