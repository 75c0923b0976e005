import { createServer, IncomingMessage, type Server, ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Express, Request, Response } from 'express';
import { ipKeyGenerator } from 'express-rate-limit';
import { openCore } from '../composition.js';
import type { Config } from '../lib/config.js';
import type { Logger } from '../lib/logger.js';
import { PACKAGE } from '../lib/package-root.js';
import { Metrics } from '../observability/metrics.js';
import { StatsStore } from '../persistence/stats-store.js';
import { toolQueueName } from '../queue/jobs.js';
import { Shards } from '../queue/shards.js';
import { ScheduleService } from '../schedules/schedule-service.js';
import { runsLedger } from '../tasks/step-ledger.js';
import type { TaskService } from '../tasks/task-service.js';
import type { ToolRegistry } from '../tools/tool.js';
import type { WorkflowService } from '../workflows/workflow-service.js';
import { Admission } from './admission.js';
import { type KeyRing, openKeyRing } from './api-keys.js';
import { createApp } from './app.js';
import { EventStreams } from './event-streams.js';
import { errorBody } from './http.js';
import { IdentityTokens } from './identity-tokens.js';
import { ROUTES } from './routes/index.js';

/**
 * Request and response constructors whose instances have the app's prototypes from the start.
 * Express gives every request and response its app's prototypes (Object.setPrototypeOf, so that
 * a mounted app can bring others), and changing an object's prototype deoptimizes every later
 * access to it, Node's own HTTP code's included (expressjs/express#5998). Made by these, Express's
 * setPrototypeOf finds the prototype in place and changes nothing. Node's IncomingMessage and
 * ServerResponse are plain constructor functions, applied here to the new object as an old-style
 * subclass's constructor would (Reflect.construct with another new.target measured slower than Express's
 * own swap); should a later Node make them classes, the server keeps Node's (the swap's cost).
 */
function expressMade(app: Express): { IncomingMessage?: typeof IncomingMessage; ServerResponse?: typeof ServerResponse } {
  const isClass = (made: unknown) => Function.prototype.toString.call(made).startsWith('class');
  if (isClass(IncomingMessage) || isClass(ServerResponse)) return {};
  function ExpressRequest(this: IncomingMessage, socket: Socket) {
    Reflect.apply(IncomingMessage, this, [socket]);
  }
  ExpressRequest.prototype = app.request;
  function ExpressResponse(this: ServerResponse, req: IncomingMessage, options?: unknown) {
    Reflect.apply(ServerResponse, this, [req, options]);
  }
  ExpressResponse.prototype = app.response;
  return {
    IncomingMessage: ExpressRequest as unknown as typeof IncomingMessage,
    ServerResponse: ExpressResponse as unknown as typeof ServerResponse,
  };
}

/** While closing: how often connections that turned idle (their last answer sent) are ended. */
const CLOSE_IDLE_SWEEP_MS = 50;

export interface ApiServer {
  server: Server;
  /** The Express app behind the server's front door (Admission.front). */
  app: Express;
  url: string;
  tasks: TaskService;
  workflows: WorkflowService;
  /** Stops accepting connections, waits for requests in flight, then closes queues, database and Redis. */
  close(): Promise<void>;
}

/**
 * Starts the HTTP API. The database must already be migrated (see prepareDatabase). `registry`:
 * tools of the API's own, beside those workers registered (the fleet's) and the services'; none in
 * production (src/api/main.ts), the adapters and test doubles in tests that run the API in their
 * own process. `keys`: as opened by openKeyRing at boot; opened here when not given. The server
 * closes them.
 */
