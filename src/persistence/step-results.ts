import { ACTIVE_TASK_STATUSES, type TaskStatus } from '../engine/status.js';
import { readyStep, referencedSteps } from '../engine/step-input.js';
import { taskEnding } from '../engine/task-output.js';
import { resultTransitions } from '../engine/transitions.js';
import type { ReadyStep, RunContext, StepRow } from '../engine/types.js';
import type { ErrorRecord } from '../errors.js';
import { claimSteps, type StepClaim } from '../ledger/claim-steps.js';
import { finishSingleRuns, type StepResult } from '../ledger/finish-single-runs.js';
import type { Sql, SqlRunner } from '../ledger/sql.js';
import { createdIn, createdTimes } from '../ledger/task-days.js';
import { Batcher, ItemFailure } from '../lib/batcher.js';
import { DEFAULT_LIMITS, type Limits } from '../limits.js';
import type { Logger } from '../logger.js';
import type { TransitionEvent } from '../queue/channels.js';
import { isTransientDatabaseError, withRetries } from './retry.js';

/**
 * Every state change of a running step goes through here, in batches: one transaction carries
 * the starts and results of many steps (group commit). A transaction also decides, under row
 * locks, which steps became ready because this was their last dependency, and whether the task
 * is finished, so exactly one finishing dependency starts each dependent.
 *
 * Writes are idempotent: a result is recorded only while the step is still queued or running
 * in the same run, so a step that runs twice (a lost lock, a killed worker) keeps its first result.
 */

/** A worker's claim to run a step (src/ledger/claim-steps.ts). */
export type StepStart = { kind: 'start' } & StepClaim;

/** A failed attempt that will be retried. */
export type StepRetry = {
  kind: 'retry';
  taskId: string;
  run: number;
  stepId: string;
  attempt: number;
  error: ErrorRecord;
};

export type StepFinish = { kind: 'finish' } & StepResult;

/** An adapter's progress report (percent 0-100). */
export type StepProgress = {
  kind: 'progress';
  taskId: string;
  run: number;
  stepId: string;
  percent: number;
  message?: string;
  at: Date;
};

export type StepEvent = StepRetry | StepProgress | StepFinish;

export interface StartOutcome {
  /** False when the task ended or the step was skipped or cancelled: do not run it. */
  runnable: boolean;
}

export interface FinishOutcome {
  /** False when an earlier result was already recorded (a duplicate delivery). */
  recorded: boolean;
  /** Steps of the same task that became ready: enqueue them before acknowledging this one. */
  ready: ReadyStep[];
  /** Set when this result ended the task. */
  taskEnded?: TaskStatus;
  /** The ended task's type and age, for metrics, and whether it has a callback to deliver. */
  task?: { type: string; createdAt: Date; callback: boolean };
  /** Steps of a failed task that will never run; their jobs can be dropped. */
  skipped: boolean;
}

export type Outcome = StartOutcome | FinishOutcome | undefined;

/** A step of a still active run that has no result yet. */
export interface UnfinishedStep {
  stepId: string;
  tool: string;
  /** pending: waits for dependencies, so it has no job yet. */
  status: 'pending' | 'queued' | 'running';
}

/** What closing a run found: the task's status, and the steps that had to be failed because their jobs are gone. */
export interface RunClosed {
  status: TaskStatus | undefined;
  lost: string[];
  callbackUrl?: string | null;
  task?: { type: string; createdAt: Date };
  /** Set while the task is still active: its steps without a result. */
  unfinished?: UnfinishedStep[];
}

interface TaskRow {
  id: string;
  status: TaskStatus;
  run: number;
  task_type: string;
  created_at: Date;
  callback_url: string | null;
}

export class StepResults {
  private readonly batcher: Batcher<StepEvent, Outcome>;
  /**
   * Claims have their own batcher and statement: a claim is on the latency path of every
   * workflow step, and must not wait behind a transaction of results.
   */
  private readonly starts: Batcher<StepStart, StartOutcome>;
  /** Results of one-tool tasks' steps: one statement ends their tasks (src/ledger/finish-single-runs.ts). */
  private readonly singles: Batcher<StepFinish, FinishOutcome>;
  private readonly closes: Batcher<{ taskId: string; run: number }, RunClosed>;

  private readonly retryForMs: number;
  private readonly limits: Limits;

