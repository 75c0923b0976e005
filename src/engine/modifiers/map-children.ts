import type { Decider, Settle } from '../kinds/kind.js';
import { cancelChild, childFailure, childStart, type SubWorkflowStep, tooDeep } from '../kinds/workflow.js';
import type { ItemCounts, ItemState, Report, StepState } from '../state.js';
import { completeMap, everyItem, maxParallel, progress, stopItems } from './items.js';

/**
 * A sub-workflow step with `for_each` (map.ts): each item runs a child task of its own, its
 * params the item's resolved input, at most max_parallel children at once; a child's end is its
 * item's result and starts the next pending item's child. The output is the children's results in
 * item order (a failed one under on_failure continue is `{"error": …}`); under `fail`, the first
 * child that fails or is cancelled fails the step and the children still running are cancelled.
 *
 * Each item keeps its child's id (step_items.child_task_id): a child's report finds its item by
 * it, a cancel reaches the running ones, the reconciler makes a lost start again, and a retried
 * task keeps its completed items and resumes the other items' children (as a sub-workflow step
 * resumes its child) rather than starting new ones. Finding an item by its child needs the step's
 * items loaded (at most MAP_MAX_ITEMS).
 */

/** A fresh map's items stored, the first max_parallel of them running with their children. */
export function startChildren(decider: Decider, step: SubWorkflowStep, inputs: unknown[]): void {
  if (tooDeep(decider, step)) return;
  const start = Math.min(inputs.length, maxParallel(decider, step));
  const counts: ItemCounts = { total: inputs.length, done: 0, failed: 0, running: start };
  const at = decider.now.toISOString();
  decider.setStep(step, { status: 'running', started_at: at, run: decider.task.run, items: counts });
  const children = inputs.slice(0, start).map(() => decider.newTaskId(step.workflow.name));
  decider.addItems(
    step,
    inputs.map((input, item) => ({ item, input, ...(item < start ? { status: 'running' as const, childTaskId: children[item]!, startedAt: at } : {}) })),
    true,
  );
  for (const [item, childTaskId] of children.entries()) childStart(decider, step, childTaskId, false, params(inputs[item]));
  progress(decider, step, counts);
}

/** A retried task's map with items kept: the pending ones start (or resume) their children. */
export function resumeChildren(decider: Decider, step: SubWorkflowStep, counts: ItemCounts): void {
  const items = everyItem(decider, step);
  if (!items) return;
  if (tooDeep(decider, step)) return;
  decider.setStep(step, { status: 'running', started_at: decider.now.toISOString(), run: decider.task.run });
  startMore(decider, step, items, counts);
  decider.setStep(step, { items: counts });
  progress(decider, step, counts);
}

/** A child ended: its item takes its result; while the map runs, the next child starts, or the map completes or fails. */
export function childEnded(decider: Decider, step: SubWorkflowStep, state: StepState, report: Extract<Report, { type: 'child' }>): boolean {
  if (!state.items) return false;
  const items = everyItem(decider, step);
  if (!items) return false;
  const found = items.find((item) => item.childTaskId === report.childTaskId);
  if (found?.status !== 'running') return false;
  const completed = report.status === 'completed';
  const error = completed ? null : childFailure(report);
  decider.setItem(step, found.item, {
    status: report.status,
    output: completed ? (report.output ?? null) : null,
    error,
    finished_at: report.at.toISOString(),
    // A child never made leaves no id behind: a retry makes a new one.
    ...(report.unstarted ? { child_task_id: null } : {}),
  });
  // The task ended, or the map failed already: the item is recorded, and counts for nothing.
  if (!decider.active || state.status !== 'running') return true;
  const counts = { ...state.items, running: Math.max(0, state.items.running - 1) };
  if (error && step.onFailure !== 'continue') {
    decider.setStep(step, { items: counts });
    decider.fail(step, { ...error, message: `item ${found.item}: ${error.message}`, details: { ...(error.details as object), item: found.item } });
    return true;
  }
  counts.done += 1;
  if (error) counts.failed += 1;
  startMore(decider, step, items, counts);
  decider.setStep(step, { items: counts });
  progress(decider, step, counts);
  if (counts.done >= counts.total) completeMap(decider, step, counts);
  return true;
}

/**
 * The map stops early (it failed, or its task ended): running children are cancelled with their
 * items, and pending items become `to`. False while its items are not loaded (it asked for them).
 */
export function stopChildren(decider: Decider, step: SubWorkflowStep, state: StepState, to: Settle): boolean {
  if (!state.items) return true;
  const items = everyItem(decider, step);
  if (!items) return false;
  for (const item of items) {
    if (item.status !== 'running') continue;
    decider.setItem(step, item.item, { status: 'cancelled', finished_at: decider.now.toISOString() });
    if (item.childTaskId) cancelChild(decider, item.childTaskId);
  }
  stopItems(decider, step, to);
  return true;
}

/** The children of running items, started again where a start went missing (a child that exists is left as it is). */
export function outstandingChildren(decider: Decider, step: SubWorkflowStep, state: StepState): void {
  if (state.status !== 'running') return;
  const items = everyItem(decider, step);
  if (!items) return;
  for (const item of items) if (item.status === 'running' && item.childTaskId) childStart(decider, step, item.childTaskId, true, params(item.input));
}

/**
 * A retried task keeps a map's completed items (loaded: map.ts's loadForRerun asked for them);
 * the others go back to pending in run `next`, keeping their children to resume. Item by item, not
 * by a sweep: the ledger applies item changes before sweeps, and the items that start again in
 * this same decision are among them.
 */
export function keepChildren(decider: Decider, step: SubWorkflowStep, total: number, next: number): ItemCounts {
  let done = 0;
  for (const item of decider.allItems(step.id)!) {
    if (item.status === 'completed') done += 1;
    else decider.setItem(step, item.item, { status: 'pending', run: next, output: null, error: null, attempts: 0, started_at: null, finished_at: null });
  }
  return { total, done, failed: 0, running: 0 };
}

/** Starts the lowest pending items' children while fewer than max_parallel run (an item that had a child in an earlier run resumes it). */
function startMore(decider: Decider, step: SubWorkflowStep, items: ItemState[], counts: ItemCounts): void {
  const room = maxParallel(decider, step) - counts.running;
  if (room <= 0) return;
  const next = items.filter((item) => item.status === 'pending').sort((a, b) => a.item - b.item);
  for (const item of next.slice(0, room)) {
    const existing = item.childTaskId !== null;
    const childTaskId = item.childTaskId ?? decider.newTaskId(step.workflow.name);
    decider.setItem(step, item.item, {
      status: 'running',
      run: decider.task.run,
      started_at: decider.now.toISOString(),
      ...(existing ? {} : { child_task_id: childTaskId }),
    });
    childStart(decider, step, childTaskId, existing, params(item.input));
    counts.running += 1;
  }
}

/** An item's input is its child's params (the workflow's check made the step's input an object of its parameters). */
function params(input: unknown): Record<string, unknown> {
  return (input ?? {}) as Record<string, unknown>;
}
