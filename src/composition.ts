import { WorkerFleet } from './fleet/worker-fleet.js';
import type { Config } from './lib/config.js';
import type { Logger } from './lib/logger.js';
import type { Metrics } from './observability/metrics.js';
import { type Database, openDatabase } from './persistence/database.js';
import { ScheduleStore } from './persistence/schedule-store.js';
import { TaskStore } from './persistence/task-store.js';
import { WorkflowStore } from './persistence/workflow-store.js';
import { publishStop } from './queue/channels.js';
import { EventLog } from './queue/event-log.js';
import { EventNotices } from './queue/event-notices.js';
import { Gates } from './queue/gates.js';
import { KeyQuotas } from './queue/key-quotas.js';
import { createRedis, type RedisClient, waitForRedis } from './queue/redis.js';
import { RedisOutage, redisAddress } from './queue/redis-outage.js';
import { ScheduleQueue } from './queue/schedule-queue.js';
import { Shards } from './queue/shards.js';
import { TaskQueues } from './queue/task-queues.js';
import { openServiceRegistry, type ServiceRegistry } from './services/service-registry.js';
import { PolicyHook } from './tasks/policy-hook.js';
import { Runs } from './tasks/runs.js';
import { TaskService } from './tasks/task-service.js';
import { admitChild, WorkGate } from './tasks/work-gate.js';
import { dynamicTools, type ToolRegistry } from './tools/tool.js';
import { WorkflowService } from './workflows/workflow-service.js';

export interface CoreOptions {
  config: Config;
  logger: Logger;
  metrics: Metrics;
  /**
   * The tools this process knows of its own (a worker's adapters; none in the production API); the
   * registered services' operations and the tools workers registered are added to it.
   */
  tools: ToolRegistry;
  /** Which process this is: the API (its Redis connection fails fast) or a worker (it waits). */
  role: 'api' | 'worker';
}

/**
 * What the API and a worker both run on, built in one place: the database's pool, the Redis
 * connections (under one outage report), the service registry, the queues, the event log, the
 * workflows, quotas and the work gate (policy), the run driver and the task service. Each process
 * adds only its own: the API its HTTP app and admission, a worker its BullMQ workers, reconciler
 * and schedules' ticks.
 */
export interface Core {
  /** PostgreSQL: Prisma and the ledger's plain SQL on one pool (DATABASE_URL, DATABASE_POOL_SIZE). */
  db: Database;
  outage: RedisOutage;
  /** The connection commands go on (the API's producer, a worker's). */
  redis: RedisClient;
  /** The subscriber connection: task event notices, and a worker's stop signals. */
  subscriber: RedisClient;
  services: ServiceRegistry;
  /** Worker processes (users' own and the built-in one) and the tools they registered. */
  fleet: WorkerFleet;
  /** `tools` with the registered services' operations and the workers' tools. */
  tools: ToolRegistry;
  queues: TaskQueues;
  eventLog: EventLog;
  /** Notices that a task has new events (started by the API, whose long-polls wait on them). */
  events: EventNotices;
  store: TaskStore;
  scheduleStore: ScheduleStore;
  scheduleQueue: ScheduleQueue;
  workflows: WorkflowService;
  quotas: KeyQuotas;
  /** One admission for every path that makes work: submissions, schedules, retries, replays, signals, children. */
  gate: WorkGate;
  runs: Runs;
  tasks: TaskService;
  /** Stops listening: the service registry's change feed and the subscriber. */
  stopListening(): void;
  /** Settles what runs and quotas still do in the background, closes the queues, quits Redis, then closes the database. */
  close(): Promise<void>;
  /** Drops the Redis connections at once (a shutdown past its bound), then closes the database. */
  disconnect(): Promise<void>;
}

