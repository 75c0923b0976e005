import { hostname } from 'node:os';
import { DelayedError, type Job, UnrecoverableError } from 'bullmq';
import type { z } from 'zod';
import { attemptOutcome } from '../../src/engine/decide.js';
import { isFinished, type StepOutcome } from '../../src/engine/status.js';
import type { Config } from '../../src/lib/config.js';
import {
  coerceError,
  LimitExceededError,
  NonRetryableError,
  RetryableError,
  TaskStoppedError,
  ToolTimeoutError,
  toErrorRecord,
  WorkerStoppingError,
} from '../../src/lib/errors.js';
import { checkStepOutput, jobReturnValue } from '../../src/lib/limits.js';
import { type Logger, redactValues, secretValues } from '../../src/lib/logger.js';
import { unstorableProblems } from '../../src/lib/problems.js';
import type { Metrics } from '../../src/observability/metrics.js';
import { SpanAttributes, startSpan } from '../../src/observability/tracing.js';
import type { ParkedResult, StepJobData } from '../../src/queue/jobs.js';
import type { Runs } from '../../src/tasks/runs.js';
import type { StepLedger, StepRef } from '../../src/tasks/step-ledger.js';
import { isServiceTool } from '../../src/tools/openapi-tools.js';
import type { ToolRegistry, ToolSettings } from '../../src/tools/tool.js';
import { capturingLogger } from './attempt-log.js';
import { retryDelay } from './backoff.js';
import { postpone } from './postpone.js';
import { progressReporter } from './progress.js';
import type { StopSignals } from './stop-signals.js';

export interface StepProcessorDeps {
  config: Config;
  logger: Logger;
  registry: ToolRegistry;
  /** Each tool's ctx.settings (ToolRegistry.settings), resolved once at start. */
  settings: ToolSettings;
  /** Where claims, results and notes go: the run driver in-process, or the API for a user's worker (src/tasks/step-ledger.ts). */
  ledger: StepLedger;
  /** The run driver, for what only the built-in worker does: services' circuits, and reading a task's secret params. */
  runs?: Runs;
  stops: StopSignals;
  metrics: Metrics;
  /** The circuit breakers of registered services: a step whose service's circuit is open waits (reason circuit_open). */
  circuits?: { admit(tool: string, caller?: string): Promise<{ ok: true; probe: boolean } | { ok: false; until: number }> };
}

function problems(error: z.ZodError) {
  return error.issues.map((issue) => ({ path: issue.path.join('.'), message: issue.message }));
}

/** Aborts a step whose start, claimed while it ran, was refused (its task ended meanwhile). */
class NotRunnable extends Error {
  override name = 'NotRunnable';
  constructor() {
    super('the step may not run: its task ended, or it finished already');
  }
}

/** The step a job runs, as the ledger names it. */
function refOf(job: Job<StepJobData>): StepRef {
  const { taskId, run, stepId, item, tool, single, limited } = job.data;
  return { taskId, run, stepId, ...(item !== undefined ? { item } : {}), tool, ...(single ? { single } : {}), ...(limited ? { limited } : {}) };
}

/** A step job's data for its next delivery, this one having run nothing (held back, or handed back): no attempt of the step. */
export function deliveredUnrun(data: StepJobData): StepJobData {
  return { ...data, heldDeliveries: (data.heldDeliveries ?? 0) + 1 };
}

/** Rejects when the signal fires, so an adapter that ignores its signal still loses the race. */
function whenAborted(signal: AbortSignal): Promise<never> {
  return new Promise((_, reject) => {
    if (signal.aborted) reject(signal.reason);
    else signal.addEventListener('abort', () => reject(signal.reason), { once: true });
  });
}

/**
 * Runs one job of a step (or of a map's item): claims it with PostgreSQL, runs the adapter
 * under a timeout and the task's stop signal, reports how the attempt ended (the engine decides
 * what it means for the task, and its effects are carried out), and only then lets BullMQ
 * acknowledge the job. A delivery is one time BullMQ hands the job to a worker; an attempt is a
 * delivery that PostgreSQL counts (all but those an open circuit held back, or a closing worker
 * handed back: heldDeliveries); a try is the retry policy's count (docs/architecture.md "Words,
 * once").
 */
