import { type Request, type RequestHandler, type Response, Router } from 'express';
import type pg from 'pg';
import type { z } from 'zod';
import type { WorkerFleet } from '../fleet/worker-fleet.js';
import type { Config } from '../lib/config.js';
import { ValidationError } from '../lib/errors.js';
import { zodProblems } from '../lib/problems.js';
import type { Metrics } from '../observability/metrics.js';
import type { StatsStore } from '../persistence/stats-store.js';
import type { RedisClient } from '../queue/redis.js';
import type { TaskQueues } from '../queue/task-queues.js';
import type { ScheduleService } from '../schedules/schedule-service.js';
import type { ServiceRegistry } from '../services/service-registry.js';
import type { StepLedger } from '../tasks/step-ledger.js';
import type { TaskService } from '../tasks/task-service.js';
import type { WorkflowService } from '../workflows/workflow-service.js';
import { type Access, requireAccess } from './access.js';
import type { ClientSlots } from './client-slots.js';
import type { TaskEventStreamDeps } from './event-streams.js';
import { handle, type Reply } from './http.js';
import type { ApiExample } from './openapi-examples.js';
import type { ToolBody } from './responses.js';

/**
 * A route is declared once (src/api/routes/*.ts): method, path, schemas, summary, scope and
 * answers. The Express router (`routeRouter`) and the OpenAPI document (src/api/openapi.ts) are
 * both made from the same declarations, so neither can serve or describe what the other does not.
 */

type JsonSchema = Record<string, unknown>;
export type HttpMethod = 'get' | 'post' | 'put' | 'patch' | 'delete';

/** One answer of an operation. A JSON body unless `mediaType` says otherwise. */
export interface ApiReply {
  description: string;
  body?: z.ZodType;
  /** @defaultValue 'application/json' when `body` is set */
  mediaType?: string;
  headers?: Record<string, { description: string; schema: JsonSchema }>;
  /** Examples of the body, by name (src/api/openapi-examples.ts); each must fit `body`. */
  examples?: Record<string, ApiExample>;
}

/** The service's name and start time and its connections, for GET /health and GET /version. */
export interface SystemInfo {
  name: string;
  version: string;
  startedAt: number;
  redis: RedisClient;
  pool: pg.Pool;
}

/** What a route's handlers may use; made once per app (src/api/app.ts). */
export interface RouteContext {
  /** The settings in effect (GET /config/effective shows them, secrets as set or not set). */
  config: Config;
  tasks: TaskService;
  workflows: WorkflowService;
  schedules: ScheduleService;
  /** GET /tools's answer: the adapters and the registered services' operations. */
  tools: () => ToolBody[];
  /** The registered services (/services). */
  services: ServiceRegistry;
  /** Workers of users' own and their tools (/workers). */
  fleet: WorkerFleet;
  /** Where a user's worker's step reports go (POST /workers/{worker_id}/steps). */
  ledger: StepLedger;
  stats: StatsStore;
  /** STATS_MAX_WINDOW_DAYS */
  statsMaxWindowDays: number;
  /** GET /stats computed at once in this process (STATS_MAX_CONCURRENT). */
  statsSlots: { max: number; inUse: number };
  system: SystemInfo;
  /** Waiting GET /result requests per client (LONG_POLLS_PER_KEY). */
  longPolls: ClientSlots;
  taskEvents: TaskEventStreamDeps;
  metrics: Metrics;
  /** METRICS_TOKEN; unset: /metrics is open, except in production, where it is not served (metricsClosed). */
  metricsToken?: string;
  /** NODE_ENV=production without METRICS_TOKEN: /metrics answers 404 (the workers' WORKER_METRICS_PORT is a port of its own). */
  metricsClosed?: boolean;
  /** The OpenAPI document as JSON text. */
  openApiJson: () => string;
  queues: TaskQueues;
  /** The built console's directory (CONSOLE_DIR), served at /console. */
  consoleDir: string;
  /** Whether API keys are configured: then a read key gets a read-only Bull Board. */
  keysConfigured: boolean;
}

/** The parsed output of a request schema; `undefined` where the route declares none. */
type Parsed<S> = S extends z.ZodType ? z.output<S> : undefined;

/** What a JSON handler receives: the request's parts, parsed with the route's schemas. */
export interface RouteInput<P = unknown, Q = unknown, B = unknown> {
  params: P;
  query: Q;
  body: B;
  req: Request;
  res: Response;
}

interface Declaration {
  method: HttpMethod;
  /** In OpenAPI form: `/result/{task_id}`. */
  path: string;
  operationId: string;
  summary: string;
  description?: string;
  tags: string[];
  /** Request headers the operation reads. Described, not validated: the handler reads them. */
  headers?: z.ZodObject;
  /**
   * Examples of the body, by name. The first is what Swagger UI's "Try it out" pre-fills: each
   * must pass `body` and succeed on a default install (test/api/openapi-examples.test.ts).
   */
  bodyExamples?: Record<string, ApiExample>;
  /** Example values of path and query parameters, by name: what "Try it out" pre-fills. */
  paramExamples?: Record<string, string | number>;
  /** Browser pages: basic auth (any user name, the key as password) works as well as a bearer key. */
  browser?: boolean;
  /** Creates tasks: admission control may refuse it (503 `overloaded`) before anything else runs. */
  admission?: boolean;
  /** Makes work through the services' gate (src/tasks/work-gate.ts): the policy may refuse it (403 `policy_denied`). */
  gated?: boolean;
  responses: Record<number, ApiReply>;
}

