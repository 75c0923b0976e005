/**
 * graphile-worker worker process, configured as its performance guide recommends for a high
 * throughput queue (https://worker.graphile.org/docs/performance#batching): CONCURRENCY jobs at
 * once, a local queue of CONCURRENCY + 1 jobs fetched (and locked) per query, and completions
 * and failures released in batches every 25 ms. New jobs arrive by LISTEN/NOTIFY (add_job
 * notifies), so the poll interval only matters for jobs scheduled in the future; prepared
 * statements stay on (the default).
 */

import { Logger, run } from 'graphile-worker';
import pg from 'pg';
import { INSERT_RESULT, type PeerJob, RESULTS_TABLE, ready, settings } from '../shared.js';

// Warnings and errors only, like LOG_LEVEL=warn for the orchestrator.
const logger = new Logger(() => (level, message) => {
  if (level === 'error' || level === 'warning') process.stderr.write(`graphile-worker ${level}: ${message}\n`);
});

const setup = new pg.Client({ connectionString: settings.databaseUrl });
await setup.connect();
await setup.query(RESULTS_TABLE);
await setup.end();

const runner = await run({
  connectionString: settings.databaseUrl,
  maxPoolSize: settings.poolSize,
  concurrency: settings.concurrency,
  noHandleSignals: true,
  pollInterval: 2_000,
  logger,
  // The guide's starting point for batching, as it gives it.
  preset: {
    worker: {
      localQueue: { size: settings.concurrency + 1 },
      completeJobBatchDelay: 25,
      failJobBatchDelay: 25,
    },
  },
  taskList: {
    async echo(payload, helpers) {
      const job = payload as PeerJob;
      // Written before graphile-worker completes the job; a rerun inserts nothing.
      await helpers.query(INSERT_RESULT, [job.task_id, job.received_at, JSON.stringify(job.params)]);
    },
  },
});

ready(() => runner.stop());