  constructor(
    private readonly sql: Sql,
    private readonly logger: Logger,
    private readonly onCommitted: (events: TransitionEvent[]) => void = () => undefined,
    options: {
      /** Most events per transaction. @defaultValue 200 */
      maxBatch?: number;
      /** How long a write is retried through lost connections before the caller hears of it. @defaultValue 60000 */
      retryForMs?: number;
      /** Sizes a ready step's input and a task's result may have. @defaultValue DEFAULT_LIMITS */
      limits?: Limits;
    } = {},
  ) {
    const maxSize = options.maxBatch ?? 200;
    this.retryForMs = options.retryForMs ?? 60_000;
    this.limits = options.limits ?? DEFAULT_LIMITS;
    this.batcher = new Batcher((events) => this.safely(events, (batch) => this.flush(batch)), { maxSize });
    this.starts = new Batcher((events) => this.safely(events, (batch) => this.flushStarts(batch)), { maxSize });
    this.singles = new Batcher((events) => this.safely(events, (batch) => this.flushSingles(batch)), { maxSize });
    this.closes = new Batcher((items) => this.flushCloses(items), { maxSize });
  }

  start(event: Omit<StepStart, 'kind'>): Promise<StartOutcome> {
    return this.starts.add({ kind: 'start', ...event });
  }

  retry(event: Omit<StepRetry, 'kind'>): Promise<void> {
    return this.batcher.add({ kind: 'retry', ...event }) as Promise<undefined>;
  }

  /** `single`: the step is a one-tool task's only step, whose result ends the task. */
  finish(event: Omit<StepFinish, 'kind'>, run: { single?: boolean } = {}): Promise<FinishOutcome> {
    if (run.single) return this.singles.add({ kind: 'finish', ...event });
    return this.batcher.add({ kind: 'finish', ...event }) as Promise<FinishOutcome>;
  }

  progress(event: Omit<StepProgress, 'kind'>): Promise<void> {
    return this.batcher.add({ kind: 'progress', ...event }) as Promise<undefined>;
  }

  /** Resolves when every event handed in so far is committed (or failed). */
  async idle(): Promise<void> {
    await Promise.all([this.batcher.idle(), this.starts.idle(), this.singles.idle(), this.closes.idle()]);
  }

  /**
   * Recovery for a step delivered again after its result was committed (its worker died
   * before acknowledging it): the dependents its result made ready, which may never have been
   * enqueued. Adding them again is harmless, since job ids are deterministic.
   */
  async pendingDependents(taskId: string, run: number, stepId: string): Promise<ReadyStep[]> {
    const rows = await this.sql.$queryRawUnsafe<StepRow[]>(
      `SELECT d.step_id, d.tool, d.input_template, d.input, d.options, d.depends_on
         FROM steps s
         JOIN tasks t ON t.id = s.task_id AND t.created_at = s.task_created_at AND ${createdIn('t.created_at', '$4')} AND t.run = $2 AND t.status IN ('queued', 'running')
         JOIN steps d ON d.task_id = s.task_id AND d.task_created_at = s.task_created_at AND ${createdIn('d.task_created_at', '$4')}
                     AND d.step_id = ANY(s.dependents) AND d.status = 'queued'
        WHERE s.task_id = $1::uuid AND ${createdIn('s.task_created_at', '$4')} AND s.step_id = $3 AND s.run = $2
          AND (s.status = 'completed' OR (s.status = 'failed' AND s.on_failure = 'continue'))`,
      taskId,
      run,
      stepId,
      createdTimes([taskId]),
    );
    if (rows.length === 0) return [];
    const context = await loadContext(
      this.sql,
      rows.map((row) => ({ ...row, task_id: taskId })),
    );
    return rows.map((row) => readyStep(row, context.get(taskId)!, this.limits));
  }

  /**
   * A task's params, read when a worker logs a failure: the values under their secret-looking
   * keys are kept out of the log line. Undefined when the task is gone.
   */
  async params(taskId: string): Promise<Record<string, unknown> | undefined> {
    const [row] = await this.sql.$queryRawUnsafe<{ params: Record<string, unknown> }[]>(
      `SELECT params FROM tasks WHERE id = $1::uuid AND ${createdIn('created_at', '$2')}`,
      taskId,
      createdTimes([taskId]),
    );
    return row?.params;
  }

  /**
   * Called when a run's root job runs, i.e. BullMQ holds no more pending steps of the run.
   * Normally the task ended with its last step's commit, and one read (batched with other
   * runs' closes) confirms it. If the task is still active, `unfinished` lists its steps that
   * have no result yet: the caller finds out from BullMQ what became of their jobs.
   */
  closeRun(taskId: string, run: number): Promise<RunClosed> {
    return this.closes.add({ taskId, run });
  }

