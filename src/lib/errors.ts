import type { z } from 'zod';

/**
 * The few errors the service distinguishes. API errors carry the stable snake_case code of the
 * contract; their kind (the class) says what went wrong, and the API alone chooses the HTTP
 * status for each kind (src/api/http.ts). Tool errors tell the worker runtime whether to retry.
 */

export interface Problem {
  /** JSON path of the offending value, e.g. `params.batch_ids[2]` or `steps[1].depends_on[0]`. */
  path: string;
  message: string;
}

export function zodProblems(error: z.ZodError, prefix: PropertyKey[] = []): Problem[] {
  return error.issues.flatMap((issue) =>
    // zod reports every unknown key in one issue at the object: one problem per key is clearer.
    issue.code === 'unrecognized_keys'
      ? issue.keys.map((key) => ({ path: jsonPath([...prefix, ...issue.path, key]), message: `${JSON.stringify(key)} is not a known field` }))
      : [{ path: jsonPath([...prefix, ...issue.path]), message: issue.message }],
  );
}

/** `['params', 'batch_ids', 2]` -> `params.batch_ids[2]`. */
export function jsonPath(segments: readonly PropertyKey[]): string {
  let path = '';
  for (const segment of segments) {
    if (typeof segment === 'number') path += `[${segment}]`;
    else {
      const key = String(segment);
      path += /^[A-Za-z_][A-Za-z0-9_]*$/.test(key) ? (path ? `.${key}` : key) : `[${JSON.stringify(key)}]`;
    }
  }
  return path || '$';
}

/** An error the client hears about, as `{"error": {code, message, details}}`. */
export class ApiError extends Error {
  override name = 'ApiError';
  constructor(
    readonly code: string,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
  }
}

/** The request does not fit: every problem, with its JSON path. */
export class ValidationError extends ApiError {
  override name = 'ValidationError';
  constructor(message: string, problems: Problem[], code = 'validation_error') {
    super(code, message, problems);
  }
}

export class NotFoundError extends ApiError {
  override name = 'NotFoundError';
}

/** The request is understood and authenticated, but refused (a policy said no). */
export class ForbiddenError extends ApiError {
  override name = 'ForbiddenError';
}

/** The request contradicts the resource's state or an earlier request. */
export class ConflictError extends ApiError {
  override name = 'ConflictError';
}

/** The resource existed and is gone for good: a task past RETENTION_DAYS. */
export class GoneError extends ApiError {
  override name = 'GoneError';
}

/** The service cannot answer this now; the client may retry later. */
export class UnavailableError extends ApiError {
  override name = 'UnavailableError';
}

/** A third-party service this deployment reads (a registered service's OpenAPI document) did not answer as it should. */
export class UpstreamError extends ApiError {
  override name = 'UpstreamError';
}

/** The Retry-After of a 503 for a dependency that did not answer: a restart or a cluster failover is seconds away. */
export const DEPENDENCY_RETRY_AFTER_S = 1;

/** Redis or PostgreSQL did not answer: the client may retry later. */
export class DependencyUnavailableError extends UnavailableError {
  override name = 'DependencyUnavailableError';
  readonly retryAfterS = DEPENDENCY_RETRY_AFTER_S;
  constructor(dependency: 'redis' | 'database', cause?: unknown) {
    super(
      'service_unavailable',
      `The ${dependency === 'redis' ? 'queue (Redis)' : 'database (PostgreSQL)'} is unavailable; nothing was created, try again later`,
      {
        dependency,
      },
    );
    this.cause = cause;
  }
}

/** Thrown by a tool adapter when retrying cannot help (bad input, a 4xx answer). */
export class NonRetryableError extends Error {
  override name = 'NonRetryableError';
  constructor(
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
  }
}

/** Names of the errors the size limits raise (docs/configuration.md "Limits"). */
export type LimitErrorName = 'StepInputTooLarge' | 'StepOutputTooLarge' | 'TaskResultTooLarge' | 'TooManyItems' | 'SubWorkflowTooDeep';

