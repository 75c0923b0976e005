import type { z } from 'zod';
import { capErrorRecord, type ErrorRecord } from '../../lib/errors.js';
import { jsonSize } from '../../lib/limits.js';
import { type Catalog, type ToolSpec, toolOutputSchema } from '../catalog.js';
import type { PlanStep } from '../plan.js';
import type { Report, StepState } from '../state.js';
import { waitsForTurn } from '../status.js';
import { stepFailure } from '../task-output.js';
import { hasTemplates } from '../templates.js';
import type { DependencyResult, ReadyStep } from '../types.js';
import { type Decider, endUnstarted, type KindStep, refuseFields, type StepKindModule } from './kind.js';

/**
 * A tool step runs a tool adapter: ready, its input is resolved and a job is enqueued in the
 * tool's queue; a worker claims it, runs the adapter (retrying as its policy says) and reports
 * how its last attempt ended. A failure under on_failure `fail` fails the task. With `for_each`
 * it maps over a list (src/engine/modifiers/map.ts), each item a job of this kind.
 */

declare module '../plan.js' {
  interface StepKinds {
    /** The tool it runs (each item, for a map). */
    tool: { tool: string };
  }
}

export type ToolStep = PlanStep<'tool'>;

function ready(decider: Decider, step: ToolStep): void {
  const input = decider.resolve(step, step.input);
  if (!input.ok) {
    if ('error' in input) decider.fail(step, input.error);
    return;
  }
  const at = decider.now.toISOString();
  if (!decider.claimsReady) {
    decider.setStep(step, { status: 'queued', input: input.value, queued_at: at, run: decider.task.run });
    decider.decision.jobs.push(readyJob(decider, step, input.value));
    return;
  }
  // Claimed for its first delivery here, in the commit that made it ready (Decider.claimsReady).
  decider.setStep(step, { status: 'running', input: input.value, queued_at: at, started_at: at, attempts: 1, run: decider.task.run });
  // No worker yet: the attempt's end says which ran it.
  decider.record({ type: 'attempt_started', stepId: step.id, attempt: 1, data: { try: 1, delivery: 1, claimed_when_ready: true } });
  decider.decision.jobs.push({ ...readyJob(decider, step, input.value), claimed: true });
}

export const toolKind: StepKindModule<'tool'> = {
  name: 'tool',
  label: 'tool',
  summary: 'runs a tool',

  check(step, index, context) {
    const tool = context.catalog.tool(step.tool);
    if (!tool) context.add(['steps', index, 'tool'], `unknown tool ${step.tool} (known: ${context.catalog.toolNames().join(', ')})`);
    refuseFields(step, index, context, 'tool', ['version']);
    if (tool) for (const problem of literalProblems(tool, step.input)) context.add(['steps', index, 'input', ...problem.path], problem.message);
  },

  outputSchema(step, catalog) {
    const tool = catalog.tool(step.tool);
    return tool ? toolOutputSchema(tool) : undefined;
  },

  compile(step, { catalog, overrides }) {
    const tool = toolOf(step, catalog);
    return {
      kind: 'tool',
      tool: tool.name,
      options: {
        retry: overrides.retry ?? step.retry ?? tool.retry,
        timeout_ms: overrides.timeout_ms ?? step.timeout_ms ?? tool.timeout_ms,
        ...(overrides.priority ? { priority: overrides.priority } : {}),
      },
      // A service's own concurrency and rate limit hold every step that calls it.
      ...(tool.limits && tool.limits.length > 0 ? { limits: [...tool.limits] } : {}),
    };
  },

  jobTool: (step) => step.tool,

  // Held back by a limit per key, it has no job until its turn comes.
  waitsWithoutJob: (status, reason) => status === 'waiting' && (reason === 'concurrency' || reason === 'rate_limit'),

  ready,

  report(decider, step, state, report) {
    if (report.type === 'circuit') return circuitReport(decider, step, state, report.open);
    if (report.type === 'withdrawn') return withdrawn(decider, step, state, report.error, true);
    if (report.type === 'lost') return report.item === undefined && lostReport(decider, step, state);
    if (report.type !== 'result' || report.item !== undefined) return false;
    if (state.status !== 'queued' && state.status !== 'running') return false;
    decider.setStep(step, {
      status: report.status,
      output: report.output ?? null,
      error: report.error ?? null,
      attempts: Math.max(state.attempts, report.attempt),
      // A step claimed when it was made ready started, really, when its first delivery began.
      started_at: (report.attempt === 1 ? report.startedAt : (state.startedAt ?? report.startedAt)).toISOString(),
      finished_at: report.finishedAt.toISOString(),
    });
    if (report.status === 'failed') deadLetter(decider, step, report.stepId, report);
    // A step of a task that ended already (it was running when a sibling failed it) is recorded, and counts for nothing.
    if (!decider.active || report.status === 'completed') return true;
    if (report.status === 'failed' && step.onFailure === 'continue') return true;
    const error = report.error ?? { name: report.status === 'cancelled' ? 'Cancelled' : 'Error', message: `step ${report.status}` };
    decider.failTask(stepFailure(step.id, error));
    return true;
  },

  failed(decider, step, state, error) {
    // A step that failed without running (its condition, its input) is a dead letter too:
    // replaying it resumes the task.
    if (state.attempts !== 0) return;
    decider.decision.deadLetters.push({
      taskId: decider.task.id,
      createdAt: decider.task.createdAt,
      stepId: step.id,
      run: decider.task.run,
      tool: step.tool,
      input: null,
      error: capErrorRecord(error),
      attempts: 0,
    });
  },

  settle(decider, step, state, to) {
    const job = { taskId: decider.task.id, run: decider.task.run, stepId: step.id, tool: step.tool };
    if (state.status === 'running') {
      // Running: it finishes and is recorded; waiting out a retry's backoff, it stops here.
      decider.decision.dropJobs.push({ ...job, running: true });
      return;
    }
    if (state.status === 'queued') decider.decision.dropJobs.push(job);
    endUnstarted(decider, step, state, to);
  },

  outstanding(decider, step, state) {
    if ((state.status === 'queued' || state.status === 'running') && state.input !== undefined)
      decider.decision.jobs.push(readyJob(decider, step, state.input));
  },

  admitted(decider, step, state) {
    if (!decider.live(step) || !waitsForTurn(state.status, state.reason)) return false;
    ready(decider, step);
    return true;
  },
};

