import type { Plan } from '../engine/plan.js';
import type { Report, TaskState } from '../engine/state.js';
import { type AttemptLogEntry, appendAttemptLogs } from '../ledger/attempt-logs.js';
import type { StepClaim } from '../ledger/claim-steps.js';
import type { NewTask, StoredTask } from '../ledger/create-tasks.js';
import type { SingleResult, SingleRunRecorded } from '../ledger/finish-single-runs.js';
import type { StepNote } from '../ledger/note-steps.js';
import type { ErrorRecord } from '../lib/errors.js';
import type { HoldRef, RunKey } from '../queue/task-queues.js';
import { RunChildren } from './runs/children.js';
import { RunClaims } from './runs/claims.js';
import { type CreateOutcome, type PlannedChild, type PreparedTask, type ReportOutcome, RunCore, type RunsDeps } from './runs/core.js';
import { RunEffects } from './runs/effects.js';
import { RunLimits } from './runs/limits.js';
import { RunRecovery } from './runs/recovery.js';
import { RunReports } from './runs/reports.js';
import { RunSubmit } from './runs/submit.js';

export type { CreateOutcome, ErrorRecord, PlannedChild, PreparedTask, ReportOutcome, RunsDeps };

/**
 * Every change to a task's run goes through here: starting it, a worker's claim, notes and
 * results, a sleep's wake-up, a child task's end, cancelling and retrying. Each is the same
 * three moves: the ledger loads the tasks under their locks, the engine decides
 * (src/engine/decide.ts), the ledger applies the decision in one call; then what the decision
 * asks of the world outside PostgreSQL is carried out (jobs, timers, child tasks, events,
 * callbacks). Claims, notes and results are batched (group commit): one transaction serves
 * every step committing at that moment.
 *
 * One module per verb in runs/, this class only wires them: submit.ts (prepare, create, a run's
 * flow added), claims.ts (a worker's claims), reports.ts (reports, one-tool results, notes),
 * effects.ts (carrying a decision out), children.ts (sub-workflows), limits.ts (limits per key:
 * gates, admission of held steps, releases), recovery.ts (cancel, resume, repair, what a run waits
 * on), flows.ts (the holds a run's root needs), and core.ts, what they share (the transaction
 * that loads, decides and applies, and the verbs through which one module calls another).
 */
export class Runs {
  private readonly core: RunCore;
  private readonly submit: RunSubmit;
  private readonly claims: RunClaims;
  private readonly reports: RunReports;
  private readonly effects: RunEffects;
  private readonly limits: RunLimits;
  private readonly children: RunChildren;
  private readonly recovery: RunRecovery;

  constructor(deps: RunsDeps) {
    this.core = new RunCore(deps);
    this.submit = new RunSubmit(this.core);
    this.claims = new RunClaims(this.core);
    this.reports = new RunReports(this.core);
    this.effects = new RunEffects(this.core);
    this.limits = new RunLimits(this.core);
    this.children = new RunChildren(this.core);
    this.recovery = new RunRecovery(this.core);
    const { submit, reports, effects, limits, children, recovery } = this;
    this.core.verbs = {
      prepare: (task, plan, paramsField) => submit.prepare(task, plan, paramsField),
      create: (prepared, parent) => submit.create(prepared, parent),
      addRuns: (runs) => submit.addRuns(runs),
      report: (report) => reports.report(report),
      carryOut: (decision, applied, states, traces, options) => effects.carryOut(decision, applied, states, traces, options),
      gateJobs: (jobs, tasks) => limits.gateJobs(jobs, tasks),
      admittedMeanwhile: (tasks, held) => limits.admittedMeanwhile(tasks, held),
      releaseTasks: (taskIds) => limits.releaseTasks(taskIds),
      releaseEnded: (decision, byId) => limits.releaseEnded(decision, byId),
      releaseEndedBefore: (tasks) => limits.releaseEndedBefore(tasks),
      startChild: (child, parent) => children.startChild(child, parent),
      parentRun: (taskId) => children.parentRun(taskId),
      cancel: (taskId, owner, by) => recovery.cancel(taskId, owner, by),
      resume: (taskId, owner, by) => recovery.resume(taskId, owner, by),
    };
  }

  /** Resolves when every item handed in so far is written (or failed), and what runs in the background is done. */
  async idle(): Promise<void> {
    await Promise.all([this.claims.idle(), this.reports.idle(), this.core.idle()]);
  }

  // Starting tasks (runs/submit.ts)
  prepare(task: StoredTask, plan: Plan, paramsField?: string): NewTask {
    return this.submit.prepare(task, plan, paramsField);
  }
  create(prepared: readonly PreparedTask[], parent?: RunKey): Promise<CreateOutcome[]> {
    return this.submit.create(prepared, parent);
  }

  // A worker's step (runs/claims.ts, runs/reports.ts)
  claim(claim: Omit<StepClaim, 'createdAt'>): Promise<boolean> {
    return this.claims.claim(claim);
  }
  note(note: Omit<StepNote, 'createdAt'>): Promise<void> {
    return this.reports.note(note);
  }
  report(report: Report): Promise<ReportOutcome> {
    return this.reports.report(report);
  }
  finishSingle(result: Omit<SingleResult, 'createdAt'>, limited?: boolean): Promise<SingleRunRecorded> {
    return this.reports.finishSingle(result, limited);
  }
  /** Keeps what a tool logged during an attempt, in its task's history (not with TASK_HISTORY=off). */
  async logs(entry: Omit<AttemptLogEntry, 'createdAt'>): Promise<void> {
    if (!this.core.history.history) return;
    await appendAttemptLogs(this.core.deps.sql, { ...entry, createdAt: await this.core.createdAt(entry.taskId) });
  }

  // Limits per key (runs/limits.ts)
  wakeGate(gate: string): Promise<void> {
    return this.limits.wakeGate(gate);
  }
  reconcileGates(): Promise<{ released: number; admitted: number }> {
    return this.limits.reconcileGates();
  }

  // Cancel, retry, recovery (runs/recovery.ts)
  cancel(taskId: string, owner?: string, by?: string): ReturnType<RunRecovery['cancel']> {
    return this.recovery.cancel(taskId, owner, by);
  }
  resume(taskId: string, owner?: string, by?: string, run?: number): ReturnType<RunRecovery['resume']> {
    return this.recovery.resume(taskId, owner, by, run);
  }
  outstanding(taskIds: readonly string[]): ReturnType<RunRecovery['outstanding']> {
    return this.recovery.outstanding(taskIds);
  }
  repair(taskIds: readonly string[]): Promise<void> {
    return this.recovery.repair(taskIds);
  }
  closeRun(taskId: string, run: number): Promise<boolean> {
    return this.recovery.closeRun(taskId, run);
  }
  standing(holds: readonly HoldRef[]): Promise<boolean[]> {
    return this.recovery.standing(holds);
  }
  withdraw(steps: readonly { taskId: string; run: number; stepId: string }[], error: ErrorRecord): Promise<string[]> {
    return this.recovery.withdraw(steps, error);
  }
  states(taskIds: readonly string[]): Promise<TaskState[]> {
    return this.recovery.states(taskIds);
  }
}
