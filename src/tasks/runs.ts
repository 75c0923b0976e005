import type { Context } from '@opentelemetry/api';
import {
  cancel as cancelRuns,
  type DecideOptions,
  decide,
  type EngineLimits,
  freshState,
  type NewTaskMeta,
  outstanding,
  resume as resumeRuns,
  start,
} from '../engine/decide.js';
import { holdBack, ownerLimits } from '../engine/key-limits.js';
import type { Plan } from '../engine/plan.js';
import { jobTool } from '../engine/registry.js';
import { type ChildStart, type Decision, emptyDecision, type JobRef, type Report, type TaskState, type Transition } from '../engine/state.js';
import { ACTIVE_TASK_STATUSES, FINISHED_STEP_STATUSES, isFinished, type TaskStatus, waitsForSomeone, waitsForTurn } from '../engine/status.js';
import type { KeyLimit, ReadyStep } from '../engine/types.js';
import { type Applied, applyDecision } from '../ledger/apply-decision.js';
import { type Claimed, claimSteps, type StepClaim } from '../ledger/claim-steps.js';
import { createTasks, type NewTask, type StoredTask } from '../ledger/create-tasks.js';
import { finishSingleRuns, type SingleResult, type SingleRunRecorded } from '../ledger/finish-single-runs.js';
import { loadMore, loadRuns, PlanCache } from '../ledger/load-runs.js';
import { noteSteps, type StepNote } from '../ledger/note-steps.js';
import type { Sql, SqlRunner } from '../ledger/sql.js';
import { creationTimes } from '../ledger/task-days.js';
import { Batcher, ItemFailure } from '../lib/batcher.js';
import type { Config } from '../lib/config.js';
import { capErrorRecord, type ErrorRecord, toErrorRecord, ValidationError } from '../lib/errors.js';
import type { Logger } from '../lib/logger.js';
import { PolicyDeniedError } from '../lib/policy-errors.js';
import { uuidv7Time } from '../lib/uuid7.js';
import { captureTraceContext } from '../observability/tracing.js';
import { isTransientDatabaseError, withRetries } from '../persistence/retry.js';
import { type GateEntry, type Gates, parseUnit, type Released, runUnit, stepUnit } from '../queue/gates.js';
import { type HoldRef, MissingRootError, type NewJob, type NewRun, type RunKey, type TaskQueues } from '../queue/task-queues.js';
import { currentHolds, holdChanges, isFlow } from './flows.js';
import { admitChild, type WorkGate } from './work-gate.js';

/**
 * Every change to a task's run goes through here: starting it, a worker's claim, notes and
 * results, a sleep's wake-up, a child task's end, cancelling and retrying. Each is the same
 * three moves: the ledger loads the tasks under their locks, the engine decides
 * (src/engine/decide.ts), the ledger applies the decision in one call; then what the decision
 * asks of the world outside PostgreSQL is carried out (jobs, timers, child tasks, events,
 * callbacks). Claims, notes and results are batched (group commit): one transaction serves
 * every step committing at that moment.
 */

export interface RunsDeps {
  sql: Sql;
  queues: TaskQueues;
  /** Where transitions go (the event log); losing one costs a live update, never a result. */
  publish(transitions: Transition[]): Promise<void>;
  logger: Logger;
  config: Pick<Config, 'CALLBACK_MAX_ATTEMPTS' | 'DB_WRITE_RETRY_MS' | 'TASK_RESULT_MAX_BYTES' | 'KEY_CONCURRENCY' | 'KEY_RATE_PER_MINUTE'> &
    Partial<Pick<Config, 'TASK_HISTORY'>> &
    EngineLimits;
  /** Limits per key (src/queue/gates.ts); without, limits are not enforced (a process that only reads). */
  gates?: Gates;
  /**
   * A sub-workflow's child plan: the workflow version its parent pinned and the params the
   * parent's step gives (a ValidationError when they do not fit).
   */
  planChild?(workflow: { name: string; version: number }, params: Record<string, unknown>): Promise<{ plan: Plan; params: Record<string, unknown> }>;
  /** Tells every worker to abort the running steps of a cancelled task. */
  stopTask?(taskId: string, run: number): Promise<void>;
  /** A task ended (metrics). */
  onEnded?(ended: Decision['ended'][number]): void;
  /** Asked before a sub-workflow's child is created (src/tasks/work-gate.ts admitChild). */
  gate?: WorkGate;
}

/** What a report did: recorded or not (a duplicate, or its run moved on); `done` settles once what it caused elsewhere has been carried out. */
export interface ReportOutcome {
  recorded: boolean;
}

/** A new task, planned and started by the engine, ready to be stored (Runs.create). */
export interface PreparedTask extends NewTask {
  trace?: Context;
}

export type CreateOutcome = { created: true } | { created: false } | { refused: unknown };

type Transaction = { states: TaskState[]; decision: Decision; applied: Applied; heldItems: HoldRef[] };

export class Runs {
  private readonly plans = new PlanCache();
  private readonly claims: Batcher<StepClaim, Claimed | undefined>;
  private readonly notes: Batcher<StepNote, boolean>;
  private readonly reports: Batcher<{ report: Report; trace?: Context }, { recorded: boolean; followUp: Promise<void> }>;
  private readonly singles: Batcher<SingleResult, SingleRunRecorded>;
  private readonly background = new Set<Promise<void>>();

  constructor(private readonly deps: RunsDeps) {
    const maxSize = 200;
    this.claims = new Batcher((claims) => this.safely(claims, (batch) => this.flushClaims(batch)), { maxSize });
    this.notes = new Batcher((notes) => this.safely(notes, (batch) => this.flushNotes(batch)), { maxSize });
    this.reports = new Batcher((reports) => this.safely(reports, (batch) => this.flushReports(batch)), { maxSize });
    this.singles = new Batcher((results) => this.safely(results, (batch) => this.flushSingles(batch)), { maxSize });
  }

  /** Whether the ledger writes the tasks' history (TASK_HISTORY, on unless `off`). */
  private get history(): { history: boolean } {
    return { history: this.deps.config.TASK_HISTORY !== 'off' };
  }

  private options(): DecideOptions {
    return {
      limits: this.deps.config,
      now: new Date(),
      newTaskId: (taskType, parentTaskId) => this.deps.queues.newTaskId(new Date(), taskType, parentTaskId),
      // A job that limits per key may hold back is not claimed before its gates let it in.
      claimReady: (task) => !this.limited(task.plan.plan),
    };
  }

  private retrying<T>(label: string, work: () => Promise<T>): Promise<T> {
    return withRetries(work, { logger: this.deps.logger, label, maxElapsedMs: this.deps.config.DB_WRITE_RETRY_MS });
  }

