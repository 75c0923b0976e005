import { ConditionError, type ErrorRecord, toErrorRecord } from '../../lib/errors.js';
import { checkCondition, evaluateCondition } from '../condition.js';
import { type Decider, refuseFields, type StepRunner } from '../kinds/kind.js';
import { readyJob, type ToolStep, withdrawn } from '../kinds/tool.js';
import type { PlanStep } from '../plan.js';
import type { Report, StepState } from '../state.js';
import { admittedItems, lostItem, outstandingItems, recordItem, settleItems, stopItems } from './items.js';
import type { StepModifier } from './modifier.js';
import { ancestorData, ancestorScope } from './when.js';

/**
 * `repeat`: a tool step that runs again until a condition over its last output holds (polling a
 * job until it is done, paging through an API). Each iteration is an item of the step (map.ts's
 * rows, listed by GET /tasks/{id}/steps/{step}/items), a job of its own with its own attempts and
 * retry policy; its input is resolved for it, with `{{iteration}}` (0-based) and
 * `{{previous.output…}}` (null on the first). Its result decides what follows: `until` true
 * completes the step with that output; false queues the next iteration, its job delayed by
 * `delay_ms` (a durable wait: a delayed job in Redis, the iteration queued in PostgreSQL, no
 * worker held); false on the last of `max_iterations` fails the step with RepeatLimitReached. A
 * failed iteration fails the step (its on_failure says what that does to the task). A retried task
 * runs the repeat again from its first iteration.
 *
 * A sub-workflow step repeats the same way, each iteration a child task of its own (the step's
 * child_task_id is the latest; GET /tasks?parent= lists them all), its params resolved with the
 * same locals, its result the iteration's output. It has no delay_ms (a child may sleep first).
 *
 * Tool and sub-workflow steps repeat (`kinds`), not together with for_each.
 */

declare module '../plan.js' {
  interface StepModifiers {
    repeat?: { until: string; maxIterations: number; delayMs: number };
  }
}

type RepeatedStep = ToolStep & { repeat: NonNullable<ToolStep['repeat']> };
type RepeatedChild = PlanStep<'workflow'> & { repeat: NonNullable<ToolStep['repeat']> };
type Inner = Required<StepRunner<PlanStep<'tool' | 'workflow'>>>;

export const repeat: StepModifier<'tool' | 'workflow'> = {
  kinds: ['tool', 'workflow'],

  check(step, index, context) {
    if (step.repeat === undefined) return;
    if (step.for_each !== undefined) context.add(['steps', index, 'repeat'], 'a step either repeats or maps over a list (for_each), not both');
    if (step.workflow !== undefined && step.repeat.delay_ms > 0)
      context.add(['steps', index, 'repeat', 'delay_ms'], 'a sub-workflow step repeats without a delay (its workflow may start with a sleep step)');
  },

  checkElsewhere: (step, index, context, kind) => refuseFields(step, index, context, kind.label, ['repeat']),

  checkFlow(step, index, context) {
    if (step.repeat === undefined) return;
    const scope = { ...ancestorScope(step.id, context), vars: { output: context.outputOf(step.id), iteration: { type: 'integer' as const } } };
    for (const message of checkCondition(step.repeat.until, scope)) context.add(['steps', index, 'repeat', 'until'], message);
  },

  locals: (step) => (step.repeat !== undefined ? { iteration: { type: 'integer' }, previous: undefined } : undefined),

  compile: (step) =>
    step.repeat !== undefined ? { repeat: { until: step.repeat.until, maxIterations: step.repeat.max_iterations, delayMs: step.repeat.delay_ms } } : {},

  applies: (step) => step.repeat !== undefined,

  // `until` may name any ancestor.
  reads: (step, ancestors) => (step.repeat !== undefined ? ancestors : []),

  around: (inner) => ({
    ready(decider, step, state) {
      if (step.kind === 'workflow') startChild(inner, decider, step as RepeatedChild, state, 0, null);
      else start(decider, step as RepeatedStep, 0, null);
    },

    report(decider, step, state, report) {
      if (step.kind === 'workflow')
        return report.type === 'child' ? childEnded(inner, decider, step as RepeatedChild, state, report) : inner.report(decider, step, state, report);
      if (report.type === 'result' && report.item !== undefined) return iterationEnded(decider, step as RepeatedStep, state, report, report.item);
      if (report.type === 'lost') return report.item !== undefined && lostItem(decider, step, state, report.item);
      // Its iterations wait for their service's circuit in their own jobs.
      if (report.type === 'circuit') return false;
      if (report.type === 'withdrawn') return withdrawn(decider, step, state, report.error, false);
      return inner.report(decider, step, state, report);
    },

    failed(decider, step, state, error) {
      if (step.kind === 'workflow') inner.failed(decider, step, state, error);
      else stopItems(decider, step, 'skipped');
    },

    // A sub-workflow's iteration ends with its child, which the kind cancels; its item closes when the child reports.
    settle: (decider, step, state, to) => (step.kind === 'workflow' ? inner.settle(decider, step, state, to) : settleItems(inner, decider, step, state, to)),

    outstanding: (decider, step, state) => (step.kind === 'workflow' ? inner.outstanding(decider, step, state) : outstandingItems(decider, step, state)),

    admitted: (decider, step, state, item) =>
      step.kind === 'workflow' ? inner.admitted(decider, step, state, item) : admittedItems(decider, step, state, item),

    // A new run starts over from its first iteration.
    rerun(decider, step, state) {
      if (state.items) decider.decision.sweeps.push({ taskId: decider.task.id, createdAt: decider.task.createdAt, stepId: step.id, delete: true });
      return { items: null };
    },
  }),
};