  private async flushCloses(items: { taskId: string; run: number }[]): Promise<RunClosed[]> {
    const ids = [...new Set(items.map((item) => item.taskId))];
    const times = createdTimes(ids);
    const rows = await withRetries(
      () =>
        this.sql.$queryRawUnsafe<TaskRow[]>(
          `SELECT id::text AS id, status::text AS status, run, task_type, created_at, callback_url FROM tasks
            WHERE id = ANY($1::uuid[]) AND ${createdIn('created_at', '$2')}`,
          ids,
          times,
        ),
      { logger: this.logger, label: 'close runs', maxElapsedMs: this.retryForMs },
    );
    const byId = new Map(rows.map((row) => [row.id, row]));
    const open = items.filter(({ taskId, run }) => {
      const task = byId.get(taskId);
      return task !== undefined && task.run === run && ACTIVE_TASK_STATUSES.has(task.status);
    });
    // An ended run's root runs once BullMQ holds no job of it that can still record a result: a
    // step of a failed or cancelled task still without one (its job was dropped or refused after
    // it had been claimed) will never get one, and is skipped rather than left running.
    const ended = items.filter(({ taskId, run }) => {
      const task = byId.get(taskId);
      return task !== undefined && task.run === run && (task.status === 'failed' || task.status === 'cancelled');
    });
    if (ended.length > 0) {
      const skipped = await withRetries(
        () =>
          this.sql.$queryRawUnsafe<{ task_id: string; step_id: string }[]>(
            `UPDATE steps s SET status = 'skipped', finished_at = now()
               FROM unnest($1::uuid[], $2::int[]) AS v(task_id, run)
              WHERE s.task_id = v.task_id AND ${createdIn('s.task_created_at', '$3')} AND s.run = v.run AND s.status IN ('pending', 'queued', 'running')
          RETURNING s.task_id::text AS task_id, s.step_id`,
            ended.map((item) => item.taskId),
            ended.map((item) => item.run),
            times,
          ),
        { logger: this.logger, label: 'close runs', maxElapsedMs: this.retryForMs },
      );
      if (skipped.length > 0) {
        const at = new Date().toISOString();
        this.onCommitted(skipped.map((row) => ({ taskId: row.task_id, stepId: row.step_id, status: 'skipped', at })));
      }
    }
    const unfinished = new Map<string, UnfinishedStep[]>();
    if (open.length > 0) {
      const steps = await withRetries(
        () =>
          this.sql.$queryRawUnsafe<(UnfinishedStep & { task_id: string })[]>(
            `SELECT s.task_id::text AS task_id, s.step_id AS "stepId", s.tool, s.status::text AS status
               FROM steps s JOIN unnest($1::uuid[], $2::int[]) AS v(task_id, run) ON s.task_id = v.task_id AND s.run = v.run
              WHERE ${createdIn('s.task_created_at', '$3')} AND s.status IN ('pending', 'queued', 'running')`,
            open.map((item) => item.taskId),
            open.map((item) => item.run),
            times,
          ),
        { logger: this.logger, label: 'close runs', maxElapsedMs: this.retryForMs },
      );
      for (const { task_id: taskId, ...step } of steps) unfinished.set(taskId, [...(unfinished.get(taskId) ?? []), step]);
    }
    return items.map(({ taskId, run }) => {
      const task = byId.get(taskId);
      const active = task !== undefined && task.run === run && ACTIVE_TASK_STATUSES.has(task.status);
      return {
        status: task?.status,
        lost: [],
        callbackUrl: task?.callback_url,
        ...(active ? { unfinished: unfinished.get(taskId) ?? [], task: { type: task.task_type, createdAt: task.created_at } } : {}),
      };
    });
  }

