import type { Catalog } from '../catalog.js';
import { type CheckContext, refuseFields } from '../kinds/kind.js';
import { literalProblems } from '../kinds/tool.js';
import type { PlanStep, TaskOverrides } from '../plan.js';
import { rewriteOwnReferences } from '../templates.js';
import type { WorkflowDefinition, WorkflowStep } from '../workflow-definition.js';
import type { StepModifier } from './modifier.js';

/**
 * Compensation (sagas, docs/tools-and-workers.md "Compensation (sagas)"): a tool step may say what undoes it
 * (`compensate: {tool, input}`). Each becomes a step of the plan of its own, `<id>.compensate`
 * (a dot, which step ids cannot hold, so it never clashes), a tool step that waits for the
 * compensations of the steps below its step, so they run in reverse dependency order. It stays
 * pending while the task runs; when the task fails, the decider (decide.ts) runs the
 * compensations of the steps that completed and ends the task failed once they are done.
 */

declare module '../plan.js' {
  interface StepModifiers {
    /**
     * A compensation: the tool step that undoes this step of the plan. It runs only while its
     * task compensates, after the compensations of the steps below it.
     */
    compensationOf?: string;
  }
}

const SUFFIX = '.compensate';

export function compensationId(stepId: string): string {
  return `${stepId}${SUFFIX}`;
}

/** The step a compensation undoes, from its id; undefined for any other step. */
export function compensationOf(stepId: string): string | undefined {
  return stepId.endsWith(SUFFIX) ? stepId.slice(0, -SUFFIX.length) : undefined;
}

/** A step's compensation input, its `{{input…}}` and `{{output…}}` rewritten (templates.ts rewriteOwnReferences). */
function compensationInput(step: WorkflowStep): ReturnType<typeof rewriteOwnReferences> {
  return rewriteOwnReferences(step.compensate?.input ?? {}, { id: step.id, input: step.input });
}

export const compensate: StepModifier = {
  // Its own check says it is a tool step's (a compensation is a tool step).
  check: checkCompensation,

  // Its input's references are checked as the compensation's: it may name its step and the step's ancestors.
  templatePlaces(step, index) {
    if (!step.compensate) return [];
    const { value, problems } = compensationInput(step);
    return [{ base: `steps[${index}].compensate.input`, value, as: compensationId(step.id), problems }];
  },

  planSteps: (definition, { catalog, overrides }) => compileCompensations(definition, catalog, overrides),

  applies: (step) => step.compensationOf !== undefined,

  around: (inner) => ({
    settle(decider, step, state, to) {
      // A failed task's compensations are its compensator's (decide.ts) to run or skip.
      if (to !== 'skipped') inner.settle(decider, step, state, to);
    },

    report(decider, step, state, report) {
      // Its tool withdrawn, it is left alone: it runs only if its task fails, and is the compensating decider's to end.
      return report.type !== 'withdrawn' && inner.report(decider, step, state, report);
    },
  }),
};

/** The compensation's own rules: a plain tool step (not a map), a known tool, a literal input that fits it. Templates are checked with the others (check.ts). */
function checkCompensation(step: WorkflowStep, index: number, context: CheckContext): void {
  const undo = step.compensate;
  if (!undo) return;
  if (step.tool === undefined) refuseFields(step, index, context, 'non-tool', ['compensate']);
  else if (step.for_each !== undefined)
    context.add(['steps', index, 'compensate'], 'a for_each step cannot be compensated (compensate each item in a step of its own)');
  const tool = context.catalog.tool(undo.tool);
  if (!tool) {
    context.add(['steps', index, 'compensate', 'tool'], `unknown tool ${undo.tool} (known: ${context.catalog.toolNames().join(', ')})`);
    return;
  }
  const { value } = compensationInput(step);
  for (const problem of literalProblems(tool, value as Record<string, unknown>))
    context.add(['steps', index, 'compensate', 'input', ...problem.path], problem.message);
}

/**
 * The plan's compensation steps, after the others. Each waits for the compensations nearest
 * below its step: walking down from the step, a path stops at the first step that has one
 * (that one waits for those further down).
 */
function compileCompensations(definition: WorkflowDefinition, catalog: Catalog, overrides: TaskOverrides): PlanStep[] {
  const dependents = new Map<string, string[]>(definition.steps.map((step) => [step.id, []]));
  for (const step of definition.steps) for (const dep of step.depends_on) dependents.get(dep)?.push(step.id);
  const compensated = new Set(definition.steps.filter((step) => step.compensate).map((step) => step.id));
  const nearestBelow = (id: string): string[] => {
    const found = new Set<string>();
    const seen = new Set<string>();
    const stack = [...(dependents.get(id) ?? [])];
    while (stack.length > 0) {
      const next = stack.pop()!;
      if (seen.has(next)) continue;
      seen.add(next);
      if (compensated.has(next)) found.add(compensationId(next));
      else stack.push(...(dependents.get(next) ?? []));
    }
    return [...found];
  };
  return definition.steps.flatMap((step): PlanStep[] => {
    if (!step.compensate) return [];
    const tool = catalog.tool(step.compensate.tool)!;
    return [
      {
        id: compensationId(step.id),
        kind: 'tool',
        tool: tool.name,
        compensationOf: step.id,
        // The output of the step it undoes is read through the rewritten templates; waiting for its own step is implied.
        dependsOn: nearestBelow(step.id),
        // A compensation that fails does not stop the others: the task ends `compensated: partial`.
        onFailure: 'continue',
        input: compensationInput(step).value,
        options: {
          retry: step.compensate.retry ?? tool.retry,
          timeout_ms: step.compensate.timeout_ms ?? tool.timeout_ms,
          ...(overrides.priority ? { priority: overrides.priority } : {}),
        },
        ...(tool.limits && tool.limits.length > 0 ? { limits: [...tool.limits] } : {}),
      },
    ];
  });
}
