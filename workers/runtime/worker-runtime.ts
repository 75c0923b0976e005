import { DelayedError, type Job, Worker } from 'bullmq';
import { openCore } from '../../src/composition.js';
import type { Config } from '../../src/lib/config.js';
import { WorkerStoppingError } from '../../src/lib/errors.js';
import type { Logger } from '../../src/lib/logger.js';
import type { Metrics } from '../../src/observability/metrics.js';
import { bullmqTelemetry } from '../../src/observability/tracing.js';
import {
  BACKOFF_TYPE,
  CALLBACKS_QUEUE,
  type GateTimerData,
  type HoldJobData,
  SERVICES_QUEUE,
  type StepJobData,
  TASKS_QUEUE,
  TIMERS_QUEUE,
  type TimerJobData,
  toolQueueName,
} from '../../src/queue/jobs.js';
import { isConnectionError } from '../../src/queue/redis.js';
import { SCHEDULES_QUEUE, type ScheduleJobData, tickTime } from '../../src/queue/schedule-queue.js';
import { shardLimiter, shareOf } from '../../src/queue/shards.js';
import { ScheduleService } from '../../src/schedules/schedule-service.js';
import type { Runs } from '../../src/tasks/runs.js';
import { runsLedger } from '../../src/tasks/step-ledger.js';
import { dynamicTools, type RateLimit, type ToolRegistry, type ToolSettings } from '../../src/tools/tool.js';
import { stepBackoff } from './backoff.js';
import { callbackRetryDelay, createCallbackSender } from './callback-sender.js';
import { handBackStepsWhenClosing, handBackWhenClosing } from './hand-back.js';
import { postpone } from './postpone.js';
import { Reconciler } from './reconciler.js';
import { registerBuiltIns } from './registration.js';
import { RetentionTimer } from './retention.js';
import { createRootProcessor, processHold } from './run-roots.js';
import { createStepProcessor } from './step-processor.js';
import { StopSignals } from './stop-signals.js';
import { RunningSteps } from './tool-registration.js';

export interface WorkerRuntimeOptions {
  config: Config;
  logger: Logger;
  /** The tools this process runs (already narrowed by WORKER_TOOLS). */
  registry: ToolRegistry;
  /** Each of those tools' ctx.settings (ToolRegistry.settings). */
  settings: ToolSettings;
  /** Every tool the deployment knows: ready steps may use tools this process does not run, and sub-workflows compile with them. */
  allTools: ToolRegistry;
  metrics: Metrics;
  /** Schedules' timing knobs, for tests. @defaultValue the ScheduleService defaults */
  schedules?: { graceMs?: number; drainIntervalMs?: number };
}

export interface WorkerRuntime {
  workers: Worker[];
  runs: Runs;
  /** The schedules' side that decides ticks and makes their tasks. */
  schedules: ScheduleService;
  reconciler: Reconciler;
  /** Stops taking jobs, lets running steps finish (up to WORKER_SHUTDOWN_TIMEOUT_MS), then closes everything. */
  close(): Promise<{ drained: boolean }>;
}

