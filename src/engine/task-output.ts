import { capErrorRecord, type ErrorRecord, ExpressionError, LimitExceededError, toErrorRecord } from '../lib/errors.js';
import { DEFAULT_LIMITS, jsonSize, type Limits } from '../lib/limits.js';
import type { Plan } from './plan.js';
import { ResolvedSizeError, resolveTemplates } from './templates.js';

/** A finished step as the output template sees it. */
export interface FinishedStep {
  id: string;
  status: string;
  output: unknown;
  error: unknown;
}

/** How a task that has nothing left to run ends: completed with its result, or failed when that result is over TASK_RESULT_MAX_BYTES. */
export type TaskEnding = { status: 'completed'; result: unknown } | { status: 'failed'; error: ErrorRecord };

/**
 * A task's result: its plan's output template resolved over its params and steps; without a
 * template, every completed step's output by step id (a one-tool task: its step's output).
 */
export function taskEnding(
  task: { params: Record<string, unknown>; plan: Pick<Plan, 'output' | 'single'> },
  steps: readonly FinishedStep[],
  limits: Pick<Limits, 'TASK_RESULT_MAX_BYTES'> = DEFAULT_LIMITS,
): TaskEnding {
  const maxBytes = limits.TASK_RESULT_MAX_BYTES;
  const tooLarge = (at = ''): TaskEnding => ({
    status: 'failed',
    error: toErrorRecord(
      new LimitExceededError('TaskResultTooLarge', `the task's result is larger than ${maxBytes} bytes of JSON (TASK_RESULT_MAX_BYTES)`, {
        limit: maxBytes,
        setting: 'TASK_RESULT_MAX_BYTES',
        ...(at ? { at } : {}),
      }),
    ),
  });
  let result: unknown;
  if (task.plan.single) result = steps[0]?.output ?? null;
  else if (task.plan.output !== undefined && task.plan.output !== null) {
    const byId = Object.fromEntries(
      steps.map((step) => [
        step.id,
        {
          status: step.status,
          ...(step.output !== null && step.output !== undefined ? { output: step.output } : {}),
          ...(step.error ? { error: step.error } : {}),
        },
      ]),
    );
    try {
      return { status: 'completed', result: resolveTemplates(task.plan.output, { params: task.params, steps: byId }, { maxBytes }) ?? null };
    } catch (error) {
      if (error instanceof ResolvedSizeError) return tooLarge(error.at);
      if (error instanceof ExpressionError) return { status: 'failed', error: toErrorRecord(error) };
      throw error;
    }
  } else {
    result = Object.fromEntries(steps.filter((step) => step.status === 'completed').map((step) => [step.id, step.output ?? null]));
  }
  if (jsonSize(result, maxBytes).over) return tooLarge();
  return { status: 'completed', result: result ?? null };
}

/** A task's error when one of its steps failed it: the step's error, naming the step. */
export function stepFailure(stepId: string, error: ErrorRecord | undefined | null): ErrorRecord & { step: string } {
  return capErrorRecord({ step: stepId, ...(error ?? { name: 'Error', message: 'step failed' }) });
}

/**
 * How a one-tool task ends with the result of its only step, decided before anything is read:
 * completed with the step's output (failed when that is over TASK_RESULT_MAX_BYTES), or failed
 * with the step's error. The ledger records it only while the run is still active.
 */
export function singleRunEnding(
  step: { stepId: string; status: 'completed' | 'failed' | 'cancelled'; output?: unknown; error?: ErrorRecord },
  limits: Pick<Limits, 'TASK_RESULT_MAX_BYTES'> = DEFAULT_LIMITS,
): TaskEnding {
  if (step.status !== 'completed') return { status: 'failed', error: stepFailure(step.stepId, step.error) };
  return taskEnding({ params: {}, plan: { single: true } }, [{ id: step.stepId, status: 'completed', output: step.output ?? null, error: null }], limits);
}