export async function startApi(config: Config, logger: Logger, registry: ToolRegistry, metrics = new Metrics(), keys?: KeyRing): Promise<ApiServer> {
  const ring = keys ?? (await openKeyRing(config, logger));
  const tokens = IdentityTokens.fromConfig(config);
  const core = await openCore({ config, logger, metrics, tools: registry, role: 'api' });
  const { db, redis, services, queues, events, eventLog, store, scheduleStore, scheduleQueue, quotas, workflows, tasks } = core;
  registry = core.tools;
  events.start();
  metrics.addGauges(
    {
      queueDepth: async () =>
        [...(await queues.depths())].flatMap(([queue, byState]) => Object.entries(byState).map(([state, count]) => ({ queue, state, count }))),
      activeTasks: () => store.activeCounts(),
      openDeadLetters: () => store.openDeadLetters(),
    },
    { cacheMs: config.METRICS_CACHE_MS },
  );
  // Examples whose tools no worker registered yet (a fresh database) wait: the built-in worker loads them once it has.
  await workflows.loadExamples();
  const schedules = new ScheduleService({
    store: scheduleStore,
    queue: scheduleQueue,
    logger,
    checkTask: (request, options) => tasks.check(request, options),
    reachability: db.reachability,
    maxPerOwner: config.SCHEDULES_MAX_PER_KEY,
  });
  const streams = new EventStreams();
  const admission = new Admission(
    redis,
    Shards.of(config),
    () => [...new Set(registry.names().map(toolQueueName))],
    {
      maxWaitMs: config.ADMISSION_MAX_WAIT_MS,
      minBacklog: config.ADMISSION_MIN_BACKLOG,
      maxBacklog: config.ADMISSION_MAX_BACKLOG,
      sampleMs: config.ADMISSION_SAMPLE_MS,
      maxInFlight: config.ADMISSION_MAX_IN_FLIGHT,
      maxInFlightPerKey: config.ADMISSION_MAX_IN_FLIGHT_PER_KEY,
      refusalDelayMs: config.ADMISSION_REFUSAL_DELAY_MS,
    },
    metrics,
    logger,
    {
      ...(quotas.enabled ? { counts: () => quotas.counts() } : {}),
      identify: frontDoorClient(config, ring),
      paths: new RegExp(
        `^(${ROUTES.filter((route) => route.admission && route.method === 'post')
          .map((route) => route.path.replace(/\{\w+\}/g, '[^/]+'))
          .join('|')})/?$`,
      ),
    },
  );
  admission.start();
  const { app, hot } = createApp({
    config,
    logger,
    metrics,
    redis,
    registry,
    services,
    fleet: core.fleet,
    ledger: runsLedger(core.runs),
    tasks,
    workflows,
    schedules,
    queues,
    eventLog,
    events,
    streams,
    admission,
    stats: new StatsStore(db.prisma, { statementTimeoutMs: config.STATS_STATEMENT_TIMEOUT_MS }),
    system: { name: PACKAGE.name, version: PACKAGE.version, startedAt: Date.now(), redis, pool: db.pool },
    ...(ring.required ? { keys: ring } : {}),
    ...(ring.required && tokens ? { tokens } : {}),
  });

  // Submissions admission refuses are answered here, ahead of Express (Admission.front). Short
  // request and header timeouts: a slow client cannot hold a connection for long (the slot of a
  // submission is only taken once its body has arrived); long-polls and streams are not affected,
  // these bound how long the request takes to arrive, not the answer. The timeouts are checked
  // every second rather than every 30.
  const made = expressMade(app);
  // A request made by Node's own constructors (see expressMade) lacks Express's prototypes: Express's alone.
  const hotRoutes = config.HTTP_HOT_ROUTES === 'on' && made.IncomingMessage !== undefined;
  const server = createServer(
    {
      ...made,
      requestTimeout: config.HTTP_REQUEST_TIMEOUT_MS,
      headersTimeout: Math.min(config.HTTP_HEADERS_TIMEOUT_MS, config.HTTP_REQUEST_TIMEOUT_MS),
      connectionsCheckingInterval: 1_000,
    },
    (req, res) => {
      if (admission.front(req, res)) return;
      if (hotRoutes && hot(req as Request, res as Response)) return;
      app(req, res);
    },
  );
  // Connections that have sent nothing yet, as Node counts them, are not idle: it keeps them for
  // headersTimeout. The close ends them (below), so it keeps every connection to find them.
  const connections = new Set<Socket>();
  server.on('connection', (socket: Socket) => {
    connections.add(socket);
    socket.once('close', () => connections.delete(socket));
  });
  server.listen(config.PORT, config.HOST);
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
  });
  // A request Node's HTTP parser refuses never reaches Express: answer it with the contract's body too.
  server.on('clientError', (error: NodeJS.ErrnoException, socket) => {
    if (!socket.writable) return socket.destroy();
    const timedOut = error.code === 'ERR_HTTP_REQUEST_TIMEOUT';
    const body = JSON.stringify(
      timedOut
        ? errorBody('request_timeout', 'the request did not arrive whole within HTTP_REQUEST_TIMEOUT_MS')
        : errorBody('bad_request', 'the HTTP request could not be parsed'),
    );
    const status = timedOut ? '408 Request Timeout' : '400 Bad Request';
    socket.end(`HTTP/1.1 ${status}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
  });
  // Long-polls hold requests up to RESULT_WAIT_MAX_S; keep-alive sockets must outlive a proxy's.
  server.keepAliveTimeout = 65_000;
  const { port } = server.address() as AddressInfo;
  const url = `http://127.0.0.1:${port}`;
  logger.info('API listening', { url, host: config.HOST, port });

  return {
    server,
    app,
    url,
    tasks,
    workflows,
    async close() {
      // Stop accepting, end event streams with a final event, let requests in flight finish.
      admission.stop();
      const closing = new Promise<void>((resolve) => server.close(() => resolve()));
      streams.closeAll();
      events.wakeAll();
      // Requests in flight are answered; connections with none are ended: those idle after an
      // answer, now and as they turn idle (each would hold the close for keepAliveTimeout, 65 s),
      // and those that never sent a byte (a client's spare connection: held for headersTimeout).
      const endIdle = () => {
        server.closeIdleConnections();
        for (const socket of connections) if (socket.bytesRead === 0) socket.destroy();
      };
      endIdle();
      const idleSweep = setInterval(endIdle, CLOSE_IDLE_SWEEP_MS);
      await closing.finally(() => clearInterval(idleSweep));
      core.stopListening();
      await core.close();
      ring.close();
    },
  };
}

/**
 * Who a raw request comes from, for the front door's per-client checks, named as clientOf names
 * an authenticated request: the bearer key's id (constant-time, as the key check), or the
 * address when the API runs without keys and behind no proxy. Undefined otherwise: such requests
 * are only refused by what concerns every client.
 */
function frontDoorClient(config: Config, ring: KeyRing): (req: IncomingMessage) => string | undefined {
  if (ring.required) {
    return (req) => {
      const header = req.headers.authorization;
      if (header === undefined || !/^bearer /i.test(header)) return undefined;
      const key = ring.match(header.slice(7).trim(), req);
      return key ? `key:${key.id}` : undefined;
    };
  }
  if (config.TRUST_PROXY !== undefined) return () => undefined;
  return (req) => `ip:${ipKeyGenerator(req.socket.remoteAddress ?? '0.0.0.0')}`;
}
