import { type ChildProcess, spawn } from 'node:child_process';
import { watch } from 'node:fs';
import path, { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openKeyRing } from './api/api-keys.js';
import { boot, prepareDatabase } from './bootstrap.js';
import { loadConfig } from './lib/config.js';
import { createLogger, type Logger } from './lib/logger.js';
import { PACKAGE_ROOT } from './lib/package-root.js';

/** A worker that dies is started again after this long, doubling up to WORKER_RESTART_MAX_MS. */
const WORKER_RESTART_MS = 1_000;
const WORKER_RESTART_MAX_MS = 30_000;
/** A worker that ran this long before dying starts again after WORKER_RESTART_MS. */
const WORKER_STABLE_MS = 60_000;
/** `--watch`: changes this close together restart the processes once (an editor writes a file in several steps). */
const WATCH_SETTLE_MS = 300;

/**
 * `npm start`: the API and one worker, as two processes (as in production: the work never shares
 * the API's event loop). A worker that dies is started again; the API dying, or a signal, stops
 * both. The entry points run beside this file (.ts under tsx, .js in dist/), with its Node flags.
 * With `--watch` (`npm run dev`) a change to a source file restarts both.
 */
await boot('orchestrator', async () => {
  const config = loadConfig();
  const logger = createLogger(config).child({ process: 'supervisor', pid: process.pid });
  // Before anything starts: production without keys stops here, in one line (closed by default).
  await openKeyRing(config, logger);
  // Once, before both processes start (each would otherwise migrate, one waiting for the other).
  await prepareDatabase(config, logger);
  const ext = extname(fileURLToPath(import.meta.url));
  const entry = (relative: string) => fileURLToPath(new URL(`${relative}${ext}`, import.meta.url));
  const run = (name: string, path: string): ChildProcess => {
    // Its own process group: a terminal's Ctrl-C reaches this process alone, which stops both children
    // once (a second signal would make them exit without draining). The IPC channel closes when this
    // process dies, however it dies, and a child closes when it does (closeOnSignals).
    const child = spawn(process.execPath, [...process.execArgv, path], { stdio: ['inherit', 'inherit', 'inherit', 'ipc'], env: process.env, detached: true });
    logger.info('process started', { name, pid: child.pid });
    return child;
  };

  let stopping = false;
  let restarting = false;
  let worker: ChildProcess | undefined;
  let restartDelay = WORKER_RESTART_MS;
  const startWorker = () => {
    const startedAt = Date.now();
    worker = run('worker', entry('../workers/main'));
    worker.once('exit', (code, signal) => {
      worker = undefined;
      if (stopping || restarting) return;
      restartDelay = Date.now() - startedAt > WORKER_STABLE_MS ? WORKER_RESTART_MS : Math.min(restartDelay * 2, WORKER_RESTART_MAX_MS);
      logger.error('worker exited; starting it again', { code, signal, delay_ms: restartDelay });
      // Unless a restart (--watch) started one meanwhile.
      setTimeout(() => stopping || worker || startWorker(), restartDelay).unref();
    });
  };
  let api: ChildProcess;
  const startApi = () => {
    api = run('api', entry('./api/main'));
    api.once('exit', (code, signal) => {
      if (stopping || restarting) return;
      logger.error('the API exited; stopping the worker', { code, signal });
      void stop(1);
    });
  };
  startApi();
  startWorker();

  const exited = (child: ChildProcess | undefined) =>
    child && child.exitCode === null && child.signalCode === null ? new Promise((resolve) => child.once('exit', resolve)) : Promise.resolve();
  const stop = async (status: number) => {
    if (stopping) return;
    stopping = true;
    await stopChildren();
    process.exit(status);
  };
  const stopChildren = async () => {
    const children = [api, worker].filter((child): child is ChildProcess => child !== undefined);
    for (const child of children) child.kill('SIGTERM');
    await Promise.all(children.map(exited));
  };
  if (process.argv.includes('--watch')) {
    watchSources(logger, async (changed) => {
      if (stopping || restarting) return;
      restarting = true;
      logger.info('sources changed: restarting the API and the worker', { changed });
      await stopChildren();
      restarting = false;
      if (stopping) return;
      restartDelay = WORKER_RESTART_MS;
      startApi();
      startWorker();
    });
  }
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.on(signal, () => {
      logger.info('shutting down', { signal });
      void stop(0);
    });
  }
});

/**
 * Calls `restart` once changes under the watched folders settle: src/ and workers/ (DEV_WATCH_PATHS,
 * comma-separated, replaces them), TypeScript and JSON files only, the generated Prisma client, the
 * console (a browser build of its own) and build output left out.
 */
function watchSources(logger: Logger, restart: (changed: string[]) => Promise<void>): void {
  const roots = (process.env.DEV_WATCH_PATHS ?? 'src,workers').split(',').map((root) => path.resolve(PACKAGE_ROOT, root.trim()));
  const ignored = /(^|\/)(generated|console|dist|node_modules)(\/|$)/;
  let pending = new Set<string>();
  let timer: NodeJS.Timeout | undefined;
  for (const root of roots) {
    watch(root, { recursive: true }, (_event, file) => {
      if (!file || !/\.(ts|tsx|mts|json)$/.test(file) || ignored.test(file)) return;
      pending.add(path.relative(PACKAGE_ROOT, path.join(root, file)));
      clearTimeout(timer);
      timer = setTimeout(() => {
        const changed = [...pending];
        pending = new Set();
        void restart(changed);
      }, WATCH_SETTLE_MS);
    });
  }
  logger.info('watching for changes', { paths: roots.map((root) => path.relative(PACKAGE_ROOT, root) || '.') });
}
