import { capErrorRecord, type ErrorRecord, ExpressionError, LimitExceededError, toErrorRecord } from '../lib/errors.js';
import { jsonSize } from '../lib/limits.js';
import type { Decider, EngineLimits, Locals, Resolved, Settle } from './kinds/kind.js';
import { assertStepMove, assertTaskMove } from './lifecycle.js';
import type { Plan, PlanStep } from './plan.js';
import { prepare } from './prepare.js';
import { runnerOf } from './registry.js';
import type { Decision, HistoryEvent, ItemSet, ItemState, Needs, NewItem, Report, StepSet, StepState, TaskSet, TaskState, Transition } from './state.js';
import { emptyDecision, historyEvent } from './state.js';
import { ACTIVE_TASK_STATUSES, FINISHED_STEP_STATUSES, type SkipReason } from './status.js';
import { stepFailure, type TaskEnding, taskEnding } from './task-output.js';
import { ResolvedSizeError, resolveTemplates } from './templates.js';

/**
 * The decider: what reports about steps (a worker's result, a sleep's wake-up, a child task's
 * end) mean for their tasks, and what starting, cancelling or retrying a task does. Pure: it
 * reads tasks as the ledger loaded them (under their locks) and returns a Decision, which the
 * ledger applies in one statement and the runtime carries out (jobs, timers, child tasks,
 * events, callbacks). It knows no step kind: what a step does at each moment (ready, a report,
 * its task's end, what it waits on outside PostgreSQL) is its runner's, made of its kind and
 * its modifiers by the registry (./registry.ts).
 *
 * When it lacks data (an output too large to be loaded with its task, a map's items), the
 * Decision carries `needs` and nothing else: the caller loads that and decides again.
 */

export type { EngineLimits } from './kinds/kind.js';

export interface DecideOptions {
  limits: EngineLimits;
  now: Date;
  /** Makes the id of a new task (a sub-workflow's child of `parentTaskId`), in its queue shard. */
  newTaskId(taskType: string, parentTaskId: string): string;
  /**
   * Whether a running task's steps made ready are claimed at once (see Decider.claimsReady): not for a
   * task under limits per key (a job they hold back is not made, and its step waits instead).
   * @defaultValue every task
   */
  claimReady?(task: TaskState): boolean;
}

/**
 * A copy of the task that the decider may change as it goes (the caller's stays as loaded). Copied
 * with Object.assign, not spread: on Node 20 an object made by a spread is slow to give new keys
 * later (a step's `input` when it is made ready took 1-2 µs; see freshState).
 */
function working(task: TaskState): TaskState {
  return Object.assign({}, task, {
    steps: new Map([...task.steps].map(([id, step]) => [id, Object.assign({}, step, { items: step.items ? { ...step.items } : null })])),
    items: new Map([...task.items].map(([id, items]) => [id, new Map([...items].map(([index, item]) => [index, Object.assign({}, item)]))])),
    allItemsLoaded: new Set(task.allItemsLoaded),
  });
}

/** The decider at work on one task (its current run): what a kind acts through (Decider), and the record of every change it makes. */
class TaskDecider implements Decider {
  readonly task: TaskState;
  readonly now: Date;
  readonly limits: EngineLimits;
  private readonly at: string;
  private taskSet: TaskSet | undefined;
  private readonly stepSets = new Map<string, StepSet>();
  private readonly itemSets = new Map<string, { stepId: string; item: number; set: ItemSet }>();
  /** The locals a modifier gives what runs inside it (withLocals). */
  private locals: Locals | undefined;
  readonly needs: Needs = { outputs: [], items: [] };

  constructor(
    loaded: TaskState,
    readonly decision: Decision,
    private readonly options: DecideOptions,
  ) {
    this.task = working(loaded);
    this.now = options.now;
    this.limits = options.limits;
    this.at = options.now.toISOString();
  }

  get claimsReady(): boolean {
    return !this.task.plan.plan.single && this.task.status === 'running' && (this.options.claimReady?.(this.task) ?? true);
  }

  /** The task is queued or running, not compensating and not running its exit handler: its steps' results still decide its fate. */
  get active(): boolean {
    return ACTIVE_TASK_STATUSES.has(this.task.status) && !this.compensating && !this.exiting;
  }

  /**
   * The run has ended and its exit handler (on_exit) runs: the task stays `running`, the status it
   * ended with in exit_status (its result or error recorded), until the exit steps are done.
   */
  get exiting(): boolean {
    return this.task.status === 'running' && this.task.exitStatus !== null;
  }

  exitTask(): { status: string; error: ErrorRecord | null } | undefined {
    return this.exiting ? { status: this.task.exitStatus!, error: this.task.error ?? null } : undefined;
  }

  /**
   * The task failed and runs its compensations (docs/tools-and-workers.md "Compensation (sagas)"): it stays `running`
   * with its error recorded until they are done, then ends failed.
   */
  get compensating(): boolean {
    return this.task.status === 'running' && this.task.error != null && this.task.plan.compensations.length > 0 && this.task.exitStatus === null;
  }

