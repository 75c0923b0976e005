import type { ErrorRequestHandler, NextFunction, Request, RequestHandler, Response } from 'express';
import type { JsonRoute } from './route.js';
import { expressPath } from './route.js';

/**
 * The seed's own loop — POST /assign-task, then GET /result/{task_id}?wait=N until the task ends —
 * served without Express's router. For each request Express walks its twenty-odd layers, matching
 * each one's path and wrapping each call: 35 µs of the API's CPU per task in the closed loop at
 * 32 clients (a CPU profile; the API spent 1.1-1.3 ms a task), and GET /result of a finished task
 * at 600 requests a second went from 0.19-0.21 to 0.17 ms of CPU each (docs/performance.md, issue
 * 32, 2026-11-29).
 *
 * A hot route runs the functions Express would run for it, in the same order, one after the
 * other: the layers every request passes (the request id, the metrics, the security headers, the
 * key, the body's checks and parser...), admission, then the route's own scope check, schemas and
 * handler; an error goes to the same error handler. So it answers as Express would, byte for byte
 * but what differs between any two answers (the date, a generated request id, a new task's id and
 * times: test/api/hot-routes.test.ts). What is not plain is left to
 * Express: another path or method, a query on the submission's path, an id that is not plain
 * letters, digits and dashes (Express decodes it), a key that does not pass at once (none, a
 * wrong one, an identity token, an address with wrong keys counted: KeyAuth.passesAtOnce).
 */
export interface HotRoutesDeps {
  /**
   * Express's layers before the routes, in order, but the key's check: the request id, tracing,
   * the access log, the metrics, the security headers, CORS; the rate limit and the cross-site
   * check; the body's media type, parser and depth.
   */
  before: readonly RequestHandler[];
  /** The key's check, at once (KeyAuth.passesAtOnce); undefined when authentication is off. */
  passesAtOnce?: (req: Request) => boolean;
  /** Admission's slot of a submission (Admission.middleware); undefined when admission is off. */
  admit?: RequestHandler;
  /** The route's own: scope check, schemas, handler (jsonRouteHandlers). */
  handlers: (route: JsonRoute) => RequestHandler[];
  submit: JsonRoute;
  result: JsonRoute;
  /** Express's last word on an error (errorMiddleware). */
  onError: ErrorRequestHandler;
  /** Counts a request served here, by route pattern (orchestrator_http_hot_requests_total). */
  served: (route: string) => void;
}

/** A result's id as a hot route takes it: nothing to decode (anything else is Express's, which decodes and refuses). */
const PLAIN_ID = /^[A-Za-z0-9-]{1,100}$/;
const RESULT_PREFIX = '/result/';

/** Serves a request on a hot route and answers true, or answers false and leaves it to Express. */
export function hotRoutes(deps: HotRoutesDeps): (req: Request, res: Response) => boolean {
  const submitChain = [...deps.before, ...(deps.admit ? [deps.admit] : []), ...deps.handlers(deps.submit)];
  const resultChain = [...deps.before, ...deps.handlers(deps.result)];
  // Express's router notes the route it matched; the metrics label a request by its pattern.
  const submitRoute = { path: expressPath(deps.submit.path) };
  const resultRoute = { path: expressPath(deps.result.path) };
  return (req, res) => {
    const url = req.url;
    let chain: RequestHandler[];
    if (req.method === 'POST' && url === deps.submit.path) {
      req.params = {};
      req.route = submitRoute;
      chain = submitChain;
    } else if (req.method === 'GET' && url.startsWith(RESULT_PREFIX)) {
      const query = url.indexOf('?');
      const id = url.slice(RESULT_PREFIX.length, query < 0 ? undefined : query);
      if (!PLAIN_ID.test(id)) return false;
      req.params = { task_id: id };
      req.route = resultRoute;
      chain = resultChain;
    } else {
      return false;
    }
    if (deps.passesAtOnce && !deps.passesAtOnce(req)) return false;
    // What Express's app and router set on every request before its first layer.
    req.res = res;
    res.req = req;
    res.locals = Object.create(null) as Record<string, unknown>;
    req.originalUrl = url;
    req.baseUrl = '';
    deps.served(req.route.path);
    run(chain, req, res, deps.onError);
    return true;
  };
}

/** Calls each handler in turn as Express would: the next on next(), the error handler on next(error), a throw or a rejected promise. */
function run(chain: readonly RequestHandler[], req: Request, res: Response, onError: ErrorRequestHandler): void {
  let index = 0;
  const next: NextFunction = (error?: unknown) => {
    if (error !== undefined && error !== null) {
      onError(error, req, res, () => undefined);
      return;
    }
    const handler = chain[index++];
    if (!handler) return;
    try {
      const returned: unknown = handler(req, res, next);
      if (returned instanceof Promise) returned.catch(next);
    } catch (thrown) {
      next(thrown);
    }
  };
  next();
}