  /**
   * Transient errors (lost connection, deadlock) retry the whole batch. Any other error fails
   * only the item that caused it: the batch is retried one item at a time.
   */
  private async safely<E, O>(items: E[], flush: (batch: E[]) => Promise<O[]>): Promise<(O | ItemFailure)[]> {
    const retrying = (batch: E[]) => this.retrying('ledger', () => flush(batch));
    try {
      return await retrying(items);
    } catch (error) {
      if (items.length === 1 || isTransientDatabaseError(error)) throw error;
      this.deps.logger.warn('a batch failed; writing its items one by one', { error: (error as Error).message });
      const outcomes: (O | ItemFailure)[] = [];
      for (const item of items) {
        try {
          outcomes.push((await retrying([item]))[0]!);
        } catch (single) {
          outcomes.push(new ItemFailure(single));
        }
      }
      return outcomes;
    }
  }

  /** Resolves when every item handed in so far is written (or failed), and what runs in the background is done. */
  async idle(): Promise<void> {
    await Promise.all([this.claims.idle(), this.notes.idle(), this.reports.idle(), this.singles.idle(), ...this.background]);
  }

  /**
   * Work nobody waits on (it handles its own errors), which idle() still waits for. It starts
   * once the current I/O callbacks are done (setImmediate), so that even its synchronous part
   * (a pipeline of 1,000 commands is built in one go) runs after whatever its caller answers.
   */
  private inBackground(work: () => Promise<unknown>): void {
    const done = new Promise((resolve) => setImmediate(resolve)).then(work).then(() => undefined);
    this.background.add(done);
    void done.finally(() => this.background.delete(done));
  }

  // ---- Starting tasks -----------------------------------------------------------------------

  /**
   * A new task's plan, started by the engine: which steps start at once, which are skipped or
   * wait. A step that starts at once with an input over STEP_INPUT_MAX_BYTES is the client's
   * 400, heard now, rather than a task that fails.
   */
  prepare(task: StoredTask, plan: Plan, paramsField = 'params'): NewTask {
    const decision = start(freshState(taskMeta(task), plan), this.options());
    const tooLarge = decision.steps.find((change) => change.set.status === 'failed' && change.set.error?.name === 'StepInputTooLarge');
    if (tooLarge) {
      const what = plan.single ? 'the input' : `the input of step '${tooLarge.stepId}'`;
      const at = (tooLarge.set.error?.details as { at?: string } | undefined)?.at;
      const where = at ? ` (at input${at.startsWith('[') ? '' : '.'}${at})` : '';
      const max = this.deps.config.STEP_INPUT_MAX_BYTES;
      throw new ValidationError(
        `params make ${what} larger than ${max} bytes`,
        [
          {
            path: paramsField,
            message: `${what} would be larger than ${max} bytes of JSON${plan.single ? '' : ' once its templates are resolved'}${where}: the limit is STEP_INPUT_MAX_BYTES`,
          },
        ],
        'invalid_params',
      );
    }
    return { task, plan, decision };
  }

  /**
   * Stores prepared tasks in one statement, then adds their jobs: a one-tool task's one job, a
   * workflow's run as a flow (its root with its first children), one round trip per shard (and
   * tool). A task whose jobs a shard refused is removed again (nothing is left half created).
   * `parent`: the run of a sub-workflow's parent, whose root the child's root hangs under.
   * Returns, per task, whether it was stored (not: its idempotency key is taken) or refused.
   */
  async create(prepared: readonly PreparedTask[], parent?: RunKey): Promise<CreateOutcome[]> {
    // Limits per key first: a step held back is stored waiting, with no job.
    const held = await this.gateJobs(
      prepared.flatMap(({ decision }) => decision.jobs),
      new Map(prepared.map(({ task, plan }) => [task.id, { plan, owner: task.owner ?? '' }])),
    );
    const entries = held.size > 0 ? prepared.map((entry) => ({ ...entry, decision: holdBack(entry.decision, held) })) : prepared;
    const release = (list: readonly PreparedTask[]) => this.releaseTasks(list.filter(({ plan }) => this.limited(plan)).map(({ task }) => task.id));
    const stored = await createTasks(this.deps.sql, entries, this.history).catch(async (error: unknown) => {
      await release(entries);
      throw error;
    });
    const fresh = entries.filter(({ task }) => stored.has(task.id));
    const refused = new Map<string, unknown>();
    if (fresh.length > 0) {
      // The jobs before limits held some back: a held map item's hold stands in for its job.
      const original = new Map(prepared.map(({ task, decision }) => [task.id, decision.jobs]));
      const states = new Map(fresh.map(({ task, plan }) => [task.id, freshState(taskMeta(task), plan)]));
      try {
        const jobOf = ({ task, plan, trace }: PreparedTask, step: ReadyStep): NewJob => ({
          step: { ...step, ...(task.delayMs > 0 ? { delayMs: task.delayMs } : {}) },
          single: plan.single === true,
          ...this.jobOptions(states.get(task.id)!, step, true),
          ...(trace ? { trace } : {}),
        });
        const singles = fresh.filter(({ plan }) => !isFlow(plan));
        const runs: NewRun[] = fresh
          .filter(({ plan }) => isFlow(plan))
          .map((entry) => {
            const { task, decision, trace } = entry;
            const own = new Map([[task.id, states.get(task.id)!]]);
            return {
              taskId: task.id,
              run: 1,
              taskType: task.taskType,
              jobs: decision.jobs.map((step) => jobOf(entry, step)),
              timers: decision.timers,
              holds: [...holdChanges(decision, own).add, ...heldItems(original.get(task.id) ?? [], held)],
              ...(parent && this.deps.queues.shardOf(parent.taskId) === this.deps.queues.shardOf(task.id) ? { parent } : {}),
              ...(trace ? { trace } : {}),
            };
          });
        const [jobsRefused, runsRefused] = await Promise.all([
          this.deps.queues.addJobs(singles.flatMap((entry) => entry.decision.jobs.map((step) => jobOf(entry, step)))),
          runs.length > 0 ? this.addRuns(runs) : new Map<string, unknown>(),
        ]);
        for (const [id, error] of [...jobsRefused, ...runsRefused]) refused.set(id, error);
      } catch (error) {
        for (const { task } of fresh) refused.set(task.id, error);
      }
      if (refused.size > 0) await this.remove([...refused.keys()]);
      await release(entries.filter(({ task }) => refused.has(task.id) || !stored.has(task.id)));
      const accepted = fresh.filter(({ task }) => !refused.has(task.id));
      const decision = merge(accepted.map(({ decision }) => decision));
      // Jobs, timers and holds are in (a flow's with its root); what else a start may ask for
      // (children, an immediate end) follows. A new task's first transitions are not published: a
      // client following it starts from a snapshot.
      await this.carryOut(
        { ...decision, jobs: [], timers: [], transitions: [] },
        { started: [], moved: [] },
        accepted.map(({ task }) => states.get(task.id)!),
        new Map(),
        { treesMade: true },
      );
      if (held.size > 0) await this.admittedMeanwhile(accepted, held);
    } else await release(entries);
    return entries.map(({ task }) => (refused.has(task.id) ? { refused: refused.get(task.id) } : stored.has(task.id) ? { created: true } : { created: false }));
  }