  /** Whether reports about a step still count: a compensation's while its task compensates, an exit step's while its exit handler runs, any other step's while the task is active. */
  live(step: PlanStep): boolean {
    if (step.onExit) return this.exiting;
    return step.compensationOf !== undefined ? this.compensating : this.active;
  }

  get blocked(): boolean {
    return this.needs.outputs.length > 0 || this.needs.items.length > 0;
  }

  state(stepId: string): StepState {
    const state = this.task.steps.get(stepId);
    if (!state) throw new Error(`task ${this.task.id} has no step ${stepId} in its record`);
    return state;
  }

  newTaskId(taskType: string): string {
    return this.options.newTaskId(taskType, this.task.id);
  }

  need(kind: 'output' | 'items', stepId: string): void {
    const list = kind === 'output' ? this.needs.outputs : this.needs.items;
    if (!list.some((entry) => entry.stepId === stepId)) list.push({ taskId: this.task.id, stepId });
  }

  withLocals<T>(locals: Locals, run: () => T): T {
    const before = this.locals;
    // Inside another's (a repeat in an exit step): both are defined.
    this.locals = { ...before, ...locals };
    try {
      return run();
    } finally {
      this.locals = before;
    }
  }

  resolve(step: PlanStep, value: unknown, options: { locals?: Locals; maxBytes?: number } = {}): Resolved {
    const locals = options.locals ? { ...this.locals, ...options.locals } : this.locals;
    const maxBytes = options.maxBytes ?? this.limits.STEP_INPUT_MAX_BYTES;
    const tooLarge = (at: string): Resolved => ({
      ok: false,
      error: {
        ...toErrorRecord(
          new LimitExceededError(
            'StepInputTooLarge',
            `the input would be larger than ${maxBytes} bytes of JSON${this.task.plan.plan.single ? '' : ' once its templates are resolved'} (STEP_INPUT_MAX_BYTES)`,
            { limit: maxBytes, setting: 'STEP_INPUT_MAX_BYTES', ...(at ? { at } : {}) },
          ),
        ),
        retryable: false,
      },
    });
    // A one-tool task's input is its params, literally: template syntax in them stays text.
    if (this.task.plan.plan.single) return jsonSize(value, maxBytes).over ? tooLarge('') : { ok: true, value };
    const steps: Record<string, { status: string; output?: unknown; error?: unknown }> = {};
    let missing = false;
    for (const id of this.task.plan.reads.get(step.id) ?? []) {
      const state = this.state(id);
      if (!FINISHED_STEP_STATUSES.has(state.status)) continue;
      if (state.output === undefined) {
        this.need('output', id);
        missing = true;
        continue;
      }
      steps[id] = { status: state.status, ...(state.output !== null ? { output: state.output } : {}), ...(state.error ? { error: state.error } : {}) };
    }
    if (missing) return { ok: false, missing: true };
    try {
      return {
        ok: true,
        value: resolveTemplates(value, { params: this.task.params, steps, ...(locals ? { locals } : {}) }, { maxBytes }),
      };
    } catch (error) {
      if (error instanceof ResolvedSizeError) return tooLarge(error.at);
      if (error instanceof ExpressionError) return { ok: false, error: { ...toErrorRecord(error), retryable: false } };
      throw error;
    }
  }

  item(stepId: string, item: number): ItemState | undefined {
    return this.task.items.get(stepId)?.get(item);
  }

  allItems(stepId: string): ItemState[] | undefined {
    return this.task.allItemsLoaded.has(stepId) ? [...(this.task.items.get(stepId)?.values() ?? [])] : undefined;
  }

  setTask(set: TaskSet): void {
    if (set.error) set = { ...set, error: capErrorRecord(set.error) };
    if (set.status) assertTaskMove(`task ${this.task.id}`, this.task.status, set.status);
    const from = this.task.status;
    if (set.status) this.task.status = set.status;
    if (set.run !== undefined) this.task.run = set.run;
    if (set.exit_status !== undefined) this.task.exitStatus = set.exit_status;
    if (set.result !== undefined) this.task.result = set.result;
    if (set.error !== undefined) this.task.error = set.error;
    if (set.started_at !== undefined) this.task.startedAt = set.started_at ? new Date(set.started_at) : null;
    if (set.finished_at !== undefined) this.task.finishedAt = set.finished_at ? new Date(set.finished_at) : null;
    this.taskSet = Object.assign({}, this.taskSet, set);
    if (set.status && set.status !== from) this.transition({ taskId: this.task.id, from, status: set.status, at: this.at }, { error: set.error ?? null });
  }

