/**
 * pg-boss worker process, configured for throughput as pg-boss 10 allows it.
 *
 * pg-boss 10 workers poll: each `work()` call adds a polling loop that fetches up to `batchSize`
 * jobs, hands them to the handler at once, and then waits out the rest of its polling interval
 * (0.5 s at the least), even when the batch was full. v10 has no concurrency option of its own
 * (v9's teamSize and teamConcurrency were removed); its author recommends calling `work()` as
 * many times as the concurrency wanted, and running a batch's jobs concurrently in the handler.
 * So this process runs CONCURRENCY loops, like the orchestrator's WORKER_CONCURRENCY slots, each
 * fetching up to BATCH jobs per poll at the shortest interval, and the handler writes the
 * batch's results concurrently. At most CONCURRENCY x BATCH jobs are in flight per process, and
 * the polls bound throughput at workers x CONCURRENCY x BATCH / 0.5 s (with 2 processes, 800/s).
 * The loops are started interval / CONCURRENCY apart, so that they poll in turn (one every 50 ms)
 * rather than all at once. See bench/README.md for the choices and the measurements behind them.
 */
import PgBoss from 'pg-boss';
import { INSERT_RESULT, type PeerJob, RESULTS_TABLE, ready, settings } from '../shared.js';

const QUEUE = 'echo';
/** Jobs per fetch. */
const BATCH = 20;
/** Polling loops (work() calls), as many as the jobs in flight the other systems have per process. */
const LOOPS = settings.concurrency;
/** pg-boss 10's shortest polling interval. */
const POLLING_INTERVAL_S = 0.5;

const boss = new PgBoss({ connectionString: settings.databaseUrl, max: settings.poolSize });
boss.on('error', (error: Error) => process.stderr.write(`pg-boss error: ${error.message}\n`));
await boss.start();
// The first worker to start creates the queue and the result table; the others find them.
if (!(await boss.getQueue(QUEUE))) await boss.createQueue(QUEUE);
const db = boss.getDb();
await db.executeSql(RESULTS_TABLE, []);

for (let lane = 0; lane < LOOPS; lane += 1) {
  if (lane > 0) await new Promise((resolve) => setTimeout(resolve, (POLLING_INTERVAL_S * 1000) / LOOPS));
  await boss.work<PeerJob>(QUEUE, { batchSize: BATCH, pollingIntervalSeconds: POLLING_INTERVAL_S }, async (jobs) => {
    // Each result row is written before pg-boss marks the batch completed (when the handler
    // returns): a crash in between runs the jobs again, and the insert is idempotent. A failed
    // insert fails the whole batch, whose other rows are then written again as no-ops.
    await Promise.all(jobs.map((job) => db.executeSql(INSERT_RESULT, [job.data.task_id, job.data.received_at, JSON.stringify(job.data.params)])));
  });
}

ready(() => boss.stop({ graceful: true, wait: true, timeout: 5_000 }));
