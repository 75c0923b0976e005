import type { RetryPolicy } from '../../src/tools/tool.js';

/**
 * Delay before the next attempt after `failures` failed attempts (1 after the first failure).
 * Exponential or fixed, with "equal jitter": a random delay between half and all of the
 * nominal one, so retries of many steps spread out while each step's delays still grow.
 * A Retry-After from the failed call wins when it asks for longer.
 */
export function retryDelay(backoff: RetryPolicy['backoff'], failures: number, retryAfterMs?: number, random: () => number = Math.random): number {
  const nominal = backoff.type === 'exponential' ? backoff.delay_ms * 2 ** Math.max(0, failures - 1) : backoff.delay_ms;
  const capped = Math.min(nominal, 24 * 60 * 60 * 1000);
  const jittered = Math.round(capped / 2 + (random() * capped) / 2);
  return Math.max(jittered, retryAfterMs ?? 0);
}