  /**
   * Adds runs as flows; a sub-workflow's run whose parent's root is gone (Redis lost it) makes
   * that root again (its processor then waits for what the parent's run waits on) and is added again.
   */
  private async addRuns(runs: readonly NewRun[]): Promise<Map<string, unknown>> {
    const refused = await this.deps.queues.addRuns(runs);
    const orphans = runs.filter((run) => refused.get(run.taskId) instanceof MissingRootError);
    if (orphans.length === 0) return refused;
    await this.deps.queues.remakeRoots(orphans.map((run) => run.parent!));
    const again = await this.deps.queues.addRuns(orphans);
    for (const run of orphans) {
      if (again.has(run.taskId)) refused.set(run.taskId, again.get(run.taskId));
      else refused.delete(run.taskId);
    }
    return refused;
  }

  /** How a step's job sits in its run: a child of the run's root when the run is a flow and still active, and whether its failure fails the task. */
  private jobOptions(state: TaskState, step: Pick<ReadyStep, 'stepId'>, active: boolean): Pick<NewJob, 'flow' | 'continues'> {
    const planned = state.plan.byId.get(step.stepId);
    return {
      ...(active && isFlow(state.plan.plan) ? { flow: true } : {}),
      ...(planned?.onFailure === 'continue' ? { continues: true } : {}),
    };
  }

  /** Undoes `create` for tasks that could not be enqueued: the tasks, their steps, items and history, and the idempotency keys they took. */
  private async remove(ids: string[]): Promise<void> {
    await this.deps.sql
      .$executeRawUnsafe(
        `WITH t AS (
           DELETE FROM tasks WHERE id = ANY($1::uuid[]) RETURNING id, created_at, owner_key, idempotency_key
         ), s AS (
           DELETE FROM steps s USING t WHERE s.task_id = t.id AND s.task_created_at = t.created_at
         ), i AS (
           DELETE FROM step_items i USING t WHERE i.task_id = t.id AND i.task_created_at = t.created_at
         ), e AS (
           DELETE FROM task_events e USING t WHERE e.task_id = t.id AND e.task_created_at = t.created_at
         )
         DELETE FROM idempotency_keys k USING t WHERE k.owner_key = t.owner_key AND k.idempotency_key = t.idempotency_key AND k.task_id = t.id`,
        ids,
      )
      .catch((error: Error) => this.deps.logger.error('could not remove tasks that failed to enqueue', { task_ids: ids, error: error.message }));
  }

  // ---- A worker's step ----------------------------------------------------------------------

  /** A worker's claim to run a step or item; false: it may not run (its task ended, it finished, a later delivery has it). */
  async claim(claim: Omit<StepClaim, 'createdAt'>): Promise<boolean> {
    const createdAt = await this.createdAt(claim.taskId);
    return (await this.claims.add({ ...claim, createdAt })) !== undefined;
  }

  /** An adapter's progress, or a failed attempt that will be retried. */
  async note(note: Omit<StepNote, 'createdAt'>): Promise<void> {
    const createdAt = await this.createdAt(note.taskId);
    await this.notes.add({ ...note, createdAt });
  }

  /** A report about a step (a result, a wake-up, a child's end): recorded, decided and carried out. */
  async report(report: Report): Promise<ReportOutcome> {
    // The jobs the report makes continue the reporter's trace (a step's job, its dependents').
    const trace = captureTraceContext();
    const { recorded, followUp } = await this.reports.add({ report, ...(trace ? { trace } : {}) });
    await followUp;
    return { recorded };
  }

  /** A one-tool task's result, which ends it; `limited`: its job passed limits per key, which it releases. */
  async finishSingle(result: Omit<SingleResult, 'createdAt'>, limited = false): Promise<SingleRunRecorded> {
    const createdAt = await this.createdAt(result.taskId);
    const outcome = await this.singles.add({ ...result, createdAt });
    if (outcome.recorded && outcome.task.callback) await this.deps.queues.enqueueCallback(result, this.deps.config.CALLBACK_MAX_ATTEMPTS);
    if (outcome.recorded && limited) await this.releaseTasks([result.taskId]);
    return outcome;
  }

  private async createdAt(taskId: string): Promise<Date> {
    const at = uuidv7Time(taskId) ?? (await creationTimes(this.deps.sql, [taskId])).get(taskId);
    if (!at) throw new Error(`task ${taskId} is gone`);
    return at;
  }

  private async flushClaims(batch: StepClaim[]): Promise<(Claimed | undefined)[]> {
    // Of several claims of one step in a batch, the latest delivery's is the one that counts.
    const key = (claim: StepClaim) => `${claim.taskId}/${claim.stepId}/${claim.item ?? ''}/${claim.run}`;
    const latest = new Map<string, StepClaim>();
    for (const claim of batch) {
      const seen = latest.get(key(claim));
      if (!seen || claim.attempt > seen.attempt) latest.set(key(claim), claim);
    }
    const claimed = await claimSteps(this.deps.sql, [...latest.values()], this.history);
    const took = new Map(claimed.map((claim) => [`${claim.taskId}/${claim.stepId}/${claim.item ?? ''}`, claim]));
    const transitions: Transition[] = [];
    const at = new Date().toISOString();
    for (const claim of claimed) {
      if (claim.taskBegan) transitions.push({ taskId: claim.taskId, status: 'running', at });
      if (claim.item === undefined) transitions.push({ taskId: claim.taskId, stepId: claim.stepId, status: 'running', at });
    }
    this.publish(transitions);
    return batch.map((claim) => (latest.get(key(claim)) === claim ? took.get(`${claim.taskId}/${claim.stepId}/${claim.item ?? ''}`) : undefined));
  }

  private async flushNotes(batch: StepNote[]): Promise<boolean[]> {
    const taken = await noteSteps(this.deps.sql, batch, this.history);
    const keys = new Set(taken.map((note) => `${note.taskId}/${note.stepId}/${note.item ?? ''}`));
    const at = new Date().toISOString();
    this.publish(
      batch
        .filter((note) => note.progress && note.item === undefined && keys.has(`${note.taskId}/${note.stepId}/`))
        .map((note) => ({ taskId: note.taskId, stepId: note.stepId, status: 'running', at, progress: note.progress! })),
    );
    return batch.map((note) => keys.has(`${note.taskId}/${note.stepId}/${note.item ?? ''}`));
  }

