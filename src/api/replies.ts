import type { ApiExample } from './openapi-examples.js';
import * as r from './responses.js';
import type { ApiReply } from './route.js';

/** Answers several routes share, as the OpenAPI document describes them. */

export const text = { type: 'string' } as const;

export const invalid = (what: string): ApiReply => ({ description: what, body: r.validationErrorBodySchema });
export const notFound = (what: string): ApiReply => ({ description: what, body: r.errorBodySchema });
export const gone: ApiReply = {
  description:
    'The task was created more than RETENTION_DAYS ago and its record is gone (`task_expired`); `details` has its `created_at` and the `retention_days`.',
  body: r.errorBodySchema,
};
export const conflict = (what: string): ApiReply => ({ description: what, body: r.errorBodySchema });
export const unavailable: ApiReply = {
  description:
    'Redis or PostgreSQL does not answer (`service_unavailable`, `details.dependency`, with `Retry-After` in seconds); nothing was changed. Try again later.',
  body: r.errorBodySchema,
};
/** The answers of an endpoint that creates tasks, which admission control may refuse. */
export const unavailableOrOverloaded: ApiReply = {
  description:
    'Redis or PostgreSQL does not answer (`service_unavailable`, `details.dependency`), or admission control refuses new work while the backlog is more than the workers finish in ADMISSION_MAX_WAIT_MS (`overloaded`, with no figures: it may be answered before the key is checked), or, with POLICY_URL and POLICY_FAIL_MODE=closed, the policy service did not decide in time or failed (`policy_unavailable`, `details.reason`); all with `Retry-After` in seconds; nothing was created. Try again later.',
  body: r.errorBodySchema,
};
/** The 503 of an endpoint whose work the gate admits (a retry, a replay, a signal, a schedule). */
export const policyUnavailable: ApiReply = {
  description:
    'Redis or PostgreSQL does not answer (`service_unavailable`, `details.dependency`), or, with POLICY_URL and POLICY_FAIL_MODE=closed, the policy service did not decide in time or failed (`policy_unavailable`, `details.reason`); both with `Retry-After` in seconds; nothing was changed. Try again later.',
  body: r.errorBodySchema,
};
export const assigned = (status: string, examples: Record<string, ApiExample>): ApiReply => ({ description: status, body: r.assignedSchema, examples });
export const tooManyRequests = (description: string): ApiReply => ({
  description,
  body: r.errorBodySchema,
  headers: { 'Retry-After': { description: 'Seconds to wait before trying again.', schema: { type: 'integer' } } },
});
/** The 429 of a retry or a replay: the resumed task counts against its owner's quotas again. */
export const resumedOverQuota = tooManyRequests(
  "The task's owner is at one of its quotas (`quota_exceeded`, `details.limit` names it: a resumed task counts again), or `rate_limited` as on every endpoint. Nothing was changed.",
);
