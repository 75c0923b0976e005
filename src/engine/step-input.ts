import { DEFAULT_LIMITS, jsonSize, type Limits } from '../limits.js';
import { findReferences, ResolvedSizeError, resolveTemplates } from './templates.js';
import type { DependencyResult, ReadyStep, RunContext, StepRow } from './types.js';

/** The steps whose results a step needs once it is ready: its dependencies and those its input's templates name. */
export function referencedSteps(row: Pick<StepRow, 'input_template' | 'depends_on'>): Set<string> {
  const ids = new Set(row.depends_on);
  for (const found of findReferences(row.input_template)) {
    if (found.reference?.kind === 'steps') ids.add(found.reference.step);
  }
  return ids;
}

/**
 * A step whose dependencies are done, as its job will carry it: its input resolved within
 * STEP_INPUT_MAX_BYTES (over it, the job carries the error instead and fails without running),
 * and what its dependencies ended with, their outputs only up to JOB_INLINE_OUTPUT_MAX_BYTES.
 */
export function readyStep(
  row: StepRow,
  context: RunContext,
  limits: Pick<Limits, 'STEP_INPUT_MAX_BYTES' | 'JOB_INLINE_OUTPUT_MAX_BYTES'> = DEFAULT_LIMITS,
): ReadyStep {
  const steps = Object.fromEntries(
    [...context.steps].map(([id, step]) => [
      id,
      { status: step.status, ...(step.output != null ? { output: step.output } : {}), ...(step.error != null ? { error: step.error } : {}) },
    ]),
  );
  let input = row.input;
  let inputError: ReadyStep['inputError'];
  if (row.input_template != null) {
    const maxBytes = limits.STEP_INPUT_MAX_BYTES;
    try {
      input = resolveTemplates(row.input_template, { params: context.params, steps }, { maxBytes });
    } catch (error) {
      if (!(error instanceof ResolvedSizeError)) throw error;
      input = null;
      inputError = {
        name: 'StepInputTooLarge',
        message: `the input would be larger than ${maxBytes} bytes of JSON once its templates are resolved (STEP_INPUT_MAX_BYTES)`,
        details: { limit: maxBytes, setting: 'STEP_INPUT_MAX_BYTES', ...(error.at ? { at: error.at } : {}) },
      };
    }
  }
  const dependencies: Record<string, DependencyResult> = {};
  for (const dep of row.depends_on) {
    const found = context.steps.get(dep);
    if (!found) continue;
    const inline = found.output == null || !jsonSize(found.output, limits.JOB_INLINE_OUTPUT_MAX_BYTES).over;
    dependencies[dep] = {
      status: found.status === 'completed' ? 'completed' : 'failed',
      ...(found.output != null ? (inline ? { output: found.output } : { output_stored_in: 'postgresql' as const }) : {}),
      ...(found.error != null ? { error: found.error as DependencyResult['error'] } : {}),
    };
  }
  return {
    stepId: row.step_id,
    tool: row.tool,
    input,
    ...(inputError ? { inputError } : {}),
    retry: row.options.retry,
    timeoutMs: row.options.timeout_ms,
    dependencies,
    ...(row.options.priority ? { priority: row.options.priority } : {}),
  };
}
