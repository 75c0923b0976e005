import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { Worker } from 'bullmq';
import type { RegisteredWorker, WorkerRegistration } from '../../src/fleet/protocol.js';
import { loadConfig } from '../../src/lib/config.js';
import { createLogger, type Logger } from '../../src/lib/logger.js';
import { Metrics } from '../../src/observability/metrics.js';
import { type StepJobData, toolQueueName } from '../../src/queue/jobs.js';
import { createRedis } from '../../src/queue/redis.js';
import { Shards, shardLimiter, shareOf } from '../../src/queue/shards.js';
import { type AnyTool, ToolRegistry } from '../../src/tools/tool.js';
import { stepBackoff } from '../runtime/backoff.js';
import { handBackStepsWhenClosing } from '../runtime/hand-back.js';
import { createStepProcessor } from '../runtime/step-processor.js';
import { StopSignals } from '../runtime/stop-signals.js';
import { RunningSteps, toolRegistration } from '../runtime/tool-registration.js';
import { type ApiCall, remoteLedger } from './remote-ledger.js';

// What a user's code imports: the tool definition and the errors an adapter throws.
export { defineTool, NonRetryableError, RetryableError, type Tool, type ToolContext } from '../../src/tools/tool.js';

const VERSION = '0.1.0';

export interface WorkerOptions {
  /** The tools this process runs. */
  tools: AnyTool[];
  /** @defaultValue ORCHESTRATOR_URL */
  url?: string;
  /** A key of scope `worker` (or admin). @defaultValue ORCHESTRATOR_API_KEY */
  apiKey?: string;
  /** @defaultValue REDIS_URL, else redis://127.0.0.1:6379 */
  redisUrl?: string;
  /** Steps run at once per tool (a tool's own concurrency may lower it). @defaultValue WORKER_CONCURRENCY, else 10 */
  concurrency?: number;
  /** Running steps get this long to finish on close. @defaultValue WORKER_SHUTDOWN_TIMEOUT_MS, else 30000 */
  shutdownTimeoutMs?: number;
  /** Register tools whose schemas differ from what live workers serve (a new version of each). @defaultValue false */
  replace?: boolean;
  logger?: Logger;
}

export interface OrchestratorWorker {
  /** The id it registered under (GET /workers). */
  readonly id: string;
  /** Registers its tools and starts taking their jobs. */
  start(): Promise<void>;
  /** Stops taking jobs, lets running steps finish (up to the shutdown timeout), and disconnects. */
  close(): Promise<{ drained: boolean }>;
}

/** The API answered, with a status other than 2xx. */
class ApiAnswerError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** How long a starting worker keeps trying to register while the API is away or answers 5xx. */
const REGISTER_PATIENCE_MS = 60_000;

/**
 * Registers, again and again while the API cannot be reached or answers 5xx or 429 (it may be
 * starting beside this worker), for up to REGISTER_PATIENCE_MS; a refusal (401, 403, 409 …) throws at once.
 */
async function registerPatiently(call: ApiCall, path: string, registration: WorkerRegistration, logger?: Logger): Promise<RegisteredWorker> {
  const deadline = Date.now() + REGISTER_PATIENCE_MS;
  for (let delayMs = 250; ; delayMs = Math.min(delayMs * 2, 5_000)) {
    try {
      return (await call('PUT', path, registration)) as RegisteredWorker;
    } catch (error) {
      const refused = error instanceof ApiAnswerError && error.status < 500 && error.status !== 429;
      if (refused || Date.now() + delayMs > deadline) throw error;
      (logger ?? console).warn(`registration failed, trying again in ${delayMs} ms: ${(error as Error).message}`);
      await new Promise((resolve) => setTimeout(resolve, delayMs));
    }
  }
}

