import cors from 'cors';
import express, { type Express, type RequestHandler } from 'express';
import helmet from 'helmet';
import type { WorkerFleet } from '../fleet/worker-fleet.js';
import type { Config } from '../lib/config.js';
import type { Logger } from '../lib/logger.js';
import { traceRequests } from '../observability/http-tracing.js';
import type { Metrics } from '../observability/metrics.js';
import { tracingEnabled } from '../observability/tracing.js';
import type { StatsStore } from '../persistence/stats-store.js';
import type { EventLog } from '../queue/event-log.js';
import type { EventNotices } from '../queue/event-notices.js';
import type { RedisClient } from '../queue/redis.js';
import type { TaskQueues } from '../queue/task-queues.js';
import type { ScheduleService } from '../schedules/schedule-service.js';
import type { ServiceRegistry } from '../services/service-registry.js';
import type { StepLedger } from '../tasks/step-ledger.js';
import type { TaskService } from '../tasks/task-service.js';
import type { ToolRegistry } from '../tools/tool.js';
import type { WorkflowService } from '../workflows/workflow-service.js';
import type { Admission } from './admission.js';
import type { KeyRing } from './api-keys.js';
import { ClientSlots } from './client-slots.js';
import type { EventStreams } from './event-streams.js';
import { hotRoutes } from './hot-routes.js';
import { errorBody, errorMiddleware, jsonDepth, MAX_JSON_DEPTH } from './http.js';
import type { IdentityTokens } from './identity-tokens.js';
import { accessLog, apiKeyAuth, BROWSER_PATHS, csrfGuard, isPreflight, PAGE_PATHS, requestIds, requestRateLimit } from './middleware.js';
import { openApiJson } from './openapi.js';
import type { SystemInfo } from './route.js';
import { expressPath, type JsonRoute, jsonRouteHandlers, type RouteContext, routeRouter } from './route.js';
import { CONSOLE_PATH, DEFAULT_CONSOLE_DIR } from './routes/console.js';
import { ROUTES } from './routes/index.js';
import { describeTool } from './routes/tools.js';

export interface AppDeps {
  config: Config;
  logger: Logger;
  metrics: Metrics;
  /** The producer connection: rate limits are counted in Redis. */
  redis: RedisClient;
  registry: ToolRegistry;
  services: ServiceRegistry;
  fleet: WorkerFleet;
  ledger: StepLedger;
  tasks: TaskService;
  workflows: WorkflowService;
  schedules: ScheduleService;
  queues: TaskQueues;
  eventLog: EventLog;
  events: EventNotices;
  streams: EventStreams;
  /** Refuses new tasks while the backlog is more than the workers drain in ADMISSION_MAX_WAIT_MS. */
  admission?: Admission;
  stats: StatsStore;
  system: SystemInfo;
  /** The API keys; undefined: authentication is off. */
  keys?: KeyRing;
  /** Identity tokens accepted beside the keys (only with `keys`: authentication is on). */
  tokens?: IdentityTokens;
}

const BODY_METHODS = new Set(['POST', 'PUT', 'PATCH']);
const REDOC_PATHS = /^\/redoc(\/|$)/;
const OWN_PAGES = new RegExp(`^(${CONSOLE_PATH}|/docs)(/|$)`);

/** Route pattern of a request, for metric labels (never the raw path: ids would explode them). */
function routeOf(req: express.Request): string {
  if (req.route?.path) return `${req.baseUrl}${String(req.route.path)}`;
  if (req.baseUrl) return req.baseUrl;
  return 'unmatched';
}

/** The API's HTTP handling: Express, and the hot routes served ahead of it with the same functions (src/api/hot-routes.ts). */
export interface ApiApp {
  app: Express;
  /** Serves a request on a hot route (true), or leaves it to `app` (false). */
  hot: (req: express.Request, res: express.Response) => boolean;
}

/**
 * Records the headers a helmet middleware sets: for a given configuration they are the same on
 * every answer, and setting them from a list costs a fraction of running helmet each time. The
 * one header helmet removes, X-Powered-By, this app never sets (`x-powered-by` is disabled).
 */
function fixedHeaders(middleware: RequestHandler): RequestHandler {
  const headers: [string, string][] = [];
  const recorder = {
    setHeader: (name: string, value: string) => headers.push([name, value]),
    removeHeader: () => undefined,
  };
  middleware({} as express.Request, recorder as unknown as express.Response, () => undefined);
  return (_req, res, next) => {
    for (const [name, value] of headers) res.setHeader(name, value);
    next();
  };
}