/** Queues iteration `iteration` (its job delayed by delay_ms after the first), its input resolved with its locals. */
function start(decider: Decider, step: RepeatedStep, iteration: number, previous: { output: unknown } | null): void {
  const input = decider.resolve(step, step.input, { locals: { iteration, previous } });
  if (!input.ok) {
    if ('error' in input) decider.fail(step, { ...input.error, details: { ...(input.error.details as object), iteration } });
    return;
  }
  const counts = { total: iteration + 1, done: iteration, failed: 0, running: 1, iterations: true as const };
  if (iteration === 0) decider.setStep(step, { status: 'running', started_at: decider.now.toISOString(), run: decider.task.run, items: counts });
  else decider.setStep(step, { items: counts });
  newIteration(decider, step, iteration, input.value, 'queued');
  const delayMs = iteration > 0 ? step.repeat.delayMs : 0;
  decider.decision.jobs.push({ ...readyJob(decider, step, input.value, iteration), ...(delayMs > 0 ? { delayMs } : {}) });
  decider.decision.transitions.push({
    taskId: decider.task.id,
    stepId: step.id,
    status: 'running',
    at: decider.now.toISOString(),
    progress: {
      percent: Math.floor((iteration * 100) / step.repeat.maxIterations),
      message: `iteration ${iteration + 1} of at most ${step.repeat.maxIterations}`,
    },
  });
}

/**
 * A sub-workflow's iteration: a child task of its own, started by the kind with the iteration's
 * locals (a new one each time: the step's child_task_id is cleared first), and an item that keeps
 * its params and, once the child ends, its result.
 */
function startChild(inner: Inner, decider: Decider, step: RepeatedChild, state: StepState, iteration: number, previous: { output: unknown } | null): void {
  if (state.childTaskId !== null) decider.setStep(step, { child_task_id: null });
  decider.withLocals({ iteration, previous }, () => inner.ready(decider, step, state));
  if (state.status !== 'running' || state.childTaskId === null) return;
  decider.setStep(step, { items: { total: iteration + 1, done: iteration, failed: 0, running: 1, iterations: true } });
  newIteration(decider, step, iteration, state.input ?? null, 'running');
}

/** An iteration's row among the step's items: queued with its job (a tool's), or running with its child (a sub-workflow's). */
function newIteration(decider: Decider, step: PlanStep, iteration: number, input: unknown, status: 'queued' | 'running'): void {
  // A sub-workflow's iteration runs from now, with its child.
  decider.addItems(step, [{ item: iteration, input, status, ...(status === 'running' ? { startedAt: decider.now.toISOString() } : {}) }]);
}