  /**
   * Ends a run whose step jobs are gone from BullMQ without a result (removed by hand, or lost
   * with a Redis that kept nothing): those steps fail as lost, the steps that can no longer run
   * are skipped, and the task fails naming them. Nothing stays running forever.
   */
  async failLostSteps(taskId: string, run: number, lostSteps: string[]): Promise<RunClosed> {
    const times = createdTimes([taskId]);
    const outcome = await withRetries(
      () =>
        this.sql.$transaction(async (tx) => {
          const [task] = await tx.$queryRawUnsafe<TaskRow[]>(
            `SELECT id::text AS id, status::text AS status, run, task_type, created_at, callback_url FROM tasks
              WHERE id = $1::uuid AND ${createdIn('created_at', '$2')} FOR UPDATE`,
            taskId,
            times,
          );
          if (!task || task.run !== run || !ACTIVE_TASK_STATUSES.has(task.status)) {
            // The run ended meanwhile (a failure the caller just recorded): its steps whose jobs
            // are gone will never record a result either.
            if (task && task.run === run && (task.status === 'failed' || task.status === 'cancelled')) {
              await tx.$executeRawUnsafe(
                `UPDATE steps SET status = 'skipped', finished_at = now()
                  WHERE task_id = $1::uuid AND ${createdIn('task_created_at', '$4')} AND run = $2 AND step_id = ANY($3::text[]) AND status IN ('pending', 'queued', 'running')`,
                taskId,
                run,
                lostSteps,
                times,
              );
            }
            return { status: task?.status, lost: [] as string[], callbackUrl: task?.callback_url };
          }
          const info = { type: task.task_type, createdAt: task.created_at };
          const lost = await tx.$queryRawUnsafe<{ step_id: string }[]>(
            `UPDATE steps SET status = 'failed', finished_at = now(), error = $4::jsonb
              WHERE task_id = $1::uuid AND ${createdIn('task_created_at', '$5')} AND run = $2 AND step_id = ANY($3::text[]) AND status IN ('pending', 'queued', 'running')
          RETURNING step_id`,
            taskId,
            run,
            lostSteps,
            JSON.stringify({ name: 'LostStep', message: 'the step job is gone from the queue without a result' }),
            times,
          );
          if (lost.length === 0) return { status: task.status, lost: [] as string[], callbackUrl: task.callback_url };
          await tx.$executeRawUnsafe(
            `UPDATE steps SET status = 'skipped', finished_at = now()
              WHERE task_id = $1::uuid AND ${createdIn('task_created_at', '$3')} AND run = $2 AND status IN ('pending', 'queued', 'running')`,
            taskId,
            run,
            times,
          );
          await tx.$executeRawUnsafe(
            `UPDATE tasks SET status = 'failed', finished_at = now(), error = $2::jsonb WHERE id = $1::uuid AND ${createdIn('created_at', '$3')}`,
            taskId,
            JSON.stringify({ name: 'LostStep', message: `step jobs gone from the queue without a result: ${lost.map((row) => row.step_id).join(', ')}` }),
            times,
          );
          return { status: 'failed' as const, lost: lost.map((row) => row.step_id), task: info, callbackUrl: task.callback_url };
        }),
      { logger: this.logger, label: 'close run', maxElapsedMs: this.retryForMs },
    );
    if (outcome.lost.length > 0) {
      this.logger.error('task failed: step jobs gone without a result', { task_id: taskId, steps: outcome.lost });
      const at = new Date().toISOString();
      this.onCommitted([...outcome.lost.map((stepId) => ({ taskId, stepId, status: 'failed', at })), { taskId, status: 'failed', at }]);
    }
    return outcome;
  }

  /**
   * Transient errors (lost connection, deadlock) retry the whole batch. Any other error fails
   * only the item that caused it: the batch is retried one item at a time.
   */
  private async safely<E, O>(events: E[], flush: (batch: E[]) => Promise<O[]>): Promise<(O | ItemFailure)[]> {
    const retrying = (batch: E[]) => withRetries(() => flush(batch), { logger: this.logger, label: 'step results', maxElapsedMs: this.retryForMs });
    try {
      return await retrying(events);
    } catch (error) {
      if (events.length === 1 || isTransientDatabaseError(error)) throw error;
      this.logger.warn('a batch of step results failed; writing them one by one', { error: (error as Error).message });
      const outcomes: (O | ItemFailure)[] = [];
      for (const event of events) {
        // Each alone gets the same retries as the batch: a connection lost meanwhile must not
        // turn into that one event's failure.
        try {
          outcomes.push((await retrying([event]))[0]!);
        } catch (single) {
          outcomes.push(new ItemFailure(single));
        }
      }
      return outcomes;
    }
  }

  /** Of several claims of one step in a batch, the latest delivery's is the one that counts. */
  private async flushStarts(events: StepStart[]): Promise<StartOutcome[]> {
    const latest = new Map<string, StepStart>();
    for (const event of events) {
      const key = `${event.taskId}/${event.stepId}/${event.run}`;
      const seen = latest.get(key);
      if (!seen || event.attempt > seen.attempt) latest.set(key, event);
    }
    // A claim lost with a crashed server is made again by the step's next delivery: its commit
    // need not wait for the disk.
    const claimed = await this.sql.$transaction((tx) => claimSteps(tx, [...latest.values()]), { durable: false });
    const took = new Set(claimed.map((claim) => `${claim.taskId}/${claim.stepId}/${claim.run}`));
    const transitions: TransitionEvent[] = [];
    for (const claim of claimed) if (claim.taskBegan) transitions.push({ taskId: claim.taskId, status: 'running', at: new Date().toISOString() });
    const outcomes = events.map((event) => {
      const key = `${event.taskId}/${event.stepId}/${event.run}`;
      const runnable = took.has(key) && latest.get(key) === event;
      if (runnable) transitions.push({ taskId: event.taskId, stepId: event.stepId, status: 'running', at: event.at.toISOString() });
      return { runnable };
    });
    if (transitions.length > 0) this.onCommitted(transitions);
    return outcomes;
  }