  private async flushSingles(batch: SingleResult[]): Promise<SingleRunRecorded[]> {
    const recorded = await finishSingleRuns(this.deps.sql, batch, this.deps.config, this.history);
    const transitions: Transition[] = [];
    recorded.forEach((outcome, index) => {
      if (!outcome.recorded) return;
      const result = batch[index]!;
      const at = result.finishedAt.toISOString();
      transitions.push({ taskId: result.taskId, stepId: result.stepId, status: result.status, at }, { taskId: result.taskId, status: outcome.taskStatus, at });
      this.deps.onEnded?.({
        taskId: result.taskId,
        run: result.run,
        status: outcome.taskStatus,
        taskType: outcome.task.type,
        createdAt: outcome.task.createdAt,
        callback: outcome.task.callback,
      });
    });
    this.publish(transitions);
    return recorded;
  }

  /**
   * One transaction: load and lock `taskIds`, decide (loading more while the engine asks), apply.
   * `decideWith` is pure; `before` runs inside the transaction once the decision is applied (the
   * jobs of a retried run are added before it commits, so a failure to add them leaves the task
   * as it was).
   */
  private async transaction(
    taskIds: readonly string[],
    decideWith: (states: TaskState[]) => Decision,
    options: {
      items?: { taskId: string; stepId: string; item: number }[];
      inputs?: boolean;
      before?: (tx: SqlRunner, result: Transaction) => Promise<void>;
    } = {},
  ): Promise<Transaction> {
    const times = await creationTimes(this.deps.sql, taskIds);
    return this.deps.sql.$transaction(async (tx) => {
      const states = await loadRuns(
        tx,
        times,
        { taskIds: [...new Set(taskIds)].sort(), ...(options.items ? { items: options.items } : {}), inputs: options.inputs ?? false },
        this.plans,
      );
      let decision = decideWith(states);
      for (let round = 0; decision.needs; round += 1) {
        if (round > 10) throw new Error('the engine keeps asking for more data');
        await loadMore(tx, decision.needs, states);
        decision = decideWith(states);
      }
      // Limits per key: a step held back waits instead of being queued (its job is not made).
      let held: HoldRef[] = [];
      if (decision.jobs.length > 0 && this.deps.gates) {
        const gated = await this.gateJobs(decision.jobs, new Map(states.map((state) => [state.id, { plan: state.plan.plan, owner: state.owner }])));
        held = heldItems(decision.jobs, gated);
        decision = holdBack(decision, gated);
      }
      // With nothing to run after it, the apply carries the COMMIT (one round trip fewer per level).
      const applied = await applyDecision(tx, decision, { ...this.history, commit: options.before === undefined });
      const result = { states, decision, applied, heldItems: held };
      await options.before?.(tx, result);
      return result;
    });
  }

  private async flushReports(entries: { report: Report; trace?: Context }[]): Promise<{ recorded: boolean; followUp: Promise<void> }[]> {
    const batch = entries.map((entry) => entry.report);
    const traces = new Map(entries.flatMap((entry) => (entry.trace ? [[entry.report.taskId, entry.trace] as const] : [])));
    const items = batch.flatMap((report) =>
      (report.type === 'result' || report.type === 'lost' || report.type === 'admitted') && report.item !== undefined && report.stepId !== undefined
        ? [{ taskId: report.taskId, stepId: report.stepId, item: report.item }]
        : [],
    );
    const options = this.options();
    const {
      states,
      decision,
      applied,
      heldItems: held,
    } = await this.transaction(
      batch.map((report) => report.taskId),
      (loaded) => decide(loaded, batch, options),
      // A lost job is made again from the input its step was given.
      { items, inputs: batch.some((report) => report.type === 'lost') },
    );
    // Map items let in by a limit lose their holds once their jobs are in.
    const admitted = batch.flatMap((report) =>
      report.type === 'admitted' && report.item !== undefined && report.stepId !== undefined
        ? [{ taskId: report.taskId, run: report.run, stepId: report.stepId, item: report.item }]
        : [],
    );
    const followUp = this.carryOut(decision, applied, states, traces, { holds: held, admitted });
    // Nobody waits on it within the batch: a child's end reports to its parent through this same batcher.
    followUp.catch(() => undefined);
    return batch.map((_, index) => ({ recorded: decision.recorded[index] ?? false, followUp }));
  }

