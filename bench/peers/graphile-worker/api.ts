/** graphile-worker API process: validates the request and adds one job (add_job, which notifies the workers). */
import { Logger, makeWorkerUtils } from 'graphile-worker';
import { ready, serveApi, settings } from '../shared.js';

const logger = new Logger(() => (level, message) => {
  if (level === 'error' || level === 'warning') process.stderr.write(`graphile-worker ${level}: ${message}\n`);
});

// The worker process has already installed graphile-worker's schema.
const utils = await makeWorkerUtils({ connectionString: settings.databaseUrl, maxPoolSize: settings.poolSize, logger });

const server = await serveApi(async (job) => {
  await utils.addJob('echo', job);
});

ready(async () => {
  await new Promise((resolve) => server.close(resolve));
  await utils.release();
});