  private async flushSingles(events: StepFinish[]): Promise<FinishOutcome[]> {
    const recorded = await finishSingleRuns(this.sql, events, this.limits);
    const transitions: TransitionEvent[] = [];
    const outcomes = events.map((event, index): FinishOutcome => {
      const done = recorded[index]!;
      if (!done.recorded) return { recorded: false, ready: [], skipped: false };
      const at = event.finishedAt.toISOString();
      transitions.push({ taskId: event.taskId, stepId: event.stepId, status: event.status, at }, { taskId: event.taskId, status: done.taskStatus, at });
      return { recorded: true, ready: [], taskEnded: done.taskStatus, task: done.task, skipped: false };
    });
    if (transitions.length > 0) this.onCommitted(transitions);
    return outcomes;
  }

  private async flush(events: StepEvent[]): Promise<Outcome[]> {
    const transitions: TransitionEvent[] = [];
    const outcomes = await this.sql.$transaction(async (tx) => {
      // A batch of starts and progress reports only need not wait for the disk: if the server
      // crashed and lost them, the steps' next deliveries would claim them again. Results are
      // always committed durably.
      if (!events.some((event) => event.kind === 'finish')) await tx.$executeRawUnsafe(`SET LOCAL synchronous_commit = off`);
      const taskIds = [...new Set(events.map((event) => event.taskId))].sort();
      const times = createdTimes(taskIds);
      // Lock the tasks first, always in id order: cancel and retry lock tasks first too,
      // so concurrent writers queue up instead of deadlocking.
      const tasks = await tx.$queryRawUnsafe<TaskRow[]>(
        `SELECT id::text AS id, status::text AS status, run, task_type, created_at, callback_url FROM tasks
            WHERE id = ANY($1::uuid[]) AND ${createdIn('created_at', '$2')} ORDER BY id FOR UPDATE`,
        taskIds,
        times,
      );
      const taskById = new Map(tasks.map((task) => [task.id, task]));
      const isActive = (event: StepEvent) => {
        const task = taskById.get(event.taskId);
        return task !== undefined && task.run === event.run && ACTIVE_TASK_STATUSES.has(task.status);
      };
      const result: Outcome[] = events.map(() => undefined);

      // Progress of running steps: the latest report of each step wins.
      const latestProgress = new Map<string, StepProgress>();
      for (const event of events) if (event.kind === 'progress') latestProgress.set(`${event.taskId}/${event.stepId}`, event);
      if (latestProgress.size > 0) {
        const reports = [...latestProgress.values()];
        const rows = await tx.$queryRawUnsafe<{ task_id: string; step_id: string }[]>(
          `UPDATE steps s SET progress = v.progress
               FROM unnest($1::uuid[], $2::text[], $3::int[], $4::jsonb[]) AS v(task_id, step_id, run, progress)
              WHERE s.task_id = v.task_id AND ${createdIn('s.task_created_at', '$5')} AND s.step_id = v.step_id AND s.run = v.run AND s.status = 'running'
          RETURNING s.task_id::text AS task_id, s.step_id`,
          reports.map((event) => event.taskId),
          reports.map((event) => event.stepId),
          reports.map((event) => event.run),
          reports.map((event) => JSON.stringify({ percent: event.percent, ...(event.message !== undefined ? { message: event.message } : {}) })),
          times,
        );
        const updated = new Set(rows.map((row) => `${row.task_id}/${row.step_id}`));
        for (const event of reports) {
          if (!updated.has(`${event.taskId}/${event.stepId}`)) continue;
          transitions.push({
            taskId: event.taskId,
            stepId: event.stepId,
            status: 'running',
            at: event.at.toISOString(),
            progress: { percent: event.percent, ...(event.message !== undefined ? { message: event.message } : {}) },
          });
        }
      }

      // Failed attempts that will be retried: keep the latest error visible.
      const retries = events.filter((event): event is StepRetry => event.kind === 'retry');
      if (retries.length > 0) {
        await tx.$executeRawUnsafe(
          `UPDATE steps s SET error = v.error, attempts = GREATEST(s.attempts, v.attempt)
               FROM unnest($1::uuid[], $2::text[], $3::int[], $4::int[], $5::jsonb[]) AS v(task_id, step_id, run, attempt, error)
              WHERE s.task_id = v.task_id AND ${createdIn('s.task_created_at', '$6')} AND s.step_id = v.step_id AND s.run = v.run AND s.status = 'running'`,
          retries.map((event) => event.taskId),
          retries.map((event) => event.stepId),
          retries.map((event) => event.run),
          retries.map((event) => event.attempt),
          retries.map((event) => JSON.stringify(event.error)),
          times,
        );
      }

      // Results. Only a step still queued or running takes one: the first result wins, in
      // this batch too (a later finish of the same step and run is answered "not recorded").
      const firstFinish = new Set<string>();
      const finishes = events.flatMap((event, index) => {
        if (event.kind !== 'finish') return [];
        const key = `${event.taskId}/${event.stepId}/${event.run}`;
        if (firstFinish.has(key)) {
          result[index] = { recorded: false, ready: [], skipped: false };
          return [];
        }
        firstFinish.add(key);
        return [{ event, index }];
      });
      if (finishes.length === 0) return result;
      const recordedRows = await tx.$queryRawUnsafe<
        { task_id: string; step_id: string; status: string; on_failure: 'fail' | 'continue'; dependents: string[] }[]
      >(
        `UPDATE steps s SET status = v.status::"StepStatus", output = v.output, error = v.error,
                  attempts = GREATEST(s.attempts, v.attempt),
                  started_at = COALESCE(s.started_at, v.started_at), finished_at = v.finished_at
             FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[], $5::jsonb[], $6::jsonb[], $7::int[], $8::timestamptz[], $9::timestamptz[])
                  AS v(task_id, step_id, run, status, output, error, attempt, started_at, finished_at)
            WHERE s.task_id = v.task_id AND ${createdIn('s.task_created_at', '$10')} AND s.step_id = v.step_id AND s.run = v.run
              AND s.status IN ('queued', 'running')
        RETURNING s.task_id::text AS task_id, s.step_id, s.status::text AS status, s.on_failure::text AS on_failure, s.dependents`,
        finishes.map(({ event }) => event.taskId),
        finishes.map(({ event }) => event.stepId),
        finishes.map(({ event }) => event.run),
        finishes.map(({ event }) => (event as StepFinish).status),
        finishes.map(({ event }) => jsonOrNull((event as StepFinish).output)),
        finishes.map(({ event }) => jsonOrNull((event as StepFinish).error)),
        finishes.map(({ event }) => event.attempt),
        finishes.map(({ event }) => (event as StepFinish).startedAt.toISOString()),
        finishes.map(({ event }) => (event as StepFinish).finishedAt.toISOString()),
        times,
      );
      const recorded = new Map(recordedRows.map((row) => [`${row.task_id}/${row.step_id}`, row]));
      for (const { event, index } of finishes) {
        const finish = event as StepFinish;
        const ok = recorded.has(`${finish.taskId}/${finish.stepId}`);
        result[index] = { recorded: ok, ready: [], skipped: false };
        if (ok) transitions.push({ taskId: finish.taskId, stepId: finish.stepId, status: finish.status, at: finish.finishedAt.toISOString() });
      }

      // Dead letters: a step that failed for good, with what it was given.
      const dead = finishes.filter(({ event }) => {
        const finish = event as StepFinish;
        return finish.status === 'failed' && recorded.has(`${finish.taskId}/${finish.stepId}`);
      });
      if (dead.length > 0) {
        await tx.$executeRawUnsafe(
          `INSERT INTO dead_letters (id, task_id, task_created_at, step_id, run, tool, input, error, attempts)
             SELECT gen_random_uuid(), v.task_id, v.task_created_at, v.step_id, v.run, v.tool, v.input, v.error, v.attempt
               FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[], $5::jsonb[], $6::jsonb[], $7::int[], $8::timestamptz[])
                    AS v(task_id, step_id, run, tool, input, error, attempt, task_created_at)
             ON CONFLICT (task_id, task_created_at, step_id, run) DO NOTHING`,
          dead.map(({ event }) => event.taskId),
          dead.map(({ event }) => event.stepId),
          dead.map(({ event }) => event.run),
          dead.map(({ event }) => (event as StepFinish).tool),
          dead.map(({ event }) => jsonOrNull((event as StepFinish).input)),
          dead.map(({ event }) => jsonOrNull((event as StepFinish).error)),
          dead.map(({ event }) => event.attempt),
          dead.map(({ event }) => taskById.get(event.taskId)!.created_at.toISOString()),
        );
      }

      // What the recorded results of active tasks mean for those tasks.
      const counted = finishes.filter(({ event }) => recorded.has(`${event.taskId}/${event.stepId}`) && isActive(event));
      const decided = resultTransitions(
        counted.map(({ event }) => {
          const finish = event as StepFinish;
          const row = recorded.get(`${finish.taskId}/${finish.stepId}`)!;
          return {
            taskId: finish.taskId,
            stepId: finish.stepId,
            status: finish.status,
            error: finish.error,
            onFailure: row.on_failure,
            dependents: row.dependents,
          };
        }),
      );

      if (decided.failed.length > 0) {
        for (const failure of decided.failed) {
          const task = taskById.get(failure.taskId)!;
          const outcome = result[counted[failure.result]!.index] as FinishOutcome;
          outcome.taskEnded = 'failed';
          outcome.task = { type: task.task_type, createdAt: task.created_at, callback: task.callback_url !== null };
          outcome.skipped = true;
        }
        await tx.$executeRawUnsafe(
          `UPDATE tasks t SET status = 'failed', error = v.error, finished_at = now()
               FROM unnest($1::uuid[], $2::jsonb[]) AS v(id, error) WHERE t.id = v.id AND ${createdIn('t.created_at', '$3')}`,
          decided.failed.map((failure) => failure.taskId),
          decided.failed.map((failure) => JSON.stringify(failure.error)),
          times,
        );
        await tx.$executeRawUnsafe(
          `UPDATE steps SET status = 'skipped', finished_at = now()
              WHERE task_id = ANY($1::uuid[]) AND ${createdIn('task_created_at', '$2')} AND status IN ('pending', 'queued')`,
          decided.failed.map((failure) => failure.taskId),
          times,
        );
        for (const failure of decided.failed) transitions.push({ taskId: failure.taskId, status: 'failed', at: new Date().toISOString() });
      }

      // Dependents whose last dependency just resolved become ready, exactly once: the row
      // lock makes concurrent decrements of the same step queue up.
      const readyByTask = new Map<string, ReadyStep[]>();
      if (decided.resolved.length > 0) {
        const readyRows = await tx
          .$queryRawUnsafe<(StepRow & { task_id: string })[]>(
            `UPDATE steps s SET remaining_deps = s.remaining_deps - v.n,
                    status = CASE WHEN s.remaining_deps - v.n <= 0 THEN 'queued'::"StepStatus" ELSE s.status END,
                    queued_at = CASE WHEN s.remaining_deps - v.n <= 0 THEN now() ELSE s.queued_at END
               FROM unnest($1::uuid[], $2::text[], $3::int[]) AS v(task_id, step_id, n)
              WHERE s.task_id = v.task_id AND ${createdIn('s.task_created_at', '$4')} AND s.step_id = v.step_id AND s.status = 'pending'
          RETURNING s.task_id::text AS task_id, s.step_id, s.tool, s.input_template, s.input, s.options, s.depends_on,
                    s.status::text AS status`,
            decided.resolved.map((entry) => entry.taskId),
            decided.resolved.map((entry) => entry.stepId),
            decided.resolved.map((entry) => entry.count),
            times,
          )
          .then((rows) => rows.filter((row) => (row as unknown as { status: string }).status === 'queued'));
        if (readyRows.length > 0) {
          const context = await loadContext(tx, readyRows);
          for (const row of readyRows) {
            const ctx = context.get(row.task_id)!;
            const step = readyStep(row, ctx, this.limits);
            readyByTask.set(row.task_id, [...(readyByTask.get(row.task_id) ?? []), step]);
            transitions.push({ taskId: row.task_id, stepId: row.step_id, status: 'queued', at: new Date().toISOString() });
          }
        }
      }

      // Count finished steps down; the task whose count reaches zero is complete (or failed,
      // when its result is over TASK_RESULT_MAX_BYTES).
      const endedTasks = new Map<string, 'completed' | 'failed'>();
      if (decided.finished.length > 0) {
        // A task still "queued" whose step reports a result has evidently started.
        const rows = await tx.$queryRawUnsafe<{ id: string; steps_remaining: number }[]>(
          `UPDATE tasks t SET steps_remaining = t.steps_remaining - v.n,
                    status = CASE WHEN t.status = 'queued' THEN 'running'::"TaskStatus" ELSE t.status END,
                    started_at = COALESCE(t.started_at, now())
               FROM unnest($1::uuid[], $2::int[]) AS v(id, n) WHERE t.id = v.id AND ${createdIn('t.created_at', '$3')}
           RETURNING t.id::text AS id, t.steps_remaining`,
          decided.finished.map((entry) => entry.taskId),
          decided.finished.map((entry) => entry.count),
          times,
        );
        const done = rows.filter((row) => row.steps_remaining <= 0).map((row) => row.id);
        if (done.length > 0) {
          for (const [id, status] of await completeTasks(tx, done, this.limits)) {
            endedTasks.set(id, status);
            transitions.push({ taskId: id, status, at: new Date().toISOString() });
          }
        }
      }

      // Hand the ready steps and task endings to the callers whose results caused them. A
      // task's ready steps all go to its last recorded finisher in this batch: it enqueues
      // them before it is acknowledged, which keeps the run's root waiting.
      for (let i = finishes.length - 1; i >= 0; i -= 1) {
        const { event, index } = finishes[i]!;
        const outcome = result[index] as FinishOutcome;
        if (!outcome.recorded) continue;
        const ready = readyByTask.get(event.taskId);
        if (ready) {
          outcome.ready = ready;
          readyByTask.delete(event.taskId);
        }
        const ended = endedTasks.get(event.taskId);
        if (ended) {
          const task = taskById.get(event.taskId)!;
          outcome.taskEnded = ended;
          outcome.task = { type: task.task_type, createdAt: task.created_at, callback: task.callback_url !== null };
          endedTasks.delete(event.taskId);
        }
      }
      return result;
    });
    if (transitions.length > 0) this.onCommitted(transitions);
    return outcomes;
  }
}

