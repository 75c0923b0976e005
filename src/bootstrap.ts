import { existsSync } from 'node:fs';
import type { Config } from './lib/config.js';
import type { Logger } from './lib/logger.js';
import { ensureDatabase, startupError } from './persistence/database.js';
import { MigrationError, migrate } from './persistence/migrate.js';

/**
 * Reads `.env` from the working directory when there is one. Variables already set in the
 * environment win, so a deployment's own settings are never overridden by a stray file.
 */
export function loadDotEnv(file = '.env'): void {
  if (existsSync(file)) process.loadEnvFile(file);
}

/**
 * Runs a process's start-up; a failure (bad configuration, database unreachable) is printed as
 * one clear line instead of a stack trace, and the process exits with status 1.
 */
export async function boot(name: string, start: () => Promise<void>): Promise<void> {
  try {
    loadDotEnv();
    await start();
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    process.stderr.write(`${name} could not start: ${message}\n`);
    if (process.env.LOG_LEVEL === 'debug' && error instanceof Error && error.stack) process.stderr.write(`${error.stack}\n`);
    process.exit(1);
  }
}

/**
 * Creates the database when missing and applies pending migrations. Every process does this on
 * start, over DATABASE_DIRECT_URL: CREATE DATABASE and the migrations' session advisory lock do
 * not work through a pooler in transaction mode (docs/operations.md "Deploying behind PgBouncer"). A server
 * that cannot be reached (or refuses) stops the start with a line naming PostgreSQL, its host and
 * port, and the setting to look at.
 */
export async function prepareDatabase(config: Pick<Config, 'DATABASE_URL' | 'DATABASE_DIRECT_URL'>, logger: Logger): Promise<void> {
  const url = config.DATABASE_DIRECT_URL;
  try {
    if (await ensureDatabase(url)) logger.info('created database', { database: new URL(url).pathname.slice(1) });
    await migrate(url, logger);
  } catch (error) {
    // A migration that failed says so itself.
    if (error instanceof MigrationError) throw error;
    throw startupError(error, url, url === config.DATABASE_URL ? 'DATABASE_URL' : 'DATABASE_DIRECT_URL');
  }
}

/**
 * Installs the SIGTERM and SIGINT handlers at once, before start-up; the process says what
 * closing does with `closeWith` once it has started. The first signal runs that, then exits; a
 * signal during start-up waits for start-up to finish (a supervisor that stops a process just
 * after its first log line must not kill it by Node's default action). A second signal exits at once.
 * `limitMs`: past this long after the first signal, the process exits (status 1) however far
 * start-up or closing got, so that nothing it waits for (a Redis that is away) can hold it.
 */
export function closeOnSignals(logger: Logger, options: { limitMs?: number } = {}): { closeWith(close: () => Promise<void>): void } {
  let closing = false;
  let closer: (() => Promise<void>) | undefined;
  const run = (close: () => Promise<void>) =>
    close().then(
      () => process.exit(0),
      (error: Error) => {
        logger.error('shutdown failed', { error: error.message });
        process.exit(1);
      },
    );
  const onSignal = (signal: NodeJS.Signals) => {
    if (closing) {
      logger.warn('second signal: exiting now', { signal });
      process.exit(1);
    }
    closing = true;
    logger.info('shutting down', { signal });
    if (options.limitMs !== undefined) {
      setTimeout(() => {
        logger.error(`shutdown did not end within ${options.limitMs} ms: exiting now`, { stage: closer ? 'closing' : 'starting' });
        process.exit(1);
      }, options.limitMs).unref();
    }
    // Started: closing begins in this very turn. Starting: closeWith runs it when start-up is done.
    if (closer) void run(closer);
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  // Started by `npm start` (src/main.ts): the supervisor going away, however it went, closes this process too.
  if (process.connected) process.once('disconnect', () => closing || onSignal('SIGTERM'));
  return {
    closeWith(close) {
      closer = close;
      if (closing) void run(close);
    },
  };
}
