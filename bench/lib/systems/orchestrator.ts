import { execFileSync } from 'node:child_process';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import type { Completion } from '../capacity.js';
import { HttpClient } from '../load.js';
import { CountingClient } from '../metrics.js';
import { type Child, freePort, spawnNode } from '../processes.js';
import { poll, REPO_ROOT } from '../util.js';
import { deleteKeys, HttpTarget, inChunks, type ResultRecords, type RunContext, type RunningSystem } from './system.js';

function databaseUrl(serverUrl: string, database: string): string {
  const url = new URL(serverUrl);
  url.pathname = `/${database}`;
  return url.toString();
}

/** Finished tasks as the service records them: tasks.created_at (receipt) and finished_at (final commit). */
function taskRecords(client: CountingClient): ResultRecords {
  return {
    async unfinished(ids) {
      return inChunks(ids, async (chunk) =>
        (await client.query<{ id: string }>('SELECT id::text AS id FROM tasks WHERE id = ANY($1::uuid[]) AND finished_at IS NULL', [chunk])).map(
          (row) => row.id,
        ),
      );
    },
    async completions(ids) {
      return inChunks(ids, async (chunk) => {
        const rows = await client.query<{ id: string; created: number; finished: number; status: string }>(
          `SELECT id::text AS id, (extract(epoch FROM created_at) * 1000)::float8 AS created,
                  (extract(epoch FROM finished_at) * 1000)::float8 AS finished, status::text AS status
             FROM tasks WHERE id = ANY($1::uuid[]) AND finished_at IS NOT NULL`,
          [chunk],
        );
        return rows.map((row): Completion => ({ id: row.id, created: row.created, finished: row.finished, ok: row.status === 'completed' }));
      });
    },
  };
}

/** Waits until every worker process has a BullMQ worker on `queueName`. */
async function waitForWorkers(ctx: RunContext, prefix: string, queueName: string, count: number, children: Child[]): Promise<void> {
  const connection = new Redis(ctx.redisUrl, { maxRetriesPerRequest: null });
  const queue = new Queue(queueName, { connection, prefix });
  try {
    await poll(
      async () => {
        const dead = children.find((child) => !child.alive);
        if (dead) throw new Error(`${dead.name} exited:\n${dead.tail()}`);
        return (await queue.getWorkersCount()) >= count;
      },
      { label: `${count} workers on ${queueName} (their output: ${ctx.logDir})`, timeoutMs: 60_000, intervalMs: 200 },
    );
  } finally {
    await queue.close();
    connection.disconnect();
  }
}

/** Starts of the service in this process: the second one in a run gets a database and prefix of its own. */
let starts = 0;

/**
 * The queues some BullMQ worker (or queue-events reader) of `prefix` is connected to, from
 * CLIENT LIST: BullMQ names each connection `<prefix>:<base64 of the queue name>[suffix]`. The
 * bench thus needs no knowledge of how the service names its queues.
 */
async function listenedQueues(redis: Redis, prefix: string): Promise<string[]> {
  const list = (await redis.client('LIST')) as string;
  const names = new Set<string>();
  for (const line of list.split('\n')) {
    const name = /(?:^| )name=(\S+)/.exec(line)?.[1];
    if (!name?.startsWith(`${prefix}:`)) continue;
    const encoded = name.slice(prefix.length + 1).split(':')[0]!;
    const decoded = Buffer.from(encoded, 'base64').toString('utf8');
    if (decoded && Buffer.from(decoded).toString('base64') === encoded) names.add(decoded);
  }
  return [...names].sort();
}

/** The compiled build is made once per bench: a restart mid-bench (DRAIN) runs the same code as the phases before it. */
let built = false;
/** The worker SDK's bundle (workers/sdk/dist), built once per bench as `npm pack` builds it. */
let sdkBuilt = false;

/**
 * The service as in production: API and worker processes running the compiled build (dist/, as
 * `npm start` does; built here first), on a fresh database (they create and migrate it
 * themselves) and a fresh queue prefix. `extraEnv` adds settings (DRAIN turns admission control off).
 */
