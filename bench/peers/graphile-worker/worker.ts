/**
 * graphile-worker worker process: `run()` with CONCURRENCY jobs at once; new jobs arrive by
 * LISTEN/NOTIFY, so there is no polling delay.
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
  taskList: {
    async echo(payload, helpers) {
      const job = payload as PeerJob;
      // Written before graphile-worker completes the job; a rerun inserts nothing.
      await helpers.query(INSERT_RESULT, [job.task_id, job.received_at, JSON.stringify(job.params)]);
    },
  },
});

ready(() => runner.stop());
