import type { Context } from '@opentelemetry/api';
import type { DecideOptions, EngineLimits } from '../../engine/decide.js';
import { holdBack } from '../../engine/key-limits.js';
import type { Plan } from '../../engine/plan.js';
import type { ChildStart, Decision, Report, TaskState, Transition } from '../../engine/state.js';
import type { ReadyStep } from '../../engine/types.js';
import { type Applied, applyDecision } from '../../ledger/apply-decision.js';
import type { NewTask, StoredTask } from '../../ledger/create-tasks.js';
import { loadMore, loadTasks, PlanCache } from '../../ledger/load-tasks.js';
import type { Sql, SqlRunner } from '../../ledger/sql.js';
import { creationTimes } from '../../ledger/task-days.js';
import { ItemFailure } from '../../lib/batcher.js';
import type { Config } from '../../lib/config.js';
import type { Logger } from '../../lib/logger.js';
import { uuidv7Time } from '../../lib/uuid7.js';
import { isTransientDatabaseError, withRetries } from '../../persistence/retry.js';
import type { Gates } from '../../queue/gates.js';
import type { HoldRef, NewJob, NewRun, RunKey, TaskQueues } from '../../queue/task-queues.js';
import { isFlow } from './flows.js';

/**
 * The run driver's shared part: what every verb (runs.ts names them) needs — the dependencies,
 * the decider's options, the one transaction that loads, decides and applies, retries, the plans
 * read so far, and work left running in the background — and `verbs`, through which one verb's
 * module calls another's without importing it.
 */

/** A sub-workflow's child, planned: its plan and the params it starts with. */
export interface PlannedChild {
  plan: Plan;
  params: Record<string, unknown>;
}

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
  planChild?(workflow: { name: string; version: number }, params: Record<string, unknown>): Promise<PlannedChild>;
  /** Tells workers to abort the steps of this run they hold, and not to start any but `spare` (an exit handler's). */
  stopTask?(taskId: string, run: number, spare?: string[]): Promise<void>;
  /** A task ended (metrics, quotas). */
  onEnded?(ended: Decision['ended'][number]): void;
  /**
   * A report met a run that had ended already. What an end gives back outside PostgreSQL (a quota
   * count) is given back again, so it must be idempotent: the ending may have committed while its
   * answer was lost (a connection cut), and the report is its job's redelivery.
   */
  onEndedBefore?(taskId: string, run: number): void;
  /**
   * Asked before a sub-workflow's child is created (the work gate's admitChild, src/tasks/work-gate.ts):
   * the plan to start (the policy may rewrite its params), or 'held' while the policy cannot decide.
   */
  admitChild?(child: ChildStart, planned: PlannedChild, replan: (params: Record<string, unknown>) => Promise<PlannedChild>): Promise<PlannedChild | 'held'>;
}

/** What a report did: recorded or not (a duplicate, or its run moved on); `done` settles once what it caused elsewhere has been carried out. */
export interface ReportOutcome {
  recorded: boolean;
}

/** A new task, planned and started by the engine, ready to be stored (Runs.create). */
export interface PreparedTask extends NewTask {
  trace?: Context;
  /** Its quota's reservation on its way (WorkGate.admit's `inFlight`): its refusal, or undefined once counted. */
  reserving?: Promise<Error | undefined>;
}

export type CreateOutcome = { created: true } | { created: false } | { refused: unknown };

export type Transaction = { states: TaskState[]; decision: Decision; applied: Applied; heldItems: HoldRef[] };

/** The verbs that one part of the run driver calls on another; runs.ts wires them. */
export interface RunVerbs {
  prepare(task: StoredTask, plan: Plan, paramsField?: string): NewTask;
  create(prepared: readonly PreparedTask[], parent?: RunKey): Promise<CreateOutcome[]>;
  addRuns(runs: readonly NewRun[]): Promise<Map<string, unknown>>;
  report(report: Report): Promise<ReportOutcome>;
  carryOut(
    decision: Decision,
    applied: Applied,
    states: readonly TaskState[],
    traces?: ReadonlyMap<string, Context>,
    options?: { treesMade?: boolean; holds?: HoldRef[]; admitted?: HoldRef[] },
  ): Promise<void>;
  gateJobs(jobs: readonly ReadyStep[], tasks: ReadonlyMap<string, { plan: Plan; owner: string }>): Promise<Map<string, 'c' | 'r'>>;
  admittedMeanwhile(tasks: readonly PreparedTask[], held: ReadonlyMap<string, 'c' | 'r'>): Promise<void>;
  releaseTasks(taskIds: readonly string[]): Promise<void>;
  releaseEnded(decision: Decision, byId: ReadonlyMap<string, TaskState>): Promise<void>;
  releaseEndedBefore(tasks: readonly TaskState[]): Promise<void>;
  startChild(child: ChildStart, parent?: RunKey): Promise<void>;
  parentRun(taskId: string): Promise<RunKey | undefined>;
  cancel(taskId: string, owner?: string, by?: string): Promise<unknown>;
  resume(taskId: string, owner?: string, by?: string): Promise<unknown>;
}