  /**
   * What a committed decision asks of the world outside PostgreSQL: jobs (with the items its
   * sweeps queued), timers, holds, jobs to drop, events, callbacks; then, once those are done,
   * what goes through the ledger again (children to start or cancel, reports to parents).
   *
   * In a flow, every new child (job, timer, hold) is added under its run's root before anything
   * is dropped, and before the job whose report made this decision is acknowledged: the root
   * always has a pending child while its run has work left (src/queue/jobs.ts). `treesMade`: the
   * decision's runs were just added as flows with their first children and holds (create, resume).
   * `holds`: more holds to make (map items held back where the decision was made, holds made
   * again by a repair). `admitted`: map items let in by a limit per key, whose holds go once
   * their jobs are in.
   */
  private async carryOut(
    decision: Decision,
    applied: Applied,
    states: readonly TaskState[],
    traces: ReadonlyMap<string, Context> = new Map(),
    options: { treesMade?: boolean; holds?: HoldRef[]; admitted?: HoldRef[] } = {},
  ): Promise<void> {
    const byId = new Map(states.map((state) => [state.id, state]));
    const ended = new Set(decision.ended.map((end) => end.taskId));
    const runOf = (task: TaskState) => decision.tasks.find((change) => change.taskId === task.id)?.set.run ?? task.run;
    /** A run's new children hang under its root while the run is active. */
    const inFlow = (taskId: string) => {
      const task = byId.get(taskId);
      return task !== undefined && isFlow(task.plan.plan) && !ended.has(taskId) && (ACTIVE_TASK_STATUSES.has(task.status) || runOf(task) > task.run);
    };
    const traced = (taskId: string) => (traces.has(taskId) ? { trace: traces.get(taskId)! } : {});
    const jobOf = (step: ReadyStep): NewJob => {
      const task = byId.get(step.taskId);
      return {
        step,
        single: task?.plan.plan.single === true,
        ...(task ? this.jobOptions(task, step, inFlow(task.id)) : {}),
        ...traced(step.taskId),
      };
    };
    const jobs: NewJob[] = decision.jobs.map(jobOf);
    for (const started of applied.started) {
      const task = byId.get(started.taskId);
      const step = task?.plan.byId.get(started.stepId);
      const tool = step && jobTool(step);
      if (task && step && tool)
        jobs.push(
          jobOf({
            taskId: task.id,
            // A retried task's items run in its new run.
            run: runOf(task),
            stepId: step.id,
            item: started.item,
            tool,
            input: started.input,
            retry: step.options.retry,
            timeoutMs: step.options.timeout_ms,
            dependencies: {},
            ...(step.options.priority ? { priority: step.options.priority } : {}),
          }),
        );
    }
    const drops: JobRef[] = [
      ...decision.dropJobs,
      ...applied.moved.flatMap((moved) => {
        const task = byId.get(moved.taskId);
        const step = task?.plan.byId.get(moved.stepId);
        const tool = step && jobTool(step);
        return moved.from === 'queued' && task && tool ? [{ taskId: task.id, run: task.run, stepId: moved.stepId, item: moved.item, tool }] : [];
      }),
    ];
    // Jobs not gated where they were decided (a map's items, jobs made again): held ones are not made.
    const ungated = jobs.filter(({ step }) => !this.passed.has(step)).map(({ step }) => step);
    const held =
      ungated.length > 0 ? await this.gateJobs(ungated, new Map(states.map((state) => [state.id, { plan: state.plan.plan, owner: state.owner }]))) : new Map();
    const admitted = held.size > 0 ? jobs.filter(({ step }) => !held.has(heldKey(step))) : jobs;
    const holds = options.treesMade ? { add: [], drop: [] } : holdChanges(decision, byId);
    // A map item held back by a limit waits with no job: its hold stands in for it.
    const itemHolds = [...(options.holds ?? []), ...heldItems(ungated, held)].filter((hold) => inFlow(hold.taskId));
    await this.withRoots(async () => {
      const refused = admitted.length > 0 ? await this.deps.queues.addJobs(admitted) : new Map();
      const [error] = refused.values();
      if (error !== undefined) throw error;
      await Promise.all([
        decision.timers.length > 0 ? this.deps.queues.addTimers(decision.timers, inFlow) : undefined,
        holds.add.length + itemHolds.length > 0 ? this.deps.queues.addHolds([...holds.add, ...itemHolds]) : undefined,
      ]);
    });
    // The new children are in: now what no longer holds the runs may go.
    const unheld = [...holds.drop, ...(options.admitted ?? [])];
    await Promise.all([
      unheld.length > 0 ? this.deps.queues.dropHolds(unheld) : undefined,
      // A flow's root learns that its run ended, so that it closes without asking PostgreSQL (workers/runtime/run-roots.ts).
      ...decision.ended
        .filter((end) => isFlow(byId.get(end.taskId)?.plan.plan ?? { steps: [], single: true }))
        .map((end) => this.deps.queues.markEnded(end.taskId, end.run, end.status)),
      ...decision.ended.filter((ended) => ended.callback).map((ended) => this.deps.queues.enqueueCallback(ended, this.deps.config.CALLBACK_MAX_ATTEMPTS)),
      // A step that starts waiting for someone tells the task's callback_url (an approval: with its links).
      ...decision.transitions
        .filter((change) => change.stepId !== undefined && waitsForSomeone(change.status, change.reason ?? null) && byId.get(change.taskId)?.callback)
        .map((change) =>
          this.deps.queues.enqueueCallback(
            { taskId: change.taskId, run: runOf(byId.get(change.taskId)!), waitingStep: change.stepId! },
            this.deps.config.CALLBACK_MAX_ATTEMPTS,
          ),
        ),
    ]);
    // The jobs of queued steps and items (a cancelled map's: up to MAP_MAX_ITEMS) are removed
    // in the background: PostgreSQL already refuses their claims, so one that a worker takes
    // first never runs its tool; removing them only spares the workers that. Whoever waits on
    // this (a cancel's answer, a worker's acknowledgement) does not wait on Redis for them.
    const cleanup = drops.filter((ref) => !ref.running);
    if (cleanup.length > 0)
      this.inBackground(() =>
        this.deps.queues.dropJobs(cleanup).catch((dropError: Error) => this.deps.logger.warn('could not drop jobs', { error: dropError.message })),
      );
    const running = drops.filter((ref) => ref.running);
    const dropping = running.length > 0 ? this.deps.queues.dropJobs(running) : Promise.resolve([]);
    this.publish(decision.transitions);
    for (const ended of decision.ended) this.deps.onEnded?.(ended);
    // A running step whose job waited out a retry's backoff is settled once its job is gone.
    const settling = dropping.then(
      (dropped) => Promise.all(dropped.map((ref) => this.report({ type: 'lost', taskId: ref.taskId, run: ref.run, stepId: ref.stepId, at: new Date() }))),
      (dropError: Error) => this.deps.logger.warn('could not drop jobs', { error: dropError.message }),
    );
    await Promise.all([
      settling,
      this.releaseEnded(decision, byId),
      ...decision.children.map((child) => {
        const parent = byId.get(child.parentTaskId);
        return this.startChild(child, parent ? { taskId: parent.id, run: runOf(parent) } : undefined);
      }),
      ...decision.cancelChildren.map((id) => this.cancel(id).then(() => undefined)),
      ...decision.parentReports.map((report) => this.report(report).then(() => undefined)),
    ]);
  }

  /**
   * Runs `add` (new children of flows); when a root is gone (Redis lost it), makes it again and
   * runs `add` once more: the remade root's processor waits for what its run waits on.
   */
  private async withRoots(add: () => Promise<void>): Promise<void> {
    try {
      await add();
    } catch (error) {
      if (!(error instanceof MissingRootError)) throw error;
      this.deps.logger.warn("a run's root job was gone: made it again", { runs: error.runs });
      await this.deps.queues.remakeRoots(error.runs);
      await add();
    }
  }

  private publish(transitions: Transition[]): void {
    if (transitions.length === 0) return;
    this.deps.publish(transitions).catch((error: Error) => this.deps.logger.warn('could not publish events', { error: error.message }));
  }

  // ---- Limits per key (src/engine/key-limits.ts, src/queue/gates.ts) -----------------------

  /** Whether a task's work passes gates: its plan has limits per key, or every API key has one. */
  private limited(plan: Plan): boolean {
    if (!this.deps.gates) return false;
    const { KEY_CONCURRENCY, KEY_RATE_PER_MINUTE } = this.deps.config;
    return KEY_CONCURRENCY > 0 || KEY_RATE_PER_MINUTE > 0 || plan.limits !== undefined || plan.steps.some((step) => step.limits !== undefined);
  }