/** Opens what `Core` lists; the database must already be migrated (src/bootstrap.ts prepareDatabase). */
export async function openCore(options: CoreOptions): Promise<Core> {
  const { config, logger, metrics, role } = options;
  const db = openDatabase(config.DATABASE_URL, config.DATABASE_POOL_SIZE, logger);
  const { prisma, sql } = db;
  let dbClosed: Promise<void> | undefined;
  // Once: a close that ran out of time is followed by disconnect.
  const closeDatabase = () => (dbClosed ??= db.close());
  // Every connection of this process reports to one place: an outage is said once, not by each.
  const outage = new RedisOutage(logger, redisAddress(config));
  const redis = outage.watch(createRedis(config, role === 'api' ? 'producer' : 'worker', role));
  const subscriber = outage.watch(createRedis(config, 'subscriber', role === 'api' ? 'api-events' : 'worker-stop'));
  // The API starts even while Redis is down (the outage says so): it then answers 503 and recovers by itself.
  if (role === 'api') await waitForRedis(redis, 2_000).catch(() => undefined);
  // Registered services' operations are tools too: read now, and again on every change. The API
  // checks their health; workers only call them.
  const services = openServiceRegistry({
    config,
    prisma,
    redis,
    subscriber: outage.watch(createRedis(config, 'subscriber', `${role}-services`)),
    logger,
    metrics,
    checksHealth: role === 'api',
  });
  await services.start();
  // Tools that workers registered (src/fleet), the built-in worker's among them: known to every
  // process; read again at once when a process announces a registration (the API learns the
  // built-in tools a moment after the built-in worker registers them).
  const fleet = new WorkerFleet(db.prisma, logger, { redis, subscriber, prefix: config.QUEUE_PREFIX });
  await fleet.start();
  const tools = options.tools.withDynamic(dynamicTools(services, fleet.builtIns, fleet));
  const queues = new TaskQueues(redis, config, tools.names(), logger);
  const eventLog = new EventLog(redis, Shards.of(config), { ttlSeconds: config.EVENTS_TTL_S, afterEndSeconds: config.EVENTS_KEEP_AFTER_END_S });
  const events = new EventNotices(subscriber, config.QUEUE_PREFIX, logger);
  const store = new TaskStore(prisma, sql);
  const scheduleStore = new ScheduleStore(sql);
  // Ended tasks stop counting against their client's quotas (src/queue/key-quotas.ts).
  const quotas = new KeyQuotas(redis, Shards.of(config), { maxTasks: config.QUOTA_MAX_BACKLOG_PER_KEY, maxBytes: config.QUOTA_MAX_BYTES_PER_KEY }, logger);
  const workflows = new WorkflowService(new WorkflowStore(prisma), tools, logger, config);
  services.workflows = workflows;
  const gate = new WorkGate({ policy: PolicyHook.fromConfig(config, metrics, logger), quotas });
  const runs = new Runs({
    sql,
    queues,
    publish: (transitions) => eventLog.append(transitions),
    logger,
    config,
    gates: new Gates(redis, config.QUEUE_PREFIX),
    planChild: (workflow, params) => workflows.planChild(workflow, params),
    // A cancel tells every worker to abort the task's running steps, whichever process cancels
    // (the API for a client, a worker for the children of a run that failed).
    stopTask: (taskId, run, spare) => publishStop(redis, config.QUEUE_PREFIX, { taskId, run, reason: 'cancelled', ...(spare ? { spare } : {}) }),
    admitChild: (child, planned, replan) => admitChild(gate, child, planned, replan),
    onEnded: (ended) => {
      metrics.taskEnded(ended.taskType, ended.status, ended.createdAt);
      quotas.release(ended.taskId, ended.run);
    },
    onEndedBefore: (taskId, run) => quotas.release(taskId, run),
  });
  services.users = { using: (prefix) => store.unfinishedStepsCalling(prefix), fail: (steps, error) => runs.withdraw(steps, error) };
  const tasks = new TaskService({
    config,
    logger,
    registry: tools,
    store,
    queues,
    redis,
    events,
    metrics,
    runs,
    // The API's submissions answer 503 at once while PostgreSQL is away; a worker's (schedule
    // ticks) go through the ledger's retries.
    ...(role === 'api' ? { reachability: db.reachability } : {}),
    gate,
    planWorkflow: (name, params, overrides, paramsField, version) => workflows.plan(name, params, overrides, paramsField, version),
    workflowNames: () => workflows.names(),
    tickOf: (taskId) => scheduleStore.tickOf(taskId),
  });
  const scheduleQueue = new ScheduleQueue(redis, queues.shards[0]!.prefix, logger);
  return {
    db,
    outage,
    redis,
    subscriber,
    services,
    fleet,
    tools,
    queues,
    eventLog,
    events,
    store,
    scheduleStore,
    scheduleQueue,
    workflows,
    quotas,
    gate,
    runs,
    tasks,
    stopListening() {
      services.stop();
      fleet.stop();
      subscriber.disconnect();
    },
    async close() {
      // What cancels and steps left to do in the background (next steps' jobs, removing the jobs
      // of queued steps, quota releases), then the queues.
      await runs.idle();
      await quotas.settled();
      await queues.close();
      await scheduleQueue.close();
      await redis.quit().catch(() => redis.disconnect());
      await closeDatabase();
    },
    async disconnect() {
      redis.disconnect();
      void Promise.all([queues.close(), scheduleQueue.close()]).catch(() => undefined);
      await closeDatabase();
    },
  };
}
