import type { MinimalJob } from 'bullmq';
import { RetryableError } from '../../src/lib/errors.js';
import { BACKOFF_TYPE, type StepJobData } from '../../src/queue/jobs.js';
import type { RetryPolicy } from '../../src/tools/tool.js';

/**
 * Delay before the next attempt after `failures` failed attempts (1 after the first failure).
 * Exponential or fixed, with "equal jitter": a random delay between half and all of the
 * nominal one (capped at `max_delay_ms`), so retries of many steps spread out while each step's delays still grow.
 * A Retry-After from the failed call wins when it asks for longer.
 */
export function retryDelay(backoff: RetryPolicy['backoff'], failures: number, retryAfterMs?: number, random: () => number = Math.random): number {
  const nominal = backoff.type === 'exponential' ? backoff.delay_ms * 2 ** Math.max(0, failures - 1) : backoff.delay_ms;
  const capped = Math.min(nominal, backoff.max_delay_ms ?? Number.POSITIVE_INFINITY, 24 * 60 * 60 * 1000);
  const jittered = Math.round(capped / 2 + (random() * capped) / 2);
  return Math.max(jittered, retryAfterMs ?? 0);
}

/**
 * BullMQ's backoff strategy for step jobs (every worker of tool queues, built-in or a user's): the
 * delay the step processor chose and recorded with the retry, else one computed here.
 */
export function stepBackoff(failures: number, type?: string, error?: Error, job?: MinimalJob): number {
  if (type !== BACKOFF_TYPE || !job) return 0;
  const data = job.data as StepJobData;
  if (error instanceof RetryableError && error.delayMs !== undefined) return error.delayMs;
  return retryDelay(data.retry.backoff, failures, error instanceof RetryableError ? error.retryAfterMs : undefined);
}