/** A sub-workflow iteration's child ended: its item takes the child's result, and `until` decides as for a tool's iteration. */
function childEnded(inner: Inner, decider: Decider, step: RepeatedChild, state: StepState, report: Extract<Report, { type: 'child' }>): boolean {
  if (state.childTaskId !== report.childTaskId || !state.items) return false;
  const iteration = state.items.total - 1;
  // The latest iteration's item runs while its child does (the child's report names no item: it is not loaded, nor needed).
  decider.setItem(step, iteration, {
    status: report.status,
    output: report.status === 'completed' ? (report.output ?? null) : null,
    error: report.status === 'completed' ? null : (report.error ?? { name: 'Cancelled', message: 'child task cancelled' }),
    finished_at: report.at.toISOString(),
  });
  // Its task ended (the child was cancelled with it): the item is closed, and counts for nothing.
  if (!decider.active || state.status !== 'running') return false;
  if (report.status !== 'completed') {
    // A failed or cancelled child fails the step as the kind says (SubWorkflowFailed, with the child's error).
    decider.setStep(step, { items: { ...state.items, running: 0, failed: 1 } });
    return inner.report(decider, step, state, report);
  }
  const output = report.output ?? null;
  const done = until(decider, step, output, iteration);
  if (done === undefined) return true;
  decider.record({ type: 'iteration_ended', stepId: step.id, item: iteration, data: { iteration, until: done, task_id: report.childTaskId } });
  if (done || iteration + 1 >= step.repeat.maxIterations) {
    decider.setStep(step, { items: { total: iteration + 1, done: iteration + 1, failed: 0, running: 0, iterations: true } });
    if (done) decider.complete(step, output);
    else decider.fail(step, limitReached(step));
    return true;
  }
  startChild(inner, decider, step, state, iteration + 1, { output });
  return true;
}

function limitReached(step: RepeatedStep | RepeatedChild): ErrorRecord {
  return {
    name: 'RepeatLimitReached',
    message: `repeat.until was still false after ${step.repeat.maxIterations} iteration(s) (max_iterations)`,
    retryable: false,
    details: { max_iterations: step.repeat.maxIterations },
  };
}

/** An iteration's result: recorded once; while the step runs, `until` decides whether it completes, fails or goes on. */
function iterationEnded(decider: Decider, step: RepeatedStep, state: StepState, report: Extract<Report, { type: 'result' }>, iteration: number): boolean {
  if (!recordItem(decider, step, report, iteration)) return false;
  // The task ended, or the step did already: the iteration is recorded, and counts for nothing.
  if (!decider.active || state.status !== 'running' || !state.items || iteration !== state.items.total - 1) return true;
  if (report.status !== 'completed') {
    decider.setStep(step, { items: { ...state.items, running: 0, failed: 1 } });
    const error = report.error ?? { name: 'Cancelled', message: 'iteration cancelled' };
    decider.fail(step, { name: error.name, message: `iteration ${iteration}: ${error.message}`, retryable: false, details: { iteration, error } });
    return true;
  }
  const output = report.output ?? null;
  const done = until(decider, step, output, iteration);
  if (done === undefined) return true;
  decider.record({ type: 'iteration_ended', stepId: step.id, item: iteration, data: { iteration, until: done } });
  if (done) {
    decider.setStep(step, { items: { total: iteration + 1, done: iteration + 1, failed: 0, running: 0, iterations: true } });
    decider.complete(step, output);
    return true;
  }
  if (iteration + 1 >= step.repeat.maxIterations) {
    decider.setStep(step, { items: { total: iteration + 1, done: iteration + 1, failed: 0, running: 0, iterations: true } });
    decider.fail(step, limitReached(step));
    return true;
  }
  start(decider, step, iteration + 1, { output });
  return true;
}

/** `until` over this iteration's output; undefined when an ancestor's output is not loaded yet, or the step failed evaluating it. */
function until(decider: Decider, step: RepeatedStep | RepeatedChild, output: unknown, iteration: number): boolean | undefined {
  const steps = ancestorData(decider, step);
  if (!steps) return undefined;
  try {
    return evaluateCondition(step.repeat.until, { params: decider.task.params, steps, vars: { output, iteration } });
  } catch (error) {
    const failure = error instanceof ConditionError ? error : new ConditionError(`repeat.until: ${(error as Error).message}`);
    decider.fail(step, { ...toErrorRecord(failure), message: `repeat.until: ${failure.message}`, retryable: false, details: { iteration } });
    return undefined;
  }
}
