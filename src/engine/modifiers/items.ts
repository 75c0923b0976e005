import { LimitExceededError, toErrorRecord } from '../../lib/errors.js';
import { jsonSize } from '../../lib/limits.js';
import type { Decider, Settle, StepRunner } from '../kinds/kind.js';
import { deadLetter, readyJob, type ToolStep } from '../kinds/tool.js';
import type { PlanStep } from '../plan.js';
import type { ItemCounts, ItemState, Report, StepState } from '../state.js';

/**
 * What the modifiers that run a step as items share (a map's items: map.ts and map-children.ts;
 * a repeat's iterations: repeat.ts): each item is a row of its own with its own job (or child
 * task), attempts and result, and the step runs while any of them does.
 */

/** Every item of the step, or undefined after asking the decider to load them (it decides again once they are). */
export function everyItem(decider: Decider, step: PlanStep): ItemState[] | undefined {
  const items = decider.allItems(step.id);
  if (!items) decider.need('items', step.id);
  return items;
}

/** Most items of a map queued or running at once. */
export function maxParallel(decider: Decider, step: PlanStep): number {
  return step.maxParallel ?? decider.limits.MAP_MAX_PARALLEL;
}

/** A map's progress event: items done out of total. */
export function progress(decider: Decider, step: PlanStep, counts: ItemCounts): void {
  decider.decision.transitions.push({
    taskId: decider.task.id,
    stepId: step.id,
    status: 'running',
    at: decider.now.toISOString(),
    progress: { percent: counts.total === 0 ? 100 : Math.floor((counts.done * 100) / counts.total), message: `${counts.done}/${counts.total} items` },
  });
}

/** Every item is done: the map's output is their outputs in order. Needs every item loaded. */
export function completeMap(decider: Decider, step: PlanStep, counts: ItemCounts): void {
  const items = everyItem(decider, step);
  if (!items) return;
  const output = [...items].sort((a, b) => a.item - b.item).map((item) => (item.status === 'completed' ? (item.output ?? null) : { error: item.error }));
  if (jsonSize(output, decider.limits.STEP_OUTPUT_MAX_BYTES).over) {
    decider.fail(
      step,
      toErrorRecord(
        new LimitExceededError(
          'StepOutputTooLarge',
          `the items' outputs together are larger than ${decider.limits.STEP_OUTPUT_MAX_BYTES} bytes of JSON (STEP_OUTPUT_MAX_BYTES)`,
          {
            limit: decider.limits.STEP_OUTPUT_MAX_BYTES,
            setting: 'STEP_OUTPUT_MAX_BYTES',
          },
        ),
      ),
    );
    return;
  }
  decider.setStep(step, { items: { ...counts, running: 0 } });
  decider.complete(step, output);
}

/** An item's result, recorded once (the first for its run), a failed one with its dead letter; false when it does not count. */
export function recordItem(decider: Decider, step: ToolStep, report: Extract<Report, { type: 'result' }>, index: number): boolean {
  const item = decider.item(step.id, index);
  if (!item || item.run !== report.run || (item.status !== 'queued' && item.status !== 'running')) return false;
  decider.setItem(step, index, {
    status: report.status,
    output: report.output ?? null,
    error: report.error ?? null,
    attempts: Math.max(item.attempts, report.attempt),
    started_at: (item.startedAt ?? report.startedAt).toISOString(),
    finished_at: report.finishedAt.toISOString(),
  });
  if (report.status === 'failed') deadLetter(decider, step, `${step.id}[${index}]`, report);
  return true;
}

/** An item's job went missing (see Report 'lost'): queued again with its job made again, or cancelled if its step or task ended. */
export function lostItem(decider: Decider, step: ToolStep, state: StepState, item: number): boolean {
  const found = decider.item(step.id, item);
  if (!found || found.run !== decider.task.run || (found.status !== 'queued' && found.status !== 'running')) return false;
  if (!decider.live(step) || state.status !== 'running') {
    decider.setItem(step, item, { status: 'cancelled', finished_at: decider.now.toISOString() });
    return true;
  }
  decider.setItem(step, item, { status: 'queued' });
  decider.decision.jobs.push(readyJob(decider, step, found.input ?? null, item));
  return true;
}

/** The step stops early (it failed, or its task ended): items not started never will. */
export function stopItems(decider: Decider, step: PlanStep, to: 'skipped' | 'cancelled'): void {
  decider.decision.sweeps.push({ taskId: decider.task.id, createdAt: decider.task.createdAt, stepId: step.id, from: ['pending', 'queued'], to });
}

/** Its task ended while it ran: cancelled, and its items not started never will (running ones finish, refused). */
export function settleItems(inner: Required<StepRunner<ToolStep>>, decider: Decider, step: ToolStep, state: StepState, to: Settle): void {
  if (state.status !== 'running') {
    inner.settle(decider, step, state, to);
    return;
  }
  decider.setStep(step, { status: 'cancelled', finished_at: decider.now.toISOString() });
  stopItems(decider, step, to);
}

/** The jobs of its queued and running items, made again where they went missing. */
export function outstandingItems(decider: Decider, step: ToolStep, state: StepState): void {
  if (state.status !== 'running') return;
  const items = everyItem(decider, step);
  if (!items) return;
  for (const item of items) {
    if ((item.status === 'queued' || item.status === 'running') && item.run === decider.task.run)
      decider.decision.jobs.push(readyJob(decider, step, item.input ?? null, item.item));
  }
}

/** Items a limit per key held back (queued without a job) get their jobs (one that has it already is not made twice). */
export function admittedItems(decider: Decider, step: ToolStep, state: StepState, only: number | undefined): boolean {
  if (!decider.live(step) || state.status !== 'running') return false;
  const items = only !== undefined ? [decider.item(step.id, only)].filter((item) => item !== undefined) : decider.allItems(step.id);
  if (!items) {
    decider.need('items', step.id);
    return false;
  }
  let moved = false;
  for (const item of items) {
    if (item.status !== 'queued' || item.run !== decider.task.run) continue;
    decider.decision.jobs.push(readyJob(decider, step, item.input ?? null, item.item));
    moved = true;
  }
  return moved;
}
