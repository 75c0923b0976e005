import { boot, closeOnSignals, prepareDatabase } from '../src/bootstrap.js';
import { loadConfig } from '../src/lib/config.js';
import { createLogger } from '../src/lib/logger.js';
import { initTracing } from '../src/observability/tracing.js';
import { createToolRegistry } from './adapters/index.js';
import { startWorker } from './worker.js';

/** What closing may take after the drain's bound, before the process exits regardless. */
const CLOSE_AFTER_DRAIN_MS = 5_000;

/** `npm run worker`: a worker process. Run as many as you need, on as many machines. */
await boot('worker', async () => {
  const config = loadConfig();
  const logger = createLogger(config).child({ process: 'worker', pid: process.pid });
  // The drain has WORKER_SHUTDOWN_TIMEOUT_MS; then the database, the metrics server and traces close.
  const signals = closeOnSignals(logger, { limitMs: config.WORKER_SHUTDOWN_TIMEOUT_MS + CLOSE_AFTER_DRAIN_MS });
  await prepareDatabase(config, logger);
  const tracing = await initTracing(config, logger, { role: 'worker' });
  const worker = await startWorker(config, logger, createToolRegistry());
  signals.closeWith(async () => {
    const { drained } = await worker.close();
    logger.info('worker stopped', { drained });
    await tracing.shutdown();
  });
});
