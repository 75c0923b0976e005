import { type ErrorRecord, LimitExceededError, toErrorRecord } from '../errors.js';
import { DEFAULT_LIMITS, jsonSize, type Limits } from '../limits.js';
import { ResolvedSizeError, resolveTemplates } from './templates.js';
import { stepFailure } from './transitions.js';
import type { FinishedStep } from './types.js';

/** What a task's output is made from. `workflow_name` is null for a one-tool task. */
export interface TaskOutputSource {
  params: Record<string, unknown>;
  output_template: unknown;
  workflow_name: string | null;
}

/** A task's result; a LimitExceededError (TaskResultTooLarge) when its JSON is over TASK_RESULT_MAX_BYTES. */
export function taskResult(
  task: TaskOutputSource,
  steps: (FinishedStep & { step_id: string })[],
  limits: Pick<Limits, 'TASK_RESULT_MAX_BYTES'> = DEFAULT_LIMITS,
): unknown {
  const maxBytes = limits.TASK_RESULT_MAX_BYTES;
  const tooLarge = (at = '') =>
    new LimitExceededError('TaskResultTooLarge', `the task's result is larger than ${maxBytes} bytes of JSON (TASK_RESULT_MAX_BYTES)`, {
      limit: maxBytes,
      setting: 'TASK_RESULT_MAX_BYTES',
      ...(at ? { at } : {}),
    });
  let result: unknown;
  if (task.workflow_name === null) result = steps[0]?.output ?? null;
  else if (task.output_template != null) {
    const byId = Object.fromEntries(
      steps.map((step) => [step.step_id, { status: step.status, output: step.output ?? undefined, error: step.error ?? undefined }]),
    );
    try {
      return resolveTemplates(task.output_template, { params: task.params, steps: byId }, { maxBytes });
    } catch (error) {
      if (error instanceof ResolvedSizeError) throw tooLarge(error.at);
      throw error;
    }
  } else {
    // No declared output: every completed step's output, by step id.
    result = Object.fromEntries(steps.filter((step) => step.status === 'completed').map((step) => [step.step_id, step.output]));
  }
  if (jsonSize(result, maxBytes).over) throw tooLarge();
  return result;
}

/**
 * How a task whose last step just finished ends: completed with its result, or failed when
 * that result is over TASK_RESULT_MAX_BYTES.
 */
export function taskEnding(
  task: TaskOutputSource,
  steps: (FinishedStep & { step_id: string })[],
  limits: Pick<Limits, 'TASK_RESULT_MAX_BYTES'> = DEFAULT_LIMITS,
): { status: 'completed'; result: unknown } | { status: 'failed'; error: ErrorRecord } {
  try {
    return { status: 'completed', result: taskResult(task, steps, limits) ?? null };
  } catch (error) {
    if (!(error instanceof LimitExceededError)) throw error;
    return { status: 'failed', error: toErrorRecord(error) };
  }
}

/**
 * How a one-tool task ends with the result of its only step: completed with the step's output
 * (failed when that is over TASK_RESULT_MAX_BYTES), or failed with the step's error.
 */
export function singleRunEnding(
  step: { stepId: string; status: 'completed' | 'failed' | 'cancelled'; output?: unknown; error?: ErrorRecord },
  limits: Pick<Limits, 'TASK_RESULT_MAX_BYTES'> = DEFAULT_LIMITS,
): { status: 'completed'; result: unknown } | { status: 'failed'; error: ErrorRecord } {
  if (step.status !== 'completed') return { status: 'failed', error: stepFailure(step.stepId, step.error) };
  return taskEnding(
    { params: {}, output_template: null, workflow_name: null },
    [{ step_id: step.stepId, status: 'completed', output: step.output ?? null, error: null }],
    limits,
  );
}
