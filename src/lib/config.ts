import { z } from 'zod';

/** The entries of a comma-separated list, trimmed, empty ones dropped. */
const listEntries = (value: string) =>
  value
    .split(',')
    .map((entry) => entry.trim())
    .filter((entry) => entry.length > 0);

/** Comma-separated list, trimmed, empty entries dropped. */
const csv = z.string().transform(listEntries);

const integer = (min: number, max: number) => z.coerce.number().int().min(min).max(max);

/**
 * What an API key may do; README.md "Security" lists the endpoints of each. `worker`: a user's
 * worker process (src/fleet), which registers its tools and reports its steps, and nothing else.
 */
export const API_KEY_SCOPES = ['admin', 'client', 'read', 'worker'] as const;
export type ApiKeyScope = (typeof API_KEY_SCOPES)[number];

/** One configured key: its scope, an optional owner name shared by the keys of one client, the secret. */
export interface ApiKeyEntry {
  scope: ApiKeyScope;
  /** Tasks are owned by this name instead of by the key, so rotating a named key keeps its tasks visible. */
  name?: string;
  key: string;
}

const KEY_PREFIX = new RegExp(`^(${API_KEY_SCOPES.join('|')})(?:@([A-Za-z0-9_.-]{1,64}))?$`);

/**
 * One entry of API_KEYS or of an API_KEYS_FILE line: `KEY` (an admin key, as before scopes
 * existed), `SCOPE:KEY` or `SCOPE@NAME:KEY`. The text before the first `:` must then be a scope
 * (with its name): an unknown one is refused rather than taken as part of an admin key, so a
 * typo never grants admin. A key containing `:` is therefore written with its scope.
 */
export const apiKeyEntry = z.string().transform((entry, ctx): ApiKeyEntry => {
  const colon = entry.indexOf(':');
  let parsed: ApiKeyEntry = { scope: 'admin', key: entry };
  if (colon >= 0) {
    const prefix = KEY_PREFIX.exec(entry.slice(0, colon));
    if (!prefix) {
      // The text before ":" is not quoted back: it may be part of a secret.
      ctx.addIssue({
        code: 'custom',
        message: 'the text before the first ":" is not a scope: write admin:KEY, client:KEY, read:KEY or SCOPE@NAME:KEY (NAME: letters, digits, _ . -)',
      });
      return z.NEVER;
    }
    parsed = { scope: prefix[1] as ApiKeyScope, ...(prefix[2] ? { name: prefix[2] } : {}), key: entry.slice(colon + 1) };
  }
  if (parsed.key.length < 16) {
    ctx.addIssue({ code: 'custom', message: 'each key must be at least 16 characters' });
    return z.NEVER;
  }
  return parsed;
});

/**
 * Every setting the service reads from the environment. Defaults are the ones a fresh machine
 * needs (local Redis and PostgreSQL), so `npm start` works without a `.env` file.
 * `.env.template` documents each variable.
 */
