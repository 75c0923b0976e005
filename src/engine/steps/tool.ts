import type { z } from 'zod';
import { capErrorRecord, type ErrorRecord } from '../../lib/errors.js';
import { jsonSize } from '../../lib/limits.js';
import { type Catalog, type JsonSchema, type ToolSpec, toolOutputSchema } from '../catalog.js';
import type { PlanStep } from '../plan.js';
import type { Report, StepState } from '../state.js';
import { stepFailure } from '../task-output.js';
import { hasTemplates } from '../templates.js';
import type { DependencyResult, ReadyStep } from '../types.js';
import type { WorkflowStep } from '../workflow-definition.js';
import { type CheckContext, type Run, refuseFields, type StepKindModule } from './kind.js';

/**
 * A tool step runs a tool adapter: ready, its input is resolved and a job is enqueued in the
 * tool's queue; a worker claims it, runs the adapter (retrying as its policy says) and reports
 * how its last attempt ended. A failure under on_failure `fail` fails the task.
 */
export const toolStep: StepKindModule = {
  check(step, index, context) {
    const tool = context.catalog.tool(step.tool!);
    if (!tool) context.add(['steps', index, 'tool'], `unknown tool ${step.tool} (known: ${context.catalog.toolNames().join(', ')})`);
    refuseFields(step, index, context, 'tool', ['version']);
    checkForEach(step, index, context);
    if (tool) for (const problem of literalProblems(tool, step.input)) context.add(['steps', index, 'input', ...problem.path], problem.message);
  },

  outputSchema(step, catalog) {
    const tool = catalog.tool(step.tool!);
    if (!tool) return undefined;
    return step.for_each === undefined ? toolOutputSchema(tool) : { type: 'array', items: outputOrError(toolOutputSchema(tool), step) };
  },

  compile(step, { catalog, overrides }) {
    const tool = catalog.tool(step.tool!)!;
    return {
      kind: 'tool',
      tool: tool.name,
      ...(step.for_each !== undefined ? { forEach: step.for_each } : {}),
      ...(step.max_parallel !== undefined ? { maxParallel: step.max_parallel } : {}),
      options: {
        retry: overrides.retry ?? step.retry ?? tool.retry,
        timeout_ms: overrides.timeout_ms ?? step.timeout_ms ?? tool.timeout_ms,
        ...(overrides.priority ? { priority: overrides.priority } : {}),
      },
    };
  },

  ready(run, step) {
    const input = run.resolve(step, step.input);
    if (!input.ok) {
      if ('error' in input) run.fail(step, input.error);
      return;
    }
    run.setStep(step, { status: 'queued', input: input.value, queued_at: run.now.toISOString(), run: run.task.run });
    run.decision.jobs.push(readyJob(run, step, input.value));
  },

  report(run, step, state, report) {
    if (report.type === 'circuit') return circuitReport(run, step, state, report.open);
    if (report.type === 'withdrawn') return withdrawnReport(run, step, state, report.error);
    if (report.type !== 'result' || report.item !== undefined) return false;
    if (state.status !== 'queued' && state.status !== 'running') return false;
    run.setStep(step, {
      status: report.status,
      output: report.output ?? null,
      error: report.error ?? null,
      attempts: Math.max(state.attempts, report.attempt),
      started_at: (state.startedAt ?? report.startedAt).toISOString(),
      finished_at: report.finishedAt.toISOString(),
    });
    if (report.status === 'failed') deadLetter(run, step, report.stepId, report);
    // A step of a task that ended already (it was running when a sibling failed it) is recorded, and counts for nothing.
    if (!run.active || report.status === 'completed') return true;
    if (report.status === 'failed' && step.onFailure === 'continue') return true;
    const error = report.error ?? { name: report.status === 'cancelled' ? 'Cancelled' : 'Error', message: `step ${report.status}` };
    run.failTask(stepFailure(step.id, error));
    return true;
  },
};