  /**
   * Jobs enter their gates (one round trip): a task's run first when its workflow has limits of
   * its own, then each job's step (or item) with its step's limits and its API key's defaults.
   * Returns the jobs held back, by heldKey, with the kind of limit that holds them; jobs let in
   * are marked `limited` (their end releases the gates).
   */
  private async gateJobs(jobs: readonly ReadyStep[], tasks: ReadonlyMap<string, { plan: Plan; owner: string }>): Promise<Map<string, 'c' | 'r'>> {
    const held = new Map<string, 'c' | 'r'>();
    if (!this.deps.gates) return held;
    const { KEY_CONCURRENCY, KEY_RATE_PER_MINUTE } = this.deps.config;
    const entries: GateEntry[] = [];
    const byUnit = new Map<string, ReadyStep>();
    const runs = new Set<string>();
    for (const job of jobs) {
      const task = tasks.get(job.taskId);
      if (!task || !this.limited(task.plan)) continue;
      let after: string | undefined;
      if (task.plan.limits) {
        after = runUnit(job.taskId, job.run);
        if (!runs.has(after)) entries.push({ taskId: job.taskId, unit: after, limits: task.plan.limits });
        runs.add(after);
      }
      const limits: KeyLimit[] = [
        ...(task.plan.steps.find((step) => step.id === job.stepId)?.limits ?? []),
        ...ownerLimits(task.owner, { concurrency: KEY_CONCURRENCY, perMinute: KEY_RATE_PER_MINUTE }),
      ];
      const unit = stepUnit(job.taskId, job.run, job.stepId, job.item);
      byUnit.set(unit, job);
      entries.push({ taskId: job.taskId, unit, limits, ...(after ? { after } : {}) });
    }
    if (entries.length === 0) return held;
    const wakes: { gate: string; at: number }[] = [];
    for (const result of await this.deps.gates.enter(entries)) {
      const job = byUnit.get(result.unit);
      if (result.admitted) {
        if (job) {
          job.limited = true;
          this.passed.add(job);
        }
        continue;
      }
      if (result.kind === 'r' && result.wakeAt !== undefined) wakes.push({ gate: result.gate, at: result.wakeAt });
      if (job) held.set(heldKey(job), result.kind);
    }
    if (wakes.length > 0) await this.deps.queues.addGateWakes(wakes);
    return held;
  }

  /**
   * Held back before its task was stored, a step may have been let in before the task was there
   * to hear it (the release found no task): it is told now. Told twice, the second is a no-op.
   */
  private async admittedMeanwhile(tasks: readonly PreparedTask[], held: ReadonlyMap<string, 'c' | 'r'>): Promise<void> {
    const keys = [...held.keys()].map((key) => key.split('/'));
    const asked: { taskId: string; stepId?: string; unit: string }[] = [];
    for (const { task, plan } of tasks) {
      const steps = keys.filter(([taskId, , item]) => taskId === task.id && item === undefined).map(([, stepId]) => stepId!);
      if (steps.length === 0) continue;
      if (plan.limits) asked.push({ taskId: task.id, unit: runUnit(task.id, 1) });
      for (const stepId of steps) asked.push({ taskId: task.id, stepId, unit: stepUnit(task.id, 1, stepId) });
    }
    const where = await this.deps.gates!.where(asked.map(({ unit }) => unit));
    await Promise.all(
      asked.map(({ taskId, stepId }, index) =>
        where[index] === 'in' ? this.report({ type: 'admitted', taskId, run: 1, ...(stepId ? { stepId } : {}), at: new Date() }) : undefined,
      ),
    );
  }

  /** Jobs that passed their gates where they were decided: carrying the decision out does not gate them again. */
  private readonly passed = new WeakSet<ReadyStep>();

  /** Releases everything these tasks hold in gates, and lets in what now fits. */
  async releaseTasks(taskIds: readonly string[]): Promise<void> {
    if (!this.deps.gates || taskIds.length === 0) return;
    await this.admit(await this.deps.gates.release(taskIds.map((id) => ({ id, prefixes: [''] }))));
  }

  /** What a committed decision ended gives its gates back: ended tasks all they hold, ended steps (and their items) theirs. */
  private async releaseEnded(decision: Decision, byId: ReadonlyMap<string, TaskState>): Promise<void> {
    if (!this.deps.gates) return;
    const prefixes = new Map<string, string[]>();
    const add = (taskId: string, prefix: string) => {
      const task = byId.get(taskId);
      if (!task || !this.limited(task.plan.plan)) return;
      prefixes.set(taskId, [...(prefixes.get(taskId) ?? []), prefix]);
    };
    const ended = new Set(decision.ended.map((end) => end.taskId));
    for (const taskId of ended) add(taskId, '');
    for (const transition of decision.transitions) {
      if (transition.stepId === undefined || ended.has(transition.taskId) || !FINISHED_STEP_STATUSES.has(transition.status)) continue;
      add(transition.taskId, stepUnit(transition.taskId, byId.get(transition.taskId)?.run ?? 1, transition.stepId));
    }
    for (const change of decision.items) {
      if (ended.has(change.taskId) || !change.set.status || !FINISHED_STEP_STATUSES.has(change.set.status)) continue;
      add(change.taskId, stepUnit(change.taskId, byId.get(change.taskId)?.run ?? 1, change.stepId, change.item));
    }
    if (prefixes.size === 0) return;
    await this.admit(await this.deps.gates.release([...prefixes].map(([id, list]) => ({ id, prefixes: list }))));
  }

  /** A rate gate's window moved on (its timer): lets in what fits. */
  async wakeGate(gate: string): Promise<void> {
    if (this.deps.gates) await this.admit(await this.deps.gates.wake(gate));
  }

  /** Work let in by a release or a wake-up gets its jobs; rate gates still holding some wake up later. */
  private async admit(released: Released): Promise<void> {
    await Promise.all([
      released.wakes.length > 0 ? this.deps.queues.addGateWakes(released.wakes) : undefined,
      ...released.admitted.map((unit) => this.report({ type: 'admitted', ...parseUnit(unit), at: new Date() })),
    ]);
  }

  /**
   * Gates against PostgreSQL, for the reconciler: what a task that ended, or a step that is no
   * longer queued, running or waiting, still holds is released (a process died between its commit
   * and its release); a step let in whose admission was lost is admitted again. Returns how many
   * units were released and admitted.
   */
  async reconcileGates(): Promise<{ released: number; admitted: number }> {
    const outcome = { released: 0, admitted: 0 };
    const gates = this.deps.gates;
    if (!gates) return outcome;
    const taskIds = await gates.tasks();
    for (let start = 0; start < taskIds.length; start += 200) {
      const chunk = taskIds.slice(start, start + 200);
      const states = new Map((await this.peek(chunk)).map((state) => [state.id, state]));
      const release: { id: string; prefixes: string[] }[] = [];
      for (const taskId of chunk) {
        const state = states.get(taskId);
        if (!state || !ACTIVE_TASK_STATUSES.has(state.status)) {
          release.push({ id: taskId, prefixes: [''] });
          continue;
        }
        const units = (await gates.units(taskId)).filter((unit) => {
          const { run, stepId, item } = parseUnit(unit);
          if (run !== state.run) return true;
          const step = stepId !== undefined ? state.steps.get(stepId) : undefined;
          return stepId !== undefined && item === undefined && (!step || FINISHED_STEP_STATUSES.has(step.status) || step.status === 'pending');
        });
        if (units.length > 0) release.push({ id: taskId, prefixes: units });
        outcome.released += units.length;
      }
      outcome.released += release.filter((entry) => entry.prefixes[0] === '').length;
      await this.admit(await gates.release(release));
    }
    return outcome;
  }

  // ---- Sub-workflows ------------------------------------------------------------------------

