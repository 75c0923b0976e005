import { type ErrorRecord, LimitExceededError, toErrorRecord } from '../../lib/errors.js';
import type { PlanStep } from '../plan.js';
import type { Report } from '../state.js';
import { hasTemplates } from '../templates.js';
import { DEFAULT_RETRY_FOR_KINDS } from '../types.js';
import { parameterType, type WorkflowDefinition } from '../workflow-definition.js';
import { type CheckContext, type Decider, endUnstarted, refuseFields, type StepKindModule } from './kind.js';

/**
 * A sub-workflow step runs a stored workflow as a child task (with parent_task_id, in /tasks
 * like any task) and awaits it: once ready, its input becomes the child's params and the child
 * starts; the child's end reports back, and its result is the step's output, its failure the
 * step's failure (subject to on_failure). The child keeps its id across the parent's runs: a
 * retried parent resumes the child rather than starting another. Nesting is bounded by
 * SUBWORKFLOW_MAX_DEPTH; cycles between workflows are refused when they are stored.
 */

declare module '../plan.js' {
  interface StepKinds {
    /** The workflow and the version the child task runs. */
    workflow: { workflow: { name: string; version: number } };
  }
}

export type SubWorkflowStep = PlanStep<'workflow'>;

/** The child task the step starts, or resumes (`existing`) when its task was retried or its child went missing. */
export function childStart(decider: Decider, step: SubWorkflowStep, childTaskId: string, existing: boolean, params: Record<string, unknown>) {
  decider.decision.children.push({
    parentTaskId: decider.task.id,
    parentCreatedAt: decider.task.createdAt,
    stepId: step.id,
    childTaskId,
    existing,
    workflow: step.workflow,
    params,
    depth: decider.task.depth + 1,
    owner: decider.task.owner,
    ...(step.options.priority ? { priority: step.options.priority } : {}),
  });
}

export const workflowKind: StepKindModule<'workflow'> = {
  name: 'workflow',
  label: 'sub-workflow',
  summary: 'runs a sub-workflow as a child task',

  check(step, index, context) {
    refuseFields(step, index, context, 'sub-workflow', ['retry', 'timeout_ms', 'concurrency', 'rate_limit']);
    // The definition being stored, calling itself: a cycle, which checkDefinition reports with its path.
    if (step.workflow === context.definition.name && step.version === undefined) return;
    const child = context.catalog.workflow(step.workflow, step.version);
    if (!child) {
      const known = context.catalog.workflow(step.workflow);
      if (step.version !== undefined && known) context.add(['steps', index, 'version'], `workflow ${step.workflow} has no version ${step.version}`);
      else context.add(['steps', index, 'workflow'], `no active workflow is named ${step.workflow}`);
      return;
    }
    // The input is the child's params: declared names, required ones present, literal values of the declared type.
    const parameters = new Map(child.definition.parameters.map((parameter) => [parameter.name, parameter]));
    for (const [name, value] of Object.entries(step.input)) {
      const parameter = parameters.get(name);
      if (!parameter) {
        context.add(['steps', index, 'input', name], `workflow ${child.name} v${child.version} has no parameter ${name}`);
        continue;
      }
      const templated = typeof value === 'string' && hasTemplates(value);
      if (!templated && !parameterType(parameter.type).safeParse(value).success) {
        context.add(['steps', index, 'input', name], `workflow ${child.name}'s parameter ${name} is of type ${parameter.type}`);
      }
    }
    for (const parameter of child.definition.parameters) {
      if (parameter.required && parameter.default === undefined && !(parameter.name in step.input)) {
        context.add(['steps', index, 'input'], `workflow ${child.name} v${child.version} needs parameter ${parameter.name}`);
      }
    }
  },

  checkElsewhere(step, index, context) {
    if (step.version !== undefined && step.workflow === undefined) context.add(['steps', index, 'version'], 'version goes with workflow');
  },

  checkDefinition: checkSubWorkflows,

  // Its child's root hangs under its run's root, but only once the child is made (the policy may hold it back first).
  waitsWithoutJob: (status) => status === 'running',

  outputSchema() {
    // What a child returns is its own output template over its own steps: not known here.
    return undefined;
  },

  compile(step, { catalog, overrides }) {
    const child = catalog.workflow(step.workflow, step.version);
    if (!child) throw new Error(`step ${step.id} names unknown workflow ${step.workflow} (the definition was not checked)`);
    return {
      kind: 'workflow',
      workflow: { name: child.name, version: child.version },
      options: { ...DEFAULT_RETRY_FOR_KINDS, ...(overrides.priority ? { priority: overrides.priority } : {}) },
    };
  },

  ready(decider, step, state) {
    if (tooDeep(decider, step)) return;
    const params = decider.resolve(step, step.input);
    if (!params.ok) {
      if ('error' in params) decider.fail(step, params.error);
      return;
    }
    const existing = state.childTaskId !== null;
    const childTaskId = state.childTaskId ?? decider.newTaskId(step.workflow.name);
    decider.setStep(step, { status: 'running', input: params.value, child_task_id: childTaskId, started_at: decider.now.toISOString(), run: decider.task.run });
    childStart(decider, step, childTaskId, existing, params.value as Record<string, unknown>);
  },

  report(decider, step, state, report) {
    if (report.type !== 'child' || state.status !== 'running' || state.childTaskId !== report.childTaskId) return false;
    if (report.status === 'completed') {
      decider.complete(step, report.output ?? null);
      return true;
    }
    // A child never made leaves no id behind: a retry makes a new one.
    if (report.unstarted) decider.setStep(step, { child_task_id: null });
    decider.fail(step, childFailure(report));
    return true;
  },

  settle(decider, step, state, to) {
    if (state.status !== 'running') return endUnstarted(decider, step, state, to);
    // Its child ends with it.
    decider.setStep(step, { status: 'cancelled', finished_at: decider.now.toISOString() });
    if (state.childTaskId) cancelChild(decider, state.childTaskId);
  },

  outstanding(decider, step, state) {
    if (state.status === 'running' && state.childTaskId) childStart(decider, step, state.childTaskId, true, (state.input ?? {}) as Record<string, unknown>);
  },
};