  /** A status change: an event for the streams, and one of the task's history. */
  private transition(transition: Transition, extra: { waitedFor?: string | null; error?: ErrorRecord | null } = {}): void {
    this.decision.transitions.push(transition);
    const event = historyEvent(transition, this.task);
    // A step that leaves `waiting`: why it had waited (sleep, concurrency, rate_limit, a signal...).
    if (extra.waitedFor) event.data = { ...event.data, waited_for: extra.waitedFor };
    // A failure: why (a step that failed without running has no attempt to say it).
    if (extra.error && transition.status === 'failed') event.data = { ...event.data, error: extra.error };
    this.decision.history.push(event);
  }

  record(event: { type: string; stepId?: string; item?: number; attempt?: number; at?: Date; data?: Record<string, unknown> }): void {
    const { at, ...rest } = event;
    this.decision.history.push({ at: at?.toISOString() ?? this.at, taskId: this.task.id, createdAt: this.task.createdAt, run: this.task.run, ...rest });
  }

  setStep(step: PlanStep, set: StepSet): void {
    if (set.error) set = { ...set, error: capErrorRecord(set.error) };
    const state = this.state(step.id);
    const from = state.status;
    const waitedFor = state.reason;
    if (set.status) assertStepMove(`step ${step.id} of task ${this.task.id}`, from, set.status);
    // A reason says why a step is skipped or waiting: it goes when the step leaves that state.
    if (set.status && set.status !== from && (from === 'waiting' || from === 'skipped') && set.reason === undefined) set = { ...set, reason: null };
    if (set.status) state.status = set.status;
    if (set.reason !== undefined) state.reason = set.reason;
    if (set.input !== undefined) state.input = set.input;
    if (set.output !== undefined) state.output = set.output;
    if (set.error !== undefined) state.error = set.error;
    if (set.attempts !== undefined) state.attempts = set.attempts;
    if (set.run !== undefined) state.run = set.run;
    if (set.started_at !== undefined) state.startedAt = set.started_at ? new Date(set.started_at) : null;
    if (set.finished_at !== undefined) state.finishedAt = set.finished_at ? new Date(set.finished_at) : null;
    if (set.wake_at !== undefined) state.wakeAt = set.wake_at ? new Date(set.wake_at) : null;
    if (set.child_task_id !== undefined) state.childTaskId = set.child_task_id;
    if (set.items !== undefined) state.items = set.items ? { ...set.items } : null;
    this.stepSets.set(step.id, Object.assign({}, this.stepSets.get(step.id), set));
    if (set.status && set.status !== from) {
      this.transition(
        {
          taskId: this.task.id,
          stepId: step.id,
          from,
          status: set.status,
          at: this.at,
          ...(state.reason && (set.status === 'skipped' || set.status === 'waiting') ? { reason: state.reason } : {}),
        },
        { waitedFor: from === 'waiting' ? waitedFor : null, error: set.error ?? null },
      );
      // Something of the task started (or ended without running): it is no longer only queued.
      if (this.task.status === 'queued' && set.status !== 'queued' && set.status !== 'pending' && set.status !== 'skipped') {
        this.setTask({ status: 'running', started_at: this.task.startedAt?.toISOString() ?? this.at });
      }
    }
  }

  addItems(step: PlanStep, items: NewItem[], all = false): void {
    const known = this.task.items.get(step.id) ?? new Map<number, ItemState>();
    for (const entry of items) {
      this.decision.newItems.push({ taskId: this.task.id, createdAt: this.task.createdAt, stepId: step.id, run: this.task.run, ...entry });
      known.set(entry.item, {
        item: entry.item,
        run: this.task.run,
        status: entry.status ?? 'pending',
        attempts: 0,
        output: null,
        error: null,
        startedAt: entry.startedAt ? new Date(entry.startedAt) : null,
        childTaskId: entry.childTaskId ?? null,
        input: entry.input,
      });
    }
    this.task.items.set(step.id, known);
    if (all) this.task.allItemsLoaded.add(step.id);
  }

  setItem(step: PlanStep, item: number, set: ItemSet): void {
    if (set.error) set = { ...set, error: capErrorRecord(set.error) };
    const state = this.item(step.id, item);
    if (state) {
      if (set.status) assertStepMove(`item ${item} of step ${step.id} of task ${this.task.id}`, state.status, set.status);
      if (set.status) state.status = set.status;
      if (set.output !== undefined) state.output = set.output;
      if (set.error !== undefined) state.error = set.error;
      if (set.attempts !== undefined) state.attempts = set.attempts;
      if (set.run !== undefined) state.run = set.run;
      if (set.started_at !== undefined) state.startedAt = set.started_at ? new Date(set.started_at) : null;
      if (set.child_task_id !== undefined) state.childTaskId = set.child_task_id;
    }
    const key = `${step.id}/${item}`;
    this.itemSets.set(key, { stepId: step.id, item, set: { ...this.itemSets.get(key)?.set, ...set } });
  }