export class RunCore {
  readonly plans = new PlanCache();
  private readonly background = new Set<Promise<void>>();
  /** Set by runs.ts once every part is made. */
  verbs!: RunVerbs;

  constructor(readonly deps: RunsDeps) {}

  /** Whether the ledger writes the tasks' history (TASK_HISTORY, on unless `off`). */
  get history(): { history: boolean } {
    return { history: this.deps.config.TASK_HISTORY !== 'off' };
  }

  options(): DecideOptions {
    return {
      limits: this.deps.config,
      now: new Date(),
      newTaskId: (taskType, parentTaskId) => this.deps.queues.newTaskId(new Date(), taskType, parentTaskId),
      // A job that limits per key may hold back is not claimed before its gates let it in.
      claimReady: (task) => !this.limited(task.plan.plan),
    };
  }

  retrying<T>(label: string, work: () => Promise<T>): Promise<T> {
    return withRetries(work, { logger: this.deps.logger, label, maxElapsedMs: this.deps.config.DB_WRITE_RETRY_MS });
  }

  /**
   * Transient errors (lost connection, deadlock) retry the whole batch. Any other error fails
   * only the item that caused it: the batch is retried one item at a time.
   */
  async safely<E, O>(items: E[], flush: (batch: E[]) => Promise<O[]>): Promise<(O | ItemFailure)[]> {
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

  /**
   * Work nobody waits on (it handles its own errors), which idle() still waits for. It starts
   * once the current I/O callbacks are done (setImmediate), so that even its synchronous part
   * (a pipeline of 1,000 commands is built in one go) runs after whatever its caller answers.
   */
  inBackground(work: () => Promise<unknown>): void {
    const done = new Promise((resolve) => setImmediate(resolve)).then(work).then(() => undefined);
    this.background.add(done);
    void done.finally(() => this.background.delete(done));
  }

  /**
   * One transaction: load and lock `taskIds`, decide (loading more while the engine asks), apply.
   * `decideWith` is pure; `before` runs inside the transaction once the decision is applied (the
   * jobs of a retried run are added before it commits, so a failure to add them leaves the task
   * as it was).
   */
  async transaction(
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
      const states = await loadTasks(
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
        const gated = await this.verbs.gateJobs(decision.jobs, new Map(states.map((state) => [state.id, { plan: state.plan.plan, owner: state.owner }])));
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

  publish(transitions: Transition[]): void {
    if (transitions.length === 0) return;
    this.deps.publish(transitions).catch((error: Error) => this.deps.logger.warn('could not publish events', { error: error.message }));
  }

  /** Whether a task's work passes gates: its plan has limits per key, or every API key has one. */
  limited(plan: Plan): boolean {
    if (!this.deps.gates) return false;
    const { KEY_CONCURRENCY, KEY_RATE_PER_MINUTE } = this.deps.config;
    return KEY_CONCURRENCY > 0 || KEY_RATE_PER_MINUTE > 0 || plan.limits !== undefined || plan.steps.some((step) => step.limits !== undefined);
  }

  /** Tasks as they are, without locking them. */
  async peek(taskIds: readonly string[]): Promise<TaskState[]> {
    const times = await creationTimes(this.deps.sql, taskIds);
    return this.deps.sql.$transaction((tx) => loadTasks(tx, times, { taskIds, inputs: true }, this.plans));
  }

  async createdAt(taskId: string): Promise<Date> {
    const at = uuidv7Time(taskId) ?? (await creationTimes(this.deps.sql, [taskId])).get(taskId);
    if (!at) throw new Error(`task ${taskId} is gone`);
    return at;
  }

  /** How a step's job sits in its run: a child of the run's root when the run is a flow and still active, and whether its failure fails the task. */
  jobOptions(state: TaskState, step: Pick<ReadyStep, 'stepId'>, active: boolean): Pick<NewJob, 'flow' | 'continues'> {
    const planned = state.plan.byId.get(step.stepId);
    return {
      ...(active && isFlow(state.plan.plan) ? { flow: true } : {}),
      ...(planned?.onFailure === 'continue' ? { continues: true } : {}),
    };
  }

  /** Jobs that passed their gates where they were decided: carrying the decision out does not gate them again. */
  readonly passed = new WeakSet<ReadyStep>();

  /** Resolves when what runs in the background is done. */
  async idle(): Promise<void> {
    await Promise.all([...this.background]);
  }
}

/** How a held-back job is named: `taskId/stepId`, or `taskId/stepId/item` (engine's holdBack). */
export function heldKey(job: Pick<ReadyStep, 'taskId' | 'stepId' | 'item'>): string {
  return job.item === undefined ? `${job.taskId}/${job.stepId}` : `${job.taskId}/${job.stepId}/${job.item}`;
}

/** The map items among `jobs` that limits per key held back: each waits with no job, and its run's root gets a hold in its place. */
export function heldItems(jobs: readonly ReadyStep[], held: ReadonlyMap<string, 'c' | 'r'>): HoldRef[] {
  if (held.size === 0) return [];
  return jobs
    .filter((job) => job.item !== undefined && held.has(heldKey(job)))
    .map((job) => ({ taskId: job.taskId, run: job.run, stepId: job.stepId, item: job.item }));
}