const configSchema = z.object({
  /**
   * production: refuses to start without keys (unless AUTH_DISABLED), JSON logs, the API on every
   * interface, /metrics closed without METRICS_TOKEN, approval links only with a secret.
   */
  NODE_ENV: z.enum(['development', 'production', 'test']).default('development'),
  /** Port of the HTTP API. 0 picks a free port (tests). */
  PORT: integer(0, 65535).default(3000),
  /**
   * Address the API listens on. Unset: every interface (0.0.0.0) in production (a container),
   * 127.0.0.1 otherwise, so a developer's API without keys is not on the network by accident.
   */
  HOST: z.string().min(1).optional(),
  /** Redis (rediss:// for TLS), with its user and password if it has them. */
  REDIS_URL: z.url({ protocol: /^rediss?$/ }).default('redis://127.0.0.1:6379'),
  /**
   * Redis Cluster seed nodes, `host:port` comma-separated. When set, every connection is a
   * cluster connection (user, password and TLS still come from REDIS_URL) and QUEUE_PREFIX must
   * hold a hash tag. Empty: the single Redis at REDIS_URL.
   */
  REDIS_CLUSTER_NODES: csv.pipe(z.array(z.string().regex(/^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):\d{1,5}$/, 'each node must be host:port'))).default([]),
  /** Every query of the running service: PostgreSQL itself, or a pooler such as PgBouncer in transaction mode. */
  DATABASE_URL: z.url({ protocol: /^postgres(ql)?$/ }).default('postgresql://postgres@127.0.0.1:5432/orchestrator'),
  /**
   * The same database reached without a transaction-mode pooler, for what needs a session of its
   * own: creating the database and migrating it under a session advisory lock. Unset: DATABASE_URL.
   */
  DATABASE_DIRECT_URL: z.url({ protocol: /^postgres(ql)?$/ }).optional(),
  /** Connections each process keeps to PostgreSQL. */
  DATABASE_POOL_SIZE: integer(1, 200).default(10),
  /**
   * Prefix of every Redis key. The braces make it a Redis Cluster hash tag; each queue shard
   * extends the tag (QUEUE_SHARDS), so all keys of a task live in one slot and multi-key scripts
   * work on a cluster too.
   */
  QUEUE_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9_{}.-]+$/, 'letters, digits, _ . - { } only (no ":")')
    .default('{orchestrator}'),
  /**
   * Shards of the queues (src/queue/shards.ts): each task's jobs and events live in one shard,
   * under a hash tag of its own, so a Redis Cluster spreads tasks over its masters. Unset: 1 on
   * one Redis (QUEUE_PREFIX's key names, as before shards existed), 6 on a cluster (even over 1,
   * 2, 3 or 6 masters). Change it only with the queues drained: a task's shard follows from it.
   */
  QUEUE_SHARDS: integer(1, 256).optional(),
  /** The least important log lines written. */
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
  /**
   * How long a worker's claim on a running step lasts without renewal (renewed every half of
   * it). A step whose worker died, or gave up at WORKER_SHUTDOWN_TIMEOUT_MS, is run again
   * elsewhere this long (up to twice this long) later; stalled steps are also looked for this often.
   * @internal
   */
  WORKER_LOCK_DURATION_MS: integer(1_000, 600_000).default(30_000),
  /** Hosts the http tool (and webhooks) may call: `api.example.com`, `*.example.com`, `10.0.0.5`, `127.0.0.1:8080`. */
  HTTP_TOOL_ALLOWED_HOSTS: csv.default([]),
  /**
   * `allow`: an exact hostname on an allowlist may resolve to a private address (an internal
   * service by name). `refuse`: private answers are refused for every name, so a DNS record that
   * changes cannot lead inside; IP and CIDR entries still open private addresses.
   */
  HTTP_TOOL_PRIVATE_NAMES: z.enum(['allow', 'refuse']).default('allow'),
  /**
   * A JSON object of the secrets registered services name (`auth.secret_ref`), by ref; besides
   * SERVICE_SECRET_<REF> variables. Read when it changes; never copied into PostgreSQL.
   */
  SERVICE_SECRETS_FILE: z.string().min(1).optional(),
  /**
   * How often every process re-reads the service registry (changes are also announced at once through Redis).
   * @internal
   */
  SERVICES_RELOAD_MS: integer(100, 3_600_000).default(10_000),
  /**
   * How often the API checks each service's health_path. 0: never.
   * @internal
   */
  SERVICE_HEALTH_INTERVAL_MS: integer(0, 3_600_000).default(30_000),
  /**
   * Largest OpenAPI document a service may have (bytes).
   * @internal
   */
  SERVICE_DOCUMENT_MAX_BYTES: integer(1_000, 50_000_000).default(2_000_000),
  /**
   * Most operations (tools) one service's document may have.
   * @internal
   */
  SERVICE_MAX_OPERATIONS: integer(1, 10_000).default(500),
  /**
   * Most schema objects in one service's tools: every operation's input and output schema with
   * the `$defs` it reaches. A document over it (or over SERVICE_SCHEMA_MAX_BYTES) is refused
   * (400 `document_too_complex`), and a stored one is left without tools.
   * @internal
   */
  SERVICE_SCHEMA_MAX_NODES: integer(100, 10_000_000).default(50_000),
  /**
   * Most bytes of JSON in one service's tools' schemas and summaries, as GET /tools serves them.
   * @internal
   */
  SERVICE_SCHEMA_MAX_BYTES: integer(10_000, 1_000_000_000).default(800_000),
  /** Largest JSON body the API accepts (a size string understood by body-parser). */
  BODY_LIMIT: z
    .string()
    .regex(/^\d+(\.\d+)?\s*(b|kb|mb|gb)?$/i, 'a size like 1mb, 512kb or 1048576')
    .default('1mb'),
  /**
   * Finished BullMQ jobs kept in Redis per queue (PostgreSQL is the record). Each keeps its step's
   * input, up to STEP_INPUT_MAX_BYTES: 1,000 of 1 MiB held 1 GiB per queue, so fewer are kept.
   * @internal
   */
  QUEUE_KEEP_COMPLETED: integer(0, 1_000_000).default(100),
  /**
   * Failed BullMQ jobs kept in Redis per queue, for Bull Board (the dead letters are in PostgreSQL).
   * @internal
   */
  QUEUE_KEEP_FAILED: integer(0, 1_000_000).default(1000),
  /** Upper bound on GET /result?wait=N, in seconds. */
  RESULT_WAIT_MAX_S: integer(0, 300).default(30),
  /** Waiting GET /result?wait=N requests per API key (per client address without keys), across API processes. 0: no limit. */
  LONG_POLLS_PER_KEY: integer(0, 100_000).default(100),
  /** Open GET /tasks/:id/events streams per API key (per client address without keys), across API processes. 0: no limit. */
  EVENT_STREAMS_PER_KEY: integer(0, 100_000).default(100),
  /**
   * Longest life of an event stream, in seconds; then a `reconnect` event ends it (the client resumes with Last-Event-ID).
   * @internal
   */
  EVENT_STREAM_MAX_S: integer(1, 86_400).default(3_600),
  /**
   * Widest window GET /stats computes, in days; a wider one answers 400.
   * @internal
   */
  STATS_MAX_WINDOW_DAYS: integer(1, 3650).default(31),
  /**
   * PostgreSQL statement_timeout of the GET /stats queries; past it the answer is 503 stats_timeout.
   * @internal
   */
  STATS_STATEMENT_TIMEOUT_MS: integer(1, 600_000).default(10_000),
  /**
   * GET /stats requests one API process computes at once; more answer 503 `stats_busy` with
   * Retry-After, so monitors polling /stats cannot take the database pool from the tasks.
   * @internal
   */
  STATS_MAX_CONCURRENT: integer(1, 100).default(2),
  /**
   * Bearer keys the API accepts, comma-separated, each `KEY` (admin), `SCOPE:KEY` or
   * `SCOPE@NAME:KEY` (see apiKeyEntry). With neither these nor API_KEYS_FILE there is no
   * authentication, which production refuses unless AUTH_DISABLED=true. /health, /ready and
   * /metrics stay open.
   */
  API_KEYS: csv.pipe(z.array(apiKeyEntry)).default([]),
  /** A file of keys, one entry per line as in API_KEYS (`#` starts a comment), re-read when it changes. */
  API_KEYS_FILE: z.string().min(1).optional(),
  /**
   * How often the API looks at API_KEYS_FILE for a change; a change is applied once the file has stayed the same for one more look.
   * @internal
   */
  API_KEYS_FILE_POLL_MS: integer(100, 3_600_000).default(2_000),
  /** Run the API without keys in production, on purpose. */
  AUTH_DISABLED: z
    .enum(['true', 'false'], { message: 'use true or false' })
    .transform((value) => value === 'true')
    .default(false),
  /**
   * Identity tokens: a JWKS whose keys sign the JWT bearer tokens the API accepts beside API keys
   * (fetched on first use, cached, fetched again for an unknown `kid`). Needs AUTH_JWT_ISSUER and
   * AUTH_JWT_AUDIENCE. With it (or AUTH_JWT_SECRET) authentication is on, even without API_KEYS.
   */
  AUTH_JWKS_URL: z.url({ protocol: /^https?$/ }).optional(),
  /** Shared secret of HS256 identity tokens, beside or instead of AUTH_JWKS_URL. */
  AUTH_JWT_SECRET: z.string().min(32, 'use at least 32 characters (256 bits for HS256)').optional(),
  /** The `iss` every identity token must carry. */
  AUTH_JWT_ISSUER: z.string().min(1).optional(),
  /** The `aud` every identity token must carry (one of its audiences). */
  AUTH_JWT_AUDIENCE: z.string().min(1).optional(),
  /** The claim naming the token's scope: exactly one of admin, client, read (a space-separated string or a list; other entries are ignored). */
  AUTH_JWT_SCOPE_CLAIM: z.string().min(1).default('scope'),
  /** The claim naming the token's owner; tasks are owned by `jwt:<value>`. */
  AUTH_JWT_OWNER_CLAIM: z.string().min(1).default('sub'),
  /**
   * Longest life an identity token may have, in seconds: `exp - iat` (`exp` - now without `iat`).
   * A token without `exp` is refused whatever this says: a stolen one would open the API for ever.
   */
  AUTH_JWT_MAX_AGE_S: integer(60, 31_536_000).default(86_400),
  /**
   * Least time between two fetches of the JWKS for a `kid` it does not hold (a rotated key is seen at most this late).
   * @internal
   */
  AUTH_JWKS_COOLDOWN_MS: integer(0, 3_600_000).default(30_000),
  /**
   * How long a fetched JWKS is used before it is fetched again.
   * @internal
   */
  AUTH_JWKS_MAX_AGE_MS: integer(1_000, 86_400_000).default(600_000),
  /**
   * Wrong keys per minute from one client address before its requests with a key get 429; shared across API processes. 0: no limit.
   * @internal
   */
  AUTH_FAILURES_PER_MINUTE: integer(0, 1_000_000).default(30),
  /** Origins allowed to call the API from a browser (CORS); `*` allows any. Empty: no CORS headers. */
  CORS_ORIGINS: csv.default([]),
  /** Requests per minute per API key (per client address without keys), across API processes. 0: no limit. */
  RATE_LIMIT_PER_MINUTE: integer(0, 1_000_000).default(0),
  /** Express "trust proxy": set it when a proxy in front sets X-Forwarded-For (e.g. `1` or `loopback`). */
  TRUST_PROXY: z.string().optional(),
  /**
   * Admission control: POST /assign-task answers 503 `overloaded` (with Retry-After) while more
   * step jobs wait in the tool queues than the workers finish in this long. 0: off.
   * @internal
   */
  ADMISSION_MAX_WAIT_MS: integer(0, 3_600_000).default(2_000),
  /**
   * The backlog always admitted, whatever the measured drain rate.
   * @internal
   */
  ADMISSION_MIN_BACKLOG: integer(0, 100_000_000).default(1_000),
  /**
   * A fixed ceiling on the admitted backlog, whatever the drain rate. 0: none.
   * @internal
   */
  ADMISSION_MAX_BACKLOG: integer(0, 100_000_000).default(0),
  /**
   * How often each API process reads the backlog and the drain rate from Redis.
   * @internal
   */
  ADMISSION_SAMPLE_MS: integer(10, 60_000).default(200),
  /**
   * Most task submissions one API process handles at once (admitted, not yet answered); past it,
   * 503 `overloaded` at once. Protects a process that a flood of clients reaches before the
   * backlog shows it. 0: no limit.
   * @internal
   */
  ADMISSION_MAX_IN_FLIGHT: integer(0, 1_000_000).default(128),
  /**
   * Of those, most one API key may hold in one process (half of ADMISSION_MAX_IN_FLIGHT: one key never takes them all); past it, 429 `too_many_in_flight`. Without keys, only ADMISSION_MAX_IN_FLIGHT applies. 0: no limit.
   * @internal
   */
  ADMISSION_MAX_IN_FLIGHT_PER_KEY: integer(0, 1_000_000).default(64),
  /**
   * How long the front door holds a refusal (503 overloaded, 429 too_many_in_flight) before answering it, so that clients retrying at once come back less often. 0: at once.
   * @internal
   */
  ADMISSION_REFUSAL_DELAY_MS: integer(0, 30_000).default(500),
  /** Unfinished tasks (waiting, delayed, prioritized or running) one API key may have; past it, 429 `quota_exceeded`. 0: no limit. */
  QUOTA_MAX_BACKLOG_PER_KEY: integer(0, 100_000_000).default(100_000),
  /** Bytes of params (JSON) of one API key's unfinished tasks, which their jobs hold in Redis; past it, 429 `quota_exceeded`. 0: no limit. */
  QUOTA_MAX_BYTES_PER_KEY: integer(0, 1_000_000_000_000).default(268_435_456),
  /** Schedules one API key (a client key; admin keys are exempt) may have; past it, 409 `too_many_schedules`. 0: no limit. */
  SCHEDULES_MAX_PER_KEY: integer(0, 1_000_000).default(100),
  /**
   * Most missed ticks one catch-up runs (`catch_up: {"all_within_ms": N}` after a pause or while
   * no worker ran): the newest of them; older ones leave no trace, as missed ticks outside the window.
   * @internal
   */
  SCHEDULE_CATCH_UP_MAX: integer(1, 1_000).default(24),
  /**
   * Policy hook: before work is accepted on any path (src/tasks/work-gate.ts: a submission, a
   * schedule and each of its ticks, a retry, a replay, a sub-workflow's child, a signal; after
   * its params are validated, before anything is stored) the API or worker POSTs `{kind,
   * task_type, params, key_id, scope, owner, ...}` here and expects `{allow, reason?, params?}`.
   * Unset: no policy.
   */
  POLICY_URL: z.url({ protocol: /^https?$/ }).optional(),
  /**
   * The policy service as seed 003 names it: its base URL, to which `/v1/evaluate` is appended
   * (POLICY_URL = POLICY_ENGINE_URL + `/v1/evaluate`). POLICY_URL wins when both are set.
   */
  POLICY_ENGINE_URL: z.url({ protocol: /^https?$/ }).optional(),
  /** Longest the policy service may take to answer; past it POLICY_FAIL_MODE decides. */
  POLICY_TIMEOUT_MS: integer(1, 60_000).default(1_000),
  /** What a policy service that times out, fails or answers nonsense means: `open` accepts the task as submitted, `closed` answers 503 `policy_unavailable`. */
  POLICY_FAIL_MODE: z.enum(['open', 'closed']).default('closed'),
  /**
   * How long a decision is reused for an identical input (task type, params, key id, scope). 0: the policy is asked every time.
   * @internal
   */
  POLICY_CACHE_TTL_MS: integer(0, 3_600_000).default(2_000),
  /**
   * Most decisions kept in the cache (least recently used go first).
   * @internal
   */
  POLICY_CACHE_MAX: integer(1, 1_000_000).default(10_000),
  /**
   * Largest answer read from the policy service, in bytes; a larger one counts as a failure.
   * @internal
   */
  POLICY_MAX_RESPONSE_BYTES: integer(256, 16_777_216).default(1_048_576),
  /**
   * Longest an HTTP request may take to arrive whole (headers and body); past it the connection is closed with 408.
   * @internal
   */
  HTTP_REQUEST_TIMEOUT_MS: integer(1_000, 600_000).default(15_000),
  /**
   * Longest the request line and headers may take to arrive.
   * @internal
   */
  HTTP_HEADERS_TIMEOUT_MS: integer(1_000, 600_000).default(10_000),
  /**
   * `on`: POST /assign-task and GET /result/{task_id} (the seed's loop) are served without
   * Express's router, by the same functions in the same order and with the same answers; `off`:
   * every request goes through Express, to compare or to rule the hot routes out.
   * @internal
   */
  HTTP_HOT_ROUTES: z.enum(['on', 'off']).default('on'),
  /**
   * The root of the keys that sign completion callbacks: each API key's callbacks are signed with
   * a secret derived from it and the key's id (GET /callback-secret). Without it, callback_url is refused.
   */
  CALLBACK_SECRET: z.string().min(16, 'use at least 16 characters').optional(),
  /**
   * Callback hosts per API key id (its name, or `key:` and 16 hex digits), as JSON:
   * `{"shop": ["hooks.shop.example", "*.shop.example:8443"]}`, entries as in
   * HTTP_TOOL_ALLOWED_HOSTS. A key listed here may send callbacks only there; other keys use
   * HTTP_TOOL_ALLOWED_HOSTS.
   */
  CALLBACK_ALLOWED_HOSTS_BY_KEY: z
    .string()
    .transform((text, ctx) => {
      try {
        return JSON.parse(text) as unknown;
      } catch {
        ctx.addIssue({ code: 'custom', message: 'must be a JSON object: {"KEY_ID": ["host", ...]}' });
        return z.NEVER;
      }
    })
    .pipe(z.record(z.string().min(1), z.array(z.string().min(1)), 'must be a JSON object: {"KEY_ID": ["host", ...]}'))
    .default({}),
  /**
   * The key that signs approval links (wait steps with `approval`). Unset: derived from
   * CALLBACK_SECRET; without either, development uses a fixed key (links work, but anyone who
   * reads this code can forge them) and production makes no links (decide with a key instead).
   */
  APPROVAL_SECRET: z.string().min(16, 'use at least 16 characters').optional(),
  /** How long an approval link of a wait step without timeout_ms stays valid (a step with one: until it times out). */
  APPROVAL_LINK_TTL_DAYS: integer(1, 366).default(30),
  /** The API's address as people reach it: approval links start with it. Unset: http://localhost:PORT. */
  PUBLIC_URL: z.url({ protocol: /^https?$/ }).optional(),
  /**
   * Tries per callback delivery (exponential backoff from 1 s).
   * @internal
   */
  CALLBACK_MAX_ATTEMPTS: integer(1, 50).default(8),
  /**
   * How long a task's event history (for GET /tasks/:id/events) is kept in Redis after its last event.
   * @internal
   */
  EVENTS_TTL_S: integer(60, 30 * 86_400).default(86_400),
  /**
   * How long a finished task's event history stays in Redis after its ending event. A client
   * that resumes later (Last-Event-ID) gets the task's snapshot from PostgreSQL instead.
   * @internal
   */
  EVENTS_KEEP_AFTER_END_S: integer(1, 30 * 86_400).default(60),
  /**
   * A one-tool task's step is recorded as running once it has run this long (at once on a
   * redelivery or a retry, and always for a workflow's steps). A shorter step goes from queued to
   * its result in one write. 0: record every start before the adapter runs.
   * @internal
   */
  STEP_RUNNING_AFTER_MS: integer(0, 3_600_000).default(50),
  /**
   * How long a worker retries a database write through lost connections before parking the step's result in its job.
   * @internal
   */
  DB_WRITE_RETRY_MS: integer(0, 3_600_000).default(60_000),
  /**
   * How often one worker looks for active runs whose jobs went missing in Redis (see workers/runtime/reconciler.ts). 0: never.
   * @internal
   */
  RECONCILE_INTERVAL_MS: integer(0, 3_600_000).default(30_000),
  /**
   * Runs younger than this are not repaired: their jobs may still be on their way.
   * @internal
   */
  RECONCILE_AFTER_MS: integer(0, 86_400_000).default(60_000),
  /** Every API key's tool steps (and map items) running at once, across the deployment; the rest wait their turn. 0: no limit. */
  KEY_CONCURRENCY: integer(0, 100_000).default(0),
  /** Every API key's tool steps (and map items) started per minute, across the deployment; the rest wait their turn. 0: no limit. */
  KEY_RATE_PER_MINUTE: integer(0, 10_000_000).default(0),
  /**
   * Tasks are kept this many days (at most one day more), then dropped with their steps, dead
   * letters, callback deliveries and idempotency keys, a whole day's partition at once
   * (src/persistence/partitions.ts). GET /result of an expired task answers 410 task_expired.
   */
  RETENTION_DAYS: integer(1, 3650).default(30),
  /**
   * The durable history of every task (GET /tasks/:id/history, the attempts in GET /result): each
   * state change, attempt, retry and callback delivery, written in the same statements as the
   * changes themselves and kept as long as the task (RETENTION_DAYS). `off`: nothing is written
   * (what is already stored stays readable).
   */
  TASK_HISTORY: z.enum(['on', 'off']).default('on'),
  /**
   * Days ahead whose partitions exist before their first task (created by one worker each pass).
   * @internal
   */
  PARTITIONS_AHEAD_DAYS: integer(1, 90).default(3),
  /**
   * How often one worker maintains the partitions: creates the days ahead, drops the expired ones. 0: never (not even at start).
   * @internal
   */
  RETENTION_INTERVAL_MS: integer(0, 86_400_000).default(3_600_000),
  /** Port where a worker process serves its own /metrics. Unset: no metrics server in workers. */
  WORKER_METRICS_PORT: integer(0, 65535).optional(),
  /**
   * Where the built console is (scripts/build.mjs writes it to dist/console). Unset: dist/console
   * beside the compiled API (dist/src/...); run from TypeScript (tsx) there is none, and /console
   * answers 503 until this names a build.
   * @internal
   */
  CONSOLE_DIR: z.string().min(1).optional(),
  /** Bearer token that /metrics (the API's and the workers') requires. Unset: /metrics is open. */
  METRICS_TOKEN: z.string().min(16, 'use at least 16 characters').optional(),
  /**
   * How long the API reuses a reading of its queue, task and dead-letter gauges. 0: read at every scrape.
   * @internal
   */
  METRICS_CACHE_MS: integer(0, 600_000).default(5_000),
  /**
   * OTLP/HTTP collector base URL (e.g. `http://otel-collector:4318`); spans go to
   * `<url>/v1/traces`. Unset: tracing is off.
   */
  OTEL_EXPORTER_OTLP_ENDPOINT: z.url({ protocol: /^https?$/ }).optional(),
  /** Service name on exported spans. Unset: orchestrator-api, orchestrator-worker, or orchestrator (npm start). */
  OTEL_SERVICE_NAME: z.string().min(1).max(255).optional(),
  /**
   * Longest string (in characters) in a workflow definition's step inputs and output, the
   * strings templates are read from. A longer one is refused when the definition is posted.
   * @internal
   */
  TEMPLATE_STRING_MAX_CHARS: integer(16, 100_000_000).default(65_536),
  /**
   * Most template references (`{{...}}`) one workflow definition may hold, inputs and output together.
   * @internal
   */
  TEMPLATE_MAX_REFERENCES: integer(1, 1_000_000).default(1_000),
  /**
   * Largest input of a step, in bytes of JSON, once its templates are resolved. Steps that start
   * with the task are checked at submit (400); a step that becomes ready later and is over it
   * fails with StepInputTooLarge without running.
   */
  STEP_INPUT_MAX_BYTES: integer(1_024, 1_073_741_824).default(1_048_576),
  /** Largest output a step may return, in bytes of JSON; over it the step fails with StepOutputTooLarge. */
  STEP_OUTPUT_MAX_BYTES: integer(1_024, 1_073_741_824).default(1_048_576),
  /**
   * Deepest nesting of arrays and objects in a step's output; deeper fails with StepOutputTooLarge.
   * @internal
   */
  STEP_OUTPUT_MAX_DEPTH: integer(1, 1_000).default(64),
  /** Largest result of a task (the workflow's output, or the tool's), in bytes of JSON; over it the task fails with TaskResultTooLarge. */
  TASK_RESULT_MAX_BYTES: integer(1_024, 1_073_741_824).default(4_194_304),
  /**
   * A step's output travels in BullMQ (its job's return value, its dependents' job data) only
   * up to this many bytes of JSON; a larger one stays in PostgreSQL alone, and a small marker
   * travels instead.
   * @internal
   */
  JOB_INLINE_OUTPUT_MAX_BYTES: integer(0, 1_048_576).default(4_096),
  /** Most items a `for_each` step may map over; a longer list fails the step with TooManyItems. */
  MAP_MAX_ITEMS: integer(1, 1_000_000).default(1_000),
  /**
   * Largest sum of a map's item inputs, in bytes of JSON (they are stored when the map starts); over it the step fails with StepInputTooLarge.
   * @internal
   */
  MAP_INPUTS_MAX_BYTES: integer(1_024, 1_073_741_824).default(16_777_216),
  /** A `for_each` step's max_parallel when its definition sets none: most of its items queued or running at once. */
  MAP_MAX_PARALLEL: integer(1, 100_000).default(100),
  /** Deepest nesting of sub-workflows (a child of a child …); checked when a definition is stored, and at run time. */
  SUBWORKFLOW_MAX_DEPTH: integer(1, 100).default(5),
  /**
   * How long a cancelled task's exit handler (a workflow's on_exit) may run: past it, its steps still
   * running are cancelled and the task ends cancelled (history `exit_timed_out`).
   * @internal
   */
  EXIT_CANCEL_TIMEOUT_MS: integer(100, 86_400_000).default(60_000),
});