  complete(step: PlanStep, output: unknown): void {
    this.setStep(step, { status: 'completed', output, error: null, finished_at: this.at, started_at: this.state(step.id).startedAt?.toISOString() ?? this.at });
  }

  fail(step: PlanStep, error: ErrorRecord): void {
    const state = this.state(step.id);
    this.setStep(step, { status: 'failed', error, finished_at: this.at });
    runnerOf(step).failed(this, step, state, error);
    if (this.active && step.onFailure === 'fail') this.failTask(stepFailure(step.id, error));
  }

  skip(step: PlanStep, reason: SkipReason): void {
    // A skipped step has no output (a wait step may hold a kept signal until then).
    const held = this.state(step.id).output !== null;
    this.setStep(step, { status: 'skipped', reason, finished_at: this.at, ...(held ? { output: null } : {}) });
  }

  terminate(step: PlanStep, end: { status: 'completed' | 'failed'; reason?: string; output?: unknown }): void {
    if (!this.active) return;
    const ownOutput = end.status === 'completed' && 'output' in end;
    if (end.status === 'completed' && !ownOutput) {
      // The workflow's output is made once the run is settled: its outputs are loaded first.
      const reads = this.task.plan.outputReads ?? new Set(this.task.plan.plan.steps.map((each) => each.id));
      for (const id of reads) if (this.task.steps.get(id)?.output === undefined) this.need('output', id);
      if (this.blocked) return;
    }
    const started = this.task.startedAt?.toISOString() ?? this.at;
    const failure = { name: 'Terminated', message: end.reason ?? `the run was terminated by step ${step.id}` };
    // Failing, the step fails too: a retry runs it again rather than going on past it.
    if (end.status === 'failed') this.setStep(step, { status: 'failed', error: failure, finished_at: this.at });
    else this.complete(step, { status: end.status, ...(end.reason !== undefined ? { reason: end.reason } : {}) });
    for (const other of this.task.plan.order) {
      const state = this.state(other.id);
      if (FINISHED_STEP_STATUSES.has(state.status) || other.onExit) continue;
      if (state.status === 'pending') this.skip(other, 'terminated');
      else runnerOf(other).settle(this, other, state, 'cancelled');
    }
    // Steps that run in workers are told to stop, as a cancel tells them.
    // Its exit handler runs after it: its steps are spared.
    const spare = this.task.plan.exits.map((exit) => exit.id);
    this.decision.stops.push({ taskId: this.task.id, run: this.task.run, ...(spare.length > 0 ? { spare } : {}) });
    let ending: TaskEnding | undefined;
    if (ownOutput) ending = { status: 'completed', result: end.output ?? null };
    else if (end.status === 'completed') {
      // Over what finished by now; a step still running reads as null.
      ending = taskEnding(
        { params: this.task.params, plan: this.task.plan.plan },
        this.task.plan.plan.steps.map((each) => {
          const state = this.state(each.id);
          const finished = FINISHED_STEP_STATUSES.has(state.status);
          return { id: each.id, status: state.status, output: finished ? (state.output ?? null) : null, error: state.error };
        }),
        this.limits,
      );
    }
    if (ending?.status === 'completed') this.finish('completed', { result: ending.result, started_at: started });
    else this.finish('failed', { error: ending?.error ?? stepFailure(step.id, failure), started_at: started });
  }

  /**
   * The run ended with `status`: the task ends so, or, when its workflow has an exit handler, its
   * exit steps run first (exiting), the outcome kept with the task until they are done.
   */
  private finish(status: 'completed' | 'failed' | 'cancelled', set: Pick<TaskSet, 'result' | 'error' | 'started_at'>, settle?: Settle): void {
    const exits = this.task.plan.exits.length > 0;
    if (!exits) this.setTask({ status, ...set, finished_at: this.at });
    else {
      this.setTask({
        ...(this.task.status === 'queued' ? { status: 'running' as const, started_at: set.started_at ?? this.at } : {}),
        ...set,
        exit_status: status,
      });
      this.record({ type: 'exit_started', data: { status } });
      // A cancelled task's exit handler is bounded: a timer (the first exit step's) ends it once the time is up.
      if (status === 'cancelled') this.decision.timers.push({ ...this.exitTimer(), at: new Date(this.now.getTime() + this.limits.EXIT_CANCEL_TIMEOUT_MS) });
    }
    // What had not finished ends with it (the task no longer active), before anything of the exit handler runs.
    if (settle) this.settle(settle);
    if (exits) this.exit();
    else this.ended();
  }

  /** Moves the exit handler on: an exit step whose exit dependencies are done runs (seeing `task`); when all are done, the task ends as its run did. */
  private exit(): void {
    const task = this.exitTask();
    for (let moved = true; moved && !this.blocked; ) {
      moved = false;
      for (const step of this.task.plan.exits) {
        const state = this.state(step.id);
        if (state.status !== 'pending' || !step.dependsOn.every((dep) => FINISHED_STEP_STATUSES.has(this.state(dep).status))) continue;
        this.withLocals({ task }, () => this.ready(step, state));
        if (this.blocked) return;
        if (state.status !== 'pending') moved = true;
      }
    }
    if (this.blocked || !this.task.plan.exits.every((step) => FINISHED_STEP_STATUSES.has(this.state(step.id).status))) return;
    this.endExit();
  }