  /**
   * Starts a sub-workflow step's child task, once: its id was chosen (and stored with the step)
   * before. A child that exists already (a retried parent, or a start made again after a crash) is
   * resumed when it failed or was cancelled, reports its result when it completed, and is left
   * to run otherwise.
   */
  private async startChild(child: ChildStart, parent?: RunKey): Promise<void> {
    const [state] = await this.peek([child.childTaskId]);
    if (state) {
      if (state.status === 'failed' || state.status === 'cancelled') await this.resume(child.childTaskId);
      else if (state.status === 'completed') await this.report(childReport(child, state));
      return;
    }
    if (!this.deps.planChild) throw new Error('this process cannot start sub-workflows (no planChild)');
    let prepared: NewTask;
    try {
      const planChild = (params: Record<string, unknown>) => this.deps.planChild!(child.workflow, params);
      const planned = await planChild(child.params);
      const admitted = this.deps.gate ? await admitChild(this.deps.gate, child, planned, planChild) : planned;
      if (admitted === 'held') {
        this.deps.logger.warn('the policy could not decide on a sub-workflow: its child starts once it can', {
          task_id: child.parentTaskId,
          step_id: child.stepId,
        });
        return;
      }
      const { plan, params } = admitted;
      prepared = this.prepare(
        {
          id: child.childTaskId,
          createdAt: uuidv7Time(child.childTaskId)!,
          taskType: child.workflow.name,
          workflow: child.workflow,
          params,
          owner: child.owner,
          requestHash: '',
          priority: child.priority ?? 0,
          delayMs: 0,
          parent: { taskId: child.parentTaskId, createdAt: child.parentCreatedAt, stepId: child.stepId },
          depth: child.depth,
        },
        plan,
      );
    } catch (error) {
      if (!(error instanceof ValidationError || error instanceof PolicyDeniedError)) throw error;
      // The child cannot start with these params (or may not): the parent's step fails with the reasons.
      await this.report({
        type: 'child',
        taskId: child.parentTaskId,
        stepId: child.stepId,
        childTaskId: child.childTaskId,
        status: 'failed',
        error: capErrorRecord({
          ...toErrorRecord(error),
          name: error instanceof PolicyDeniedError ? 'PolicyDenied' : 'InvalidChildParams',
          details: error.details,
        }),
        at: new Date(),
      });
      return;
    }
    // Made once: the child's id was stored with the parent's step, and a second insert of it does nothing.
    const [outcome] = await this.create([prepared], parent);
    if (outcome && 'refused' in outcome) throw outcome.refused;
  }

  /** The run a task is in now: a resumed sub-workflow's child hangs its new root under it. */
  private async parentRun(taskId: string): Promise<RunKey | undefined> {
    const [state] = await this.peek([taskId]);
    return state && ACTIVE_TASK_STATUSES.has(state.status) ? { taskId, run: state.run } : undefined;
  }

  /** Tasks as they are, without locking them. */
  private async peek(taskIds: readonly string[]): Promise<TaskState[]> {
    const times = await creationTimes(this.deps.sql, taskIds);
    return this.deps.sql.$transaction((tx) => loadRuns(tx, times, { taskIds, inputs: true }, this.plans));
  }

  // ---- Cancel, retry, repair ----------------------------------------------------------------

  /**
   * Cancels a task (and its sub-workflows' children): no further step starts, waiting steps end,
   * and workers are told to abort the steps they run. `owner`: only a task of this owner is found.
   */
  async cancel(
    taskId: string,
    owner?: string,
    by?: string,
  ): Promise<{ outcome: 'cancelled'; task: TaskState } | { outcome: 'finished'; status: TaskStatus } | undefined> {
    let found: TaskState | undefined;
    const options = this.options();
    const result = await this.transaction([taskId], (states) => {
      found = states.find((state) => state.id === taskId && (owner === undefined || state.owner === owner));
      return requestedBy(found ? cancelRuns([found], options) : { ...cancelRuns([], options) }, taskId, 'task_cancelled', by);
    });
    if (!found) return undefined;
    if (!isFinished(found.status) && result.decision.ended.length > 0) {
      await this.deps
        .stopTask?.(taskId, found.run)
        .catch((error: Error) => this.deps.logger.warn('task cancelled, but running steps could not be told', { task_id: taskId, error: error.message }));
      await this.carryOut(result.decision, result.applied, result.states);
      return { outcome: 'cancelled', task: found };
    }
    return { outcome: 'finished', status: found.status };
  }

  /**
   * Resumes a failed or cancelled task as a new run: completed steps (and map items) keep their
   * outputs, the others run again as their dependencies allow; a sub-workflow's child is
   * resumed too. The new run's jobs are added before its transaction commits, so a Redis that
   * refuses them leaves the task as it was.
   */
  async resume(
    taskId: string,
    owner?: string,
    by?: string,
  ): Promise<{ outcome: 'resumed'; run: number; task: TaskState } | { outcome: 'not_resumable'; status: TaskStatus } | undefined> {
    let found: TaskState | undefined;
    const options = this.options();
    const result = await this.transaction(
      [taskId],
      (states) => {
        found = states.find((state) => state.id === taskId && (owner === undefined || state.owner === owner));
        return requestedBy(resumeRuns(found ? [found] : [], options), taskId, 'task_resumed', by);
      },
      {
        // The new run's jobs (a workflow's: its flow, root first) go in before the commit.
        before: async (_tx, { states, decision, heldItems: held }) => {
          const state = states.find((loaded) => loaded.id === taskId);
          const run = decision.tasks.find((change) => change.taskId === taskId)?.set.run;
          if (!state || run === undefined) return;
          if (!isFlow(state.plan.plan)) {
            if (decision.jobs.length > 0) await this.deps.queues.addSteps(decision.jobs);
            return;
          }
          const parent = state.parent ? await this.parentRun(state.parent.taskId) : undefined;
          const [error] = (
            await this.addRuns([
              {
                taskId,
                run,
                taskType: state.taskType,
                jobs: decision.jobs.map((step) => ({ step, ...this.jobOptions(state, step, true) })),
                timers: decision.timers,
                holds: [...holdChanges(decision, new Map([[taskId, state]])).add, ...held],
                ...(parent && this.deps.queues.shardOf(parent.taskId) === this.deps.queues.shardOf(taskId) ? { parent } : {}),
              },
            ])
          ).values();
          if (error !== undefined) throw error;
        },
      },
    );
    if (!found) return undefined;
    const run = result.decision.tasks.find((change) => change.taskId === taskId)?.set.run;
    if (run === undefined) return { outcome: 'not_resumable', status: found.status };
    const flow = isFlow(found.plan.plan);
    await this.carryOut({ ...result.decision, jobs: [], ...(flow ? { timers: [] } : {}) }, result.applied, result.states, new Map(), { treesMade: flow });
    return { outcome: 'resumed', run, task: found };
  }

