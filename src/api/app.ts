import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { ExpressAdapter } from '@bull-board/express';
import cors from 'cors';
import express, { type Express } from 'express';
import helmet from 'helmet';
import type { RedisClient } from '../queue/redis.js';
import { scrapeAuthorized, type Metrics } from '../observability/metrics.js';
import { traceRequests } from '../observability/http-tracing.js';
import { tracingEnabled } from '../observability/tracing.js';
import { accessLog, apiKeyAuth, BROWSER_PATHS, isPreflight, requestIds, requestRateLimit } from './middleware.js';
import { requireAccess } from './access.js';
import type { KeyRing } from './api-keys.js';
import type { Admission } from './admission.js';
import { ClientSlots } from './client-slots.js';
import type { Config } from '../config.js';
import type { Logger } from '../logger.js';
import { errorBody, errorMiddleware, jsonDepth, MAX_JSON_DEPTH } from './http.js';
import { systemRoutes, type SystemInfo } from './routes/system.js';
import { taskRoutes } from './routes/tasks.js';
import { toolRoutes } from './routes/tools.js';
import { workflowRoutes } from './routes/workflows.js';
import { deadLetterRoutes } from './routes/dead-letters.js';
import { statsRoutes } from './routes/stats.js';
import type { StatsStore } from '../persistence/stats-store.js';
import { docsUi, openApiRoute, redocUi } from './routes/docs.js';
import type { WorkflowService } from '../workflows/workflow-service.js';
import { taskEventRoutes, type EventStreams } from './routes/task-events.js';
import type { EventLog } from '../queue/event-log.js';
import type { TaskEvents } from '../queue/task-events.js';
import type { TaskService } from '../tasks/task-service.js';
import type { ToolRegistry } from '../tools/tool.js';
import type { TaskQueues } from '../queue/task-queues.js';

export interface AppDeps {
  config: Config;
  logger: Logger;
  metrics: Metrics;
  /** The producer connection: rate limits are counted in Redis. */
  redis: RedisClient;
  registry: ToolRegistry;
  tasks: TaskService;
  workflows: WorkflowService;
  queues: TaskQueues;
  eventLog: EventLog;
  events: TaskEvents;
  streams: EventStreams;
  /** Refuses new tasks while the backlog is more than the workers drain in ADMISSION_MAX_WAIT_MS. */
  admission?: Admission;
  stats: StatsStore;
  system: SystemInfo;
  /** The API keys; undefined: authentication is off. */
  keys?: KeyRing;
}

const BODY_METHODS = new Set(['POST', 'PUT', 'PATCH']);
const REDOC_PATHS = /^\/redoc(\/|$)/;

/** Route pattern of a request, for metric labels (never the raw path: ids would explode them). */
function routeOf(req: express.Request): string {
  if (req.route?.path) return `${req.baseUrl}${String(req.route.path)}`;
  if (req.baseUrl) return req.baseUrl;
  return 'unmatched';
}

function bullBoard(queues: TaskQueues, readOnlyMode: boolean): express.Router {
  const adapter = new ExpressAdapter();
  adapter.setBasePath('/admin/queues');
  // With several shards each queue appears once per shard, named after its shard ("2.tool.echo").
  const adapters = queues.shards.flatMap((shard) =>
    shard.all().map((queue) => new BullMQAdapter(queue, { readOnlyMode, ...(queues.shards.length > 1 ? { prefix: `${shard.index}.` } : {}) })),
  );
  createBullBoard({ queues: adapters, serverAdapter: adapter });
  return adapter.getRouter() as express.Router;
}

