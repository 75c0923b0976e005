import type { Context } from '@opentelemetry/api';
import { decide } from '../../engine/decide.js';
import type { Report, TaskState, Transition } from '../../engine/state.js';
import { isFinished } from '../../engine/status.js';
import { finishSingleRuns, type SingleResult, type SingleRunRecorded } from '../../ledger/finish-single-runs.js';
import { noteSteps, type StepNote } from '../../ledger/note-steps.js';
import { Batcher } from '../../lib/batcher.js';
import { captureTraceContext } from '../../observability/tracing.js';
import type { ReportOutcome, RunCore } from './core.js';

/** Items per batch: one ledger call writes at most this many. */
const BATCH_MAX = 200;

/**
 * Reports about steps (a result, a wake-up, a child's end, an admission), batched (group commit):
 * one transaction loads every task reported on, the engine decides, the ledger applies, and the
 * decision is carried out (effects.ts). A one-tool task's result skips the decider
 * (ledger_finish_singles), and so does a note (progress, a failed attempt to be retried:
 * ledger_note). Each has its own batcher.
 */
export class RunReports {
  private readonly reports: Batcher<{ report: Report; trace?: Context }, { recorded: boolean; followUp: Promise<void> }>;
  private readonly singles: Batcher<SingleResult, SingleRunRecorded>;
  private readonly notes: Batcher<StepNote, boolean>;

  constructor(private readonly core: RunCore) {
    this.reports = new Batcher((reports) => this.core.safely(reports, (batch) => this.flushReports(batch)), { maxSize: BATCH_MAX });
    this.singles = new Batcher((results) => this.core.safely(results, (batch) => this.flushSingles(batch)), { maxSize: BATCH_MAX });
    this.notes = new Batcher((notes) => this.core.safely(notes, (batch) => this.flushNotes(batch)), { maxSize: BATCH_MAX });
  }

  /** Resolves when every report, result and note handed in so far is written (or failed). */
  async idle(): Promise<void> {
    await Promise.all([this.reports.idle(), this.singles.idle(), this.notes.idle()]);
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
    const createdAt = await this.core.createdAt(result.taskId);
    const outcome = await this.singles.add({ ...result, createdAt });
    if (outcome.recorded && outcome.task.callback) await this.core.deps.queues.enqueueCallback(result, this.core.deps.config.CALLBACK_MAX_ATTEMPTS);
    // A run that had ended already gives its limits back again: see onEndedBefore.
    if ((outcome.recorded || outcome.endedBefore) && limited) await this.core.verbs.releaseTasks([result.taskId]);
    return outcome;
  }

  /** An adapter's progress, or a failed attempt that will be retried. */
  async note(note: Omit<StepNote, 'createdAt'>): Promise<void> {
    const createdAt = await this.core.createdAt(note.taskId);
    await this.notes.add({ ...note, createdAt });
  }

  private async flushSingles(batch: SingleResult[]): Promise<SingleRunRecorded[]> {
    const recorded = await finishSingleRuns(this.core.deps.sql, batch, this.core.deps.config, this.core.history);
    const transitions: Transition[] = [];
    recorded.forEach((outcome, index) => {
      const result = batch[index]!;
      if (!outcome.recorded) {
        if (outcome.endedBefore) this.core.deps.onEndedBefore?.(result.taskId, result.run);
        return;
      }
      const at = result.finishedAt.toISOString();
      transitions.push({ taskId: result.taskId, stepId: result.stepId, status: result.status, at }, { taskId: result.taskId, status: outcome.taskStatus, at });
      this.core.deps.onEnded?.({
        taskId: result.taskId,
        run: result.run,
        status: outcome.taskStatus,
        taskType: outcome.task.type,
        createdAt: outcome.task.createdAt,
        callback: outcome.task.callback,
      });
    });
    this.core.publish(transitions);
    return recorded;
  }

  private async flushReports(entries: { report: Report; trace?: Context }[]): Promise<{ recorded: boolean; followUp: Promise<void> }[]> {
    const batch = entries.map((entry) => entry.report);
    const traces = new Map(entries.flatMap((entry) => (entry.trace ? [[entry.report.taskId, entry.trace] as const] : [])));
    const items = batch.flatMap((report) =>
      (report.type === 'result' || report.type === 'lost' || report.type === 'admitted') && report.item !== undefined && report.stepId !== undefined
        ? [{ taskId: report.taskId, stepId: report.stepId, item: report.item }]
        : [],
    );
    const options = this.core.options();
    const {
      states,
      decision,
      applied,
      heldItems: held,
    } = await this.core.transaction(
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
    const followUp = Promise.all([
      this.core.verbs.carryOut(decision, applied, states, traces, { holds: held, admitted }),
      this.endedBefore(batch, decision.recorded, states),
    ]).then(() => undefined);
    // Nobody waits on it within the batch: a child's end reports to its parent through this same batcher.
    followUp.catch(() => undefined);
    return batch.map((_, index) => ({ recorded: decision.recorded[index] ?? false, followUp }));
  }

  /** Reports not recorded because their run had ended already give back what it held again (onEndedBefore). */
  private async endedBefore(batch: readonly Report[], recorded: readonly boolean[], states: readonly TaskState[]): Promise<void> {
    const byId = new Map(states.map((state) => [state.id, state]));
    const met = new Set(
      batch.flatMap((report, index) => {
        const task = byId.get(report.taskId);
        // A child's end names no run: one that meets its parent finished is the retry of the
        // report that ended it (its commit's answer lost), or a late one; a release of what was
        // released already changes nothing, and a resumed run that is active is not finished.
        const sameRun = 'run' in report ? task?.run === report.run : true;
        return !recorded[index] && task && sameRun && isFinished(task.status) ? [task] : [];
      }),
    );
    await this.core.verbs.releaseEndedBefore([...met]);
  }

  private async flushNotes(batch: StepNote[]): Promise<boolean[]> {
    const taken = await noteSteps(this.core.deps.sql, batch, this.core.history);
    const keys = new Set(taken.map((note) => `${note.taskId}/${note.stepId}/${note.item ?? ''}`));
    const at = new Date().toISOString();
    this.core.publish(
      batch
        .filter((note) => note.progress && note.item === undefined && keys.has(`${note.taskId}/${note.stepId}/`))
        .map((note) => ({ taskId: note.taskId, stepId: note.stepId, status: 'running', at, progress: note.progress! })),
    );
    return batch.map((note) => keys.has(`${note.taskId}/${note.stepId}/${note.item ?? ''}`));
  }
}