  /** Where the bound of a cancelled task's exit handler waits: a timer named after its first exit step. */
  private exitTimer(): { taskId: string; run: number; stepId: string } {
    return { taskId: this.task.id, run: this.task.run, stepId: this.task.plan.exits[0]!.id };
  }

  /** The exit handler is done (or stopped): the task ends with the outcome its run had (a cancelled one's bound goes). */
  private endExit(): void {
    const states = this.task.plan.exits.map((step) => this.state(step.id).status);
    if (this.task.exitStatus === 'cancelled') this.decision.dropJobs.push(this.exitTimer());
    this.record({ type: 'exit_ended', data: { completed: states.filter((status) => status === 'completed').length, of: states.length } });
    this.setTask({ status: this.task.exitStatus!, exit_status: null, finished_at: this.at });
    this.ended();
  }

  /** Ends the task's steps that had not finished when the task ends, as each one's runner says (a running tool step finishes on its own). */
  private settle(to: Settle, steps: readonly PlanStep[] = this.task.plan.order.filter((step) => !step.onExit)): void {
    for (const step of steps) {
      const state = this.state(step.id);
      if (!FINISHED_STEP_STATUSES.has(state.status)) runnerOf(step).settle(this, step, state, to);
    }
  }

  failTask(error: ErrorRecord, started?: string): void {
    if (!this.active) return;
    if (this.task.plan.compensations.length > 0) {
      // The error is kept on the running task until its compensations are done (compensating).
      this.setTask({ ...(this.task.status === 'queued' ? { status: 'running' as const, started_at: started ?? this.at } : {}), error });
      this.record({ type: 'compensation_started', data: { error: this.task.error } });
      this.settle('skipped');
      this.compensate();
      return;
    }
    this.finish('failed', { error, ...(started ? { started_at: started } : {}) }, 'skipped');
  }

  /**
   * Moves a failing task's compensations on: one whose step completed runs once the
   * compensations below it are done and its step is no longer running (a step that completes
   * after the failure is compensated too); one whose step did not complete is skipped
   * (`not_needed`). When all are done the task ends failed, `compensated` true or partial.
   */
  private compensate(): void {
    for (const step of this.task.plan.compensations) {
      const state = this.state(step.id);
      if (state.status !== 'pending') continue;
      if (!step.dependsOn.every((dep) => FINISHED_STEP_STATUSES.has(this.state(dep).status))) continue;
      const undone = this.state(step.compensationOf!);
      if (!FINISHED_STEP_STATUSES.has(undone.status)) continue;
      if (undone.status !== 'completed') this.skip(step, 'not_needed');
      else runnerOf(step).ready(this, step, state);
      if (this.blocked) return;
    }
    const compensations = this.task.plan.compensations.map((step) => this.state(step.id));
    if (!compensations.every((state) => FINISHED_STEP_STATUSES.has(state.status))) return;
    const ran = compensations.filter((state) => state.status !== 'skipped');
    const compensated = ran.every((state) => state.status === 'completed') ? true : 'partial';
    this.record({ type: 'compensation_ended', data: { compensated, ran: ran.length } });
    this.finish('failed', { error: this.task.error! });
  }

  /** Whether this run's failure ran compensations (a retry then starts over: what completed was undone). */
  private compensated(): boolean {
    return this.task.plan.compensations.some((step) => {
      const state = this.state(step.id);
      return state.status !== 'pending' && state.status !== 'skipped';
    });
  }

  /** The task ended: its callback, waiting clients, and its parent's step if it is a sub-workflow. */
  private ended(): void {
    const { task } = this;
    this.decision.ended.push({
      taskId: task.id,
      run: task.run,
      status: task.status,
      taskType: task.taskType,
      createdAt: task.createdAt,
      callback: task.callback,
    });
    if (!task.parent) return;
    const status = task.status as 'completed' | 'failed' | 'cancelled';
    const result = this.taskSet && 'result' in this.taskSet ? this.taskSet.result : task.result;
    const error = this.taskSet?.error ?? task.error;
    this.decision.parentReports.push({
      type: 'child',
      taskId: task.parent.taskId,
      stepId: task.parent.stepId,
      childTaskId: task.id,
      status,
      ...(status === 'completed' ? { output: result ?? null } : { error: error ?? { name: 'Error', message: `task ${status}` } }),
      at: this.now,
    });
  }

