import { ApiError } from './errors.js';

/** Seconds a client over a quota is asked to wait: its tasks have to end first. */
export const QUOTA_RETRY_AFTER_S = 5;

/** A client (API key, or address without keys) is at one of its quotas: nothing was created. The API answers 429. */
export class QuotaExceededError extends ApiError {
  override name = 'QuotaExceededError';
  readonly retryAfterS = QUOTA_RETRY_AFTER_S;
  constructor(limit: string, max: number, held: number, what: string) {
    super('quota_exceeded', `this API key (or address) is at ${limit} (${max} ${what}); nothing was created, retry once some of its tasks have ended`, {
      limit,
      max,
      held,
    });
  }
}
