import type { Config } from '../src/config.js';
import type { Logger } from '../src/logger.js';
import { openDatabase } from '../src/persistence/database.js';
import type { ToolRegistry } from '../src/tools/tool.js';
import { startWorkerRuntime, type WorkerRuntime } from './runtime/worker-runtime.js';

export interface WorkerProcess {
  runtime: WorkerRuntime;
  close(): Promise<{ drained: boolean }>;
}

/** Starts the workers of this process: every tool of `registry`, narrowed by WORKER_TOOLS. */
export async function startWorker(config: Config, logger: Logger, registry: ToolRegistry): Promise<WorkerProcess> {
  const db = openDatabase(config.DATABASE_URL, config.DATABASE_POOL_SIZE, logger);
  const runtime = await startWorkerRuntime({
    config,
    logger,
    prisma: db.prisma,
    registry: registry.only(config.WORKER_TOOLS),
    allTools: registry.names(),
  });
  return {
    runtime,
    async close() {
      const outcome = await runtime.close();
      await db.close();
      return outcome;
    },
  };
}