  /**
   * What the run waits on outside PostgreSQL, to be made again where it went missing (a worker
   * died between a commit and what follows it, Redis lost its data), as each step's runner says:
   * jobs of queued and running steps and items, timers, sub-workflows' children; for an ended
   * task, its callback and its parent's report, and the job of a tool step that was running when
   * the task ended (it finishes on its own; made again, it is refused and closes the step). Needs
   * the task loaded with its inputs.
   */
  outstanding(): void {
    if (!ACTIVE_TASK_STATUSES.has(this.task.status)) this.ended();
    // A cancelled task's exit handler's bound (made again from now: one that is still there stays as it is).
    if (this.exiting && this.task.exitStatus === 'cancelled')
      this.decision.timers.push({ ...this.exitTimer(), at: new Date(this.now.getTime() + this.limits.EXIT_CANCEL_TIMEOUT_MS) });
    for (const step of this.task.plan.order) runnerOf(step).outstanding(this, step, this.state(step.id));
  }

  /** A report, and the end of the attempt it carries (a worker's result) in the history once it is recorded. */
  report(report: Report): boolean {
    if (report.type !== 'result') return this.reported(report);
    const mark = this.decision.history.length;
    this.decision.history.push(attemptEnded(this.task, report));
    const recorded = this.reported(report);
    if (!recorded) this.decision.history.splice(mark, 1);
    return recorded;
  }

  private reported(report: Report): boolean {
    if (report.type === 'admitted') return this.admitted(report);
    const step = this.task.plan.byId.get(report.stepId);
    const state = this.task.steps.get(report.stepId);
    if (!step || !state) return false;
    if (report.type !== 'child' && report.run !== this.task.run) return false;
    // The bound of a cancelled task's exit handler (no exit step sleeps or waits: its only timer).
    if (report.type === 'wake' && step.onExit) return this.exitTimedOut();
    if (report.type === 'result' && report.item === undefined && state.run !== report.run) return false;
    return runnerOf(step).report(this, step, state, report);
  }

  /**
   * Work a limit per key held back got its turn (see Report 'admitted'): a waiting step is
   * queued with its job, a held map item gets its job, and a run let in does both for all it held.
   */
  private admitted(report: Extract<Report, { type: 'admitted' }>): boolean {
    if (!ACTIVE_TASK_STATUSES.has(this.task.status) || report.run !== this.task.run) return false;
    const steps = report.stepId === undefined ? this.task.plan.order : [this.task.plan.byId.get(report.stepId)].filter((step) => step !== undefined);
    let moved = false;
    for (const step of steps) if (runnerOf(step).admitted(this, step, this.state(step.id), report.item)) moved = true;
    return moved;
  }

  /** Moves every step whose dependencies are done on, as its kind says, until nothing moves; ends the task when nothing is left. */
  advance(): void {
    if (this.exiting) {
      if (!this.blocked) this.exit();
      return;
    }
    if (this.compensating) {
      if (!this.blocked) this.compensate();
      return;
    }
    for (let moved = true; moved && this.active && !this.blocked; ) {
      moved = false;
      for (const step of this.task.plan.order) {
        const state = this.state(step.id);
        if (state.status !== 'pending' || step.compensationOf !== undefined || step.onExit) continue;
        if (!step.dependsOn.every((dep) => FINISHED_STEP_STATUSES.has(this.state(dep).status))) continue;
        this.ready(step, state);
        if (this.blocked || !this.active) return;
        if (state.status !== 'pending') moved = true;
      }
    }
    if (!this.active || this.blocked) return;
    if (this.task.plan.order.every((step) => step.compensationOf !== undefined || step.onExit || FINISHED_STEP_STATUSES.has(this.state(step.id).status)))
      this.end();
  }

  private ready(step: PlanStep, state: StepState): void {
    // Every path to the step went through a skipped step: the branch it is on was not taken.
    if (step.dependsOn.length > 0 && step.dependsOn.every((dep) => this.state(dep).status === 'skipped')) {
      this.skip(step, 'branch_not_taken');
      return;
    }
    runnerOf(step).ready(this, step, state);
  }

  private end(): void {
    const reads = this.task.plan.outputReads ?? new Set(this.task.plan.plan.steps.map((step) => step.id));
    for (const id of reads) if (this.task.steps.get(id)?.output === undefined) this.need('output', id);
    if (this.blocked) return;
    const ending = taskEnding(
      { params: this.task.params, plan: this.task.plan.plan },
      this.task.plan.plan.steps.map((step) => {
        const state = this.state(step.id);
        return { id: step.id, status: state.status, output: state.output ?? null, error: state.error };
      }),
      this.limits,
    );
    const started = this.task.startedAt?.toISOString() ?? this.at;
    if (ending.status === 'failed') {
      this.failTask(ending.error, started);
      return;
    }
    // Nothing failed: nothing is to be undone.
    for (const step of this.task.plan.compensations) this.skip(step, 'not_needed');
    this.finish('completed', { result: ending.result, started_at: started });
  }

