import { randomUUID } from 'node:crypto';
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { ipKeyGenerator, rateLimit } from 'express-rate-limit';
import { type RedisReply, RedisStore } from 'rate-limit-redis';
import type { ApiKeyScope } from '../lib/config.js';
import type { Logger } from '../lib/logger.js';
import { requestContext } from '../lib/request-context.js';
import { type RedisClient, sendCommand } from '../queue/redis.js';
import { credentialOf, type KeyRing } from './api-keys.js';
import { errorBody } from './http.js';
import { type IdentityTokens, looksLikeJwt, TokenRefusedError } from './identity-tokens.js';
import { ROUTES } from './routes/index.js';

/** Endpoints a load balancer or scraper calls without a key: the routes declared open (without path parameters). */
export const OPEN_PATHS = new Set(ROUTES.filter((route) => route.open && !route.path.includes('{')).map((route) => route.path));
/**
 * A regular expression of the paths of `routes`, each parameter one path segment; `below`: with
 * everything under them too. Never matches when there are none.
 */
function pathsOf(routes: readonly { path: string }[], below = false): RegExp {
  const paths = routes.map((route) => route.path.replace(/[.*+?^$()|[\]\\]/g, '\\$&').replace(/\{\w+\}/g, '[^/]+'));
  return new RegExp(`^(${paths.join('|') || '(?!)'})${below ? '(/|$)' : '$'}`);
}

/**
 * Open routes with a path parameter: pages whose link carries its own authority (an approval
 * link's signature).
 */
const OPEN_PATTERN = pathsOf(ROUTES.filter((route) => route.open && route.path.includes('{')));

/** Whether a path is served without a key. */
export function isOpenPath(path: string): boolean {
  return OPEN_PATHS.has(path) || OPEN_PATTERN.test(path);
}
/**
 * Pages a person opens in a browser, with everything below them (their assets): they get a
 * basic-auth prompt instead of a bare 401.
 */
export const BROWSER_PATHS = pathsOf(
  ROUTES.filter((route) => route.browser),
  true,
);

/** Operations that answer an HTML page (an approval link's, the docs', the console's): a document's security headers. */
export const PAGE_PATHS = pathsOf(
  ROUTES.filter((route) => Object.values(route.responses).some((reply) => reply.mediaType === 'text/html')),
  true,
);

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

