/** pg-boss API process: validates the request and sends one job (one INSERT). */
import PgBoss from 'pg-boss';
import { ready, serveApi, settings } from '../shared.js';

// A producer only: maintenance and scheduling run in the worker processes.
const boss = new PgBoss({ connectionString: settings.databaseUrl, max: settings.poolSize, supervise: false, schedule: false, migrate: false });
boss.on('error', (error: Error) => process.stderr.write(`pg-boss error: ${error.message}\n`));
await boss.start();

const server = await serveApi(async (job) => {
  await boss.send('echo', job);
});

ready(async () => {
  await new Promise((resolve) => server.close(resolve));
  await boss.stop({ graceful: true, wait: true, timeout: 5_000 });
});