export type Config = Readonly<
  Omit<z.infer<typeof configSchema>, 'LOG_FORMAT' | 'DATABASE_DIRECT_URL' | 'QUEUE_SHARDS' | 'HOST'> & {
    LOG_FORMAT: 'json' | 'pretty';
    HOST: string;
    DATABASE_DIRECT_URL: string;
    QUEUE_SHARDS: number;
  }
>;

/** QUEUE_SHARDS on a Redis Cluster when unset. */
export const CLUSTER_DEFAULT_SHARDS = 6;

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

/** Variables whose values are secret: a bad one is described by its length, never shown. */
const SECRET_NAME = /(^|_)(SECRET|TOKEN|PASSWORD|KEYS?|HEADERS)$/;
/** Variables holding a URL, which may carry a password: shown with the password masked. */
const URL_NAME = /_(URL|ENDPOINT)$/;

/** The path seed 003's policy engine answers on, below POLICY_ENGINE_URL. */
export const POLICY_ENGINE_PATH = '/v1/evaluate';

/** POLICY_ENGINE_URL + `/v1/evaluate`, with one slash between them however the base ends. */
export function policyEngineEvaluateUrl(base: string): string {
  const url = new URL(base);
  let end = url.pathname.length;
  while (end > 0 && url.pathname.charCodeAt(end - 1) === 0x2f) end -= 1;
  url.pathname = `${url.pathname.slice(0, end)}${POLICY_ENGINE_PATH}`;
  return url.toString();
}