declare module 'express-serve-static-core' {
  interface Request {
    /** From X-Request-Id when the client sent a sane one, else generated. */
    id: string;
    /** The non-secret id of the API key used (its name or a hash prefix): task owner, rate limits, logs. */
    apiKeyId?: string;
    /** The scope of the API key used; undefined when authentication is off. */
    apiKeyScope?: ApiKeyScope;
    /** Admission put this submission behind other clients' work (Admission.behindOthers). */
    behindOthers?: boolean;
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
    // Below LOG_LEVEL (as at the default, info) winston would still carry each line through its
    // streams before dropping it: two per task in the seed's loop.
    if (!logger.isLevelEnabled('http')) return next();
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

function presentedKey(req: Request): string | undefined {
  // Basic auth on browser pages only: a browser sends cached basic credentials by itself, with
  // requests other sites make it send.
  return credentialOf(req.get('authorization'), BROWSER_PATHS.test(req.path));
}

/** The header a client sets to show that a POST comes from a program, not a cross-site form. */
export const CSRF_HEADER = 'x-requested-with';
const JSON_TYPE = /^\s*application\/(?:[\w.+-]+\+)?json\s*(?:;|$)/i;
const BEARER = /^\s*bearer\s/i;

/**
 * Refuses a POST that another site's page could have made a browser send (a form, or fetch
 * without a preflight): one without `Content-Type: application/json` and without an
 * X-Requested-With header. Neither can be set cross-site without a CORS preflight, which only
 * CORS_ORIGINS pass. Without it, a page could cancel tasks on an API without keys (a
 * developer's), or act on Bull Board with the basic credentials a browser keeps. A POST with a
 * body of another type is left to the 415 that follows (except under /admin/, Bull Board's own).
 * The guard is for credentials a browser sends by itself (basic auth, or none at all): a request
 * with `Authorization: Bearer` passes, since no cross-site form or simple fetch can set that header.
 */
export function csrfGuard(): RequestHandler {
  return (req, res, next) => {
    if (req.method !== 'POST' || BEARER.test(req.get('authorization') ?? '')) return next();
    if (JSON_TYPE.test(req.get('content-type') ?? '') || req.get(CSRF_HEADER) !== undefined) return next();
    const hasBody = Number(req.headers['content-length'] ?? 0) > 0 || req.headers['transfer-encoding'] !== undefined;
    if (hasBody && !req.path.startsWith('/admin/')) return next();
    res
      .status(403)
      .json(
        errorBody(
          'csrf_header_required',
          `a POST without a bearer key needs Content-Type: application/json or an X-Requested-With header (any value), which a cross-site form cannot send`,
        ),
      );
  };
}

/** A browser's CORS preflight: an OPTIONS request that names the method it wants to send. */
export function isPreflight(req: Request): boolean {
  return req.method === 'OPTIONS' && req.get('origin') !== undefined && req.get('access-control-request-method') !== undefined;
}

const FAILURE_WINDOW_MS = 60_000;
// The first failure of a window starts its expiry, in the same step, so a counter never outlives it.
const COUNT_FAILURE = `local n = redis.call('INCR', KEYS[1]) if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end return n`;

/** How long an address Redis counted no wrong key for is taken as clean without asking again. */
const CLEAN_FOR_MS = 1_000;
/** Addresses remembered as clean at most; past it the memory starts again (a flood of addresses costs a GET each, as before). */
const CLEAN_MAX = 10_000;

/**
 * Wrong keys per client address, counted in Redis so every API process sees them. Checked before
 * a key is compared: past the limit even the right key waits, or guessing would go on at full
 * speed (a 429 would just mean "wrong"). When Redis does not answer, nothing is limited.
 *
 * An address Redis counted no failure for is remembered as clean for a second, so a client that
 * sends the right key pays no round trip per request (the closed loop's submit and result). A
 * wrong key from it forgets that at once, here; another process learns of failures counted
 * elsewhere within the second, so past the limit at most one more guess per process gets through.
 */
class AuthFailures {
  private readonly clean = new Map<string, number>();

  constructor(
    private readonly redis: RedisClient,
    private readonly prefix: string,
    private readonly perMinute: number,
  ) {}

  private key(address: string): string {
    return `${this.prefix}:authfail:${address}`;
  }

  /** Redis counted no wrong key for the address within the last second (as this process last asked). */
  knownClean(address: string): boolean {
    return (this.clean.get(address) ?? 0) > Date.now();
  }

  /** Seconds until the address may try again; undefined while under the limit. */
  async blockedFor(address: string): Promise<number | undefined> {
    if (this.knownClean(address)) return undefined;
    try {
      const count = Number((await this.redis.get(this.key(address))) ?? 0);
      if (count === 0) {
        if (this.clean.size >= CLEAN_MAX) this.clean.clear();
        this.clean.set(address, Date.now() + CLEAN_FOR_MS);
      }
      if (count < this.perMinute) return undefined;
      return Math.max(1, Math.ceil((await this.redis.pttl(this.key(address))) / 1000));
    } catch {
      return undefined;
    }
  }

