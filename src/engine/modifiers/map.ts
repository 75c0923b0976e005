import { LimitExceededError, toErrorRecord } from '../../lib/errors.js';
import { jsonSize } from '../../lib/limits.js';
import type { JsonSchema } from '../catalog.js';
import { type CheckContext, type Decider, refuseFields } from '../kinds/kind.js';
import { readyJob, type ToolStep, withdrawn } from '../kinds/tool.js';
import type { SubWorkflowStep } from '../kinds/workflow.js';
import type { PlanStep } from '../plan.js';
import type { ItemCounts, Report, StepState } from '../state.js';
import type { WorkflowStep } from '../workflow-definition.js';
import { admittedItems, completeMap, lostItem, maxParallel, outstandingItems, progress, recordItem, settleItems, stopItems } from './items.js';
import { childEnded, keepChildren, outstandingChildren, resumeChildren, startChildren, stopChildren } from './map-children.js';
import type { StepModifier } from './modifier.js';

/**
 * A tool step with `for_each` maps over a list known at run time: once ready, the list is
 * resolved and each item's input with it (`{{item}}`, `{{index}}`); the items are stored and
 * at most max_parallel of them are queued at a time, across every worker, each a job of its
 * own. An item's result queues the next one. The step's output is the list of the items'
 * outputs, in item order (a failed item under on_failure continue is `{"error": …}`); under
 * `fail`, the first failed item fails the step and no further item starts.
 *
 * A sub-workflow step maps the same way, each item a child task of its own (./map-children.ts).
 *
 * Tool and sub-workflow steps map (`kinds`): the check refuses for_each on any other kind, and
 * the registry wraps no other kind in it.
 */

declare module '../plan.js' {
  interface StepModifiers {
    /** A template that gives the list to map over, or a literal list. */
    forEach?: unknown;
    /** Most items queued or running at once, across all workers. */
    maxParallel?: number;
  }
}

type MapStep = PlanStep<'tool' | 'workflow'>;

export const map: StepModifier<'tool' | 'workflow'> = {
  kinds: ['tool', 'workflow'],

  check: checkForEach,

  checkElsewhere: (step, index, context, kind) => refuseFields(step, index, context, kind.label, ['for_each', 'max_parallel']),

  outputSchema: (step, schema) => (step.for_each === undefined || schema === undefined ? schema : { type: 'array', items: outputOrError(schema, step) }),

  templatePlaces: (step, index) => (typeof step.for_each === 'string' ? [{ base: `steps[${index}].for_each`, value: step.for_each }] : []),

  locals: (step) => (step.for_each !== undefined ? { item: undefined, index: { type: 'integer' } } : undefined),

  compile: (step) => ({
    ...(step.for_each !== undefined ? { forEach: step.for_each } : {}),
    ...(step.max_parallel !== undefined ? { maxParallel: step.max_parallel } : {}),
  }),

  applies: (step) => step.forEach !== undefined,

  templates: (step) => [step.forEach],

  around: (inner) => ({
    ready,

    report(decider, step, state, report) {
      if (isChildMap(step)) return report.type === 'child' ? childEnded(decider, step, state, report) : inner.report(decider, step, state, report);
      if (report.type === 'result' && report.item !== undefined) return itemResult(decider, step, state, report, report.item);
      if (report.type === 'lost') return report.item !== undefined && lostItem(decider, step, state, report.item);
      // Its items wait for their service's circuit in their own jobs: the map itself never waits.
      if (report.type === 'circuit') return false;
      // Its items are swept when it fails: it has no job of its own to drop.
      if (report.type === 'withdrawn') return withdrawn(decider, step, state, report.error, false);
      return inner.report(decider, step, state, report);
    },

    // Items not started never will; a failed map is no dead letter (its failed items are).
    failed: (decider, step, state) => (isChildMap(step) ? stopChildren(decider, step, state, 'skipped') : stopItems(decider, step, 'skipped')),

    settle(decider, step, state, to) {
      if (!isChildMap(step)) return settleItems(inner, decider, step, state, to);
      if (state.status !== 'running') return inner.settle(decider, step, state, to);
      if (!stopChildren(decider, step, state, to)) return;
      decider.setStep(step, { status: 'cancelled', finished_at: decider.now.toISOString() });
    },

    outstanding: (decider, step, state) => (isChildMap(step) ? outstandingChildren(decider, step, state) : outstandingItems(decider, step, state)),

    // A child task passes its limits per key as a task of its own.
    admitted: (decider, step, state, item) => (isChildMap(step) ? inner.admitted(decider, step, state, item) : admittedItems(decider, step, state, item)),

    loadForRerun(decider, step, state, over) {
      // Keeping its items, it needs them all, to count those that completed.
      if (!over && state.status !== 'completed' && state.items && keepsItems(decider, step) && !decider.allItems(step.id)) decider.need('items', step.id);
    },

    rerun(decider, step, state, over, next) {
      if (!state.items) return { items: null };
      if (over || !keepsItems(decider, step)) {
        decider.decision.sweeps.push({ taskId: decider.task.id, createdAt: decider.task.createdAt, stepId: step.id, delete: true });
        return { items: null };
      }
      // Loaded: loadForRerun asked for them.
      if (isChildMap(step)) return { items: keepChildren(decider, step, state.items.total, next) };
      const done = decider.allItems(step.id)!.filter((item) => item.status === 'completed').length;
      decider.decision.sweeps.push({
        taskId: decider.task.id,
        createdAt: decider.task.createdAt,
        stepId: step.id,
        from: ['pending', 'queued', 'running', 'failed', 'skipped', 'cancelled'],
        to: 'pending',
        run: next,
        reset: true,
      });
      return { items: { total: state.items.total, done, failed: 0, running: 0 } };
    },
  }),
};

