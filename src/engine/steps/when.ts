import { ConditionError, toErrorRecord } from '../../lib/errors.js';
import { evaluateCondition } from '../condition.js';
import type { PlanStep } from '../plan.js';
import type { Run } from './kind.js';

/**
 * `when`: a CEL condition decided once the step's dependencies are done, over `params` and
 * `steps.<ancestor>.output` / `.status` / `.error`. True: the step goes on as its kind says;
 * false: it is skipped (reason `condition`) and never runs; an error evaluating it fails the
 * step (ConditionError). Undefined: an ancestor's output is not loaded yet.
 */
export function decideWhen(run: Run, step: PlanStep): boolean | undefined {
  const steps: Record<string, { status: string; output?: unknown; error?: unknown }> = {};
  let missing = false;
  for (const id of run.task.plan.ancestors.get(step.id) ?? []) {
    const state = run.state(id);
    if (state.output === undefined) {
      run.need('output', id);
      missing = true;
      continue;
    }
    steps[id] = { status: state.status, output: state.output, ...(state.error ? { error: state.error } : {}) };
  }
  if (missing) return undefined;
  try {
    return evaluateCondition(step.when!, { params: run.task.params, steps });
  } catch (error) {
    const failure = error instanceof ConditionError ? error : new ConditionError(`when: ${(error as Error).message}`);
    run.fail(step, { ...toErrorRecord(failure), retryable: false });
    return undefined;
  }
}
