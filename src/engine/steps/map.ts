import { LimitExceededError, toErrorRecord } from '../../lib/errors.js';
import { jsonSize } from '../../lib/limits.js';
import type { PlanStep } from '../plan.js';
import type { ItemCounts, StepState } from '../state.js';
import type { Run } from './kind.js';
import { deadLetter, readyJob } from './tool.js';

/**
 * A tool step with `for_each` maps over a list known at run time: once ready, the list is
 * resolved and each item's input with it (`{{item}}`, `{{index}}`); the items are stored and
 * at most max_parallel of them are queued at a time, across every worker, each a job of its
 * own. An item's result queues the next one. The step's output is the list of the items'
 * outputs, in item order (a failed item under on_failure continue is `{"error": …}`); under
 * `fail`, the first failed item fails the step and no further item starts.
 */

export function maxParallel(run: Run, step: PlanStep): number {
  return step.maxParallel ?? run.limits.MAP_MAX_PARALLEL;
}

function progress(run: Run, step: PlanStep, counts: ItemCounts): void {
  run.decision.transitions.push({
    taskId: run.task.id,
    stepId: step.id,
    status: 'running',
    at: run.now.toISOString(),
    progress: { percent: counts.total === 0 ? 100 : Math.floor((counts.done * 100) / counts.total), message: `${counts.done}/${counts.total} items` },
  });
}

/** Queues up to max_parallel more items (the ledger picks the lowest pending ones and answers which). */
function startMore(run: Run, step: PlanStep, counts: ItemCounts): void {
  const pending = counts.total - counts.done - counts.running;
  const start = Math.min(pending, maxParallel(run, step) - counts.running);
  if (start <= 0) return;
  counts.running += start;
  run.decision.sweeps.push({ taskId: run.task.id, createdAt: run.task.createdAt, stepId: step.id, start });
}

