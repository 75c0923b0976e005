import type { LimitExceededError } from '../errors.js';

/** How a step is retried. `attempts` counts every try, the first included. */
export interface RetryPolicy {
  /** @defaultValue 3 */
  attempts: number;
  backoff: {
    /** `exponential` doubles the delay after every failed attempt. */
    type: 'fixed' | 'exponential';
    /** Base delay before the second attempt. */
    delay_ms: number;
  };
}

/**
 * What a dependency of the running step ended with (workflows). It travels in the step's job
 * data, so a large output is not copied there: templates in the step's input are the way to
 * pass it (or the part of it the step needs).
 */
export interface DependencyResult {
  status: 'completed' | 'failed';
  /** The dependency's output, when its JSON is at most JOB_INLINE_OUTPUT_MAX_BYTES. */
  output?: unknown;
  /** Set instead of `output` when the output is larger: it is stored in PostgreSQL only (GET /result shows it). */
  output_stored_in?: 'postgresql';
  error?: { name: string; message: string };
}

/** How one step runs: stored with the step, so a running task never depends on a later definition. */
export interface StepOptions {
  retry: RetryPolicy;
  timeout_ms: number;
  /** BullMQ priority: 1 is the highest. */
  priority?: number;
}

/** A step as stored, with what it needs to become ready. */
export interface StepRow {
  step_id: string;
  tool: string;
  /** The definition's input, templates unresolved; null when `input` is literal. */
  input_template: unknown;
  input: unknown;
  options: StepOptions;
  depends_on: string[];
}

/** What a step ended with, as another step's input templates and `dependencies` see it. */
export interface FinishedStep {
  status: string;
  output: unknown;
  error: unknown;
}

/** What a ready step's input may refer to: the task's params and the steps that finished. */
export interface RunContext {
  params: Record<string, unknown>;
  steps: Map<string, FinishedStep>;
}

/** A step whose dependencies are all done, with its input resolved: ready to become a job. */
export interface ReadyStep {
  stepId: string;
  tool: string;
  /** Resolved input: templates were filled in when the step became ready. At most STEP_INPUT_MAX_BYTES of JSON. */
  input: unknown;
  /** Set (and `input` null) when the resolved input would pass STEP_INPUT_MAX_BYTES: the step fails with it, without running. */
  inputError?: Pick<LimitExceededError, 'name' | 'message' | 'details'>;
  retry: RetryPolicy;
  timeoutMs: number;
  /** What the steps this one depends on ended with; outputs only up to JOB_INLINE_OUTPUT_MAX_BYTES. */
  dependencies: Record<string, DependencyResult>;
  /** BullMQ priority: 1 is the highest. */
  priority?: number;
  delayMs?: number;
}
