import { boot, closeOnSignals, prepareDatabase } from '../bootstrap.js';
import { loadConfig } from '../config.js';
import { createLogger } from '../logger.js';
import { createToolRegistry } from '../../workers/adapters/index.js';
import { startApi } from './server.js';

/** `npm run api`: the HTTP API alone. */
await boot('api', async () => {
  const config = loadConfig();
  const logger = createLogger(config).child({ process: 'api', pid: process.pid });
  await prepareDatabase(config, logger);
  const api = await startApi(config, logger, createToolRegistry());
  closeOnSignals(logger, () => api.close());
});