  /** A cancelled task's exit handler ran out of time: its unfinished steps are cancelled, and the task ends cancelled. */
  private exitTimedOut(): boolean {
    if (!this.exiting || this.task.exitStatus !== 'cancelled') return false;
    this.settle('cancelled', this.task.plan.exits);
    this.record({ type: 'exit_timed_out', data: { after_ms: this.limits.EXIT_CANCEL_TIMEOUT_MS } });
    // Workers abort what they still run of it.
    this.decision.stops.push({ taskId: this.task.id, run: this.task.run });
    this.endExit();
    return true;
  }

  cancel(): boolean {
    if (!ACTIVE_TASK_STATUSES.has(this.task.status)) return false;
    if (this.exiting) {
      // Cancelled again while its exit handler runs: the handler stops, and the task ends as its run did.
      this.settle('cancelled', this.task.plan.exits);
      this.record({ type: 'exit_stopped' });
      this.endExit();
      return true;
    }
    this.finish('cancelled', { error: { name: 'Cancelled', message: 'task was cancelled' } }, 'cancelled');
    return true;
  }

  resume(): boolean {
    if (this.task.status !== 'failed' && this.task.status !== 'cancelled') return false;
    // After compensations ran, what completed was undone: the new run starts over.
    const over = this.compensated();
    for (const step of this.task.plan.order) runnerOf(step).loadForRerun(this, step, this.state(step.id), over);
    if (this.blocked) return true;
    const run = this.task.run + 1;
    this.setTask({ status: 'queued', run, result: null, error: null, finished_at: null });
    for (const step of this.task.plan.order) {
      const state = this.state(step.id);
      // The exit handler is each run's: it runs again whatever it did last time.
      if (state.status === 'completed' && !over && !step.onExit) continue;
      // What it keeps of the last run (a map: its completed items, when its list is kept).
      const { items } = runnerOf(step).rerun(this, step, state, over, run);
      this.setStep(step, {
        status: 'pending',
        run,
        attempts: 0,
        input: null,
        output: null,
        error: null,
        reason: null,
        queued_at: null,
        started_at: null,
        finished_at: null,
        wake_at: null,
        items,
        progress: null,
        // Starting over, a sub-workflow runs a new child (the old one's work was undone).
        ...(over ? { child_task_id: null } : {}),
      });
    }
    this.advance();
    return true;
  }

  /** Writes what changed into the decision. */
  flush(): void {
    const { id, createdAt } = this.task;
    if (this.taskSet) this.decision.tasks.push({ taskId: id, createdAt, set: this.taskSet });
    for (const [stepId, set] of this.stepSets) this.decision.steps.push({ taskId: id, createdAt, stepId, set });
    for (const { stepId, item, set } of this.itemSets.values()) this.decision.items.push({ taskId: id, createdAt, stepId, item, set });
  }
}

/** The history event of a worker's final result: how its last attempt ended (it is not retried). */
function attemptEnded(task: TaskState, report: Extract<Report, { type: 'result' }>): HistoryEvent {
  return {
    taskId: task.id,
    createdAt: task.createdAt,
    run: report.run,
    stepId: report.stepId,
    ...(report.item !== undefined ? { item: report.item } : {}),
    type: 'attempt_ended',
    attempt: report.attempt,
    at: report.finishedAt.toISOString(),
    data: {
      status: report.status,
      ...(report.try !== undefined ? { try: report.try } : {}),
      ...(report.worker !== undefined ? { worker: report.worker } : {}),
      ...(report.jobId !== undefined ? { job_id: report.jobId } : {}),
      ...(report.error ? { error: capErrorRecord(report.error) } : {}),
      will_retry: false,
      duration_ms: Math.max(0, report.finishedAt.getTime() - report.startedAt.getTime()),
    },
  };
}

/** Merges the deciders' needs; undefined when none lacks anything. */
function neededBy(deciders: TaskDecider[]): Needs | undefined {
  const needs: Needs = { outputs: deciders.flatMap((decider) => decider.needs.outputs), items: deciders.flatMap((decider) => decider.needs.items) };
  return needs.outputs.length > 0 || needs.items.length > 0 ? needs : undefined;
}

function decideAll(tasks: readonly TaskState[], options: DecideOptions, act: (decider: TaskDecider) => void): Decision {
  const decision = emptyDecision();
  const deciders = tasks.map((task) => new TaskDecider(task, decision, options));
  for (const decider of deciders) act(decider);
  const needs = neededBy(deciders);
  if (needs) return { ...emptyDecision(), needs };
  for (const decider of deciders) decider.flush();
  return decision;
}

/** What reports about steps mean for their tasks (loaded under their locks), in the order given. */
export function decide(tasks: readonly TaskState[], reports: readonly Report[], options: DecideOptions): Decision {
  const recorded: boolean[] = reports.map(() => false);
  const byTask = new Map<string, number[]>();
  reports.forEach((report, index) => {
    byTask.set(report.taskId, [...(byTask.get(report.taskId) ?? []), index]);
  });
  const decision = decideAll(tasks, options, (decider) => {
    for (const index of byTask.get(decider.task.id) ?? []) {
      if (decider.blocked) return;
      recorded[index] = decider.report(reports[index]!);
    }
    decider.advance();
  });
  return decision.needs ? decision : { ...decision, recorded };
}

