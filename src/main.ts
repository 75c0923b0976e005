import { boot, closeOnSignals, prepareDatabase } from './bootstrap.js';
import { loadConfig } from './config.js';
import { createLogger } from './logger.js';
import { createToolRegistry } from '../workers/adapters/index.js';
import { startWorker } from '../workers/worker.js';
import { startApi } from './api/server.js';

/** `npm start`: the API and one worker in one process, for a first try and for development. */
await boot('orchestrator', async () => {
  const config = loadConfig();
  const logger = createLogger(config);
  await prepareDatabase(config, logger);
  const registry = createToolRegistry();
  const worker = await startWorker(config, logger, registry);
  const api = await startApi(config, logger, registry);
  closeOnSignals(logger, async () => {
    await api.close();
    await worker.close();
  });
});
