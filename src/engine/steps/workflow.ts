import { LimitExceededError, toErrorRecord } from '../../lib/errors.js';
import { hasTemplates } from '../templates.js';
import { DEFAULT_RETRY_FOR_KINDS } from '../types.js';
import { parameterType } from '../workflow-definition.js';
import { refuseFields, type StepKindModule } from './kind.js';

/**
 * A sub-workflow step runs a stored workflow as a child task (with parent_task_id, in /tasks
 * like any task) and awaits it: once ready, its input becomes the child's params and the child
 * starts; the child's end reports back, and its result is the step's output, its failure the
 * step's failure (subject to on_failure). The child keeps its id across the parent's runs: a
 * retried parent resumes the child rather than starting another. Nesting is bounded by
 * SUBWORKFLOW_MAX_DEPTH; cycles between workflows are refused when they are stored.
 */
export const workflowStep: StepKindModule = {
  check(step, index, context) {
    refuseFields(step, index, context, 'sub-workflow', ['for_each', 'max_parallel', 'retry', 'timeout_ms', 'concurrency', 'rate_limit']);
    // The definition being stored, calling itself: a cycle, which check.ts reports with its path.
    if (step.workflow === context.definition.name && step.version === undefined) return;
    const child = context.catalog.workflow(step.workflow!, step.version);
    if (!child) {
      const known = context.catalog.workflow(step.workflow!);
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

  outputSchema() {
    // What a child returns is its own output template over its own steps: not known here.
    return undefined;
  },

  compile(step, { catalog, overrides }) {
    const child = catalog.workflow(step.workflow!, step.version)!;
    return {
      kind: 'workflow',
      workflow: { name: child.name, version: child.version },
      options: { ...DEFAULT_RETRY_FOR_KINDS, ...(overrides.priority ? { priority: overrides.priority } : {}) },
    };
  },

  ready(run, step, state) {
    const depth = run.task.depth + 1;
    if (depth > run.limits.SUBWORKFLOW_MAX_DEPTH) {
      return run.fail(
        step,
        toErrorRecord(
          new LimitExceededError('SubWorkflowTooDeep', `sub-workflows nest deeper than ${run.limits.SUBWORKFLOW_MAX_DEPTH} (SUBWORKFLOW_MAX_DEPTH)`, {
            limit: run.limits.SUBWORKFLOW_MAX_DEPTH,
            setting: 'SUBWORKFLOW_MAX_DEPTH',
          }),
        ),
      );
    }
    const params = run.resolve(step, step.input);
    if (!params.ok) {
      if ('error' in params) run.fail(step, params.error);
      return;
    }
    const existing = state.childTaskId !== null;
    const childTaskId = state.childTaskId ?? run.newTaskId(step.workflow!.name);
    run.setStep(step, { status: 'running', input: params.value, child_task_id: childTaskId, started_at: run.now.toISOString(), run: run.task.run });
    run.decision.children.push({
      parentTaskId: run.task.id,
      parentCreatedAt: run.task.createdAt,
      stepId: step.id,
      childTaskId,
      existing,
      workflow: step.workflow!,
      params: params.value as Record<string, unknown>,
      depth,
      owner: run.task.owner,
      ...(step.options.priority ? { priority: step.options.priority } : {}),
    });
  },

  report(run, step, state, report) {
    if (report.type !== 'child' || state.status !== 'running' || state.childTaskId !== report.childTaskId) return false;
    if (report.status === 'completed') {
      run.complete(step, report.output ?? null);
      return true;
    }
    const cause = report.error ?? { name: 'Cancelled', message: 'task was cancelled' };
    run.fail(step, {
      name: report.status === 'cancelled' ? 'SubWorkflowCancelled' : 'SubWorkflowFailed',
      message: `child task ${report.childTaskId} ${report.status}: ${cause.message}`,
      retryable: false,
      details: { task_id: report.childTaskId, error: cause },
    });
    return true;
  },
};