/** Data over one of the size limits. Never retried: the same data is as large the next time. */
export class LimitExceededError extends NonRetryableError {
  override name: LimitErrorName;
  constructor(
    name: LimitErrorName,
    message: string,
    /** The limit, the setting that holds it, and where in the data it was passed. */
    override readonly details: { limit: number; setting: string; at?: string },
  ) {
    super(message, details);
    this.name = name;
  }
}

/**
 * A step's `when` condition could not be decided: it does not evaluate on the data (a missing
 * key, a type mismatch, division by zero), gives no boolean, or does more work than it may.
 * Never retried: the same data gives the same answer.
 */
export class ConditionError extends NonRetryableError {
  override name = 'ConditionError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message);
    if (options?.cause !== undefined) this.cause = options.cause;
  }
}

/** A computed value (`{{= …}}`) that could not be evaluated, or gave what JSON cannot hold. */
export class ExpressionError extends NonRetryableError {
  override name = 'ExpressionError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message);
    if (options?.cause !== undefined) this.cause = options.cause;
  }
}

/** Thrown by a tool adapter for a transient failure; `retryAfterMs` overrides the backoff. */
export class RetryableError extends Error {
  override name = 'RetryableError';
  /** Set by the step processor: the delay it chose (and recorded in the history), which the backoff strategy then uses. */
  delayMs?: number;
  constructor(
    message: string,
    readonly retryAfterMs?: number,
    readonly details?: unknown,
  ) {
    super(message);
  }
}

/** The step ran past its timeout; its AbortSignal fired. Counts as a failed attempt. */
export class ToolTimeoutError extends Error {
  override name = 'ToolTimeoutError';
  constructor(readonly timeoutMs: number) {
    super(`step timed out after ${timeoutMs} ms`);
  }
}

/** The task was cancelled (or already ended) while the step waited or ran. Never retried. */
export class TaskStoppedError extends Error {
  override name = 'TaskStoppedError';
  constructor(readonly reason: 'cancelled' | 'task_ended') {
    super(reason === 'cancelled' ? 'task was cancelled' : 'task already ended');
  }
}

/** The worker process is stopping past its drain bound; the step will run again elsewhere. */
export class WorkerStoppingError extends Error {
  override name = 'WorkerStoppingError';
  constructor() {
    super('the worker is shutting down');
  }
}

/** Turns anything thrown into an Error. */
export function coerceError(thrown: unknown): Error {
  if (thrown instanceof Error) return thrown;
  if (typeof thrown === 'string') return new Error(thrown);
  try {
    return new Error(JSON.stringify(thrown));
  } catch {
    return new Error(String(thrown));
  }
}

/** The serialisable form stored in PostgreSQL and shown by the API. */
export interface ErrorRecord {
  name: string;
  message: string;
  retryable?: boolean;
  details?: unknown;
}

/**
 * The most an error record keeps, in UTF-8 bytes of its parts: whatever an adapter throws (the
 * http tool quotes a 4xx answer's body, up to 10 MiB), the record is copied into the step, the
 * task, the dead letter and dependents' job data, so it stays a few KiB.
 */
export const ERROR_LIMITS = { nameBytes: 200, messageBytes: 2048, detailsBytes: 2048 } as const;

export function toErrorRecord(thrown: unknown): ErrorRecord {
  const error = coerceError(thrown);
  const record: ErrorRecord = { name: error.name, message: error.message };
  if ('details' in error && error.details !== undefined) record.details = error.details;
  return capErrorRecord(record);
}

/**
 * The one bound on an error record, used wherever one is built, stored or copied: the name and
 * message cut to their limits, the details cut to a budget (long strings shortened, long lists and
 * objects ended early, each cut saying how much it left out), and text PostgreSQL can store.
 * Idempotent: a capped record passes through unchanged. Other fields (`retryable`, `step`) are kept.
 */
