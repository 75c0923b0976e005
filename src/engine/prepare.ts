import { stepsReadBy } from './condition.js';
import type { Plan, PlanStep, PreparedPlan } from './plan.js';
import { readsOf, templatesOf } from './registry.js';
import { findReferences } from './templates.js';

/** The steps templates name; undefined when a computed value may read any step (it uses `steps` as a whole). */
function stepsNamedIn(value: unknown): Set<string> | undefined {
  const ids = new Set<string>();
  for (const { reference } of findReferences(value)) {
    if (reference?.kind === 'steps') ids.add(reference.step);
    else if (reference?.kind === 'expression') {
      const read = stepsReadBy(reference.expression);
      if (!read) return undefined;
      for (const id of read) ids.add(id);
    }
  }
  return ids;
}

/**
 * Works out a plan's lookups (the plan must be acyclic: definitions are checked when stored).
 * What a step reads when it becomes ready is what its kind and its modifiers say
 * (src/engine/registry.ts): the steps its templates name, its dependencies, and for a `when`
 * every ancestor.
 */
export function prepare(plan: Plan): PreparedPlan {
  const byId = new Map(plan.steps.map((step) => [step.id, step]));
  const dependents = new Map<string, string[]>(plan.steps.map((step) => [step.id, []]));
  for (const step of plan.steps) for (const dep of step.dependsOn) dependents.get(dep)?.push(step.id);
  const order: PlanStep[] = [];
  const ancestors = new Map<string, Set<string>>();
  const visit = (step: PlanStep) => {
    if (ancestors.has(step.id)) return;
    const set = new Set<string>();
    ancestors.set(step.id, set);
    for (const dep of step.dependsOn) {
      const parent = byId.get(dep);
      if (!parent) continue;
      visit(parent);
      set.add(dep);
      for (const ancestor of ancestors.get(dep)!) set.add(ancestor);
    }
    order.push(step);
  };
  for (const step of plan.steps) visit(step);
  // An exit step reads every main step (it runs once they have all ended), beyond the exit steps it depends on.
  const main = plan.steps.filter((step) => !step.onExit && step.compensationOf === undefined).map((step) => step.id);
  for (const step of plan.steps) if (step.onExit) for (const id of main) ancestors.get(step.id)!.add(id);
  const reads = new Map(
    plan.steps.map((step) => {
      // A one-tool task's input is its params as sent, never templates (decide.ts resolves none),
      // and may be large: not walked on every submission and claim.
      const ids = plan.single ? new Set<string>() : (stepsNamedIn(templatesOf(step)) ?? new Set(ancestors.get(step.id)));
      for (const dep of step.dependsOn) ids.add(dep);
      for (const id of readsOf(step, ancestors.get(step.id)!)) ids.add(id);
      return [step.id, ids] as const;
    }),
  );
  return {
    plan,
    byId,
    order,
    dependents,
    ancestors,
    reads,
    ...(plan.output !== undefined && !plan.single ? outputReads(plan.output) : {}),
    compensations: order.filter((step) => step.compensationOf !== undefined),
    exits: order.filter((step) => step.onExit),
  };
}

/** The steps the output template reads; none said (every step) when a computed value may read any. */
function outputReads(output: unknown): { outputReads?: Set<string> } {
  const ids = stepsNamedIn(output);
  return ids ? { outputReads: ids } : {};
}