/** What `work` resolves with, or `late` once `deadline` (a Date.now() time) has passed. */
async function until<T>(work: Promise<T>, deadline: number, late: T): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      work,
      new Promise<T>((resolve) => {
        timer = setTimeout(() => resolve(late), Math.max(0, deadline - Date.now()));
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * One BullMQ worker per tool queue this process serves, plus one for the runs' roots (the tasks
 * queue), one for timers and holds and one for callbacks, in every queue shard. A tool's workers together run up to
 * min(tool.concurrency, WORKER_CONCURRENCY) steps (at least one per shard) and share the tool's
 * rate limit with every other process.
 */
export async function startWorkerRuntime(options: WorkerRuntimeOptions): Promise<WorkerRuntime> {
  const { config, logger, settings, metrics } = options;
  const core = await openCore({ config, logger, metrics, tools: options.allTools, role: 'worker' });
  const { prisma, sql } = core.db;
  const { outage, redis: connection, subscriber, services, queues, runs, store, scheduleStore, scheduleQueue, tasks: submitter } = core;
  const registry = options.registry.withDynamic(dynamicTools(services, core.fleet));
  const stops = new StopSignals(subscriber, connection, config.QUEUE_PREFIX, logger);
  await stops.start();
  // Ticks of schedules make tasks here, through the same gate as POST /assign-task (policy and the owner's quotas).
  const schedules = new ScheduleService({
    store: scheduleStore,
    queue: scheduleQueue,
    logger,
    checkTask: (request, submitOptions) => submitter.check(request, submitOptions),
    submit: (request, submitOptions) => submitter.submit(request, submitOptions),
    catchUpMax: config.SCHEDULE_CATCH_UP_MAX,
    ...options.schedules,
  });
  /** A schedule's job: a tick (its time is the job's), a catch-up, or a buffered tick waiting for the running task to end. */
  const processSchedule = async (job: Job<ScheduleJobData>, token?: string) => {
    const { scheduleId } = job.data;
    if (job.name === 'drain') {
      const outcome = await schedules.drain(scheduleId, { later: false });
      if (outcome !== 'waiting') return { outcome };
      await job.moveToDelayed(Date.now() + schedules.drainIntervalMs, token);
      throw new DelayedError();
    }
    const tickAt = job.name === 'tick' ? tickTime(job.id) : undefined;
    return schedules.tick(scheduleId, tickAt);
  };

  // Set when close() begins: a job BullMQ still hands this process then goes back to its queue.
  let closing = false;
  const unlessClosing = <J extends Job>(processor: (job: J, token?: string) => Promise<unknown>) => handBackWhenClosing(() => closing, processor, logger);
  const running = new RunningSteps();
  const processStep = handBackStepsWhenClosing(
    () => closing,
    running.track(createStepProcessor({ config, logger, registry, settings, ledger: runsLedger(runs), runs, stops, metrics, circuits: services })),
    logger,
  );
  // Its tools registered before it takes their jobs: the API, which imports no adapter, knows them
  // (and loads the example workflows that use them) once this worker serves them.
  const registration = await registerBuiltIns({
    fleet: core.fleet,
    tools: options.registry,
    config,
    logger,
    running,
    onRegistered: async () => {
      await core.workflows.loadExamples();
    },
  });
  const sendCallback = createCallbackSender({ config, logger, prisma, store, metrics });
  const processRoot = createRootProcessor({ runs, logger });
  /** A sleep's wake-up (or a wait's timeout): the step is done. PostgreSQL away is no failure: the timer comes back. */
  const wake = async (job: Job<TimerJobData | GateTimerData | HoldJobData>, token?: string) => {
    // A rate gate's window moved on: its line is let in (a failure retries the timer).
    if ('gate' in job.data) return runs.wakeGate(job.data.gate);
    if ('hold' in job.data) return processHold(job as Job<HoldJobData>, token, runs, logger);
    const { taskId, run, stepId } = job.data;
    try {
      const { recorded } = await runs.report({ type: 'wake', taskId, run, stepId, at: new Date() });
      return { recorded };
    } catch (error) {
      return postpone(job, token, error, logger.child({ task_id: taskId, step_id: stepId }), 'could not wake a sleeping step: its timer comes back later');
    }
  };
  const shards = queues.shards.length;
  // Every process consumes every shard. A tool's concurrency and rate limit are split over the
  // shards (shareOf), so that a process still runs about `concurrency` steps of the tool (at
  // least one per shard) and the deployment keeps the tool's rate, as with one shard.
  const workers: Worker[] = queues.shards.flatMap((shard) => {
    const common = {
      connection,
      prefix: shard.prefix,
      // A step commits its result and carries out what it caused before being acknowledged; a
      // lost worker's steps come back after the lock expires, found by the next stalled check.
      lockDuration: config.WORKER_LOCK_DURATION_MS,
      stalledInterval: config.WORKER_LOCK_DURATION_MS,
      maxStalledCount: 3,
      // Tracing on: a `process` span per job, continuing the trace its producer put in the job.
      ...bullmqTelemetry(),
    };
    const suffix = shards > 1 ? `.${shard.index}` : '';
    // The services' queue is served by workers that run every tool (WORKER_TOOLS empty); a
    // service's own concurrency and rate limit are limits per key on its steps.
    const queued: { name: string; queue: string; concurrency?: number; rate_limit?: RateLimit }[] = [
      ...registry.adapters().map((tool) => ({ ...tool, queue: toolQueueName(tool.name) })),
      ...(config.WORKER_TOOLS.length === 0 ? [{ name: SERVICES_QUEUE, queue: SERVICES_QUEUE }] : []),
    ];
    const toolWorkers = queued.map((tool) => {
      const worker = new Worker<StepJobData>(tool.queue, processStep, {
        ...common,
        name: `${tool.name}${suffix}@${process.pid}`,
        concurrency: Math.max(1, shareOf(Math.min(tool.concurrency ?? Number.POSITIVE_INFINITY, config.WORKER_CONCURRENCY), shard.index, shards)),
        ...(tool.rate_limit ? { limiter: shardLimiter(tool.rate_limit, shard.index, shards) } : {}),
        settings: { backoffStrategy: stepBackoff },
      });
      // A job BullMQ failed without the step processor (it stalled too often: its workers kept
      // dying): the worker that saw it records the step's failure (the reconciler would, later).
      worker.on('stalled', (jobId) => {
        void (async () => {
          const job = await shard.toolQueue(tool.queue === SERVICES_QUEUE ? 'service.any' : tool.name).getJob(jobId);
          if (!job || (await job.getState()) !== 'failed') return;
          const { taskId, run, stepId, item, single } = job.data;
          const now = new Date();
          const report = {
            taskId,
            run,
            stepId,
            attempt: 0,
            status: 'failed' as const,
            error: { name: 'StepJobFailed', message: job.failedReason || 'the step job failed', retryable: false },
            startedAt: now,
            finishedAt: now,
          };
          if (single) await runs.finishSingle({ ...report, tool: job.data.tool });
          else await runs.report({ type: 'result', ...report, ...(item !== undefined ? { item } : {}) });
        })().catch((error: Error) => logger.warn('could not record a stalled job', { job_id: jobId, error: error.message }));
      });
      return worker;
    });
    return [
      ...toolWorkers,
      new Worker(TASKS_QUEUE, unlessClosing(processRoot), {
        ...common,
        name: `tasks${suffix}@${process.pid}`,
        concurrency: Math.max(1, shareOf(Math.max(10, config.WORKER_CONCURRENCY), shard.index, shards)),
      }),
      new Worker(TIMERS_QUEUE, unlessClosing(wake), {
        ...common,
        name: `timers${suffix}@${process.pid}`,
        concurrency: Math.max(1, shareOf(Math.max(10, config.WORKER_CONCURRENCY), shard.index, shards)),
      }),
      new Worker(CALLBACKS_QUEUE, unlessClosing(sendCallback), {
        ...common,
        name: `callbacks${suffix}@${process.pid}`,
        concurrency: Math.max(1, shareOf(10, shard.index, shards)),
        settings: { backoffStrategy: (failures: number, type?: string, error?: Error) => (type === BACKOFF_TYPE ? callbackRetryDelay(failures, error) : 0) },
      }),
    ];
  });
  workers.push(
    new Worker(SCHEDULES_QUEUE, unlessClosing(processSchedule), {
      connection,
      prefix: scheduleQueue.prefix,
      name: `schedules@${process.pid}`,
      concurrency: 5,
      lockDuration: config.WORKER_LOCK_DURATION_MS,
      stalledInterval: config.WORKER_LOCK_DURATION_MS,
      ...bullmqTelemetry(),
    }),
  );
  for (const worker of workers) {
    // A lost connection is the outage's to say (each worker would repeat it at every reconnect attempt).
    worker.on('error', (error) => isConnectionError(error) || logger.error('worker error', { queue: worker.name, error: error.message }));
    worker.on('failed', (job, error) => {
      // A job failed outside the processor (stalled too often): the run's root closes it.
      if (job && /stalled/i.test(error.message)) logger.error('step job stalled too often', { job_id: job.id, error: error.message });
    });
  }
  await Promise.all(workers.map((worker) => worker.waitUntilReady()));
  const reconciler = new Reconciler({
    redis: connection,
    queues,
    runs,
    store,
    logger,
    prefix: config.QUEUE_PREFIX,
    intervalMs: config.RECONCILE_INTERVAL_MS,
    staleAfterMs: config.RECONCILE_AFTER_MS,
  });
  if (config.RECONCILE_INTERVAL_MS > 0) reconciler.start();
  const retention = new RetentionTimer({
    sql,
    logger,
    retentionDays: config.RETENTION_DAYS,
    aheadDays: config.PARTITIONS_AHEAD_DAYS,
    intervalMs: config.RETENTION_INTERVAL_MS,
  });
  if (config.RETENTION_INTERVAL_MS > 0) retention.start();
  // A flushed Redis loses no schedule: their job schedulers are made again from PostgreSQL.
  await schedules.installAll().then(
    (installed) => installed > 0 && logger.info('schedules installed', { schedules: installed }),
    (error: Error) => logger.error('could not install the schedules', { error: error.message }),
  );
  logger.info('worker started', {
    worker_id: registration.id,
    tools: registry.adapters().map((tool) => tool.name),
    services: services.list().length,
    concurrency: config.WORKER_CONCURRENCY,
    queue_shards: queues.shards.map((shard) => shard.prefix),
  });

  return {
    workers,
    runs,
    schedules,
    reconciler,
    async close() {
      // One bound for the whole shutdown, whatever Redis does: with Redis away, closing a worker,
      // a reconciler pass or a queue waits for it, for good (a worker told to stop ran on for ten
      // minutes). Stop taking jobs first, then wait for running ones; past the bound, leave them:
      // their locks expire and another worker runs them again (delivery is at least once).
      // Stopping the reconciler may wait for its pass to end: the workers must not take new jobs
      // meanwhile (a busy machine's drain test saw one taken 14 ms after the signal).
      closing = true;
      const deadline = Date.now() + config.WORKER_SHUTDOWN_TIMEOUT_MS;
      const draining = Promise.all([...workers.map((worker) => worker.close()), reconciler.stop(), retention.stop()]);
      const drained = await until(
        draining.then(() => true),
        deadline,
        false,
      );
      if (!drained) {
        // Past the bound: stop the adapters' work and drop the connections without
        // acknowledging anything. The steps' locks expire and other workers run them again.
        logger.warn('shutdown timeout reached before the workers closed; steps still running will run again elsewhere', { redis_down: outage.down });
        stops.abortAll(new WorkerStoppingError());
        for (const worker of workers) void worker.close(true).catch(() => undefined);
      }
      // Drained, it leaves the fleet while PostgreSQL is still open. Past the bound it only stops
      // its heartbeat: waiting on PostgreSQL here would give the forced workers time to fail
      // their aborted jobs in Redis before the connections drop, when nothing may be recorded.
      if (drained) await until(registration.close(), deadline, undefined);
      else registration.stop();
      core.stopListening();
      // What the steps caused (the next steps' jobs, quota releases), then the queues: within what
      // is left of the bound. Whatever Redis did not take by then, the reconciler repairs.
      const closed =
        drained &&
        (await until(
          core.close().then(() => true),
          deadline,
          false,
        ));
      if (drained && !closed) logger.warn('Redis did not answer within the shutdown bound: closing without it');
      if (!closed) await core.disconnect();
      return { drained };
    },
  };
}
