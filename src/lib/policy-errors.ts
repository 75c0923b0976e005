import { ForbiddenError, UnavailableError } from './errors.js';

/** The policy service refused the work (POLICY_URL): nothing was stored. The API answers 403. `what`: the work refused. */
export class PolicyDeniedError extends ForbiddenError {
  override name = 'PolicyDeniedError';
  constructor(
    readonly reason: string | undefined,
    what = 'task',
  ) {
    super('policy_denied', reason ? `the policy refused this ${what}: ${reason}` : `the policy refused this ${what}`, reason ? { reason } : undefined);
  }
}

/** The policy service could not decide (a timeout, an error, an answer that is not a decision) and POLICY_FAIL_MODE is closed. The API answers 503. */
export class PolicyUnavailableError extends UnavailableError {
  override name = 'PolicyUnavailableError';
  readonly retryAfterS = 1;
  constructor(why: string, cause?: unknown) {
    super('policy_unavailable', `the policy service could not decide (${why}); nothing was created, try again later`, { reason: why });
    this.cause = cause;
  }
}