export function createStepProcessor(deps: StepProcessorDeps) {
  const { registry, settings, ledger, runs, stops, config, metrics } = deps;
  /** Who ran an attempt, in the history: this host and process. */
  const worker = `${hostname()}/${process.pid}`;

  function count(tool: string, status: StepOutcome, startedAt: Date): void {
    metrics.stepsFinished.inc({ tool, status });
    metrics.stepDuration.observe({ tool, status }, (Date.now() - startedAt.getTime()) / 1000);
    if (status === 'failed') metrics.deadLetters.inc({ tool });
  }

  return async function processStep(job: Job<StepJobData>, token?: string): Promise<unknown> {
    const { taskId, run, stepId, item, tool: toolName } = job.data;
    // The retry policy's try (1 for the first), which retry.attempts bounds and the tool sees as
    // ctx.attempt; a redelivery after a lost lock, or one postponed while PostgreSQL was away,
    // keeps it. The attempt, as PostgreSQL numbers them (a step's `attempts`): every delivery but
    // those its service's open circuit held back, or a closing worker handed back.
    const tryNumber = job.attemptsMade + 1;
    const attempt = Math.max(job.attemptsStarted - (job.data.heldDeliveries ?? 0), tryNumber);
    const logger = deps.logger.child({
      task_id: taskId,
      step_id: stepId,
      ...(item !== undefined ? { item } : {}),
      tool: toolName,
      attempt,
      try: tryNumber,
      job_id: job.id,
    });
    // A registered service's tool may be newer than this process's reading of the registry.
    const tool = await registry.resolve(toolName);
    if (!tool) throw new UnrecoverableError(`this worker has no tool ${toolName}`);
    // The step ran before, but PostgreSQL was down when its result had to be written: write it
    // now instead of running the adapter again.
    if (job.data.parked) return commitParked(job, token, logger);
    if (isServiceTool(toolName) && deps.circuits && runs) {
      const held = await holdForCircuit(job, token, logger);
      if (held) return held;
    }

    const startedAt = new Date();
    const who = { try: tryNumber, worker, ...(job.id !== undefined ? { jobId: job.id } : {}) };
    const claimStart = () => ledger.claim({ tool: toolName, taskId, run, stepId, ...(item !== undefined ? { item } : {}), attempt, at: startedAt, ...who });
    /** The step finished already (delivered again after its worker died), or its task ended: what its result caused is made sure of instead. */
    const notRunnable = async (): Promise<unknown> => {
      try {
        await ledger.settle(refOf(job));
      } catch (error) {
        metrics.stepsPostponed.inc({ tool: toolName });
        return postpone(job, token, error, logger, 'could not close a step that will not run: its job comes back later');
      }
      logger.info('step not run: it already finished, or its task ended');
      return { skipped: true };
    };
    // A one-tool task's first delivery runs at once and records its start only if it is still
    // running after STEP_RUNNING_AFTER_MS: a shorter step goes from queued to its result in one
    // write (its start rides along), which takes a commit off every fast task's latency. A later
    // delivery claims the step first, and so does one that its service's open circuit held back
    // before (its task may have been cancelled while it waited). A workflow's step always claims
    // first: a sibling's failure skips the steps not yet started, and a skipped step must not have run.
    const lazy = job.data.single === true && attempt === 1 && !job.data.heldDeliveries && config.STEP_RUNNING_AFTER_MS > 0;
    // A workflow's step claimed in the commit that made it ready: its first delivery runs at once,
    // PostgreSQL shows it running already (one commit per level). A later delivery claims.
    const preclaimed = job.data.claimed === true && attempt === 1 && !job.data.heldDeliveries;
    if (!lazy && !preclaimed) {
      let runnable: boolean;
      try {
        runnable = await claimStart();
      } catch (error) {
        // PostgreSQL (or Redis) did not answer in time: however long that lasts, it is not a
        // failed try of the step. Its job waits and comes back.
        metrics.stepsPostponed.inc({ tool: toolName });
        return postpone(job, token, error, logger, 'could not start the step: its job comes back later');
      }
      if (!runnable) return notRunnable();
    }
    let claim: Promise<boolean> | undefined;
    /** Whether the step may go on; a claim that cannot reach PostgreSQL does not stop it (its result is parked if need be). */
    const claimed = (): Promise<boolean> => {
      claim ??= claimStart().then(
        (runnable) => runnable,
        () => true,
      );
      return claim;
    };

    const controller = new AbortController();
    const untrack = stops.track(taskId, run, stepId, controller);
    // Its task was cancelled before this delivery (a claim would have been refused): it does not start.
    if (stops.wasStopped(taskId, run, stepId)) controller.abort(new TaskStoppedError('cancelled'));
    const progress = progressReporter(job, ledger, logger);
    const kept = capturingLogger(logger);
    const timer = setTimeout(() => controller.abort(new ToolTimeoutError(job.data.timeoutMs)), job.data.timeoutMs);
    const claimTimer = lazy
      ? setTimeout(() => {
          void claimed().then((runnable) => {
            if (!runnable) controller.abort(new NotRunnable());
          });
        }, config.STEP_RUNNING_AFTER_MS)
      : undefined;
    let output: unknown;
    let outputBytes = 0;
    // A child of BullMQ's `process` span of this job; the adapter's own spans nest in it.
    const span = startSpan(`step ${toolName}`, {
      [SpanAttributes.TASK_ID]: taskId,
      [SpanAttributes.TASK_RUN]: run,
      [SpanAttributes.STEP_ID]: stepId,
      [SpanAttributes.STEP_TOOL]: toolName,
      [SpanAttributes.STEP_ATTEMPT]: attempt,
      [SpanAttributes.JOB_ID]: job.id ?? '',
    });
    try {
      if (controller.signal.aborted) throw controller.signal.reason;
      const input = tool.input.safeParse(job.data.input);
      if (!input.success) throw new NonRetryableError(`input does not fit the ${toolName} tool's schema`, problems(input.error));
      if (logger.isLevelEnabled('debug')) logger.debug('step started');
      const raw = await span.run(() =>
        Promise.race([
          tool.run(input.data, {
            signal: controller.signal,
            taskId,
            stepId,
            attempt: tryNumber,
            logger: kept.logger,
            settings: settings.get(toolName),
            dependencies: job.data.dependencies,
            progress: progress.report,
            ...(job.data.owner ? { caller: job.data.owner } : {}),
          }),
          whenAborted(controller.signal),
        ]),
      );
      const checked = tool.output.safeParse(raw);
      if (!checked.success) throw new NonRetryableError(`the ${toolName} tool returned output that does not fit its schema`, problems(checked.error));
      outputBytes = checkStepOutput(checked.data, config);
      // Text PostgreSQL cannot store (NUL, a lone surrogate) would make the result's write fail
      // for ever: it is the adapter's failure, found here (the depth is bounded just above).
      const unstorable = unstorableProblems(checked.data);
      if (unstorable.length > 0) throw new NonRetryableError(`the ${toolName} tool returned output that cannot be stored`, unstorable);
      output = checked.data;
      span.end();
    } catch (thrown) {
      const error = controller.signal.aborted && controller.signal.reason ? coerceError(controller.signal.reason) : coerceError(thrown);
      span.fail(error);
      // The worker is being forced to stop: record nothing. The job's lock expires and another
      // worker runs the step again; this is not a failed try.
      if (error instanceof WorkerStoppingError) throw error;
      clearTimeout(claimTimer);
      // A lazy start is claimed before a failure is recorded: a retried step shows as running
      // with its latest error while it waits, as a claimed one does.
      if (lazy && !(await claimed())) return notRunnable();
      return await handleFailure(job, token, error, tryNumber, attempt, startedAt, logger);
    } finally {
      clearTimeout(timer);
      clearTimeout(claimTimer);
      progress.stop();
      untrack();
      // What the tool logged in this attempt, kept with it (best effort: a lost write loses lines, not the step).
      const { lines, dropped } = kept.take();
      if (lines.length > 0 || dropped > 0)
        await ledger
          .logs({ tool: toolName, taskId, run, stepId, ...(item !== undefined ? { item } : {}), attempt, try: tryNumber, lines, dropped })
          .catch((error: Error) => logger.warn('could not keep the step’s log lines', { error: error.message }));
    }
    // Its start was claimed while it ran, and refused: the step must not record a result.
    if (claim && !(await claim)) return notRunnable();

    const recorded = await commit(job, token, {
      status: 'completed',
      output,
      attempt,
      startedAt: startedAt.toISOString(),
      finishedAt: new Date().toISOString(),
    });
    if (recorded) count(toolName, 'completed', startedAt);
    if (logger.isLevelEnabled('info')) logger.info('step completed', { duration_ms: Date.now() - startedAt.getTime(), recorded });
    // The output is in PostgreSQL: BullMQ keeps it in Redis only when it is small.
    return jobReturnValue(output, outputBytes, config);
  };

  /**
   * A step whose service's circuit is open waits (reason circuit_open) until the circuit
   * half-opens: its job is delayed to then (BullMQ's DelayedError: no attempt used, no worker
   * slot held) and the step shows waiting. Let through later, it is queued again, then claimed.
   * A map item is delayed the same way, without a status of its own. Returns undefined when the
   * step may run now; otherwise throws DelayedError (or postpones, PostgreSQL away).
   */
  async function holdForCircuit(job: Job<StepJobData>, token: string | undefined, logger: Logger): Promise<unknown> {
    const runs = deps.runs!;
    const { taskId, run, stepId, item, tool } = job.data;
    const admission = await deps.circuits!.admit(tool, job.data.owner);
    const report = (open: boolean) =>
      item === undefined ? runs.report({ type: 'circuit', taskId, run, stepId, open, at: new Date() }) : Promise.resolve({ recorded: false });
    if (admission.ok) {
      if (job.data.held) {
        try {
          await report(false);
        } catch (error) {
          return postpone(job, token, error, logger, 'could not queue a step its circuit let through: its job comes back later');
        }
        await job.updateData({ ...job.data, held: undefined });
      }
      return undefined;
    }
    if (!token) throw new Error('a job without a token cannot wait for its circuit');
    metrics.serviceCallsHeld.inc({ service: tool.slice(0, tool.indexOf('.')) });
    try {
      const { recorded } = job.data.held ? { recorded: false } : await report(true);
      // Its task ended meanwhile (cancelled): no wait; the claim refuses it and it is closed.
      if (!recorded) {
        const [task] = await runs.states([taskId]);
        if (!task || task.run !== run || isFinished(task.status)) return undefined;
      }
    } catch (error) {
      return postpone(job, token, error, logger, 'could not record a step waiting for its circuit: its job comes back later');
    }
    await job.updateData({ ...deliveredUnrun(job.data), held: true });
    logger.info('service circuit open: the step waits', { until: new Date(admission.until).toISOString() });
    await job.moveToDelayed(Math.max(admission.until, Date.now() + 10), token);
    throw new DelayedError();
  }

  /**
   * Writes a step's final result (the engine decides what it means, and what it made ready is
   * enqueued) before the job is acknowledged. If PostgreSQL stays unreachable past the write
   * retries, the result is parked in the job and the job delayed (not a failed try): the
   * next delivery writes it without running the adapter again. Returns whether it was recorded.
   */
  async function commit(job: Job<StepJobData>, token: string | undefined, result: ParkedResult): Promise<boolean> {
    const { taskId, stepId, tool } = job.data;
    try {
      return await ledger.finish(refOf(job), {
        attempt: result.attempt,
        try: job.attemptsMade + 1,
        worker,
        ...(job.id !== undefined ? { jobId: job.id } : {}),
        status: result.status,
        ...(result.output !== undefined ? { output: result.output } : {}),
        ...(result.error !== undefined ? { error: result.error } : {}),
        ...(result.status === 'failed' ? { input: job.data.input } : {}),
        startedAt: new Date(result.startedAt),
        finishedAt: new Date(result.finishedAt),
      });
    } catch (error) {
      // The result could not be written, or what it caused could not be carried out (PostgreSQL
      // or Redis away, however long). Either way the result is kept in the job, and the job
      // waits: its next delivery writes it (a second write is answered "not recorded", and what
      // it caused is made sure of), without running the adapter again.
      if (!token) throw error;
      await job.updateData({ ...job.data, parked: result });
      metrics.stepsPostponed.inc({ tool });
      return postpone(
        job,
        token,
        error,
        deps.logger.child({ task_id: taskId, step_id: stepId, tool }),
        'could not record the step result: it is kept in the job and written later',
      );
    }
  }

  async function commitParked(job: Job<StepJobData>, token: string | undefined, logger: Logger): Promise<unknown> {
    const parked = job.data.parked!;
    const recorded = await commit(job, token, parked);
    if (recorded) count(job.data.tool, parked.status, new Date(parked.startedAt));
    logger.info('parked step result written', { status: parked.status, recorded });
    if (parked.status !== 'completed') return finalFailure(job, parked.status, parked.error?.message ?? 'step failed');
    return jobReturnValue(parked.output, Buffer.byteLength(JSON.stringify(parked.output ?? null)), config);
  }

  /**
   * Values of the task's secret-named params, to keep out of a failure's log line. Read from
   * PostgreSQL only here, on the rare failure path, so that no job in Redis carries them as a
   * list; if PostgreSQL cannot answer, the secret-named values of the step's own input.
   */
  async function secretsOf(job: Job<StepJobData>): Promise<string[]> {
    const params = await runs
      ?.states([job.data.taskId])
      .then(([task]) => task?.params)
      .catch(() => undefined);
    return secretValues(params ?? job.data.input);
  }

  async function handleFailure(
    job: Job<StepJobData>,
    token: string | undefined,
    error: Error,
    tryNumber: number,
    attempt: number,
    startedAt: Date,
    logger: Logger,
  ): Promise<unknown> {
    const { taskId, run, stepId, item, tool } = job.data;
    const stopped = error instanceof TaskStoppedError;
    // The delay is chosen here, to be recorded with the retry; the backoff strategy uses it (worker-runtime.ts).
    const retryAfterMs = error instanceof RetryableError ? error.retryAfterMs : undefined;
    const delayMs = retryDelay(job.data.retry.backoff, tryNumber, retryAfterMs);
    // max_elapsed_ms: no try starts later than that after the first one.
    const firstTryAt = job.data.firstTryAt ?? startedAt.getTime();
    const maxElapsedMs = job.data.retry.max_elapsed_ms;
    const outcome = attemptOutcome(
      tryNumber,
      job.data.retry.attempts,
      { stopped, retryable: !(error instanceof NonRetryableError || error instanceof LimitExceededError) },
      { nextTryInMs: Date.now() + delayMs - firstTryAt, ...(maxElapsedMs !== undefined ? { maxElapsedMs } : {}) },
    );
    const record = { ...toErrorRecord(error), retryable: outcome.retry };
    if (outcome.retry) {
      if (maxElapsedMs !== undefined && job.data.firstTryAt === undefined) await job.updateData({ ...job.data, firstTryAt });
      // Only shows the latest error while the step waits for its next try: not worth failing over.
      await ledger
        .note({
          tool,
          taskId,
          run,
          stepId,
          ...(item !== undefined ? { item } : {}),
          attempt,
          error: record,
          try: tryNumber,
          startedAt,
          finishedAt: new Date(),
          delayMs,
          worker,
          ...(job.id !== undefined ? { jobId: job.id } : {}),
        })
        .catch((writeError: Error) => logger.warn('could not record the failed attempt', { error: writeError.message }));
      metrics.stepRetries.inc({ tool });
      logger.warn('step attempt failed; it will be retried', { error: redactValues(record.message, await secretsOf(job)) });
      // BullMQ retries it, keeping the message and stack in Redis: only the capped message goes
      // there. The backoff strategy reads retryAfterMs from a RetryableError.
      const retry = new RetryableError(record.message, retryAfterMs);
      retry.delayMs = delayMs;
      throw retry;
    }
    const status = stopped ? 'cancelled' : 'failed';
    const recorded = await commit(job, token, {
      status,
      error: record,
      attempt,
      startedAt: startedAt.toISOString(),
      finishedAt: new Date().toISOString(),
    });
    if (recorded) count(tool, status, startedAt);
    logger[stopped ? 'info' : 'error'](stopped ? 'step stopped with its task' : 'step failed', {
      error: redactValues(record.message, await secretsOf(job)),
      recorded,
    });
    return finalFailure(job, status, record.message);
  }

  /**
   * How a step's job ends after its last attempt failed: BullMQ fails it only when the failure
   * mattered. A step (or map item) under on_failure `continue`, or one stopped with its task,
   * completes carrying its error, so Bull Board's Failed lists the failures that failed a task.
   */
  function finalFailure(job: Job<StepJobData>, status: 'failed' | 'cancelled', message: string): { status: string; error: string } {
    if (status === 'cancelled' || job.data.continues) return { status, error: message };
    throw new UnrecoverableError(message);
  }
}
