import { ValidationError } from '../errors.js';
import { DEFAULT_LIMITS, jsonSize, type Limits } from '../limits.js';
import { ResolvedSizeError, resolveTemplates } from './templates.js';
import type { ReadyStep, RetryPolicy, StepOptions } from './types.js';

export interface StepPlan {
  id: string;
  tool: string;
  dependsOn: string[];
  dependents: string[];
  onFailure: 'fail' | 'continue';
  /** Workflow steps: the definition's input, templates unresolved. Null when `input` is literal. */
  inputTemplate: unknown;
  /** Resolved input of a step that can start at once; null for steps that wait for others. */
  input: unknown;
  options: StepOptions;
}

/** Everything needed to store a task and start it. */
export interface TaskPlan {
  taskType: string;
  workflow?: { name: string; version: number; outputTemplate: unknown };
  params: Record<string, unknown>;
  steps: StepPlan[];
}

/** Per-task overrides of the tool or workflow defaults. */
export interface RunOverrides {
  retry?: RetryPolicy;
  timeout_ms?: number;
  priority?: number;
}

/** A one-tool task: a run with one step named after the tool; params are its literal input. */
export function planToolTask(
  tool: { name: string; retry: RetryPolicy; timeout_ms: number },
  params: Record<string, unknown>,
  overrides: RunOverrides = {},
): TaskPlan {
  return {
    taskType: tool.name,
    params,
    steps: [
      {
        id: tool.name,
        tool: tool.name,
        dependsOn: [],
        dependents: [],
        onFailure: 'fail',
        inputTemplate: null,
        input: params,
        options: {
          retry: overrides.retry ?? tool.retry,
          timeout_ms: overrides.timeout_ms ?? tool.timeout_ms,
          ...(overrides.priority ? { priority: overrides.priority } : {}),
        },
      },
    ],
  };
}

/**
 * Fills in `dependents` and the input of every step that has no dependencies. An input larger
 * than STEP_INPUT_MAX_BYTES is a 400 now, while the client can still hear it.
 * `paramsField`: where the params sit in the request body, for the error's path.
 */
export function finishPlan(plan: TaskPlan, limits: Pick<Limits, 'STEP_INPUT_MAX_BYTES'> = DEFAULT_LIMITS, paramsField = 'params'): TaskPlan {
  const dependents = new Map<string, string[]>();
  for (const step of plan.steps) {
    for (const dep of step.dependsOn) dependents.set(dep, [...(dependents.get(dep) ?? []), step.id]);
  }
  return {
    ...plan,
    steps: plan.steps.map((step) => ({
      ...step,
      dependents: dependents.get(step.id) ?? [],
      input: step.dependsOn.length > 0 ? null : rootInput(plan, step, limits.STEP_INPUT_MAX_BYTES, paramsField),
    })),
  };
}

function rootInput(plan: TaskPlan, step: StepPlan, maxBytes: number, paramsField: string): unknown {
  try {
    if (step.inputTemplate !== null) return resolveTemplates(step.inputTemplate, { params: plan.params, steps: {} }, { maxBytes });
    if (jsonSize(step.input, maxBytes).over) throw new ResolvedSizeError(maxBytes, '');
    return step.input;
  } catch (error) {
    if (!(error instanceof ResolvedSizeError)) throw error;
    const what = plan.workflow ? `the input of step '${step.id}'` : 'the input';
    const where = error.at ? ` (at input${error.at.startsWith('[') ? '' : '.'}${error.at})` : '';
    throw new ValidationError(
      `params make ${what} larger than ${maxBytes} bytes`,
      [
        {
          path: paramsField,
          message: `${what} would be larger than ${maxBytes} bytes of JSON${plan.workflow ? ' once its templates are resolved' : ''}${where}: the limit is STEP_INPUT_MAX_BYTES`,
        },
      ],
      'invalid_params',
    );
  }
}

/** The steps that start with the run, ready to become jobs. */
export function initialSteps(plan: TaskPlan, delayMs = 0): ReadyStep[] {
  return plan.steps
    .filter((step) => step.dependsOn.length === 0)
    .map((step) => ({
      stepId: step.id,
      tool: step.tool,
      input: step.input,
      retry: step.options.retry,
      timeoutMs: step.options.timeout_ms,
      dependencies: {},
      ...(step.options.priority ? { priority: step.options.priority } : {}),
      ...(delayMs > 0 ? { delayMs } : {}),
    }));
}
