import type { components } from './openapi.js';

export type Problem = components['schemas']['Problem'];

/**
 * An answer of the API other than 2xx, as `{"error": {code, message, details}}` says it. `code` is
 * the API's stable snake_case code (`invalid_params`, `task_not_found`, ...); an answer that is
 * not the API's (a proxy's 502 page) gets `http_<status>`.
 */
export class OrchestratorError extends Error {
  override readonly name = 'OrchestratorError';
  readonly status: number;
  readonly code: string;
  readonly details: unknown;
  /** From `Retry-After` (429, 503): seconds to wait before trying again. */
  readonly retryAfterS: number | undefined;
  /** The `X-Request-Id` of the answer, to find its log lines. */
  readonly requestId: string | undefined;

  constructor(response: Response, body: unknown) {
    const error = typeof body === 'object' && body !== null ? (body as { error?: Partial<components['schemas']['ErrorBody']['error']> }).error : undefined;
    const code = typeof error?.code === 'string' ? error.code : `http_${response.status}`;
    const message = typeof error?.message === 'string' ? error.message : `${response.status} ${response.statusText}`.trim();
    super(message);
    this.status = response.status;
    this.code = code;
    this.details = error?.details;
    const retryAfter = Number(response.headers.get('retry-after') ?? Number.NaN);
    this.retryAfterS = Number.isFinite(retryAfter) ? retryAfter : undefined;
    this.requestId = response.headers.get('x-request-id') ?? undefined;
  }

  /** One entry per problem (JSON path and message) when the request did not fit the contract; otherwise empty. */
  get problems(): Problem[] {
    return Array.isArray(this.details)
      ? this.details.filter((entry): entry is Problem => typeof entry?.path === 'string' && typeof entry?.message === 'string')
      : [];
  }
}
