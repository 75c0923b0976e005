/**
 * pg-boss worker process. pg-boss 10 workers poll: each `work()` loop fetches up to `batchSize`
 * jobs, runs them, then waits out the polling interval (0.5 s at the least). To have CONCURRENCY
 * jobs in flight per process, as the orchestrator does, the process runs CONCURRENCY loops of
 * one job each at the shortest interval pg-boss allows.
 */
import PgBoss from 'pg-boss';
import { INSERT_RESULT, type PeerJob, RESULTS_TABLE, ready, settings } from '../shared.js';

const QUEUE = 'echo';

const boss = new PgBoss({ connectionString: settings.databaseUrl, max: settings.poolSize });
boss.on('error', (error: Error) => process.stderr.write(`pg-boss error: ${error.message}\n`));
await boss.start();
// The first worker to start creates the queue and the result table; the others find them.
if (!(await boss.getQueue(QUEUE))) await boss.createQueue(QUEUE);
const db = boss.getDb();
await db.executeSql(RESULTS_TABLE, []);

for (let lane = 0; lane < settings.concurrency; lane += 1) {
  await boss.work<PeerJob>(QUEUE, { batchSize: 1, pollingIntervalSeconds: 0.5 }, async ([job]) => {
    if (!job) return;
    // The result row is written before pg-boss marks the job completed: a crash in between runs
    // the job again, and the insert is idempotent.
    await db.executeSql(INSERT_RESULT, [job.data.task_id, job.data.received_at, JSON.stringify(job.data.params)]);
    return job.data.params;
  });
}

ready(() => boss.stop({ graceful: true, wait: true, timeout: 5_000 }));
