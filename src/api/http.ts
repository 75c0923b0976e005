import type { NextFunction, Request, RequestHandler, Response } from 'express';
import {
  ApiError,
  ConflictError,
  DependencyUnavailableError,
  ForbiddenError,
  GoneError,
  NotFoundError,
  UnavailableError,
  UpstreamError,
  ValidationError,
} from '../lib/errors.js';
import type { Logger } from '../lib/logger.js';
import { QuotaExceededError } from '../lib/quota-exceeded-error.js';
import { isTransientDatabaseError, sqlState } from '../persistence/retry.js';
import { isConnectionError, isRedisUnavailable } from '../queue/redis.js';

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
    handler(req, res).then((reply) => {
      if (!reply || res.headersSent) return;
      if (reply.headers) res.set(reply.headers);
      sendJson(req, res, reply.status, reply.body);
    }, next);
  };
}

/**
 * Answers `body` as JSON: what `res.status(status).json(body)` writes with this app's settings
 * (no ETag, no replacer, spaces or escaping), without its general steps (a content type parsed
 * and formatted twice, the length set through res.set) where they change nothing: a JSON body of
 * a status that has one, to a GET or POST without conditional headers, with no content type or
 * transfer encoding set before. Anything else is Express's own res.json. In the seed's loop those
 * steps were about 15 µs of the API's CPU per task (a CPU profile at 32 clients, 2026-11-29).
 */
export function sendJson(req: Request, res: Response, status: number, body: unknown): void {
  const text = JSON.stringify(body) as string | undefined;
  const plain =
    text !== undefined &&
    status >= 200 &&
    status !== 204 &&
    status !== 205 &&
    status !== 304 &&
    (req.method === 'GET' || req.method === 'POST') &&
    req.headers['if-none-match'] === undefined &&
    req.headers['if-modified-since'] === undefined &&
    !res.hasHeader('content-type') &&
    !res.hasHeader('transfer-encoding');
  if (!plain) {
    res.status(status).json(body);
    return;
  }
  res.statusCode = status;
  res.setHeader('Content-Type', 'application/json; charset=utf-8');
  res.setHeader('Content-Length', String(Buffer.byteLength(text, 'utf8')));
  res.end(text, 'utf8');
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

export function errorBody(code: string, message: string, details?: unknown) {
  return { error: { code, message, ...(details !== undefined ? { details } : {}) } };
}

interface BodyParserError {
  type?: string;
  status?: number;
  expose?: boolean;
  message?: string;
}

/** The HTTP status of each kind of API error; the services throw the kinds and know no statuses. */
const STATUS_OF: [new (...args: never[]) => ApiError, number][] = [
  [ValidationError, 400],
  [ForbiddenError, 403],
  [NotFoundError, 404],
  [ConflictError, 409],
  [GoneError, 410],
  [UnavailableError, 503],
  [UpstreamError, 502],
];

/** Maps anything thrown to the contract's error body. Only genuine bugs answer 500. */
export function toErrorReply(error: unknown, logger: Logger, req?: Request): Reply {
  if (error instanceof DependencyUnavailableError) {
    // A dependency away is expected, and said by the 503 alone. Any other cause under it (a reply
    // Redis refused, out of memory; an option BullMQ refused) would hide behind the 503: say it.
    if (error.cause !== undefined && !isConnectionError(error.cause) && !isTransientDatabaseError(error.cause)) {
      logger.warn('answered 503, but the dependency refused for a reason other than being away', {
        dependency: (error.details as { dependency: string }).dependency,
        error: error.cause instanceof Error ? error.cause.message : String(error.cause),
        method: req?.method,
        path: req?.path,
      });
    }
    return { status: 503, body: errorBody(error.code, error.message, error.details), headers: { 'retry-after': String(error.retryAfterS) } };
  }
  if (error instanceof QuotaExceededError) {
    return { status: 429, body: errorBody(error.code, error.message, error.details), headers: { 'retry-after': String(error.retryAfterS) } };
  }
  if (error instanceof ApiError) {
    // An API error of no listed kind is about the request, as the base class says.
    const status = STATUS_OF.find(([kind]) => error instanceof kind)?.[1] ?? 400;
    const retryAfterS = (error as { retryAfterS?: unknown }).retryAfterS;
    return {
      status,
      body: errorBody(error.code, error.message, error.details),
      ...(typeof retryAfterS === 'number' ? { headers: { 'retry-after': String(retryAfterS) } } : {}),
    };
  }
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
    sendJson(req, res, reply.status, reply.body);
  };
}