/** The tool a checked definition's tool step names. */
function toolOf(step: KindStep<'tool'>, catalog: Catalog): ToolSpec {
  const tool = catalog.tool(step.tool);
  if (!tool) throw new Error(`step ${step.id} names unknown tool ${step.tool} (the definition was not checked)`);
  return tool;
}

/** A step held back by its service's open circuit waits; let through, it is queued again (its job is still there). */
function circuitReport(decider: Decider, step: ToolStep, state: StepState, open: boolean): boolean {
  if (!decider.live(step)) return false;
  if (open && (state.status === 'queued' || state.status === 'running')) {
    decider.setStep(step, { status: 'waiting', reason: 'circuit_open' });
    return true;
  }
  if (!open && state.status === 'waiting' && state.reason === 'circuit_open') {
    decider.setStep(step, { status: 'queued' });
    return true;
  }
  return false;
}

/**
 * A step whose tool is gone for good fails now, instead of failing later as an unknown tool; its
 * job goes (a running one finishes, refused). `job`: whether the step has a job of its own (a
 * map's items are swept when it fails).
 */
export function withdrawn(decider: Decider, step: ToolStep, state: StepState, error: ErrorRecord, job: boolean): boolean {
  if (!decider.active) return false;
  if (state.status !== 'pending' && state.status !== 'queued' && state.status !== 'waiting' && state.status !== 'running') return false;
  if (job && state.status !== 'pending')
    decider.decision.dropJobs.push({
      taskId: decider.task.id,
      run: decider.task.run,
      stepId: step.id,
      tool: step.tool,
      ...(state.status === 'running' ? { running: true } : {}),
    });
  decider.fail(step, error);
  return true;
}

/** The step's job went missing (see Report 'lost'): queued again with its job made again, or cancelled if its task ended. Needs its input loaded. */
function lostReport(decider: Decider, step: ToolStep, state: StepState): boolean {
  if (state.run !== decider.task.run || (state.status !== 'queued' && state.status !== 'running')) return false;
  if (!decider.live(step)) {
    decider.setStep(step, { status: 'cancelled', finished_at: decider.now.toISOString() });
    return true;
  }
  if (state.input === undefined) throw new Error(`step ${step.id} of task ${decider.task.id}: its input was not loaded`);
  decider.setStep(step, { status: 'queued', queued_at: decider.now.toISOString() });
  decider.decision.jobs.push(readyJob(decider, step, state.input));
  return true;
}

/** A dead letter: a step (or map item) that failed for good, with what it was given. */
export function deadLetter(decider: Decider, step: ToolStep, stepId: string, report: Extract<Report, { type: 'result' }>): void {
  decider.decision.deadLetters.push({
    taskId: decider.task.id,
    createdAt: decider.task.createdAt,
    stepId,
    run: decider.task.run,
    tool: step.tool,
    input: report.input ?? null,
    error: capErrorRecord(report.error ?? { name: 'Error', message: 'step failed' }),
    attempts: report.attempt,
  });
}

/** The job of a ready tool step: its input, and what its direct dependencies ended with (small outputs inline). */
export function readyJob(decider: Decider, step: ToolStep, input: unknown, item?: number): ReadyStep {
  const dependencies: Record<string, DependencyResult> = {};
  if (item === undefined) {
    for (const dep of step.dependsOn) {
      const found = decider.state(dep);
      if (found.status !== 'completed' && found.status !== 'failed' && found.status !== 'skipped') continue;
      // Undefined: too large to have been loaded with the task, so too large to travel inline.
      const output = found.output;
      const stored = output === undefined || (output !== null && jsonSize(output, decider.limits.JOB_INLINE_OUTPUT_MAX_BYTES).over);
      dependencies[dep] = {
        status: found.status,
        ...(stored ? { output_stored_in: 'postgresql' as const } : output !== null ? { output } : {}),
        ...(found.error ? { error: capErrorRecord({ name: found.error.name, message: found.error.message }) } : {}),
      };
    }
  }
  return {
    taskId: decider.task.id,
    run: decider.task.run,
    stepId: step.id,
    ...(item !== undefined ? { item } : {}),
    tool: step.tool,
    input,
    retry: step.options.retry,
    timeoutMs: step.options.timeout_ms,
    dependencies,
    ...(step.options.priority ? { priority: step.options.priority } : {}),
    ...(decider.task.owner ? { owner: decider.task.owner } : {}),
  };
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
