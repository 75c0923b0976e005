import { z } from 'zod';

/** Comma-separated list, trimmed, empty entries dropped. */
const csv = z
  .string()
  .transform((value) =>
    value
      .split(',')
      .map((entry) => entry.trim())
      .filter((entry) => entry.length > 0),
  );

const integer = (min: number, max: number) => z.coerce.number().int().min(min).max(max);

/**
 * Every setting the service reads from the environment. Defaults are the ones a fresh machine
 * needs (local Redis and PostgreSQL), so `npm start` works without a `.env` file.
 * `.env.template` documents each variable.
 */
const configSchema = z.object({
  NODE_ENV: z.enum(['development', 'production', 'test']).default('development'),
  /** Port of the HTTP API. 0 picks a free port (tests). */
  PORT: integer(0, 65535).default(3000),
  HOST: z.string().min(1).default('0.0.0.0'),
  REDIS_URL: z.url({ protocol: /^rediss?$/ }).default('redis://127.0.0.1:6379'),
  /**
   * Redis Cluster seed nodes, `host:port` comma-separated. When set, every connection is a
   * cluster connection (user, password and TLS still come from REDIS_URL) and QUEUE_PREFIX must
   * hold a hash tag. Empty: the single Redis at REDIS_URL.
   */
  REDIS_CLUSTER_NODES: csv
    .pipe(z.array(z.string().regex(/^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):\d{1,5}$/, 'each node must be host:port')))
    .default([]),
  DATABASE_URL: z.url({ protocol: /^postgres(ql)?$/ }).default('postgresql://postgres@127.0.0.1:5432/orchestrator'),
  /** Connections each process keeps to PostgreSQL. */
  DATABASE_POOL_SIZE: integer(1, 200).default(10),
  /**
   * Prefix of every BullMQ key. The braces make it a Redis Cluster hash tag, so all keys of a
   * task live in one slot and multi-key scripts work on a cluster too.
   */
  QUEUE_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9_{}.-]+$/, 'letters, digits, _ . - { } only (no ":")')
    .default('{orchestrator}'),
  LOG_LEVEL: z.enum(['error', 'warn', 'info', 'http', 'verbose', 'debug', 'silly']).default('info'),
  /** json for machines (default in production), pretty for people. */
  LOG_FORMAT: z.enum(['json', 'pretty']).optional(),
  /** Also write JSON logs to this file, rotated at 10 MB, 5 files kept. */
  LOG_FILE: z.string().min(1).optional(),
  /** Default number of steps one worker process runs at once per tool queue. */
  WORKER_CONCURRENCY: integer(1, 1000).default(10),
  /** Tools this worker process runs; empty means every registered tool. */
  WORKER_TOOLS: csv.default([]),
  /** How long a stopping worker waits for in-flight steps before it exits anyway. */
  WORKER_SHUTDOWN_TIMEOUT_MS: integer(0, 600_000).default(30_000),
  /** Hosts the http tool (and webhooks) may call: `api.example.com`, `*.example.com`, `10.0.0.5`, `127.0.0.1:8080`. */
  HTTP_TOOL_ALLOWED_HOSTS: csv.default([]),
  /** Largest JSON body the API accepts (a size string understood by body-parser). */
  BODY_LIMIT: z
    .string()
    .regex(/^\d+(\.\d+)?\s*(b|kb|mb|gb)?$/i, 'a size like 1mb, 512kb or 1048576')
    .default('1mb'),
  /** Finished BullMQ jobs kept in Redis per queue (PostgreSQL is the record). */
  QUEUE_KEEP_COMPLETED: integer(0, 1_000_000).default(1000),
  QUEUE_KEEP_FAILED: integer(0, 1_000_000).default(5000),
  /** Upper bound on GET /result?wait=N, in seconds. */
  RESULT_WAIT_MAX_S: integer(0, 300).default(30),
  /**
   * Bearer keys the API accepts (comma-separated, so a new key can be added before an old one
   * is removed). Empty: no authentication. /health, /ready and /metrics stay open.
   */
  API_KEYS: csv.pipe(z.array(z.string().min(16, 'each key must be at least 16 characters'))).default([]),
  /** Origins allowed to call the API from a browser (CORS); `*` allows any. Empty: no CORS headers. */
  CORS_ORIGINS: csv.default([]),
  /** Requests per minute per API key (per client address without keys), across API processes. 0: no limit. */
  RATE_LIMIT_PER_MINUTE: integer(0, 1_000_000).default(0),
  /** Express "trust proxy": set it when a proxy in front sets X-Forwarded-For (e.g. `1` or `loopback`). */
  TRUST_PROXY: z.string().optional(),
  /** HMAC-SHA256 key that signs completion callbacks. Without it, callback_url is refused. */
  CALLBACK_SECRET: z.string().min(16, 'use at least 16 characters').optional(),
  /** Tries per callback delivery (exponential backoff from 1 s). */
  CALLBACK_MAX_ATTEMPTS: integer(1, 50).default(8),
  /** How long a task's event history (for GET /tasks/:id/events) is kept in Redis after its last event. */
  EVENTS_TTL_S: integer(60, 30 * 86_400).default(86_400),
  /** How long a worker retries a database write through lost connections before parking the step's result in its job. */
  DB_WRITE_RETRY_MS: integer(0, 3_600_000).default(60_000),
  /** How often one worker looks for active runs whose jobs went missing in Redis (see workers/runtime/reconciler.ts). 0: never. */
  RECONCILE_INTERVAL_MS: integer(0, 3_600_000).default(30_000),
  /** Runs younger than this are not repaired: their jobs may still be on their way. */
  RECONCILE_AFTER_MS: integer(0, 86_400_000).default(60_000),
  /** Port where a worker process serves its own /metrics. Unset: no metrics server in workers. */
  WORKER_METRICS_PORT: integer(0, 65535).optional(),
  /**
   * OTLP/HTTP collector base URL (e.g. `http://otel-collector:4318`); spans go to
   * `<url>/v1/traces`. Unset: tracing is off.
   */
  OTEL_EXPORTER_OTLP_ENDPOINT: z.url({ protocol: /^https?$/ }).optional(),
  /** Service name on exported spans. Unset: orchestrator-api, orchestrator-worker, or orchestrator (npm start). */
  OTEL_SERVICE_NAME: z.string().min(1).max(255).optional(),
});