/** A step held back by its service's open circuit waits; let through, it is queued again (its job is still there). */
function circuitReport(run: Run, step: PlanStep, state: StepState, open: boolean): boolean {
  if (!run.live(step) || step.forEach !== undefined) return false;
  if (open && (state.status === 'queued' || state.status === 'running')) {
    run.setStep(step, { status: 'waiting', reason: 'circuit_open' });
    return true;
  }
  if (!open && state.status === 'waiting' && state.reason === 'circuit_open') {
    run.setStep(step, { status: 'queued' });
    return true;
  }
  return false;
}

/**
 * A step whose tool is gone for good fails now, instead of failing later as an unknown tool; its
 * job goes (a running one finishes, refused). A compensation is left alone: it runs only if its
 * task fails, and is the compensating decider's to end.
 */
function withdrawnReport(run: Run, step: PlanStep, state: StepState, error: ErrorRecord): boolean {
  if (!run.active || step.compensationOf !== undefined) return false;
  if (state.status !== 'pending' && state.status !== 'queued' && state.status !== 'waiting' && state.status !== 'running') return false;
  if (step.forEach === undefined && state.status !== 'pending')
    run.decision.dropJobs.push({
      taskId: run.task.id,
      run: run.task.run,
      stepId: step.id,
      tool: step.tool!,
      ...(state.status === 'running' ? { running: true } : {}),
    });
  run.fail(step, error);
  return true;
}

/** A dead letter: a step (or map item) that failed for good, with what it was given. */
export function deadLetter(run: Run, step: PlanStep, stepId: string, report: Extract<Report, { type: 'result' }>): void {
  run.decision.deadLetters.push({
    taskId: run.task.id,
    createdAt: run.task.createdAt,
    stepId,
    run: run.task.run,
    tool: step.tool ?? step.kind,
    input: report.input ?? null,
    error: capErrorRecord(report.error ?? { name: 'Error', message: 'step failed' }),
    attempts: report.attempt,
  });
}

/** The job of a ready tool step: its input, and what its direct dependencies ended with (small outputs inline). */
export function readyJob(run: Run, step: PlanStep, input: unknown, item?: number): ReadyStep {
  const dependencies: Record<string, DependencyResult> = {};
  if (item === undefined) {
    for (const dep of step.dependsOn) {
      const found = run.state(dep);
      if (found.status !== 'completed' && found.status !== 'failed' && found.status !== 'skipped') continue;
      // Undefined: too large to have been loaded with the task, so too large to travel inline.
      const output = found.output;
      const stored = output === undefined || (output !== null && jsonSize(output, run.limits.JOB_INLINE_OUTPUT_MAX_BYTES).over);
      dependencies[dep] = {
        status: found.status,
        ...(stored ? { output_stored_in: 'postgresql' as const } : output !== null ? { output } : {}),
        ...(found.error ? { error: capErrorRecord({ name: found.error.name, message: found.error.message }) } : {}),
      };
    }
  }
  return {
    taskId: run.task.id,
    run: run.task.run,
    stepId: step.id,
    ...(item !== undefined ? { item } : {}),
    tool: step.tool!,
    input,
    retry: step.options.retry,
    timeoutMs: step.options.timeout_ms,
    dependencies,
    ...(step.options.priority ? { priority: step.options.priority } : {}),
  };
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

/** Problems of the literal part of an input: issues under a templated value are left for run time. */
export function literalProblems(tool: Pick<ToolSpec, 'name' | 'input'>, input: Record<string, unknown>): { path: (string | number)[]; message: string }[] {
  const parsed = (tool.input as z.ZodType).safeParse(input);
  if (parsed.success) return [];
  return parsed.error.issues
    .filter((issue) => !underTemplate(input, issue.path))
    .map((issue) => ({ path: issue.path as (string | number)[], message: `${issue.message} (the ${tool.name} tool's input schema)` }));
}

function underTemplate(root: unknown, path: readonly PropertyKey[]): boolean {
  let current = root;
  for (const segment of path) {
    if (typeof current === 'string') return hasTemplates(current);
    if (current === null || typeof current !== 'object') return false;
    current = (current as Record<PropertyKey, unknown>)[segment as string];
  }
  return typeof current === 'string' && hasTemplates(current);
}

export type { Catalog };