export function capErrorRecord<T extends ErrorRecord>(record: T): T {
  const capped: T = {
    ...record,
    name: storableText(cutText(String(record.name), ERROR_LIMITS.nameBytes)),
    message: storableText(cutText(String(record.message), ERROR_LIMITS.messageBytes)),
  };
  if (record.details !== undefined) capped.details = storableJson(plainJson(new Budget(ERROR_LIMITS.detailsBytes).take(record.details, 0)));
  return capped;
}

/** `text` when its UTF-8 is at most `maxBytes`, else its start and how much was cut. */
function cutText(text: string, maxBytes: number): string {
  if (text.length * 3 <= maxBytes || Buffer.byteLength(text) <= maxBytes) return text;
  const total = Buffer.byteLength(text);
  const marker = `… [cut: ${total} bytes in all]`;
  // Cut on a code point: a lone surrogate would become U+FFFD.
  const keep = Buffer.from(text.slice(0, maxBytes))
    .subarray(0, Math.max(0, maxBytes - Buffer.byteLength(marker)))
    .toString('utf8')
    .replace(/\uFFFD$/, '');
  return `${keep}${marker}`;
}

/** Walks a value once, keeping what fits in a byte budget (about JSON's size) and never building the whole text. */
class Budget {
  constructor(private left: number) {}

  take(value: unknown, depth: number): unknown {
    if (value !== null && typeof value === 'object' && typeof (value as { toJSON?: unknown }).toJSON === 'function') {
      value = (value as { toJSON(): unknown }).toJSON();
    }
    if (typeof value === 'string') {
      const kept = cutText(value, Math.max(this.left - 2, 64));
      this.left -= Buffer.byteLength(kept) + 2;
      return kept;
    }
    if (value === null || typeof value !== 'object') {
      this.left -= String(value).length;
      return value;
    }
    if (depth >= 32) return '[nested too deep]';
    const entries = Array.isArray(value) ? value.map((item, index) => [index, item] as const) : Object.entries(value);
    const kept: [string | number, unknown][] = [];
    let omitted = 0;
    this.left -= 2;
    for (const [key, item] of entries) {
      if (item === undefined || typeof item === 'function' || typeof item === 'symbol') continue;
      if (this.left <= 0) omitted += 1;
      else {
        this.left -= String(key).length + 4;
        kept.push([key, this.take(item, depth + 1)]);
      }
    }
    if (Array.isArray(value)) return omitted > 0 ? [...kept.map(([, item]) => item), `… [cut: ${omitted} more items]`] : kept.map(([, item]) => item);
    const object = Object.fromEntries(kept);
    if (omitted > 0) object['…'] = `cut: ${omitted} more fields`;
    return object;
  }
}

/**
 * PostgreSQL stores neither NUL nor a lone surrogate in text or jsonb. An error is recorded
 * whatever it quotes (an answer body, an adapter's message), so such characters become U+FFFD
 * rather than making the write of the step's failure itself fail.
 */
function storableText(text: string): string {
  return text.toWellFormed().replaceAll('\u0000', '\uFFFD');
}

/** What JSON.stringify makes of a value (dates as strings, no functions), or its text when it has no JSON form. */
function plainJson(value: unknown): unknown {
  try {
    const text = JSON.stringify(value);
    return text === undefined ? null : JSON.parse(text);
  } catch {
    return String(value);
  }
}

function storableJson(value: unknown, depth = 0): unknown {
  if (typeof value === 'string') return storableText(value);
  if (value === null || typeof value !== 'object') return value;
  if (depth >= 32) return '[nested too deep]';
  if (Array.isArray(value)) return value.map((item) => storableJson(item, depth + 1));
  return Object.fromEntries(Object.entries(value).map(([key, item]) => [storableText(key), storableJson(item, depth + 1)]));
}
