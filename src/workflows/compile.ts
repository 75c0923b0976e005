import type { RunOverrides, TaskPlan } from '../engine/plan.js';
import { paramsSchema, type WorkflowDefinition } from '../engine/workflow-definition.js';
import { ValidationError } from '../errors.js';
import { zodProblems } from '../lib/problems.js';
import type { ToolRegistry } from '../tools/tool.js';

/**
 * Turns a stored (already checked) workflow version and a run's params into a task plan:
 * one step per definition step, each carrying its own options, so later versions of the
 * definition never change a task that already started.
 *
 * Retry and timeout precedence: the task's override (POST body), then the step's own setting,
 * then the tool's default.
 */
export function compileWorkflow(
  definition: WorkflowDefinition,
  version: number,
  rawParams: Record<string, unknown>,
  overrides: RunOverrides,
  registry: ToolRegistry,
  paramsField = 'params',
): TaskPlan {
  const parsed = paramsSchema(definition.parameters).safeParse(rawParams);
  if (!parsed.success) {
    throw new ValidationError(`params do not fit the parameters of workflow '${definition.name}'`, zodProblems(parsed.error, [paramsField]), 'invalid_params');
  }
  return {
    taskType: definition.name,
    workflow: { name: definition.name, version, outputTemplate: definition.output ?? null },
    params: parsed.data,
    steps: definition.steps.map((step) => {
      const tool = registry.get(step.tool);
      if (!tool) throw new Error(`workflow ${definition.name} v${version} uses unknown tool ${step.tool}`);
      return {
        id: step.id,
        tool: step.tool,
        dependsOn: step.depends_on,
        dependents: [],
        onFailure: step.on_failure,
        inputTemplate: step.input,
        input: null,
        options: {
          retry: overrides.retry ?? step.retry ?? tool.retry,
          timeout_ms: overrides.timeout_ms ?? step.timeout_ms ?? tool.timeout_ms,
          ...(overrides.priority ? { priority: overrides.priority } : {}),
        },
      };
    }),
  };
}
