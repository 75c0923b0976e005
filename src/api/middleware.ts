import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { ipKeyGenerator, rateLimit } from 'express-rate-limit';
import { RedisStore, type RedisReply } from 'rate-limit-redis';
import { sendCommand, type RedisClient } from '../queue/redis.js';
import type { Logger } from '../logger.js';
import { requestContext } from '../lib/request-context.js';
import { errorBody } from './http.js';

/** Endpoints a load balancer or scraper calls without a key. */
export const OPEN_PATHS = new Set(['/health', '/ready', '/metrics']);
/** Pages a person opens in a browser: they get a basic-auth prompt instead of a bare 401. */
const BROWSER_PATHS = /^\/(admin\/queues|docs)(\/|$)/;

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

declare module 'express-serve-static-core' {
  interface Request {
    /** From X-Request-Id when the client sent a sane one, else generated. */
    id: string;
    /** A short, non-secret name of the API key used (a hash prefix), for rate limits and logs. */
    apiKeyId?: string;
  }
}

/** Accepts or generates X-Request-Id, echoes it, and makes it part of every log line of the request. */
export function requestIds(): RequestHandler {
  return (req, res, next) => {
    const given = req.get('x-request-id');
    req.id = given && REQUEST_ID.test(given) ? given : randomUUID();
    res.setHeader('x-request-id', req.id);
    requestContext.run({ requestId: req.id }, next);
  };
}

/** One `http`-level line per request, with its route, status and duration. */
export function accessLog(logger: Logger): RequestHandler {
  return (req, res, next) => {
    const started = process.hrtime.bigint();
    res.on('finish', () => {
      logger.http('request', {
        method: req.method,
        path: req.path,
        status: res.statusCode,
        duration_ms: Number(process.hrtime.bigint() - started) / 1e6,
        ...(req.apiKeyId ? { api_key: req.apiKeyId } : {}),
      });
    });
    next();
  };
}

const sha256 = (value: string) => createHash('sha256').update(value).digest();

function presentedKey(req: Request): string | undefined {
  const header = req.get('authorization');
  if (!header) return undefined;
  const [scheme, value] = header.split(/\s+/, 2) as [string, string | undefined];
  if (!value) return undefined;
  if (/^bearer$/i.test(scheme)) return value;
  // Browsers: the key is the password of basic auth (the user name is ignored).
  if (/^basic$/i.test(scheme)) {
    const decoded = Buffer.from(value, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    return colon >= 0 ? decoded.slice(colon + 1) : undefined;
  }
  return undefined;
}

/**
 * Requires one of `keys` on every endpoint but the open ones. Keys are compared as SHA-256
 * digests with timingSafeEqual, against every configured key, so the time taken says nothing
 * about how close a guess was or which key matched.
 */
export function apiKeyAuth(keys: readonly string[]): RequestHandler {
  const digests = keys.map(sha256);
  return (req, res, next) => {
    if (OPEN_PATHS.has(req.path) || req.method === 'OPTIONS') return next();
    const presented = presentedKey(req);
    if (presented !== undefined) {
      const digest = sha256(presented);
      let matched = -1;
      digests.forEach((known, index) => {
        if (timingSafeEqual(known, digest) && matched < 0) matched = index;
      });
      if (matched >= 0) {
        req.apiKeyId = digests[matched]!.toString('hex').slice(0, 12);
        return next();
      }
    }
    const browser = BROWSER_PATHS.test(req.path);
    res.setHeader('www-authenticate', browser ? 'Basic realm="Orchestrator", charset="UTF-8"' : 'Bearer realm="orchestrator"');
    res
      .status(401)
      .json(errorBody('unauthorized', presented === undefined ? 'an API key is required: Authorization: Bearer <key>' : 'the API key is not valid'));
  };
}

/**
 * A per-key (or per-address) request budget shared by every API process through Redis. When
 * Redis does not answer, requests pass: the endpoints that need Redis answer 503 themselves.
 */
export function requestRateLimit(perMinute: number, redis: RedisClient, prefix: string): RequestHandler {
  return rateLimit({
    windowMs: 60_000,
    limit: perMinute,
    standardHeaders: 'draft-8',
    legacyHeaders: false,
    passOnStoreError: true,
    skip: (req) => OPEN_PATHS.has(req.path),
    // ipKeyGenerator groups an IPv6 client's whole /56, which it could otherwise rotate through.
    keyGenerator: (req) => (req.apiKeyId ? `key:${req.apiKeyId}` : `ip:${ipKeyGenerator(req.ip ?? '0.0.0.0')}`),
    store: new RedisStore({
      prefix: `${prefix}:ratelimit:`,
      sendCommand: (command: string, ...args: string[]) => sendCommand(redis, command, ...args) as Promise<RedisReply>,
    }),
    handler: (req: Request, res: Response, _next: NextFunction, options) => {
      res.status(options.statusCode).json(errorBody('rate_limited', `more than ${perMinute} requests a minute; retry after the Retry-After delay`));
    },
  });
}