export async function startOrchestrator(ctx: RunContext, extraEnv: Record<string, string> = {}): Promise<RunningSystem> {
  const { options } = ctx;
  starts += 1;
  const suffix = starts > 1 ? `_${starts}` : '';
  const database = `orch_bench_${ctx.runId}${suffix}`;
  const prefix = `{bench_${ctx.runId}${suffix}}`;
  const ports = await Promise.all(Array.from({ length: options.apis }, () => freePort()));
  const dbUrl = databaseUrl(options.postgresUrl, database);
  if (!options.keep) ctx.releasers.add(`database ${database}`, () => ctx.admin.dropDatabase(database));
  if (options.redisUrl) ctx.releasers.add(`Redis keys ${prefix}`, () => deleteKeys(ctx.redis, prefix));
  const env = {
    NODE_ENV: 'production',
    // Measured without keys, as before keys existed; production refuses that unless told so.
    AUTH_DISABLED: 'true',
    LOG_LEVEL: 'warn',
    LOG_FORMAT: 'json',
    HOST: '127.0.0.1',
    REDIS_URL: ctx.redisUrl,
    DATABASE_URL: dbUrl,
    DATABASE_POOL_SIZE: String(options.poolSize),
    QUEUE_PREFIX: prefix,
    WORKER_CONCURRENCY: String(options.concurrency),
    WORKER_SHUTDOWN_TIMEOUT_MS: '5000',
    // How long a finished task's event stream stays in Redis: the service's default (60 s) in
    // full mode, shorter in quick mode so that the Redis-memory measurement need not wait a minute.
    EVENTS_KEEP_AFTER_END_S: String(options.timing.eventsKeepAfterEndS),
    // Admission control (ADMISSION_*) keeps its defaults, which W5 measures under overload,
    // unless a workload says otherwise (DRAIN, on a service of its own).
    ...extraEnv,
  };
  if (!built) execFileSync(process.execPath, ['scripts/build.mjs'], { cwd: REPO_ROOT, stdio: 'inherit' });
  built = true;
  const apis = ports.map((port, index) =>
    spawnNode(ports.length > 1 ? `api-${index + 1}` : 'api', 'dist/src/api/main.js', { ...env, PORT: String(port) }, { logDir: ctx.logDir }),
  );
  const workers = Array.from({ length: options.workers }, (_, index) => spawnNode(`worker-${index + 1}`, 'dist/workers/main.js', env, { logDir: ctx.logDir }));
  const children = [...apis, ...workers];
  const stopAll = ctx.releasers.add('orchestrator processes', async () => {
    await Promise.all(children.map((child) => child.stop()));
  });

  const urls = ports.map((port) => `http://127.0.0.1:${port}`);
  const http = new HttpClient(urls, options.connections);
  const closeHttp = ctx.releasers.add('HTTP client', () => http.close());
  try {
    await poll(
      async () => {
        const dead = children.find((child) => !child.alive);
        if (dead) throw new Error(`${dead.name} exited:\n${dead.tail()}`);
        const answers = await Promise.all(urls.map((url) => fetch(`${url}/ready`).catch(() => undefined)));
        return answers.every((response) => response?.status === 200);
      },
      { label: `the API to be ready (its output: ${apis.map((api) => api.logFile).join(', ')})`, timeoutMs: 60_000, intervalMs: 200 },
    );
    await waitForWorkers(ctx, prefix, 'tool.echo', options.workers, children);
    await waitForWorkers(ctx, prefix, 'timers', options.workers, children);
  } catch (error) {
    await closeHttp();
    await stopAll();
    throw error;
  }

  const benchClient = new CountingClient(dbUrl);
  const closeClient = ctx.releasers.add('bench database client', () => benchClient.close());
  const records = taskRecords(benchClient);
  const userWorkers: Child[] = [];
  const running: RunningSystem = {
    kind: 'orchestrator',
    processes: { api: apis.map((api) => api.pid), workers: workers.map((worker) => worker.pid) },
    database,
    benchClient,
    target: (body, { connections } = {}) => {
      if (!connections) return new HttpTarget(http, body, records);
      const own = new HttpClient(urls, connections);
      ctx.releasers.add(`HTTP client (${connections} connections)`, () => own.close());
      return new HttpTarget(own, body, records);
    },
    post: (path, body) => http.post(path, body),
    get: (path) => http.get(path),
    queuePrefix: prefix,
    env: extraEnv,
    async pauseQueues() {
      const names = await listenedQueues(ctx.redis, prefix);
      if (names.length === 0) throw new Error(`no BullMQ worker of ${prefix} found in CLIENT LIST`);
      const connection = new Redis(ctx.redisUrl, { maxRetriesPerRequest: null });
      connection.on('error', () => undefined);
      const queues = names.map((name) => new Queue(name, { connection, prefix }));
      await Promise.all(queues.map((queue) => queue.pause()));
      return {
        names,
        async resume() {
          await Promise.all(queues.map((queue) => queue.resume()));
          await Promise.all(queues.map((queue) => queue.close()));
          connection.disconnect();
        },
      };
    },
    async startUserWorkers() {
      if (userWorkers.length > 0) return;
      if (!sdkBuilt) execFileSync(process.execPath, ['workers/sdk/build.mjs'], { cwd: REPO_ROOT, stdio: 'inherit' });
      sdkBuilt = true;
      // What a user's worker is given: Redis and the API (no key: the bench runs without them), never the database.
      const userEnv = {
        REDIS_URL: ctx.redisUrl,
        ORCHESTRATOR_URL: urls[0]!,
        WORKER_CONCURRENCY: String(options.concurrency),
        WORKER_SHUTDOWN_TIMEOUT_MS: '5000',
        LOG_LEVEL: 'warn',
        LOG_FORMAT: 'json',
      };
      for (let index = 0; index < options.workers; index += 1)
        userWorkers.push(spawnNode(`user-worker-${index + 1}`, 'bench/user-worker.mjs', userEnv, { logDir: ctx.logDir }));
      children.push(...userWorkers);
      // Their CPU counts with the workers' from now on: the workloads that use them run last.
      running.processes.workers.push(...userWorkers.map((child) => child.pid));
      await waitForWorkers(ctx, prefix, 'tool.user_echo', options.workers, userWorkers);
    },
    async stop() {
      await closeClient();
      await closeHttp();
      await stopAll();
    },
  };
  return running;
}