/** What the engine knows of a task that is being submitted, besides its plan. */
export interface NewTaskMeta {
  id: string;
  createdAt: Date;
  taskType: string;
  params: Record<string, unknown>;
  callback: boolean;
  owner: string;
  depth: number;
  parent: { taskId: string; stepId: string } | null;
}

/**
 * The lookups of a new task's plan, worked out once per plan: a submission starts its task twice
 * from the same plan (to decide what starts, then to add its jobs). Plans are not changed once made.
 */
const newPlans = new WeakMap<Plan, ReturnType<typeof prepare>>();

/** A task being submitted, as the engine starts it: queued, every step pending. */
export function freshState(task: NewTaskMeta, plan: Plan): TaskState {
  let prepared = newPlans.get(plan);
  if (!prepared) {
    prepared = prepare(plan);
    newPlans.set(plan, prepared);
  }
  // The fields one by one, not `...task` and then the rest: on Node 20 (V8 11.3), once the code is
  // optimized, each key that an object literal adds after a spread costs about 1.3 µs (a new
  // hidden class each time), where Object.assign or a spread at the end costs a few hundred ns for
  // the whole object. This literal took 13-17 µs a call, twice per submission (2.2 % of the API's
  // busy time at 32 clients). The decider copies and merges with Object.assign for the same reason.
  return {
    id: task.id,
    createdAt: task.createdAt,
    taskType: task.taskType,
    params: task.params,
    callback: task.callback,
    owner: task.owner,
    depth: task.depth,
    parent: task.parent,
    status: 'queued',
    run: 1,
    plan: prepared,
    startedAt: null,
    finishedAt: null,
    exitStatus: null,
    steps: new Map(
      plan.steps.map((step) => [
        step.id,
        {
          id: step.id,
          status: 'pending',
          reason: null,
          attempts: 0,
          run: 1,
          output: null,
          error: null,
          startedAt: null,
          finishedAt: null,
          wakeAt: null,
          childTaskId: null,
          items: null,
        },
      ]),
    ),
    items: new Map(),
    allItemsLoaded: new Set(),
  };
}

/** A new task: which of its steps start at once (the caller stores it with the decision's changes). */
export function start(task: TaskState, options: DecideOptions): Decision {
  return decideAll([task], options, (decider) => decider.advance());
}

/** Cancels active tasks; `cancelled` lists those that were (the others had ended). */
export function cancel(tasks: readonly TaskState[], options: DecideOptions): Decision & { cancelled: string[] } {
  const cancelled: string[] = [];
  const decision = decideAll(tasks, options, (decider) => {
    if (decider.cancel()) cancelled.push(decider.task.id);
  });
  return { ...decision, cancelled: decision.needs ? [] : cancelled };
}

/** Starts a new run of failed or cancelled tasks; `resumed` lists those that were (the others were not resumable). */
export function resume(tasks: readonly TaskState[], options: DecideOptions): Decision & { resumed: string[] } {
  const resumed: string[] = [];
  const decision = decideAll(tasks, options, (decider) => {
    if (decider.resume() && !decider.blocked) resumed.push(decider.task.id);
  });
  return { ...decision, resumed: decision.needs ? [] : resumed };
}

/** What runs wait on outside PostgreSQL (TaskDecider.outstanding), as a decision that changes nothing in the database. */
export function outstanding(tasks: readonly TaskState[], options: DecideOptions): Decision {
  return decideAll(tasks, options, (decider) => decider.outstanding());
}

/** Why a step's failed attempt does not get another one. */
export type FinalReason = 'no_attempts_left' | 'not_retryable' | 'stopped' | 'max_elapsed';

/**
 * Whether a failed attempt is retried: not when the task was stopped, when the error says
 * retrying cannot help, when the step's retry policy has no attempt left, or when the next try
 * would start (`nextTryInMs`, since the step's first try) past the policy's `max_elapsed_ms`.
 */
export function attemptOutcome(
  attempt: number,
  attempts: number,
  error: { retryable?: boolean; stopped?: boolean },
  budget?: { nextTryInMs: number; maxElapsedMs?: number },
): { retry: true } | { retry: false; why: FinalReason } {
  if (error.stopped) return { retry: false, why: 'stopped' };
  if (error.retryable === false) return { retry: false, why: 'not_retryable' };
  if (attempt >= attempts) return { retry: false, why: 'no_attempts_left' };
  if (budget?.maxElapsedMs !== undefined && budget.nextTryInMs > budget.maxElapsedMs) return { retry: false, why: 'max_elapsed' };
  return { retry: true };
}