/**
 * Who may call a route: anyone even when API_KEYS is set (`open`: load balancers, scrapers), or
 * the keys whose scope `access` lists (src/api/access.ts); the router checks it before anything else.
 */
type Guard = { open: true; access?: undefined } | { open?: false; access: Access };

/** A route whose handler answers JSON (or streams, given `res`), with its inputs validated first. */
export type JsonRoute<
  P extends z.ZodObject | undefined = z.ZodObject | undefined,
  Q extends z.ZodObject | undefined = z.ZodObject | undefined,
  B extends z.ZodType | undefined = z.ZodType | undefined,
> = Declaration &
  Guard & {
    params?: P;
    query?: Q;
    body?: B;
    /** The answer to a body that does not fit `body`. @defaultValue `validation_error`, "the request body is invalid" */
    invalidBody?: { code: string; message: string };
    /** Answers the request; `undefined` when it streamed its own answer through `res`. */
    handler: (input: RouteInput<Parsed<P>, Parsed<Q>, Parsed<B>>, ctx: RouteContext) => Promise<Reply | undefined>;
    serve?: undefined;
    mount?: undefined;
    writeAccess?: undefined;
    beforeBody?: undefined;
  };

/** A route Express serves with a handler of its own: pages, files, text (not JSON). */
export type PlainRoute = Declaration &
  Guard & {
    /** Path parameters, described (the handler reads req.params itself). */
    params?: z.ZodObject;
    query?: undefined;
    body?: undefined;
    serve: (ctx: RouteContext) => RequestHandler;
    /** Serves the path and everything below it (a whole UI with its assets), for every method. */
    mount?: boolean;
    /** On a mount: the access methods other than GET and HEAD need (Bull Board's actions). @defaultValue `access` */
    writeAccess?: Access;
    /** Served before the body is parsed: a request is never refused for its body. */
    beforeBody?: boolean;
    handler?: undefined;
    invalidBody?: undefined;
  };

export type Route = JsonRoute | PlainRoute;

/** Declares a JSON route; its handler's inputs are typed by its schemas. */
export function route<
  P extends z.ZodObject | undefined = undefined,
  Q extends z.ZodObject | undefined = undefined,
  B extends z.ZodType | undefined = undefined,
>(declaration: JsonRoute<P, Q, B>): Route {
  return declaration as unknown as Route;
}

/** Declares a route served by a plain Express handler. */
export function plainRoute(declaration: PlainRoute): Route {
  return declaration;
}

/** `/result/{task_id}` -> `/result/:task_id`. */
export function expressPath(path: string): string {
  return path.replace(/\{(\w+)\}/g, ':$1');
}

/** Parses with a zod schema or throws a 400 listing every problem. */
function parse(schema: z.ZodType | undefined, value: unknown, refusal: { code: string; message: string }): unknown {
  if (!schema) return undefined;
  const parsed = schema.safeParse(value);
  if (!parsed.success) throw new ValidationError(refusal.message, zodProblems(parsed.error), refusal.code);
  return parsed.data;
}

const INVALID_PATH = { code: 'validation_error', message: 'the path is invalid' };
const INVALID_QUERY = { code: 'validation_error', message: 'the query is invalid' };
const INVALID_BODY = { code: 'validation_error', message: 'the request body is invalid' };

function guard(route: Route): RequestHandler[] {
  if (route.open) return [];
  const read = requireAccess(route.access);
  if (!route.serve || !route.mount || !route.writeAccess) return [read];
  const write = requireAccess(route.writeAccess);
  return [(req, res, next) => (req.method === 'GET' || req.method === 'HEAD' ? read : write)(req, res, next)];
}

/**
 * What serves a JSON route once it is matched: the scope check, then the path parameters, query
 * and body parsed with the route's schemas (400 with every problem), then the handler. The
 * router below and the hot routes (src/api/hot-routes.ts) both serve a route with these.
 */
export function jsonRouteHandlers(declared: JsonRoute, ctx: RouteContext): RequestHandler[] {
  const { handler, params, query, body } = declared;
  const invalidBody = declared.invalidBody ?? INVALID_BODY;
  return [
    ...guard(declared),
    handle(async (req, res) => {
      const input: RouteInput = {
        params: parse(params, req.params, INVALID_PATH),
        query: parse(query, req.query, INVALID_QUERY),
        // A request without a body is read as {}: the schema says whether that is enough.
        body: parse(body, req.body ?? {}, invalidBody),
        req,
        res,
      };
      return handler(input as RouteInput<never, never, never>, ctx);
    }),
  ];
}

/** The Express router of some routes, in their order (a JSON route served by jsonRouteHandlers). */
export function routeRouter(routes: readonly Route[], ctx: RouteContext): Router {
  const router = Router();
  for (const declared of routes) {
    const path = expressPath(declared.path);
    if (declared.serve) {
      const checks = guard(declared);
      const served = declared.serve(ctx);
      if (declared.mount) router.use(path, ...checks, served);
      else router[declared.method](path, ...checks, served);
      continue;
    }
    router[declared.method](path, ...jsonRouteHandlers(declared, ctx));
  }
  return router;
}
