import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { ExpressAdapter } from '@bull-board/express';
import cors from 'cors';
import express, { type Express } from 'express';
import helmet from 'helmet';
import type { RedisClient } from '../queue/redis.js';
import type { Metrics } from '../observability/metrics.js';
import { traceRequests } from '../observability/http-tracing.js';
import { tracingEnabled } from '../observability/tracing.js';
import { accessLog, apiKeyAuth, requestIds, requestRateLimit } from './middleware.js';
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
import { docsUi, openApiRoute } from './routes/docs.js';
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
  stats: StatsStore;
  system: SystemInfo;
}

const BODY_METHODS = new Set(['POST', 'PUT', 'PATCH']);

/** Route pattern of a request, for metric labels (never the raw path: ids would explode them). */
function routeOf(req: express.Request): string {
  if (req.route?.path) return `${req.baseUrl}${String(req.route.path)}`;
  if (req.baseUrl) return req.baseUrl;
  return 'unmatched';
}

export function createApp(deps: AppDeps): Express {
  const { config, metrics } = deps;
  const app = express();
  app.disable('x-powered-by');
  app.set('trust proxy', config.TRUST_PROXY === undefined ? false : /^\d+$/.test(config.TRUST_PROXY) ? Number(config.TRUST_PROXY) : config.TRUST_PROXY);

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
  // Security headers everywhere; the two browser UIs bring their own scripts and styles.
  const headers = helmet();
  const uiHeaders = helmet({ contentSecurityPolicy: false });
  app.use((req, res, next) => (/^\/(admin\/queues|docs)(\/|$)/.test(req.path) ? uiHeaders : headers)(req, res, next));
  if (config.CORS_ORIGINS.length > 0) {
    app.use(
      cors({
        origin: config.CORS_ORIGINS.includes('*') ? true : config.CORS_ORIGINS,
        exposedHeaders: ['X-Request-Id', 'Retry-After', 'RateLimit', 'RateLimit-Policy'],
        maxAge: 600,
      }),
    );
  }
  if (config.API_KEYS.length > 0) app.use(apiKeyAuth(config.API_KEYS));
  if (config.RATE_LIMIT_PER_MINUTE > 0) app.use(requestRateLimit(config.RATE_LIMIT_PER_MINUTE, deps.redis, config.QUEUE_PREFIX));
  app.get('/metrics', async (_req, res, next) => {
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
  app.use(taskRoutes(deps.tasks));
  app.use(taskEventRoutes({ tasks: deps.tasks, eventLog: deps.eventLog, events: deps.events, logger: deps.logger }, deps.streams));
  app.use(toolRoutes(deps.registry));
  app.use(workflowRoutes(deps.workflows, deps.tasks));
  app.use(deadLetterRoutes(deps.tasks));
  app.use(statsRoutes(deps.stats));

  // The API description, generated from the zod schemas (src/api/openapi.ts), and its UI.
  app.get('/openapi.json', openApiRoute());
  app.use('/docs', docsUi('/openapi.json'));

  const board = new ExpressAdapter();
  board.setBasePath('/admin/queues');
  createBullBoard({ queues: deps.queues.all().map((queue) => new BullMQAdapter(queue)), serverAdapter: board });
  app.use('/admin/queues', board.getRouter());

  app.use((req, res) => {
    res.status(404).json(errorBody('route_not_found', `no route for ${req.method} ${req.path}`));
  });
  app.use(errorMiddleware(deps.logger));
  return app;
}