function isChildMap(step: MapStep): step is SubWorkflowStep {
  return step.kind === 'workflow';
}

/** A retried map keeps its items when what its list came from is kept (every step it reads completed). */
function keepsItems(decider: Decider, step: MapStep): boolean {
  return [...(decider.task.plan.reads.get(step.id) ?? [])].every((id) => decider.state(id).status === 'completed');
}

/** Queues up to max_parallel more items (the ledger picks the lowest pending ones and answers which). */
function startMore(decider: Decider, step: ToolStep, counts: ItemCounts): void {
  const pending = counts.total - counts.done - counts.running;
  const start = Math.min(pending, maxParallel(decider, step) - counts.running);
  if (start <= 0) return;
  counts.running += start;
  decider.decision.sweeps.push({ taskId: decider.task.id, createdAt: decider.task.createdAt, stepId: step.id, start });
}

function ready(decider: Decider, step: MapStep, state: StepState): void {
  // Items kept from an earlier run (a retried task): the completed ones stay, the rest run again.
  if (state.items && state.items.total > 0) {
    const counts = { ...state.items, running: 0 };
    if (counts.done >= counts.total) {
      completeMap(decider, step, counts);
      return;
    }
    if (isChildMap(step)) {
      resumeChildren(decider, step, counts);
      return;
    }
    decider.setStep(step, { status: 'running', started_at: decider.now.toISOString(), run: decider.task.run });
    startMore(decider, step, counts);
    decider.setStep(step, { items: counts });
    return;
  }
  const inputs = itemInputs(decider, step);
  if (!inputs) return;
  if (isChildMap(step)) startChildren(decider, step, inputs);
  else startItems(decider, step, inputs);
}

