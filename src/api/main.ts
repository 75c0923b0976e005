import { boot, closeOnSignals, prepareDatabase } from '../bootstrap.js';
import { loadConfig } from '../lib/config.js';
import { createLogger } from '../lib/logger.js';
import { initTracing } from '../observability/tracing.js';
import { ToolRegistry } from '../tools/tool.js';
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
  // No tool of its own: every tool, echo and http included, is one a worker registered (the
  // built-in worker registers its adapters at start), so the API and the tools ship apart.
  const api = await startApi(config, logger, new ToolRegistry([]), undefined, keys);
  signals.closeWith(async () => {
    await api.close();
    await tracing.shutdown();
  });
});
