import { randomBytes } from 'node:crypto';
import { inject } from 'vitest';
import { type ApiServer, startApi } from '../../src/api/server.js';
import { type Config, loadConfig } from '../../src/lib/config.js';
import { createLogger, type Logger, silentLogger } from '../../src/lib/logger.js';
import { initTracing, type Tracing, type TracingOptions } from '../../src/observability/tracing.js';
import { type Database, dropDatabase, ensureDatabase, openDatabase, withDatabase } from '../../src/persistence/database.js';
import { createRedis, masters, type RedisClient, waitForRedis } from '../../src/queue/redis.js';
import { Shards } from '../../src/queue/shards.js';
import type { AnyTool, SettingsChooser, ToolRegistry } from '../../src/tools/tool.js';
import { createToolRegistry } from '../../workers/adapters/index.js';
import { startWorker, type WorkerProcess } from '../../workers/worker.js';
import { testToolSettings } from '../fixtures/tools.js';
import { databaseUrl, TEST_REDIS_URL } from './env.js';

export interface HarnessOptions {
  /** Environment on top of the test defaults (database, prefix, quiet logs). */
  env?: Record<string, string>;
  /** Tools on top of the built-in ones (test doubles). */
  tools?: AnyTool[];
  /** Settings choosers of those tools, on top of the test doubles' (testToolSettings). */
  settings?: Record<string, SettingsChooser>;
  /** Start the HTTP API in this process. @defaultValue true */
  api?: boolean;
  /** Start a worker in this process. @defaultValue true */
  worker?: boolean;
  /**
   * Set up tracing (initTracing) before anything starts, e.g. with an in-memory exporter; it is
   * shut down by close(). Only one harness with tracing may be open at a time (the OpenTelemetry
   * API is global). @defaultValue no tracing
   */
  tracing?: TracingOptions;
  /** Where log lines go; by default they are dropped (TEST_LOG_LEVEL=debug prints them). */
  logStream?: NodeJS.WritableStream;
}