export type Config = Readonly<
  Omit<z.infer<typeof configSchema>, 'LOG_FORMAT'> & { LOG_FORMAT: 'json' | 'pretty' }
>;

/**
 * Whether every key under `prefix` hashes by the same tag. Redis hashes the text between the
 * first `{` of a key and the next `}`, when that text is not empty.
 */
export function hasHashTag(prefix: string): boolean {
  return /^[^{]*\{[^}]+\}/.test(prefix);
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/**
 * Parses the environment once. A wrong value throws a ConfigError naming each bad variable, so
 * the process stops at boot instead of failing later.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  // Empty strings (`FOO=` in a .env file) mean "not set", so the default applies.
  const present = Object.fromEntries(Object.entries(env).filter(([, value]) => value !== undefined && value !== ''));
  const parsed = configSchema.safeParse(present);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => {
      const name = String(issue.path[0] ?? '');
      return `  ${name}: ${issue.message} (got ${JSON.stringify(present[name])})`;
    });
    throw new ConfigError(`Invalid configuration:\n${problems.join('\n')}`);
  }
  const value = parsed.data;
  if (value.REDIS_CLUSTER_NODES.length > 0 && !hasHashTag(value.QUEUE_PREFIX)) {
    throw new ConfigError(
      `Invalid configuration:\n  QUEUE_PREFIX: must contain a Redis Cluster hash tag such as {orchestrator} when REDIS_CLUSTER_NODES is set, so that all keys of a task share one slot (got ${JSON.stringify(value.QUEUE_PREFIX)})`,
    );
  }
  return Object.freeze({
    ...value,
    LOG_FORMAT: value.LOG_FORMAT ?? (value.NODE_ENV === 'production' ? 'json' : 'pretty'),
  });
}
