import { DelayedError, type Job } from 'bullmq';
import type { Logger } from '../../src/lib/logger.js';
import { isTransientDatabaseError } from '../../src/persistence/retry.js';

/** First wait of a job put back because PostgreSQL (or Redis) could not be reached; it doubles per wait. */
const POSTPONE_BASE_MS = 1_000;
/** Longest wait between two tries, however long the outage lasts. */
const POSTPONE_MAX_MS = 30_000;

/**
 * How long a job waits before it is delivered again, after `waits` earlier deliveries that were
 * no tries of its retry policy (postponed, or taken over after a stall): exponential with jitter
 * and capped, so that a long outage costs one delivery every POSTPONE_MAX_MS and no try.
 */
export function postponeDelay(waits: number, random: () => number = Math.random): number {
  const nominal = Math.min(POSTPONE_MAX_MS, POSTPONE_BASE_MS * 2 ** Math.min(Math.max(0, waits), 16));
  return Math.round(nominal / 2 + (random() * nominal) / 2);
}

/**
 * Puts a job that BullMQ gave to this worker back for later, without using up a try of its
 * retry policy: for work that could not reach PostgreSQL or Redis, which says nothing about the
 * step itself. Always throws (DelayedError tells BullMQ the job was moved on purpose).
 */
export async function postpone(job: Job, token: string | undefined, error: unknown, logger: Logger, message: string): Promise<never> {
  // Without a token the job was not taken by a Worker (a test calling a processor): the caller sees the error.
  if (!token) throw error;
  // Deliveries that were no try of the retry policy: earlier postponements and stall takeovers.
  const waits = Math.max(0, job.attemptsStarted - job.attemptsMade - 1);
  const delayMs = postponeDelay(waits);
  await job.moveToDelayed(Date.now() + delayMs, token);
  // An error that is not a lost connection may be a bug that retrying will not cure: say so louder.
  logger[isTransientDatabaseError(error) ? 'warn' : 'error'](message, { error: (error as Error).message, delay_ms: delayMs, waits });
  throw new DelayedError();
}