export interface Harness {
  config: Config;
  env: Record<string, string>;
  logger: Logger;
  registry: ToolRegistry;
  /** A database of its own, cloned from the migrated template; reached directly, also behind PgBouncer. */
  db: Database;
  /** A Redis connection for assertions: a cluster connection in the cluster project. */
  redis: RedisClient;
  api?: ApiServer;
  worker?: WorkerProcess;
  /** Present when the harness was created with the tracing option. */
  tracing?: Tracing;
  url: string;
  request<T = any>(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<{ status: number; body: T; headers: Headers }>;
  startWorker(env?: Record<string, string>): Promise<WorkerProcess>;
  close(): Promise<void>;
}

export function uniqueName(prefix: string): string {
  return `${prefix}_${randomBytes(5).toString('hex')}`;
}

async function cloneTemplate(url: string): Promise<void> {
  // Cloning fails while another clone of the same template is starting; try again.
  for (let attempt = 1; ; attempt += 1) {
    try {
      await ensureDatabase(url, inject('templateDatabase'));
      return;
    } catch (error) {
      if (attempt >= 20 || !/being accessed by other users/.test((error as Error).message)) throw error;
      await new Promise((resolve) => setTimeout(resolve, 50 * attempt));
    }
  }
}

/**
 * An isolated Orchestrator for one test file: its own database and queue prefix against the
 * machine's real Redis and PostgreSQL, with the API and a worker in this process. In the
 * cluster project (see vitest.config.ts) Redis is the project's private Redis Cluster; in the
 * pgbouncer projects the service's DATABASE_URL goes through the project's PgBouncer.
 */
export async function createHarness(options: HarnessOptions = {}): Promise<Harness> {
  const database = uniqueName('orch_test');
  const prefix = `{${uniqueName('t')}}`;
  const clusterNodes = inject('redisClusterNodes');
  const pgbouncerUrl = inject('pgbouncerUrl');
  const env: Record<string, string> = {
    NODE_ENV: 'test',
    PORT: '0',
    HOST: '127.0.0.1',
    REDIS_URL: TEST_REDIS_URL,
    ...(clusterNodes ? { REDIS_CLUSTER_NODES: clusterNodes } : {}),
    DATABASE_URL: pgbouncerUrl ? withDatabase(pgbouncerUrl, database) : databaseUrl(database),
    DATABASE_DIRECT_URL: databaseUrl(database),
    DATABASE_POOL_SIZE: '5',
    QUEUE_PREFIX: prefix,
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'error',
    WORKER_SHUTDOWN_TIMEOUT_MS: '5000',
    // Test files send many wrong keys from one address on purpose; those that test the limit set it.
    AUTH_FAILURES_PER_MINUTE: '0',
    ...options.env,
  };
  const config = loadConfig(env);
  const logger = options.logStream ? createLogger(config, options.logStream) : process.env.TEST_LOG_LEVEL ? createLogger(config) : silentLogger();
  await cloneTemplate(config.DATABASE_DIRECT_URL);
  const registry = createToolRegistry(options.tools, { ...testToolSettings, ...options.settings });
  const db = openDatabase(config.DATABASE_DIRECT_URL, 3, logger);
  const redis = createRedis(config, 'worker', 'test');
  const workers: WorkerProcess[] = [];
  const tracing = options.tracing ? await initTracing(config, logger, options.tracing) : undefined;

  const harness: Harness = {
    config,
    env,
    logger,
    registry,
    db,
    redis,
    ...(tracing ? { tracing } : {}),
    url: '',
    async request(method, path, body, headers = {}) {
      const response = await fetch(`${harness.url}${path}`, {
        method,
        // As the typed client does: a POST without a body passes the CSRF rule with X-Requested-With.
        headers: { 'x-requested-with': 'test-harness', ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
        body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
      });
      const text = await response.text();
      let parsed: unknown = text;
      try {
        parsed = JSON.parse(text);
      } catch {
        // not JSON: keep the text
      }
      return { status: response.status, body: parsed as never, headers: response.headers };
    },
    async startWorker(extraEnv = {}) {
      // The built-in tools' settings come from the worker's environment: this one's, not the test runner's.
      const workerEnv = { ...env, ...extraEnv };
      const worker = await startWorker(loadConfig(workerEnv), logger, registry, undefined, workerEnv);
      workers.push(worker);
      return worker;
    },
    async close() {
      await harness.api?.close();
      for (const worker of workers.reverse()) await worker.close();
      await db.close();
      // On a cluster every master is scanned; each shard's hash tag keeps its keys in one slot.
      await waitForRedis(redis);
      const prefixes = new Set([prefix, ...Shards.of(config).prefixes]);
      for (const node of masters(redis)) {
        for (const keyPrefix of prefixes) {
          let cursor = '0';
          do {
            const [next, keys] = await node.scan(cursor, 'MATCH', `${keyPrefix}:*`, 'COUNT', 1000);
            if (keys.length > 0) await node.unlink(...keys);
            cursor = next;
          } while (cursor !== '0');
        }
      }
      redis.disconnect();
      await dropDatabase(config.DATABASE_DIRECT_URL);
      await tracing?.shutdown();
    },
  };
  if (options.worker !== false) harness.worker = await harness.startWorker();
  if (options.api !== false) {
    harness.api = await startApi(config, logger, registry);
    harness.url = harness.api.url;
  }
  return harness;
}

export interface PollOptions {
  timeoutMs?: number;
  intervalMs?: number;
  label: string;
}

/** Waits until `check` returns a value other than undefined/false, or fails naming what it waited for. */
export async function poll<T>(check: () => Promise<T | undefined | false> | T | undefined | false, options: PollOptions): Promise<T> {
  const deadline = Date.now() + (options.timeoutMs ?? 15_000);
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== false) return value as T;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${options.label}${last ? ` (last error: ${(last as Error).message})` : ''}`);
    }
    await new Promise((resolve) => setTimeout(resolve, options.intervalMs ?? 25));
  }
}

const FINISHED = new Set(['completed', 'failed', 'cancelled']);

/** Long-polls GET /result until the task ends. */
export async function waitForTask(harness: Harness, taskId: string, timeoutMs = 20_000, headers: Record<string, string> = {}): Promise<any> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const left = Math.ceil((deadline - Date.now()) / 1000);
    const { status, body } = await harness.request('GET', `/result/${taskId}?wait=${Math.max(1, Math.min(left, 10))}`, undefined, headers);
    // 503: a dependency did not answer in time (a busy machine); a client asks again, and so do we.
    if (status === 503 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 200));
      continue;
    }
    if (status !== 200) throw new Error(`GET /result/${taskId} answered ${status}: ${JSON.stringify(body)}`);
    if (FINISHED.has(body.status)) return body;
    if (Date.now() > deadline) throw new Error(`task ${taskId} still ${body.status} after ${timeoutMs} ms`);
  }
}

/** Submits a task and expects 202. */
export async function submit(harness: Harness, body: Record<string, unknown>): Promise<string> {
  const response = await harness.request('POST', '/assign-task', body);
  if (response.status !== 202) throw new Error(`POST /assign-task answered ${response.status}: ${JSON.stringify(response.body)}`);
  return response.body.task_id as string;
}