function apiCaller(url: string, apiKey: string | undefined): ApiCall {
  const base = url.replace(/\/+$/, '');
  return async (method, path, body) => {
    const response = await fetch(`${base}${path}`, {
      method,
      headers: { 'content-type': 'application/json', ...(apiKey ? { authorization: `Bearer ${apiKey}` } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      signal: AbortSignal.timeout(30_000),
    });
    const answer = (await response.json().catch(() => ({}))) as { error?: { code?: string; message?: string } };
    if (!response.ok)
      throw new ApiAnswerError(
        response.status,
        `${method} ${path} answered ${response.status}: ${answer.error?.message ?? 'no message'} (${answer.error?.code ?? 'no code'})`,
      );
    return answer;
  };
}

/**
 * A worker of your own tools, for embedding: `start()` registers them with the orchestrator's API
 * (with a `worker` key) and takes their jobs from Redis; results go back through the API, so
 * the process needs REDIS_URL, ORCHESTRATOR_URL and ORCHESTRATOR_API_KEY, and never the database.
 */
export function createWorker(options: WorkerOptions): OrchestratorWorker {
  const env = process.env;
  const url = options.url ?? env.ORCHESTRATOR_URL;
  if (!url) throw new Error('createWorker needs the orchestrator’s URL: options.url or ORCHESTRATOR_URL');
  const call = apiCaller(url, options.apiKey ?? env.ORCHESTRATOR_API_KEY);
  const id = `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
  const concurrency = options.concurrency ?? Number(env.WORKER_CONCURRENCY ?? 10);
  const shutdownTimeoutMs = options.shutdownTimeoutMs ?? Number(env.WORKER_SHUTDOWN_TIMEOUT_MS ?? 30_000);
  const registration: WorkerRegistration = {
    host: hostname(),
    pid: process.pid,
    version: VERSION,
    concurrency,
    tools: options.tools.map(toolRegistration),
    ...(options.replace ? { replace: true } : {}),
  };
  let running: { close(): Promise<{ drained: boolean }> } | undefined;

  return {
    id,
    async start() {
      const registered = await registerPatiently(call, `/workers/${encodeURIComponent(id)}`, registration, options.logger);
      // The settings the step path reads, from what the API answered; nothing of the database.
      const config = loadConfig({
        REDIS_URL: options.redisUrl ?? env.REDIS_URL ?? 'redis://127.0.0.1:6379',
        QUEUE_PREFIX: registered.queue_prefix,
        QUEUE_SHARDS: String(registered.queue_shards),
        STEP_RUNNING_AFTER_MS: String(registered.step_running_after_ms),
        TASK_RESULT_MAX_BYTES: String(registered.task_result_max_bytes),
        WORKER_CONCURRENCY: String(concurrency),
        // How long a job stays locked to this process without a renewal: a process that dies gives its steps back after it.
        ...(env.WORKER_LOCK_DURATION_MS ? { WORKER_LOCK_DURATION_MS: env.WORKER_LOCK_DURATION_MS } : {}),
        ...(env.LOG_LEVEL ? { LOG_LEVEL: env.LOG_LEVEL } : {}),
        ...(env.LOG_FORMAT ? { LOG_FORMAT: env.LOG_FORMAT } : {}),
      });
      const logger = (options.logger ?? createLogger(config)).child({ worker_id: id });
      // A tool's declared settings come from this process's environment.
      const choosers = Object.fromEntries(options.tools.filter((tool) => tool.settings).map((tool) => [tool.name, () => ({ ...env })]));
      const registry = new ToolRegistry(options.tools, choosers);
      const settings = registry.settings(config);
      const connection = createRedis(config, 'worker', `user-worker-${id}`);
      const subscriber = createRedis(config, 'subscriber', `user-worker-${id}-stops`);
      const stops = new StopSignals(subscriber, connection, config.QUEUE_PREFIX, logger);
      await stops.start();
      const runStep = createStepProcessor({ config, logger, registry, settings, ledger: remoteLedger(call, id), stops, metrics: new Metrics() });
      // The steps it runs now, for its heartbeat (GET /workers shows them).
      const inFlight = new RunningSteps();
      // Set when close() begins: a job BullMQ still hands this process then goes back to its queue.
      let closing = false;
      const processStep = handBackStepsWhenClosing(() => closing, inFlight.track(runStep), logger);
      const shards = Shards.of(config).prefixes;
      const workers = shards.flatMap((prefix, index) =>
        registry.adapters().map(
          (tool) =>
            new Worker<StepJobData>(toolQueueName(tool.name), processStep, {
              connection,
              prefix,
              name: `${tool.name}@${id}`,
              concurrency: Math.max(1, shareOf(Math.min(tool.concurrency ?? Number.POSITIVE_INFINITY, concurrency), index, shards.length)),
              // Across every process serving the tool, as the built-in worker's (BullMQ counts in Redis).
              ...(tool.rate_limit ? { limiter: shardLimiter(tool.rate_limit, index, shards.length) } : {}),
              lockDuration: config.WORKER_LOCK_DURATION_MS,
              stalledInterval: config.WORKER_LOCK_DURATION_MS,
              maxStalledCount: 3,
              settings: { backoffStrategy: stepBackoff },
            }),
        ),
      );
      for (const worker of workers) worker.on('error', (error) => logger.warn('worker error', { error: error.message }));
      // The registration again is the heartbeat: the API counts a worker silent for three as gone.
      const heartbeat = setInterval(() => {
        const beat = { ...registration, ...inFlight.report() };
        call('PUT', `/workers/${encodeURIComponent(id)}`, beat).catch((error: Error) => logger.warn('heartbeat failed', { error: error.message }));
      }, registered.heartbeat_ms);
      heartbeat.unref();
      logger.info('worker started', { tools: registry.names(), queue_prefix: config.QUEUE_PREFIX });
      running = {
        async close() {
          closing = true;
          clearInterval(heartbeat);
          let timer: NodeJS.Timeout | undefined;
          const drained = await Promise.race([
            Promise.all(workers.map((worker) => worker.close())).then(() => true),
            new Promise<boolean>((resolve) => {
              timer = setTimeout(() => resolve(false), shutdownTimeoutMs);
            }),
          ]);
          clearTimeout(timer);
          if (!drained) await Promise.all(workers.map((worker) => worker.close(true)));
          // Gone at once rather than after three silent heartbeats: a restart (node --watch, a
          // deploy) registers changed tools without being refused for this process's old ones.
          await call('DELETE', `/workers/${encodeURIComponent(id)}`).catch((error: Error) => logger.warn('could not deregister', { error: error.message }));
          subscriber.disconnect();
          await connection.quit().catch(() => connection.disconnect());
          return { drained };
        },
      };
    },
    async close() {
      return (await running?.close()) ?? { drained: true };
    },
  };
}

/** Runs a worker of `tools` until SIGTERM or SIGINT, then drains it and exits. */
export async function runWorker(options: WorkerOptions): Promise<OrchestratorWorker> {
  const worker = createWorker(options);
  await worker.start();
  let closing = false;
  const stop = () => {
    if (closing) return;
    closing = true;
    void worker.close().then(
      ({ drained }) => process.exit(drained ? 0 : 1),
      () => process.exit(1),
    );
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  return worker;
}