export function createApp(deps: AppDeps): ApiApp {
  const { config, metrics } = deps;
  const app = express();
  app.disable('x-powered-by');
  // No ETag on the API's answers: a task's state is read fresh for each request and nobody asks
  // with If-None-Match, while hashing every body was 1 % of the API's busy time in the closed loop at 32 clients.
  // Static files (the console, Swagger UI) keep theirs (express.static sets its own).
  app.set('etag', false);
  app.set('trust proxy', config.TRUST_PROXY === undefined ? false : /^\d+$/.test(config.TRUST_PROXY) ? Number(config.TRUST_PROXY) : config.TRUST_PROXY);

  // What every request passes first, in this order (the hot routes too).
  const front: RequestHandler[] = [requestIds()];
  // Off, not even mounted: tracing costs nothing per request.
  if (tracingEnabled()) front.push(traceRequests());
  front.push(accessLog(deps.logger), (req, res, next) => {
    const stop = metrics.httpDuration.startTimer();
    res.on('finish', () => {
      const route = routeOf(req);
      stop({ method: req.method, route });
      metrics.httpRequests.inc({ method: req.method, route, status: String(res.statusCode) });
    });
    next();
  });
  // Security headers everywhere, by what the path answers. A JSON (or text) answer gets the
  // OWASP REST set, stricter than a page's where it applies (nothing may load, no frame may hold
  // it); a document's other headers (opener and origin-agent isolation, referrer, DNS prefetch,
  // Flash's and IE8's) say nothing to a JSON body and were 430 bytes of every answer: at 250
  // tasks/s of submit-then-wait, 0.14 ms of the API's CPU per task (docs/performance.md,
  // 2026-11-28). A page of the API's own (an approval link's) gets helmet's defaults.
  const apiHeaders = fixedHeaders(
    helmet({
      contentSecurityPolicy: { useDefaults: false, directives: { defaultSrc: ["'none'"], frameAncestors: ["'none'"] } },
      xFrameOptions: { action: 'deny' },
      crossOriginOpenerPolicy: false,
      originAgentCluster: false,
      referrerPolicy: false,
      xDnsPrefetchControl: false,
      xDownloadOptions: false,
      xPermittedCrossDomainPolicies: false,
      xXssProtection: false,
    }),
  );
  const pageHeaders = helmet();
  // Bull Board brings inline scripts and styles: no CSP there. ReDoc's page has none; it needs
  // only to start its search worker from a blob: URL (its logo, which the bundle fetches from
  // Redocly's CDN, stays blocked: the page hides it). Without upgrade-insecure-requests there, so
  // that the page also works over plain HTTP on another host than localhost (its script and
  // /openapi.json would be asked for over HTTPS).
  const uiHeaders = helmet({ contentSecurityPolicy: false });
  const redocHeaders = helmet({ contentSecurityPolicy: { directives: { workerSrc: ["'self'", 'blob:'], upgradeInsecureRequests: null } } });
  // The console is built by this project, and Swagger UI's page is this project's (it holds the
  // key it was opened with): their scripts are files of their own, so they run under the default
  // policy (without upgrade-insecure-requests, for the same reason as ReDoc).
  const ownPageHeaders = helmet({ contentSecurityPolicy: { directives: { upgradeInsecureRequests: null } } });
  const headersFor = (path: string) =>
    REDOC_PATHS.test(path)
      ? redocHeaders
      : OWN_PAGES.test(path)
        ? ownPageHeaders
        : BROWSER_PATHS.test(path)
          ? uiHeaders
          : PAGE_PATHS.test(path)
            ? pageHeaders
            : apiHeaders;
  front.push((req, res, next) => headersFor(req.path)(req, res, next));
  const corsEnabled = config.CORS_ORIGINS.length > 0;
  if (corsEnabled) {
    const corsHeaders = cors({
      origin: config.CORS_ORIGINS.includes('*') ? true : config.CORS_ORIGINS,
      exposedHeaders: ['X-Request-Id', 'Retry-After', 'RateLimit', 'RateLimit-Policy'],
      maxAge: 600,
    });
    // cors() would answer any OPTIONS as a preflight; one that is not goes through the key check.
    front.push((req, res, next) => (req.method === 'OPTIONS' && !isPreflight(req) ? next() : corsHeaders(req, res, next)));
  }
  for (const handler of front) app.use(handler);
  const keyAuth = deps.keys
    ? apiKeyAuth({
        keys: deps.keys,
        failuresPerMinute: config.AUTH_FAILURES_PER_MINUTE,
        redis: deps.redis,
        prefix: config.QUEUE_PREFIX,
        cors: corsEnabled,
        ...(deps.tokens ? { tokens: deps.tokens } : {}),
      })
    : undefined;
  if (keyAuth) app.use(keyAuth.middleware);
  // After the key: what counts requests per key, and the check of a browser's cross-site POST.
  const keyed: RequestHandler[] = [];
  if (config.RATE_LIMIT_PER_MINUTE > 0) keyed.push(requestRateLimit(config.RATE_LIMIT_PER_MINUTE, deps.redis, config.QUEUE_PREFIX));
  keyed.push(csrfGuard());
  for (const handler of keyed) app.use(handler);
  const slots = (kind: string, max: number, leaseMs: number) =>
    new ClientSlots({ redis: deps.redis, logger: deps.logger, prefix: config.QUEUE_PREFIX, kind, max, leaseMs });
  const context: RouteContext = {
    config,
    tasks: deps.tasks,
    workflows: deps.workflows,
    schedules: deps.schedules,
    tools: () => deps.registry.list().map(describeTool),
    services: deps.services,
    fleet: deps.fleet,
    ledger: deps.ledger,
    stats: deps.stats,
    statsMaxWindowDays: config.STATS_MAX_WINDOW_DAYS,
    statsSlots: { max: config.STATS_MAX_CONCURRENT, inUse: 0 },
    system: deps.system,
    // A slot a crashed process never gave back lapses a minute after its request could have ended.
    longPolls: slots('long-polls', config.LONG_POLLS_PER_KEY, config.RESULT_WAIT_MAX_S * 1000 + 60_000),
    taskEvents: {
      tasks: deps.tasks,
      eventLog: deps.eventLog,
      events: deps.events,
      logger: deps.logger,
      slots: slots('streams', config.EVENT_STREAMS_PER_KEY, config.EVENT_STREAM_MAX_S * 1000 + 60_000),
      maxLifetimeMs: config.EVENT_STREAM_MAX_S * 1000,
      streams: deps.streams,
    },
    metrics,
    ...(config.METRICS_TOKEN !== undefined ? { metricsToken: config.METRICS_TOKEN } : {}),
    metricsClosed: config.NODE_ENV === 'production' && config.METRICS_TOKEN === undefined,
    // The document says what this service requires: a key on every operation, or none.
    openApiJson: () => openApiJson(deps.keys !== undefined),
    queues: deps.queues,
    keysConfigured: deps.keys !== undefined,
    consoleDir: config.CONSOLE_DIR ?? DEFAULT_CONSOLE_DIR,
  };
  // Routes that answer whatever body a request carries (the metrics) come before it is parsed.
  app.use(
    routeRouter(
      ROUTES.filter((route) => route.beforeBody),
      context,
    ),
  );

  const body: RequestHandler[] = [
    // A body that is not JSON is refused up front rather than read as empty.
    (req, res, next) => {
      const hasBody = Number(req.headers['content-length'] ?? 0) > 0 || req.headers['transfer-encoding'] !== undefined;
      if (BODY_METHODS.has(req.method) && hasBody && !req.is('application/json') && !req.path.startsWith('/admin/')) {
        res.status(415).json(errorBody('unsupported_media_type', 'send the body as application/json'));
        return;
      }
      next();
    },
    express.json({ limit: deps.config.BODY_LIMIT, strict: true }),
    // Every later walk of the body (validation, templates, hashing) may recurse: bound it here.
    (req, res, next) => {
      if (req.body !== undefined && jsonDepth(req.body) > MAX_JSON_DEPTH) {
        res.status(400).json(errorBody('invalid_json', `the request body is nested deeper than ${MAX_JSON_DEPTH} levels`));
        return;
      }
      next();
    },
  ];
  for (const handler of body) app.use(handler);

  // The in-flight slot of a submission: after the key and the body, so that slow uploads hold
  // none. The cheap refusals come before Express (Admission.front, in src/api/server.ts).
  const admit = deps.admission?.enabled ? deps.admission.middleware() : undefined;
  if (admit) {
    for (const route of ROUTES.filter((candidate) => candidate.admission)) app[route.method](expressPath(route.path), admit);
  }
  app.use(
    routeRouter(
      ROUTES.filter((route) => !route.beforeBody),
      context,
    ),
  );

  app.use((req, res) => {
    res.status(404).json(errorBody('route_not_found', `no route for ${req.method} ${req.path}`));
  });
  const onError = errorMiddleware(deps.logger);
  app.use(onError);
  const hot = hotRoutes({
    before: [...front, ...keyed, ...body],
    ...(keyAuth ? { passesAtOnce: keyAuth.passesAtOnce } : {}),
    ...(admit ? { admit } : {}),
    handlers: (route) => jsonRouteHandlers(route, context),
    submit: jsonRoute('assignTask'),
    result: jsonRoute('getResult'),
    onError,
    served: (route) => metrics.httpHotRequests.inc({ route }),
  });
  return { app, hot };
}

/** A JSON route by its operation id. */
function jsonRoute(operationId: string): JsonRoute {
  const found = ROUTES.find((route) => route.operationId === operationId);
  if (!found || found.serve) throw new Error(`no JSON route ${operationId}`);
  return found;
}