/**
 * The settings in effect, as GET /config/effective shows them: secrets (keys, tokens, secrets,
 * passwords, header sets, cluster nodes) only as set or not set, passwords inside URLs masked.
 */
export function effectiveConfig(config: Config): Record<string, unknown> {
  const shown: Record<string, unknown> = {};
  // Every setting, those left unset too (a parsed config leaves them out).
  const names = [...new Set([...Object.keys(configSchema.shape), ...Object.keys(config)])].sort();
  for (const name of names) {
    const value = (config as Record<string, unknown>)[name];
    const empty = value === undefined || value === null || (Array.isArray(value) && value.length === 0);
    // A number or a switch is a setting, not a secret (LONG_POLLS_PER_KEY ends like a key's name).
    const secret = (SECRET_NAME.test(name) || name === 'REDIS_CLUSTER_NODES') && typeof value !== 'number' && typeof value !== 'boolean';
    if (secret) shown[name] = empty ? 'not set' : 'set';
    else if (URL_NAME.test(name) && typeof value === 'string') shown[name] = withoutPassword(value);
    else shown[name] = value ?? null;
  }
  return shown;
}

/** `scheme://user:password@host` -> `scheme://user:***@host`; anything up to the last `@` counts as the password. */
function withoutPassword(url: string): string {
  return url.replace(/^([^:/?#]+:\/\/[^:@/?#]*:).*@/s, '$1***@');
}

/** What a problem message says about the value it refused. */
function describeValue(name: string, value: string | undefined, path: readonly PropertyKey[]): string {
  if (value === undefined) return '';
  // Cluster nodes are host:port, but a mistaken `user:password@host:port` would show the password.
  if (name === 'REDIS_CLUSTER_NODES') return ' (the value is not shown: it may hold a password)';
  if (!SECRET_NAME.test(name)) return ` (got ${JSON.stringify(URL_NAME.test(name) ? withoutPassword(value) : value)})`;
  const index = path[1];
  if (typeof index === 'number') {
    const entries = listEntries(value);
    return ` (entry ${index + 1} of ${entries.length} has ${entries[index]?.length ?? 0} characters; secret values are not shown)`;
  }
  return ` (got ${value.length} characters; secret values are not shown)`;
}

/**
 * Parses the environment once. A wrong value throws a ConfigError naming each bad variable, so
 * the process stops at boot instead of failing later. The message shows bad values, except
 * secrets (by their length only) and passwords inside URLs (masked): it ends up in logs.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  // Empty strings (`FOO=` in a .env file) mean "not set", so the default applies.
  const present = Object.fromEntries(Object.entries(env).filter(([, value]) => value !== undefined && value !== ''));
  const parsed = configSchema.safeParse(present);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => {
      const name = String(issue.path[0] ?? '');
      return `  ${name}: ${issue.message}${describeValue(name, present[name], issue.path)}`;
    });
    throw new ConfigError(`Invalid configuration:\n${problems.join('\n')}`);
  }
  const value = parsed.data;
  if (value.REDIS_CLUSTER_NODES.length > 0 && !hasHashTag(value.QUEUE_PREFIX)) {
    throw new ConfigError(
      `Invalid configuration:\n  QUEUE_PREFIX: must contain a Redis Cluster hash tag such as {orchestrator} when REDIS_CLUSTER_NODES is set, so that all keys of a task share one slot in each queue shard (got ${JSON.stringify(value.QUEUE_PREFIX)})`,
    );
  }
  if (value.AUTH_DISABLED && (value.API_KEYS.length > 0 || value.API_KEYS_FILE)) {
    throw new ConfigError('Invalid configuration:\n  AUTH_DISABLED: true contradicts API_KEYS / API_KEYS_FILE: unset one or the other (got "true")');
  }
  if (value.AUTH_DISABLED && (value.AUTH_JWKS_URL || value.AUTH_JWT_SECRET)) {
    throw new ConfigError('Invalid configuration:\n  AUTH_DISABLED: true contradicts AUTH_JWKS_URL / AUTH_JWT_SECRET: unset one or the other (got "true")');
  }
  if (value.AUTH_JWKS_URL || value.AUTH_JWT_SECRET) {
    // A token from the same identity provider for another service must not open this one.
    const missing = (['AUTH_JWT_ISSUER', 'AUTH_JWT_AUDIENCE'] as const).filter((name) => value[name] === undefined);
    if (missing.length > 0) {
      throw new ConfigError(`Invalid configuration:\n${missing.map((name) => `  ${name}: required when AUTH_JWKS_URL or AUTH_JWT_SECRET is set`).join('\n')}`);
    }
  }
  return Object.freeze({
    ...value,
    LOG_FORMAT: value.LOG_FORMAT ?? (value.NODE_ENV === 'production' ? 'json' : 'pretty'),
    HOST: value.HOST ?? (value.NODE_ENV === 'production' ? '0.0.0.0' : '127.0.0.1'),
    DATABASE_DIRECT_URL: value.DATABASE_DIRECT_URL ?? value.DATABASE_URL,
    QUEUE_SHARDS: value.QUEUE_SHARDS ?? (value.REDIS_CLUSTER_NODES.length > 0 ? CLUSTER_DEFAULT_SHARDS : 1),
    POLICY_URL: value.POLICY_URL ?? (value.POLICY_ENGINE_URL === undefined ? undefined : policyEngineEvaluateUrl(value.POLICY_ENGINE_URL)),
  });
}