  /**
   * What these runs wait on outside PostgreSQL (the engine's outstanding), with the runs as
   * loaded, and the holds their roots need (src/tasks/flows.ts): steps that wait with no job, and
   * map items a limit per key holds back.
   */
  async outstanding(taskIds: readonly string[]): Promise<{ states: TaskState[]; decision: Decision; turns: Report[]; holds: HoldRef[] }> {
    const options = this.options();
    const states = await this.peek(taskIds);
    let decision = outstanding(states, options);
    if (decision.needs) {
      const needs = decision.needs;
      await this.deps.sql.$transaction((tx) => loadMore(tx, needs, states));
      decision = outstanding(states, options);
    }
    const turns: Report[] = [];
    const holds = states.flatMap(currentHolds);
    const limited = states.filter((state) => ACTIVE_TASK_STATUSES.has(state.status) && this.limited(state.plan.plan));
    if (this.deps.gates && limited.length > 0) {
      // Held back by a limit, a queued item has no job, and a step waits its turn: neither is missing.
      const units = decision.jobs.map((job) => stepUnit(job.taskId, job.run, job.stepId, job.item));
      const waiting = limited.flatMap((state) =>
        [...state.steps.values()].filter((step) => waitsForTurn(step.status, step.reason)).map((step) => ({ state, step })),
      );
      const where = await this.deps.gates.where([...units, ...waiting.map(({ state, step }) => stepUnit(state.id, state.run, step.id))]);
      for (const [index, job] of decision.jobs.entries())
        if (where[index] === 'line' && job.item !== undefined) holds.push({ taskId: job.taskId, run: job.run, stepId: job.stepId, item: job.item });
      decision = { ...decision, jobs: decision.jobs.filter((_, index) => where[index] !== 'line') };
      // A step let in whose admission was lost, or one Redis forgot, is admitted again (it enters its gates again).
      waiting.forEach(({ state, step }, index) => {
        if (where[units.length + index] !== 'line') turns.push({ type: 'admitted', taskId: state.id, run: state.run, stepId: step.id, at: new Date() });
      });
    }
    return { states, decision, turns, holds };
  }

  /**
   * Makes again what these runs wait on outside PostgreSQL (jobs, timers, holds, children,
   * callbacks, parents' reports), idempotently: for a step delivered again after its result was
   * committed (its worker died before carrying the result's effects out), for a run's root that
   * came up before its run ended, and for the reconciler. A flow's root that is gone is made again.
   */
  async repair(taskIds: readonly string[]): Promise<void> {
    const { states, decision, turns, holds } = await this.outstanding(taskIds);
    await this.carryOut(decision, { started: [], moved: [] }, states, new Map(), { holds });
    await Promise.all(turns.map((turn) => this.report(turn)));
  }

  /**
   * A run's root job came up (workers/runtime/run-roots.ts): true when its run has ended (or a
   * later run replaced it), so the root completes; otherwise what the run waits on is made again
   * (repair) and the root waits for its children again.
   */
  async closeRun(taskId: string, run: number): Promise<boolean> {
    const [state] = await this.peek([taskId]);
    if (!state || state.run !== run || isFinished(state.status)) return true;
    await this.repair([taskId]);
    return false;
  }

  /** Whether a hold still stands for a step (or map item) that waits with no job: its run is active and the step still waits so. */
  async holds(hold: HoldRef): Promise<boolean> {
    const [state] = await this.peek([hold.taskId]);
    if (!state || state.run !== hold.run || isFinished(state.status)) return false;
    const step = state.steps.get(hold.stepId);
    if (!step || step.run !== hold.run) return false;
    if (hold.item !== undefined) return step.status === 'running';
    return currentHolds(state).some((current) => current.stepId === hold.stepId);
  }

  /** Fails these steps at once: the tool they call is gone for good (Report 'withdrawn'). Returns the tasks of the steps it failed. */
  async withdraw(steps: readonly { taskId: string; run: number; stepId: string }[], error: ErrorRecord): Promise<string[]> {
    const outcomes = await Promise.all(steps.map((step) => this.report({ type: 'withdrawn', ...step, error, at: new Date() })));
    return [...new Set(steps.filter((_, index) => outcomes[index]!.recorded).map((step) => step.taskId))];
  }

  /** Each task's state as the ledger has it (the reconciler compares it with BullMQ). */
  states(taskIds: readonly string[]): Promise<TaskState[]> {
    return this.peek(taskIds);
  }
}

/** Who asked (an API key's id) on the history event of a cancel or a resume of `taskId`; a child's, cancelled with its parent, says nothing. */
function requestedBy<D extends Decision>(decision: D, taskId: string, type: string, by: string | undefined): D {
  if (by === undefined) return decision;
  return {
    ...decision,
    history: decision.history.map((event) => (event.taskId === taskId && event.type === type ? { ...event, data: { ...event.data, by } } : event)),
  };
}

/** What the engine needs to know of a new task besides its plan. */
function taskMeta(task: StoredTask): NewTaskMeta {
  return {
    id: task.id,
    createdAt: task.createdAt,
    taskType: task.taskType,
    params: task.params,
    callback: task.callbackUrl !== undefined,
    owner: task.owner ?? '',
    depth: task.depth ?? 0,
    parent: task.parent ? { taskId: task.parent.taskId, stepId: task.parent.stepId } : null,
  };
}

function childReport(child: ChildStart, state: TaskState): Report {
  return {
    type: 'child',
    taskId: child.parentTaskId,
    stepId: child.stepId,
    childTaskId: child.childTaskId,
    status: 'completed',
    output: state.result ?? null,
    at: new Date(),
  };
}

/** How a held-back job is named: `taskId/stepId`, or `taskId/stepId/item` (engine's holdBack). */
function heldKey(job: Pick<ReadyStep, 'taskId' | 'stepId' | 'item'>): string {
  return job.item === undefined ? `${job.taskId}/${job.stepId}` : `${job.taskId}/${job.stepId}/${job.item}`;
}

/** The map items among `jobs` that limits per key held back: each waits with no job, and its run's root gets a hold in its place. */
function heldItems(jobs: readonly ReadyStep[], held: ReadonlyMap<string, 'c' | 'r'>): HoldRef[] {
  if (held.size === 0) return [];
  return jobs
    .filter((job) => job.item !== undefined && held.has(heldKey(job)))
    .map((job) => ({ taskId: job.taskId, run: job.run, stepId: job.stepId, item: job.item }));
}

/** Several decisions as one (their lists joined), to carry out together. */
function merge(decisions: Decision[]): Decision {
  const merged = emptyDecision();
  for (const decision of decisions) {
    for (const key of Object.keys(merged) as (keyof Decision)[]) {
      const value = merged[key];
      if (Array.isArray(value)) (merged as unknown as Record<string, unknown[]>)[key] = [...value, ...(decision[key] as unknown[])];
    }
  }
  return merged;
}

export type { ErrorRecord };
