import type { AnyTool, RetryPolicy } from '../tools/tool.js';
import type { ReadyStep } from '../queue/task-queues.js';
import { resolveTemplates } from '../workflows/templates.js';
import { secretValues } from '../logger.js';

/** How one step runs: stored with the step, so a running task never depends on a later definition. */
export interface StepOptions {
  retry: RetryPolicy;
  timeout_ms: number;
  /** BullMQ priority: 1 is the highest. */
  priority?: number;
}

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
export function planToolTask(tool: AnyTool, params: Record<string, unknown>, overrides: RunOverrides = {}): TaskPlan {
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

/** Fills in `dependents` and the input of every step that has no dependencies. */
export function finishPlan(plan: TaskPlan): TaskPlan {
  const dependents = new Map<string, string[]>();
  for (const step of plan.steps) {
    for (const dep of step.dependsOn) dependents.set(dep, [...(dependents.get(dep) ?? []), step.id]);
  }
  return {
    ...plan,
    steps: plan.steps.map((step) => ({
      ...step,
      dependents: dependents.get(step.id) ?? [],
      input:
        step.dependsOn.length > 0
          ? null
          : step.inputTemplate === null
            ? step.input
            : resolveTemplates(step.inputTemplate, { params: plan.params, steps: {} }),
    })),
  };
}

/** The steps that start with the run, ready to become jobs. */
export function initialSteps(plan: TaskPlan, delayMs = 0): ReadyStep[] {
  const secrets = secretValues(plan.params);
  return plan.steps
    .filter((step) => step.dependsOn.length === 0)
    .map((step) => ({
      stepId: step.id,
      tool: step.tool,
      input: step.input,
      retry: step.options.retry,
      timeoutMs: step.options.timeout_ms,
      dependencies: {},
      secrets,
      ...(step.options.priority ? { priority: step.options.priority } : {}),
      ...(delayMs > 0 ? { delayMs } : {}),
    }));
}
