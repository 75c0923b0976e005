import { ConditionError, toErrorRecord } from '../../lib/errors.js';
import { type ConditionData, type ConditionScope, checkCondition, evaluateCondition } from '../condition.js';
import type { Decider, FlowContext } from '../kinds/kind.js';
import type { PlanStep } from '../plan.js';
import type { StepModifier } from './modifier.js';
import { EXIT_TASK_SCHEMA, isExitStep } from './on-exit.js';

/**
 * `when`: a CEL condition decided once the step's dependencies are done, over `params` and
 * `steps.<ancestor>.output` / `.status` / `.error`. True: the step goes on as its kind says;
 * false: it is skipped (reason `condition`) and never runs; an error evaluating it fails the
 * step (ConditionError). It parses and type-checks when the definition is stored, against the
 * parameters' types and the ancestors' output schemas.
 */

declare module '../plan.js' {
  interface StepModifiers {
    /** A CEL condition: false skips the step. */
    when?: string;
  }
}

export const when: StepModifier = {
  checkFlow(step, index, context) {
    if (step.when === undefined) return;
    const scope = { ...ancestorScope(step.id, context), ...(isExitStep(step) ? { vars: { task: EXIT_TASK_SCHEMA } } : {}) };
    for (const message of checkCondition(step.when, scope)) context.add(['steps', index, 'when'], message);
  },

  compile: (step) => (step.when !== undefined ? { when: step.when } : {}),

  applies: (step) => step.when !== undefined,

  // An expression may name any ancestor.
  reads: (step, ancestors) => (step.when !== undefined ? ancestors : []),

  around: (inner) => ({
    ready(decider, step, state) {
      const verdict = decideWhen(decider, step);
      if (verdict === undefined) return;
      if (!verdict) return decider.skip(step, 'condition');
      inner.ready(decider, step, state);
    },
  }),
};

/** What a condition on a step may name when it is stored: the parameters, and its ancestors with their outputs' schemas. */
export function ancestorScope(stepId: string, context: FlowContext): ConditionScope {
  return {
    params: context.parameters,
    steps: Object.fromEntries(
      [...context.ancestors(stepId)].map((id) => {
        const output = context.outputOf(id);
        return [id, output ? { output } : {}];
      }),
    ),
  };
}

/** What a condition on a step sees of its ancestors when it runs; undefined when an output is not loaded yet (the decider asks for it). */
export function ancestorData(decider: Decider, step: PlanStep): ConditionData['steps'] | undefined {
  const steps: ConditionData['steps'] = {};
  let missing = false;
  for (const id of decider.task.plan.ancestors.get(step.id) ?? []) {
    const state = decider.state(id);
    if (state.output === undefined) {
      decider.need('output', id);
      missing = true;
      continue;
    }
    steps[id] = { status: state.status, output: state.output, ...(state.error ? { error: state.error } : {}) };
  }
  return missing ? undefined : steps;
}

/** The condition's verdict; undefined when an ancestor's output is not loaded yet, or the step failed evaluating it. */
function decideWhen(decider: Decider, step: PlanStep): boolean | undefined {
  if (step.when === undefined) return true;
  const steps = ancestorData(decider, step);
  if (!steps) return undefined;
  try {
    // An exit step's `when` may read how the run ended (`task`).
    const task = step.onExit ? decider.exitTask() : undefined;
    return evaluateCondition(step.when, { params: decider.task.params, steps, ...(task ? { vars: { task } } : {}) });
  } catch (error) {
    const failure = error instanceof ConditionError ? error : new ConditionError(`when: ${(error as Error).message}`);
    decider.fail(step, { ...toErrorRecord(failure), retryable: false });
    return undefined;
  }
}