function jsonOrNull(value: unknown): string | null {
  return value === undefined ? null : JSON.stringify(value);
}

/** Params and the finished steps the ready steps may refer to. */
export async function loadContext(
  tx: SqlRunner,
  readyRows: { task_id: string; input_template: unknown; depends_on: string[] }[],
): Promise<Map<string, RunContext>> {
  const wanted = new Map<string, Set<string>>();
  for (const row of readyRows) {
    const ids = wanted.get(row.task_id) ?? new Set<string>();
    for (const id of referencedSteps(row)) ids.add(id);
    wanted.set(row.task_id, ids);
  }
  const taskIds = [...wanted.keys()];
  const times = createdTimes(taskIds);
  const pairs = [...wanted].flatMap(([taskId, ids]) => [...ids].map((id) => [taskId, id] as const));
  const [params, steps] = await Promise.all([
    tx.$queryRawUnsafe<{ id: string; params: Record<string, unknown> }[]>(
      `SELECT id::text AS id, params FROM tasks WHERE id = ANY($1::uuid[]) AND ${createdIn('created_at', '$2')}`,
      taskIds,
      times,
    ),
    pairs.length === 0
      ? Promise.resolve([])
      : tx.$queryRawUnsafe<{ task_id: string; step_id: string; status: string; output: unknown; error: unknown }[]>(
          `SELECT s.task_id::text AS task_id, s.step_id, s.status::text AS status, s.output, s.error
             FROM steps s JOIN unnest($1::uuid[], $2::text[]) AS v(task_id, step_id)
               ON s.task_id = v.task_id AND s.step_id = v.step_id
            WHERE ${createdIn('s.task_created_at', '$3')}`,
          pairs.map(([taskId]) => taskId),
          pairs.map(([, id]) => id),
          times,
        ),
  ]);
  const context = new Map<string, RunContext>();
  for (const row of params) context.set(row.id, { params: row.params, steps: new Map() });
  for (const row of steps) context.get(row.task_id)?.steps.set(row.step_id, row);
  return context;
}

