import { ValidationError, zodProblems } from '../lib/errors.js';
import type { Catalog } from './catalog.js';
import { resolveLimits } from './key-limits.js';
import { withExitSteps } from './modifiers/on-exit.js';
import type { Plan, PlanStep, TaskOverrides } from './plan.js';
import { addedSteps, compileStep } from './registry.js';
import { paramsSchema, type WorkflowDefinition } from './workflow-definition.js';

/**
 * Turns a stored (already checked) workflow version and a run's params into the task's plan:
 * one step per definition step, each with every choice made by its kind and its modifiers
 * (retry and timeout from the task's override, then the step's own setting, then the tool's
 * default; a sub-workflow's version pinned to the current one when the definition names none),
 * then the steps modifiers add (compensations), so later versions of any definition never
 * change a task that already started. Params that do not fit the workflow's
 * parameters are a 400 with one problem per field, at `paramsField`.
 */
export function compileWorkflow(
  stored: WorkflowDefinition,
  rawParams: Record<string, unknown>,
  overrides: TaskOverrides,
  catalog: Catalog,
  paramsField = 'params',
): { params: Record<string, unknown>; plan: Plan } {
  // The exit handler's steps are steps of the plan, after the definition's own (they carry onExit).
  const definition = withExitSteps(stored);
  const parsed = paramsSchema(definition.parameters).safeParse(rawParams);
  if (!parsed.success) {
    throw new ValidationError(`params do not fit the parameters of workflow '${definition.name}'`, zodProblems(parsed.error, [paramsField]), 'invalid_params');
  }
  const params = parsed.data;
  // Keys are made now: a param that cannot make one is the client's 400, not a failed task.
  const limits = resolveLimits(definition, params, 'workflow');
  return {
    params,
    plan: {
      ...(definition.output !== undefined ? { output: definition.output } : {}),
      ...(limits ? { limits } : {}),
      steps: [
        ...definition.steps.map((step, index): PlanStep => {
          // The step's own limits, then those its kind brings (a service's hold every step that calls it).
          const { limits: brought = [], ...fields } = compileStep(step, { catalog, overrides });
          const stepLimits = [...(resolveLimits(step, params, `steps[${index}]`) ?? []), ...brought];
          return {
            id: step.id,
            ...fields,
            dependsOn: step.depends_on,
            onFailure: step.on_failure,
            input: step.input,
            ...(stepLimits.length > 0 ? { limits: stepLimits } : {}),
          };
        }),
        ...addedSteps(definition, { catalog, overrides }),
      ],
    },
  };
}