  async record(address: string): Promise<void> {
    this.clean.delete(address);
    await this.redis.eval(COUNT_FAILURE, 1, this.key(address), FAILURE_WINDOW_MS).catch(() => undefined);
  }
}

export interface ApiKeyAuthOptions {
  keys: KeyRing;
  /** Wrong keys one client address may send per minute before its keyed requests get 429. 0: no limit. */
  failuresPerMinute: number;
  /** Where failures are counted: the producer connection and the queue prefix. */
  redis: RedisClient;
  prefix: string;
  /** CORS is configured: browsers' preflights pass without a key (they cannot send one). */
  cors: boolean;
  /** Identity tokens (AUTH_JWKS_URL, AUTH_JWT_SECRET): a bearer value that is no key but looks like a JWT is verified as one. */
  tokens?: IdentityTokens;
}

export interface KeyAuth {
  /**
   * Requires a key of the ring on every endpoint but the open ones and CORS preflights, and notes
   * the key's id and scope on the request for the routes' scope checks (see access.ts).
   */
  middleware: RequestHandler;
  /**
   * What the middleware lets through at once, judged without a round trip: a bearer value that is
   * a key of the ring, from an address with no wrong keys counted as last seen (its id and scope
   * are then noted on the request, as the middleware does). False leaves the request to the
   * middleware: no key, a wrong one, an identity token, an address not known to be clean.
   */
  passesAtOnce(req: Request): boolean;
}

export function apiKeyAuth(options: ApiKeyAuthOptions): KeyAuth {
  const failures = options.failuresPerMinute > 0 ? new AuthFailures(options.redis, options.prefix, options.failuresPerMinute) : undefined;
  const passesAtOnce = (req: Request): boolean => {
    const presented = presentedKey(req);
    if (presented === undefined || (failures && !failures.knownClean(ipKeyGenerator(req.ip ?? '0.0.0.0')))) return false;
    const key = options.keys.match(presented, req);
    if (!key) return false;
    req.apiKeyId = key.id;
    req.apiKeyScope = key.scope;
    return true;
  };
  const middleware: RequestHandler = async (req, res, next) => {
    if (isOpenPath(req.path) || (options.cors && isPreflight(req))) return next();
    const presented = presentedKey(req);
    let refused: string | undefined;
    let unjudged = false;
    if (presented !== undefined) {
      // ipKeyGenerator groups an IPv6 client's whole /56, which it could otherwise rotate through.
      const address = ipKeyGenerator(req.ip ?? '0.0.0.0');
      const wait = await failures?.blockedFor(address);
      if (wait !== undefined) {
        res.setHeader('retry-after', String(wait));
        res
          .status(429)
          .json(
            errorBody('rate_limited', `more than ${options.failuresPerMinute} wrong API keys a minute from this address; retry after the Retry-After delay`),
          );
        return;
      }
      const key = options.keys.match(presented, req);
      if (key) {
        req.apiKeyId = key.id;
        req.apiKeyScope = key.scope;
        return next();
      }
      // Keys are matched first, so a key costs what it did before tokens existed.
      if (options.tokens && looksLikeJwt(presented)) {
        try {
          const identity = await options.tokens.verify(presented);
          req.apiKeyId = identity.id;
          req.apiKeyScope = identity.scope;
          return next();
        } catch (error) {
          refused = (error as Error).message;
          unjudged = error instanceof TokenRefusedError && error.keysUnavailable;
        }
      }
      // A token that could not be checked (the JWKS is away) is no wrong guess.
      if (!unjudged) await failures?.record(address);
    }
    const browser = BROWSER_PATHS.test(req.path);
    res.setHeader(
      'www-authenticate',
      browser ? 'Basic realm="Orchestrator", charset="UTF-8"' : `Bearer realm="orchestrator"${refused ? ', error="invalid_token"' : ''}`,
    );
    res
      .status(401)
      .json(
        errorBody(
          'unauthorized',
          presented === undefined
            ? `an API key${options.tokens ? ' or identity token' : ''} is required: Authorization: Bearer <key>`
            : (refused ?? 'the API key is not valid'),
        ),
      );
  };
  return { middleware, passesAtOnce };
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
    handler: (_req: Request, res: Response, _next: NextFunction, options) => {
      res.status(options.statusCode).json(errorBody('rate_limited', `more than ${perMinute} requests a minute; retry after the Retry-After delay`));
    },
  });
}