/**
 * Ends tasks whose last step just finished: completed with their result (the workflow's output,
 * or the step's output), or failed when that result is over TASK_RESULT_MAX_BYTES.
 */
async function completeTasks(tx: SqlRunner, ids: string[], limits: Pick<Limits, 'TASK_RESULT_MAX_BYTES'>): Promise<Map<string, 'completed' | 'failed'>> {
  const times = createdTimes(ids);
  const tasks = await tx.$queryRawUnsafe<{ id: string; params: Record<string, unknown>; output_template: unknown; workflow_name: string | null }[]>(
    `SELECT id::text AS id, params, output_template, workflow_name FROM tasks WHERE id = ANY($1::uuid[]) AND ${createdIn('created_at', '$2')}`,
    ids,
    times,
  );
  const steps = await tx.$queryRawUnsafe<{ task_id: string; step_id: string; status: string; output: unknown; error: unknown }[]>(
    `SELECT task_id::text AS task_id, step_id, status::text AS status, output, error FROM steps WHERE task_id = ANY($1::uuid[]) AND ${createdIn('task_created_at', '$2')}`,
    ids,
    times,
  );
  const ended = tasks.map((task) => {
    const ending = taskEnding(
      task,
      steps.filter((step) => step.task_id === task.id),
      limits,
    );
    return ending.status === 'completed'
      ? { id: task.id, status: ending.status, result: JSON.stringify(ending.result), error: null }
      : { id: task.id, status: ending.status, result: null, error: JSON.stringify(ending.error) };
  });
  await tx.$executeRawUnsafe(
    `UPDATE tasks t SET status = v.status::"TaskStatus", result = v.result, error = v.error, finished_at = now()
       FROM unnest($1::uuid[], $2::text[], $3::jsonb[], $4::jsonb[]) AS v(id, status, result, error)
      WHERE t.id = v.id AND ${createdIn('t.created_at', '$5')} AND t.status IN ('queued', 'running')`,
    ended.map((entry) => entry.id),
    ended.map((entry) => entry.status),
    ended.map((entry) => entry.result),
    ended.map((entry) => entry.error),
    times,
  );
  return new Map(ended.map((entry) => [entry.id, entry.status]));
}