export function createApp(deps: AppDeps): Express {
  const { config, metrics } = deps;
  const app = express();
  app.disable('x-powered-by');
  app.set('trust proxy', config.TRUST_PROXY === undefined ? false : /^\d+$/.test(config.TRUST_PROXY) ? Number(config.TRUST_PROXY) : config.TRUST_PROXY);

  // First of all, before ids, logs, metrics, keys and the body: under overload a refusal must
  // cost next to nothing, or answering refusals takes the CPU the workers need.
  if (deps.admission?.enabled) app.post(['/assign-task', '/workflows/:name/execute'], deps.admission.middleware());
  app.use(requestIds());
  // Off, not even mounted: tracing costs nothing per request.
  if (tracingEnabled()) app.use(traceRequests());
  app.use(accessLog(deps.logger));
  app.use((req, res, next) => {
    const stop = metrics.httpDuration.startTimer();
    res.on('finish', () => {
      const route = routeOf(req);
      stop({ method: req.method, route });
      metrics.httpRequests.inc({ method: req.method, route, status: String(res.statusCode) });
    });
    next();
  });
  // Security headers everywhere. Bull Board and Swagger UI bring inline scripts and styles: no
  // CSP there. ReDoc's page has none; it needs only to start its search worker from a blob: URL
  // (its logo, which the bundle fetches from Redocly's CDN, stays blocked: the page hides it).
  // Without upgrade-insecure-requests there, so that the page also works over plain HTTP on
  // another host than localhost (its script and /openapi.json would be asked for over HTTPS).
  const headers = helmet();
  const uiHeaders = helmet({ contentSecurityPolicy: false });
  const redocHeaders = helmet({ contentSecurityPolicy: { directives: { workerSrc: ["'self'", 'blob:'], upgradeInsecureRequests: null } } });
  app.use((req, res, next) => (REDOC_PATHS.test(req.path) ? redocHeaders : BROWSER_PATHS.test(req.path) ? uiHeaders : headers)(req, res, next));
  const corsEnabled = config.CORS_ORIGINS.length > 0;
  if (corsEnabled) {
    const corsHeaders = cors({
      origin: config.CORS_ORIGINS.includes('*') ? true : config.CORS_ORIGINS,
      exposedHeaders: ['X-Request-Id', 'Retry-After', 'RateLimit', 'RateLimit-Policy'],
      maxAge: 600,
    });
    // cors() would answer any OPTIONS as a preflight; one that is not goes through the key check.
    app.use((req, res, next) => (req.method === 'OPTIONS' && !isPreflight(req) ? next() : corsHeaders(req, res, next)));
  }
  if (deps.keys) {
    app.use(apiKeyAuth({ keys: deps.keys, failuresPerMinute: config.AUTH_FAILURES_PER_MINUTE, redis: deps.redis, prefix: config.QUEUE_PREFIX, cors: corsEnabled }));
  }
  if (config.RATE_LIMIT_PER_MINUTE > 0) app.use(requestRateLimit(config.RATE_LIMIT_PER_MINUTE, deps.redis, config.QUEUE_PREFIX));
  app.get('/metrics', async (req, res, next) => {
    if (!scrapeAuthorized(config.METRICS_TOKEN, req.get('authorization'))) {
      res.setHeader('www-authenticate', 'Bearer realm="metrics"');
      res.status(401).json(errorBody('unauthorized', 'the metrics need METRICS_TOKEN: Authorization: Bearer <token>'));
      return;
    }
    try {
      res.set('content-type', metrics.registry.contentType).send(await metrics.registry.metrics());
    } catch (error) {
      next(error);
    }
  });

  // A body that is not JSON is refused up front rather than read as empty.
  app.use((req, res, next) => {
    const hasBody = Number(req.headers['content-length'] ?? 0) > 0 || req.headers['transfer-encoding'] !== undefined;
    if (BODY_METHODS.has(req.method) && hasBody && !req.is('application/json') && !req.path.startsWith('/admin/')) {
      res.status(415).json(errorBody('unsupported_media_type', 'send the body as application/json'));
      return;
    }
    next();
  });
  app.use(express.json({ limit: deps.config.BODY_LIMIT, strict: true }));
  // Every later walk of the body (validation, templates, hashing) may recurse: bound it here.
  app.use((req, res, next) => {
    if (req.body !== undefined && jsonDepth(req.body) > MAX_JSON_DEPTH) {
      res.status(400).json(errorBody('invalid_json', `the request body is nested deeper than ${MAX_JSON_DEPTH} levels`));
      return;
    }
    next();
  });

  app.use(systemRoutes(deps.system));
  const slots = (kind: string, max: number, leaseMs: number) => new ClientSlots({ redis: deps.redis, logger: deps.logger, prefix: config.QUEUE_PREFIX, kind, max, leaseMs });
  // A slot a crashed process never gave back lapses a minute after its request could have ended.
  app.use(taskRoutes(deps.tasks, slots('long-polls', config.LONG_POLLS_PER_KEY, config.RESULT_WAIT_MAX_S * 1000 + 60_000)));
  app.use(
    taskEventRoutes(
      {
        tasks: deps.tasks,
        eventLog: deps.eventLog,
        events: deps.events,
        logger: deps.logger,
        slots: slots('streams', config.EVENT_STREAMS_PER_KEY, config.EVENT_STREAM_MAX_S * 1000 + 60_000),
        maxLifetimeMs: config.EVENT_STREAM_MAX_S * 1000,
      },
      deps.streams,
    ),
  );
  app.use(toolRoutes(deps.registry));
  app.use(workflowRoutes(deps.workflows, deps.tasks));
  app.use(deadLetterRoutes(deps.tasks));
  app.use(statsRoutes(deps.stats, config.STATS_MAX_WINDOW_DAYS));

  // The API description, generated from the zod schemas (src/api/openapi.ts), and its UI.
  app.get('/openapi.json', requireAccess('catalog'), openApiRoute());
  app.use('/docs', requireAccess('catalog'), docsUi('/openapi.json'));
  app.use('/redoc', requireAccess('catalog'), redocUi('/openapi.json'));

  // Bull Board shows every task's job data: admin and read keys only. Its API changes queues
  // with anything but GET, so those need admin; a read key gets a board in read-only mode too,
  // so the page offers no buttons it could not use.
  const board = bullBoard(deps.queues, false);
  const readOnlyBoard = deps.keys ? bullBoard(deps.queues, true) : board;
  const [monitor, admin] = [requireAccess('monitor'), requireAccess('admin')];
  app.use(
    '/admin/queues',
    (req, res, next) => (req.method === 'GET' || req.method === 'HEAD' ? monitor : admin)(req, res, next),
    (req, res, next) => (req.apiKeyScope === undefined || req.apiKeyScope === 'admin' ? board : readOnlyBoard)(req, res, next),
  );

  app.use((req, res) => {
    res.status(404).json(errorBody('route_not_found', `no route for ${req.method} ${req.path}`));
  });
  app.use(errorMiddleware(deps.logger));
  return app;
}