/**
 * A child task its step no longer waits for is cancelled; one whose start is in this very
 * decision is not started instead (cancelled at once, it might not exist yet, and start after).
 */
export function cancelChild(decider: Decider, childTaskId: string): void {
  const starts = decider.decision.children;
  const index = starts.findIndex((start) => start.childTaskId === childTaskId && !start.existing);
  if (index >= 0) starts.splice(index, 1);
  else decider.decision.cancelChildren.push(childTaskId);
}

/** A child that failed or was cancelled, as its step's error: SubWorkflowFailed or SubWorkflowCancelled, with the child's own error. */
export function childFailure(report: Extract<Report, { type: 'child' }>): ErrorRecord {
  const cause = report.error ?? { name: 'Cancelled', message: 'task was cancelled' };
  if (report.unstarted) {
    return { name: 'SubWorkflowFailed', message: `the child task could not start: ${cause.message}`, retryable: false, details: { error: cause } };
  }
  return {
    name: report.status === 'cancelled' ? 'SubWorkflowCancelled' : 'SubWorkflowFailed',
    message: `child task ${report.childTaskId} ${report.status}: ${cause.message}`,
    retryable: false,
    details: { task_id: report.childTaskId, error: cause },
  };
}

/** Fails the step when its child would nest deeper than SUBWORKFLOW_MAX_DEPTH (the stored definitions allow it, a long chain of parents may not); true then. */
export function tooDeep(decider: Decider, step: SubWorkflowStep): boolean {
  if (decider.task.depth + 1 <= decider.limits.SUBWORKFLOW_MAX_DEPTH) return false;
  decider.fail(
    step,
    toErrorRecord(
      new LimitExceededError('SubWorkflowTooDeep', `sub-workflows nest deeper than ${decider.limits.SUBWORKFLOW_MAX_DEPTH} (SUBWORKFLOW_MAX_DEPTH)`, {
        limit: decider.limits.SUBWORKFLOW_MAX_DEPTH,
        setting: 'SUBWORKFLOW_MAX_DEPTH',
      }),
    ),
  );
  return true;
}

/** The workflows a definition's sub-workflow steps name (a version, or the current one). */
export function referencedWorkflows(definition: Pick<WorkflowDefinition, 'steps' | 'on_exit'>): { name: string; version?: number }[] {
  return [...definition.steps, ...(definition.on_exit ?? [])].flatMap((step) =>
    step.workflow ? [{ name: step.workflow, ...(step.version !== undefined ? { version: step.version } : {}) }] : [],
  );
}

/**
 * Sub-workflows may not call back into the workflow being stored (directly or through others),
 * nor nest deeper than SUBWORKFLOW_MAX_DEPTH; each problem names the path. A step that names
 * the stored workflow without a version names this very definition.
 */
function checkSubWorkflows(definition: WorkflowDefinition, { catalog, limits, add }: CheckContext): void {
  const maxDepth = limits.SUBWORKFLOW_MAX_DEPTH;
  const resolve = (name: string, version?: number): WorkflowDefinition | undefined =>
    name === definition.name && version === undefined ? definition : catalog.workflow(name, version)?.definition;
  /** The deepest chain of sub-workflows below `node`, or a cycle back to the stored definition. */
  const deepest = (node: WorkflowDefinition, path: string[], seen: Set<WorkflowDefinition>): { depth: number; path: string[]; cycle?: boolean } => {
    let best = { depth: 0, path };
    for (const step of node.steps) {
      if (!step.workflow) continue;
      const child = resolve(step.workflow, step.version);
      if (!child) continue;
      const childPath = [...path, step.version ? `${step.workflow} v${step.version}` : step.workflow];
      if (child === definition) return { depth: Number.POSITIVE_INFINITY, path: childPath, cycle: true };
      if (seen.has(child) || childPath.length > maxDepth + 2) continue;
      const below = deepest(child, childPath, new Set([...seen, child]));
      if (below.cycle) return below;
      if (below.depth + 1 > best.depth) best = { depth: below.depth + 1, path: below.path };
    }
    return best;
  };
  definition.steps.forEach((step, index) => {
    if (!step.workflow) return;
    const child = resolve(step.workflow, step.version);
    if (!child) return;
    const start = [definition.name, step.version ? `${step.workflow} v${step.version}` : step.workflow];
    if (child === definition) {
      add(['steps', index, 'workflow'], `workflow cycle: ${start.join(' -> ')}`);
      return;
    }
    const below = deepest(child, start, new Set([child]));
    if (below.cycle) add(['steps', index, 'workflow'], `workflow cycle: ${below.path.join(' -> ')}`);
    else if (below.depth + 1 > maxDepth) {
      add(['steps', index, 'workflow'], `sub-workflows nest ${below.depth + 1} deep (${below.path.join(' -> ')}); at most ${maxDepth} (SUBWORKFLOW_MAX_DEPTH)`);
    }
  });
}
