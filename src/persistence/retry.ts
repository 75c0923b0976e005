import type { Logger } from '../lib/logger.js';

// SQLSTATEs worth retrying: serialization failure, deadlock, the server shutting down or
// terminating our backend, connection failures, too many connections.
const TRANSIENT_CODES = new Set(['40001', '40P01', '57P01', '57P02', '57P03', '53300', '08000', '08001', '08003', '08004', '08006', '08P01']);
const TRANSIENT_NODE_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH']);
// Prisma's own codes for "cannot reach the database", "connection closed", "transaction
// conflict or deadlock" and "timed out fetching a connection".
const TRANSIENT_PRISMA_CODES = new Set(['P1001', 'P1002', 'P1008', 'P1017', 'P2024', 'P2034']);
// What Prisma's driver adapter calls a lost or unreachable connection (DriverAdapterError's cause.kind).
const TRANSIENT_ADAPTER_KINDS = new Set([
  'ConnectionClosed',
  'DatabaseNotReachable',
  'SocketTimeout',
  'TooManyConnections',
  'TransactionWriteConflict',
  'TransactionAlreadyClosed',
]);
// Last resort, for wrappers that keep only the text (a raw query's P2010 quotes the driver's message).
const TRANSIENT_MESSAGE =
  /connection terminated|terminating connection|connection (is )?closed|connection refused|timeout exceeded when trying to connect|Client has encountered a connection error|server (has )?closed the connection|ECONNREFUSED|ECONNRESET|Can't reach database|deadlock detected|could not serialize|Transaction already closed|Transaction API error/i;

/** The PostgreSQL SQLSTATE behind an error, looking through Prisma's and the driver's wrappers. */
export function sqlState(error: unknown): string | undefined {
  const seen = new Set<unknown>();
  let current: unknown = error;
  while (current && typeof current === 'object' && !seen.has(current)) {
    seen.add(current);
    const candidate = current as { code?: unknown; originalCode?: unknown; cause?: unknown; meta?: unknown };
    for (const code of [candidate.originalCode, candidate.code]) {
      if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) && !code.startsWith('P')) return code;
    }
    current = candidate.cause ?? (candidate.meta as { driverAdapterError?: unknown } | undefined)?.driverAdapterError;
  }
  return undefined;
}

/** True for failures that another try may not hit: lost connections, deadlocks, restarts. */
export function isTransientDatabaseError(error: unknown): boolean {
  const seen = new Set<unknown>();
  let current: unknown = error;
  while (current && typeof current === 'object' && !seen.has(current)) {
    seen.add(current);
    const candidate = current as { code?: unknown; message?: unknown; cause?: unknown; meta?: unknown; originalCode?: unknown; kind?: unknown };
    if (typeof candidate.kind === 'string' && TRANSIENT_ADAPTER_KINDS.has(candidate.kind)) return true;
    for (const code of [candidate.code, candidate.originalCode]) {
      if (typeof code === 'string' && (TRANSIENT_CODES.has(code) || TRANSIENT_NODE_CODES.has(code) || TRANSIENT_PRISMA_CODES.has(code))) {
        return true;
      }
    }
    if (typeof candidate.message === 'string' && TRANSIENT_MESSAGE.test(candidate.message)) return true;
    current = candidate.cause ?? (candidate.meta as { driverAdapterError?: unknown } | undefined)?.driverAdapterError;
  }
  return false;
}

export interface RetryOptions {
  logger: Logger;
  label: string;
  /** Give up once this much time has passed since the first try. @defaultValue 60000 */
  maxElapsedMs?: number;
}

/**
 * Runs `fn` until it succeeds, retrying transient database errors with capped exponential
 * backoff. Any other error is thrown at once.
 */
export async function withRetries<T>(fn: () => Promise<T>, options: RetryOptions): Promise<T> {
  const started = Date.now();
  const maxElapsed = options.maxElapsedMs ?? 60_000;
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await fn();
    } catch (error) {
      const elapsed = Date.now() - started;
      if (!isTransientDatabaseError(error) || elapsed >= maxElapsed) throw error;
      const delay = Math.min(2_000, 25 * 2 ** attempt) * (0.5 + Math.random() / 2);
      options.logger.warn(`${options.label}: database write failed, retrying`, {
        attempt,
        delay_ms: Math.round(delay),
        error: (error as Error).message,
      });
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }
}
