import { DEFAULT_RETRY_FOR_KINDS } from '../types.js';
import { refuseFields, type StepKindModule } from './kind.js';

/**
 * Ends the run at once, with a status (Conductor's TERMINATE, Step Functions' Succeed and Fail):
 * `{"terminate": {"status": "completed" | "failed", "reason"?, "output"?}}`. When it is ready (a
 * `when` decides whether it is reached) the step completes with `{status, reason?}` (or fails
 * with the task's error, so that a retry meets it again rather than going on past it), steps still
 * pending are skipped (reason `terminated`), running ones cancelled as a cancel would (their
 * workers are told to stop), and the task ends with the status: completed with `output` (or the
 * workflow's `output` when it has none), or failed with `reason` as its error's message
 * (`Terminated`). A failed end undoes nothing: the run chose it, so compensations are skipped.
 */

declare module '../plan.js' {
  interface StepKinds {
    terminate: { terminate: TerminateSpec };
  }
}

export interface TerminateSpec {
  status: 'completed' | 'failed';
  /** Templates allowed. */
  reason?: string;
  /** Templates and computed values allowed. */
  output?: unknown;
}

export const terminateKind: StepKindModule<'terminate'> = {
  name: 'terminate',
  label: 'terminate',
  summary: 'ends the run',

  check(step, index, context) {
    refuseFields(step, index, context, 'terminate', ['version', 'retry', 'timeout_ms', 'concurrency', 'rate_limit']);
    if (Object.keys(step.input).length > 0) context.add(['steps', index, 'input'], 'a terminate step takes no input (its output is terminate.output)');
  },

  outputSchema() {
    return {
      type: 'object',
      properties: { status: { type: 'string', enum: ['completed'] }, reason: { type: 'string' } },
      required: ['status'],
      additionalProperties: false,
    };
  },

  templatePlaces: (step, index) => [
    ...(step.terminate.reason !== undefined ? [{ base: `steps[${index}].terminate.reason`, value: step.terminate.reason }] : []),
    ...(step.terminate.output !== undefined ? [{ base: `steps[${index}].terminate.output`, value: step.terminate.output }] : []),
  ],

  compile(step) {
    const { status, reason, output } = step.terminate;
    return {
      kind: 'terminate',
      terminate: { status, ...(reason !== undefined ? { reason } : {}), ...(output !== undefined ? { output } : {}) },
      options: DEFAULT_RETRY_FOR_KINDS,
    };
  },

  templates: (step) => [step.terminate.reason, step.terminate.output],

  ready(decider, step) {
    const { status } = step.terminate;
    const reason = step.terminate.reason !== undefined ? decider.resolve(step, step.terminate.reason) : undefined;
    const output =
      step.terminate.output !== undefined ? decider.resolve(step, step.terminate.output, { maxBytes: decider.limits.TASK_RESULT_MAX_BYTES }) : undefined;
    for (const resolved of [reason, output]) {
      if (resolved && !resolved.ok) {
        if ('error' in resolved) decider.fail(step, resolved.error);
        return;
      }
    }
    const text = reason?.ok ? (typeof reason.value === 'string' ? reason.value : JSON.stringify(reason.value)) : undefined;
    decider.terminate(step, { status, ...(text !== undefined ? { reason: text } : {}), ...(output?.ok ? { output: output.value } : {}) });
  },
};
