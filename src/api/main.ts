import { createToolRegistry } from '../../workers/adapters/index.js';
import { boot, closeOnSignals, prepareDatabase } from '../bootstrap.js';
import { loadConfig } from '../lib/config.js';
import { createLogger } from '../lib/logger.js';
import { initTracing } from '../observability/tracing.js';
import { openKeyRing } from './api-keys.js';
import { startApi } from './server.js';

/** `npm run api`: the HTTP API alone. */
await boot('api', async () => {
  const config = loadConfig();
  const logger = createLogger(config).child({ process: 'api', pid: process.pid });
  const signals = closeOnSignals(logger);
  // Before anything connects: production without keys stops here (closed by default).
  const keys = await openKeyRing(config, logger);
  await prepareDatabase(config, logger);
  const tracing = await initTracing(config, logger, { role: 'api' });
  const api = await startApi(config, logger, createToolRegistry(), undefined, keys);
  signals.closeWith(async () => {
    await api.close();
    await tracing.shutdown();
  });
});
