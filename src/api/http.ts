import type { NextFunction, Request, RequestHandler, Response } from 'express';
import type { z } from 'zod';
import { ApiError, DependencyUnavailableError, ValidationError, type Problem } from '../errors.js';
import type { Logger } from '../logger.js';
import { isTransientDatabaseError, sqlState } from '../persistence/retry.js';

/** What a handler answers; the wrapper writes it. Handlers never touch `res`. */
export interface Reply {
  status: number;
  body: unknown;
  headers?: Record<string, string>;
}

export type Handler = (req: Request, res: Response) => Promise<Reply | undefined>;

/** Wraps a plain handler for Express. `undefined` means the handler streamed its own answer. */
export function handle(handler: Handler): RequestHandler {
  return (req, res, next) => {
    handler(req, res).then(
      (reply) => {
        if (!reply || res.headersSent) return;
        if (reply.headers) res.set(reply.headers);
        res.status(reply.status).json(reply.body);
      },
      next,
    );
  };
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

export function zodProblems(error: z.ZodError, prefix: PropertyKey[] = []): Problem[] {
  return error.issues.flatMap((issue) =>
    // zod reports every unknown key in one issue at the object: one problem per key is clearer.
    issue.code === 'unrecognized_keys'
      ? issue.keys.map((key) => ({ path: jsonPath([...prefix, ...issue.path, key]), message: `${JSON.stringify(key)} is not a known field` }))
      : [{ path: jsonPath([...prefix, ...issue.path]), message: issue.message }],
  );
}

/** Deepest nesting a request body may have; deeper JSON is refused before anything walks it. */
export const MAX_JSON_DEPTH = 64;

/** Nesting depth of a parsed JSON value, walked without recursion (so no input can overflow the stack). */
export function jsonDepth(value: unknown): number {
  let max = 0;
  const stack: [unknown, number][] = [[value, 0]];
  while (stack.length > 0) {
    const [current, depth] = stack.pop()!;
    if (current === null || typeof current !== 'object') continue;
    max = Math.max(max, depth + 1);
    if (max > MAX_JSON_DEPTH) return max;
    for (const item of Array.isArray(current) ? current : Object.values(current)) stack.push([item, depth + 1]);
  }
  return max;
}

/** Why PostgreSQL could not store this text, if it could not. */
function unstorable(text: string): string | undefined {
  if (text.includes('\u0000')) return 'must not contain the NUL character (U+0000)';
  if (!text.isWellFormed()) return 'must be well-formed Unicode (a lone surrogate cannot be stored)';
  return undefined;
}

/**
 * PostgreSQL can store neither a NUL character (U+0000) nor a lone UTF-16 surrogate in text or
 * jsonb: find them (in keys too) before a write, so the client hears where instead of a failed
 * insert. Callers bound the depth first (MAX_JSON_DEPTH).
 */
export function unstorableProblems(value: unknown, prefix: PropertyKey[] = []): Problem[] {
  if (typeof value === 'string') {
    const message = unstorable(value);
    return message ? [{ path: jsonPath(prefix), message }] : [];
  }
  if (Array.isArray(value)) return value.flatMap((item, index) => unstorableProblems(item, [...prefix, index]));
  if (value !== null && typeof value === 'object') {
    return Object.entries(value).flatMap(([key, item]) => {
      const message = unstorable(key);
      return message ? [{ path: jsonPath([...prefix, key]), message: `a key ${message}` }] : unstorableProblems(item, [...prefix, key]);
    });
  }
  return [];
}

/** Parses with a zod schema or throws a 400 listing every problem. */
export function parseOrThrow<S extends z.ZodType>(schema: S, value: unknown, what: string, prefix: PropertyKey[] = []): z.output<S> {
  const parsed = schema.safeParse(value);
  if (!parsed.success) throw new ValidationError(`${what} is invalid`, zodProblems(parsed.error, prefix));
  return parsed.data;
}

export function errorBody(code: string, message: string, details?: unknown) {
  return { error: { code, message, ...(details !== undefined ? { details } : {}) } };
}

// `ECONNREFUSED \S*:6379` rather than `ECONNREFUSED.*6379`: `.*` rescans the rest of the message
// from every ECONNREFUSED in it, quadratic on a message that repeats the word.
// The last ones are a Redis Cluster's while a master fails over: the slots are unserved
// (CLUSTERDOWN, TRYAGAIN) or the client has not found the new master yet.
const REDIS_DOWN =
  /Stream isn't writeable|enableOfflineQueue|Connection is closed|Command timed out|ECONNREFUSED \S*:6379|Reached the max retries per request|connect ETIMEDOUT|^CLUSTERDOWN|^TRYAGAIN|Failed to refresh slots cache|Too many Cluster redirections|None of startup nodes is available/i;

/** Whether an error says Redis cannot be reached (the API then answers 503). */
export function isRedisUnavailable(error: unknown): boolean {
  return error instanceof Error && (REDIS_DOWN.test(error.message) || error.name === 'MaxRetriesPerRequestError');
}

interface BodyParserError {
  type?: string;
  status?: number;
  expose?: boolean;
  message?: string;
}

/** Maps anything thrown to the contract's error body. Only genuine bugs answer 500. */
export function toErrorReply(error: unknown, logger: Logger, req?: Request): Reply {
  if (error instanceof DependencyUnavailableError) {
    return { status: error.status, body: errorBody(error.code, error.message, error.details), headers: { 'retry-after': String(error.retryAfterS) } };
  }
  if (error instanceof ApiError) return { status: error.status, body: errorBody(error.code, error.message, error.details) };
  const parser = error as BodyParserError;
  switch (parser?.type) {
    case 'entity.too.large':
      return { status: 413, body: errorBody('payload_too_large', `the request body is larger than the limit`) };
    case 'entity.parse.failed':
      return { status: 400, body: errorBody('invalid_json', `the request body is not valid JSON: ${parser.message ?? ''}`.trim()) };
    case 'encoding.unsupported':
    case 'charset.unsupported':
      return { status: 415, body: errorBody('unsupported_media_type', parser.message ?? 'unsupported encoding') };
    case 'request.aborted':
    case 'request.size.invalid':
      return { status: 400, body: errorBody('bad_request', parser.message ?? 'the request body was cut short') };
  }
  // A path that is not valid percent-encoding: the router cannot decode its parameters.
  if (error instanceof URIError) return { status: 400, body: errorBody('bad_request', 'the URL is not valid percent-encoding') };
  if (typeof parser?.status === 'number' && parser.status >= 400 && parser.status < 500 && parser.expose) {
    return { status: parser.status, body: errorBody('bad_request', parser.message ?? 'bad request') };
  }
  if (isTransientDatabaseError(error)) return toErrorReply(new DependencyUnavailableError('database', error), logger, req);
  // Text PostgreSQL refuses (a NUL character, a broken escape) that no earlier check caught.
  // SQLSTATE class 22 is a data exception: a value PostgreSQL cannot take (a date before year 1,
  // an interval out of range, text it cannot encode) that no earlier check caught. It came from
  // the client, so it is the client's error.
  const state = sqlState(error);
  if (state?.startsWith('22')) {
    return { status: 400, body: errorBody('invalid_input', 'a value in the request cannot be stored or compared (out of range or not encodable)') };
  }
  if (isRedisUnavailable(error)) return toErrorReply(new DependencyUnavailableError('redis', error), logger, req);
  logger.error('unhandled error', { error: error instanceof Error ? error.stack : String(error), method: req?.method, path: req?.path });
  return { status: 500, body: errorBody('internal_error', 'an unexpected error occurred') };
}

export function errorMiddleware(logger: Logger) {
  return (error: unknown, req: Request, res: Response, _next: NextFunction) => {
    const reply = toErrorReply(error, logger, req);
    if (res.headersSent) {
      res.end();
      return;
    }
    if (reply.headers) res.set(reply.headers);
    res.status(reply.status).json(reply.body);
  };
}
