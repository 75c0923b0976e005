import { createToolRegistry } from './adapters/index.js';
import { openKeyRing } from './api/api-keys.js';
import { startApi } from './api/server.js';
import { boot, closeOnSignals, prepareDatabase } from './bootstrap.js';
import { loadConfig } from './config.js';
import { createLogger } from './logger.js';
import { Metrics } from './observability/metrics.js';
import { initTracing } from './observability/tracing.js';
import { startWorker } from './workers/worker.js';

/** `npm start`: the API and one worker in one process, for a first try and for development. */
await boot('orchestrator', async () => {
  const config = loadConfig();
  const logger = createLogger(config);
  const signals = closeOnSignals(logger);
  // Before anything connects: production without keys stops here (closed by default).
  const keys = await openKeyRing(config, logger);
  await prepareDatabase(config, logger);
  const tracing = await initTracing(config, logger, { role: 'all' });
  const registry = createToolRegistry();
  // One process, one set of metrics: GET /metrics shows the API and the worker.
  const metrics = new Metrics();
  const worker = await startWorker(config, logger, registry, metrics);
  const api = await startApi(config, logger, registry, metrics, keys);
  signals.closeWith(async () => {
    await api.close();
    await worker.close();
    await tracing.shutdown();
  });
});