/** Each item's input (a child's params), resolved with its locals; undefined when the step ended (failed, or completed over no items) or waits for data. */
function itemInputs(decider: Decider, step: MapStep): unknown[] | undefined {
  const list = decider.resolve(step, step.forEach);
  if (!list.ok) {
    if ('error' in list) decider.fail(step, list.error);
    return;
  }
  if (!Array.isArray(list.value)) {
    decider.fail(step, {
      name: 'ForEachNotAList',
      message: `for_each gave ${list.value === null ? 'null' : typeof list.value}, not a list`,
      retryable: false,
    });
    return;
  }
  const items = list.value as unknown[];
  if (items.length > decider.limits.MAP_MAX_ITEMS) {
    decider.fail(
      step,
      toErrorRecord(
        new LimitExceededError('TooManyItems', `for_each gave ${items.length} items; at most ${decider.limits.MAP_MAX_ITEMS} are allowed (MAP_MAX_ITEMS)`, {
          limit: decider.limits.MAP_MAX_ITEMS,
          setting: 'MAP_MAX_ITEMS',
        }),
      ),
    );
    return;
  }
  if (items.length === 0) {
    decider.complete(step, []);
    return;
  }
  const inputs: unknown[] = [];
  let total = 0;
  for (const [index, value] of items.entries()) {
    const input = decider.resolve(step, step.input, { locals: { item: value, index } });
    if (!input.ok) {
      if ('error' in input) decider.fail(step, { ...input.error, details: { ...(input.error.details as object), item: index } });
      return;
    }
    total += jsonSize(input.value, decider.limits.MAP_INPUTS_MAX_BYTES).bytes;
    if (total > decider.limits.MAP_INPUTS_MAX_BYTES) {
      decider.fail(
        step,
        toErrorRecord(
          new LimitExceededError(
            'StepInputTooLarge',
            `the items' inputs together are larger than ${decider.limits.MAP_INPUTS_MAX_BYTES} bytes of JSON (MAP_INPUTS_MAX_BYTES)`,
            {
              limit: decider.limits.MAP_INPUTS_MAX_BYTES,
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
  return inputs;
}

/** A tool map's items stored, the first max_parallel queued with their jobs. */
function startItems(decider: Decider, step: ToolStep, inputs: unknown[]): void {
  const start = Math.min(inputs.length, maxParallel(decider, step));
  const counts: ItemCounts = { total: inputs.length, done: 0, failed: 0, running: start };
  decider.setStep(step, { status: 'running', started_at: decider.now.toISOString(), run: decider.task.run, items: counts });
  decider.addItems(
    step,
    inputs.map((input, item) => ({ item, input, ...(item < start ? { status: 'queued' as const } : {}) })),
    true,
  );
  for (const [item, input] of inputs.slice(0, start).entries()) decider.decision.jobs.push(readyJob(decider, step, input, item));
  progress(decider, step, counts);
}

/** An item's result: recorded once (the first for its run); while the map runs, it may queue the next item, complete the map or fail it. */
function itemResult(decider: Decider, step: ToolStep, state: StepState, report: Extract<Report, { type: 'result' }>, index: number): boolean {
  if (!recordItem(decider, step, report, index)) return false;
  // The task ended, or the map failed already: the item is recorded, and counts for nothing.
  if (!decider.active || state.status !== 'running' || !state.items) return true;
  const counts = { ...state.items, running: Math.max(0, state.items.running - 1) };
  if (report.status === 'completed' || (report.status === 'failed' && step.onFailure === 'continue')) {
    counts.done += 1;
    if (report.status === 'failed') counts.failed += 1;
  } else {
    decider.setStep(step, { items: counts });
    const error = report.error ?? { name: 'Cancelled', message: 'item cancelled' };
    decider.fail(step, { name: error.name, message: `item ${report.item}: ${error.message}`, retryable: false, details: { item: report.item, error } });
    return true;
  }
  startMore(decider, step, counts);
  decider.setStep(step, { items: counts });
  progress(decider, step, counts);
  if (counts.done >= counts.total) completeMap(decider, step, counts);
  return true;
}

/** A map item's place in the map's output: the tool's output, or `{error}` under on_failure continue. */
function outputOrError(schema: JsonSchema, step: WorkflowStep): JsonSchema {
  return step.on_failure === 'continue' ? { anyOf: [schema, { type: 'object', properties: { error: {} } }] } : schema;
}

/** for_each: a literal list, or a string that is exactly one template (it keeps the list's type); max_parallel only with it. */
function checkForEach(step: WorkflowStep, index: number, context: CheckContext): void {
  if (step.for_each === undefined) {
    if (step.max_parallel !== undefined) context.add(['steps', index, 'max_parallel'], 'max_parallel goes with for_each');
    return;
  }
  if (typeof step.for_each !== 'string') return;
  const text = step.for_each.trim();
  const whole = text.startsWith('{{') && text.endsWith('}}') && text.indexOf('{{', 2) === -1;
  if (!whole) {
    context.add(['steps', index, 'for_each'], 'for_each must be a list or exactly one template that gives one, such as "{{steps.list.output.items}}"');
    return;
  }
  // What it refers to is checked with every other template (check.ts): {{item}} is not defined there.
}