export const mapStep = {
  ready(run: Run, step: PlanStep, state: StepState): void {
    // Items kept from an earlier run (a retried task): the completed ones stay, the rest run again.
    if (state.items && state.items.total > 0) {
      const counts = { ...state.items, running: 0 };
      if (counts.done >= counts.total) {
        completeMap(run, step, counts);
        return;
      }
      run.setStep(step, { status: 'running', started_at: run.now.toISOString(), run: run.task.run });
      startMore(run, step, counts);
      run.setStep(step, { items: counts });
      return;
    }
    const list = run.resolve(step, step.forEach);
    if (!list.ok) {
      if ('error' in list) run.fail(step, list.error);
      return;
    }
    if (!Array.isArray(list.value)) {
      run.fail(step, {
        name: 'ForEachNotAList',
        message: `for_each gave ${list.value === null ? 'null' : typeof list.value}, not a list`,
        retryable: false,
      });
      return;
    }
    const items = list.value as unknown[];
    if (items.length > run.limits.MAP_MAX_ITEMS) {
      run.fail(
        step,
        toErrorRecord(
          new LimitExceededError('TooManyItems', `for_each gave ${items.length} items; at most ${run.limits.MAP_MAX_ITEMS} are allowed (MAP_MAX_ITEMS)`, {
            limit: run.limits.MAP_MAX_ITEMS,
            setting: 'MAP_MAX_ITEMS',
          }),
        ),
      );
      return;
    }
    if (items.length === 0) {
      run.complete(step, []);
      return;
    }
    const inputs: unknown[] = [];
    let total = 0;
    for (const [index, value] of items.entries()) {
      const input = run.resolve(step, step.input, { item: { value, index } });
      if (!input.ok) {
        if ('error' in input) run.fail(step, { ...input.error, details: { ...(input.error.details as object), item: index } });
        return;
      }
      total += jsonSize(input.value, run.limits.MAP_INPUTS_MAX_BYTES).bytes;
      if (total > run.limits.MAP_INPUTS_MAX_BYTES) {
        run.fail(
          step,
          toErrorRecord(
            new LimitExceededError(
              'StepInputTooLarge',
              `the items' inputs together are larger than ${run.limits.MAP_INPUTS_MAX_BYTES} bytes of JSON (MAP_INPUTS_MAX_BYTES)`,
              {
                limit: run.limits.MAP_INPUTS_MAX_BYTES,
                setting: 'MAP_INPUTS_MAX_BYTES',
                at: `items[${index}]`,
              },
            ),
          ),
        );
        return;
      }
      inputs.push(input.value);
    }
    const start = Math.min(items.length, maxParallel(run, step));
    const counts: ItemCounts = { total: items.length, done: 0, failed: 0, running: start };
    run.setStep(step, { status: 'running', started_at: run.now.toISOString(), run: run.task.run, items: counts });
    inputs.forEach((input, item) => {
      const queued = item < start;
      run.decision.newItems.push({
        taskId: run.task.id,
        createdAt: run.task.createdAt,
        stepId: step.id,
        item,
        run: run.task.run,
        input,
        ...(queued ? { status: 'queued' as const } : {}),
      });
      if (queued) run.decision.jobs.push(readyJob(run, step, input, item));
    });
    progress(run, step, counts);
  },

  /** An item's result: recorded once (the first for its run); while the map runs, it may queue the next item, complete the map or fail it. */
  itemResult(run: Run, step: PlanStep, state: StepState, report: Extract<import('../state.js').Report, { type: 'result' }>): boolean {
    const item = run.item(step.id, report.item!);
    if (!item || item.run !== report.run || (item.status !== 'queued' && item.status !== 'running')) return false;
    run.setItem(step, report.item!, {
      status: report.status,
      output: report.output ?? null,
      error: report.error ?? null,
      attempts: Math.max(item.attempts, report.attempt),
      started_at: (item.startedAt ?? report.startedAt).toISOString(),
      finished_at: report.finishedAt.toISOString(),
    });
    if (report.status === 'failed') deadLetter(run, step, `${step.id}[${report.item}]`, report);
    // The task ended, or the map failed already: the item is recorded, and counts for nothing.
    if (!run.active || state.status !== 'running' || !state.items) return true;
    const counts = { ...state.items, running: Math.max(0, state.items.running - 1) };
    if (report.status === 'completed' || (report.status === 'failed' && step.onFailure === 'continue')) {
      counts.done += 1;
      if (report.status === 'failed') counts.failed += 1;
    } else {
      run.setStep(step, { items: counts });
      const error = report.error ?? { name: 'Cancelled', message: 'item cancelled' };
      run.fail(step, { name: error.name, message: `item ${report.item}: ${error.message}`, retryable: false, details: { item: report.item, error } });
      return true;
    }
    startMore(run, step, counts);
    run.setStep(step, { items: counts });
    progress(run, step, counts);
    if (counts.done >= counts.total) completeMap(run, step, counts);
    return true;
  },

  /** The map stops early (it failed, or its task ended): items not started never will. */
  stop(run: Run, step: PlanStep, to: 'skipped' | 'cancelled'): void {
    run.decision.sweeps.push({ taskId: run.task.id, createdAt: run.task.createdAt, stepId: step.id, from: ['pending', 'queued'], to });
  },
};

/** Every item is done: the map's output is their outputs in order. Needs every item loaded. */
function completeMap(run: Run, step: PlanStep, counts: ItemCounts): void {
  const items = run.allItems(step.id);
  if (!items) {
    run.need('items', step.id);
    return;
  }
  const output = [...items].sort((a, b) => a.item - b.item).map((item) => (item.status === 'completed' ? (item.output ?? null) : { error: item.error }));
  if (jsonSize(output, run.limits.STEP_OUTPUT_MAX_BYTES).over) {
    run.fail(
      step,
      toErrorRecord(
        new LimitExceededError(
          'StepOutputTooLarge',
          `the items' outputs together are larger than ${run.limits.STEP_OUTPUT_MAX_BYTES} bytes of JSON (STEP_OUTPUT_MAX_BYTES)`,
          {
            limit: run.limits.STEP_OUTPUT_MAX_BYTES,
            setting: 'STEP_OUTPUT_MAX_BYTES',
          },
        ),
      ),
    );
    return;
  }
  run.setStep(step, { items: { ...counts, running: 0 } });
  run.complete(step, output);
}
