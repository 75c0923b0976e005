/** How a step is retried. `attempts` counts every try, the first included. */
export interface RetryPolicy {
  /** @defaultValue 3 */
  attempts: number;
  backoff: {
    /** `exponential` doubles the delay after every failed attempt. */
    type: 'fixed' | 'exponential';
    /** Base delay before the second attempt. */
    delay_ms: number;
    /** The longest delay, whatever the type made of it. */
    max_delay_ms?: number;
  };
  /** No try starts later than this long after the step's first try (workers/runtime/step-processor.ts). */
  max_elapsed_ms?: number;
}

/**
 * What a dependency of the running step ended with (workflows). It travels in the step's job
 * data, so a large output is not copied there: templates in the step's input are the way to
 * pass it (or the part of it the step needs).
 */
export interface DependencyResult {
  status: 'completed' | 'failed' | 'skipped';
  /** The dependency's output, when its JSON is at most JOB_INLINE_OUTPUT_MAX_BYTES. */
  output?: unknown;
  /** Set instead of `output` when the output is larger: it is stored in PostgreSQL only (GET /result shows it). */
  output_stored_in?: 'postgresql';
  error?: { name: string; message: string };
}

/** How a tool step runs: stored with the task's plan, so a running task never depends on a later definition. */
export interface StepOptions {
  retry: RetryPolicy;
  timeout_ms: number;
  /** BullMQ priority: 1 is the highest. */
  priority?: number;
}

/**
 * A tool step (or one item of a map) whose dependencies are done, with its input resolved: what
 * its job carries. A delivery of that job is one attempt of the step.
 */
export interface ReadyStep {
  taskId: string;
  run: number;
  stepId: string;
  /** A map item's position in its list; absent for a plain step. */
  item?: number;
  tool: string;
  /** Resolved input: templates were filled in when the step became ready. At most STEP_INPUT_MAX_BYTES of JSON. */
  input: unknown;
  retry: RetryPolicy;
  timeoutMs: number;
  /** What the steps this one depends on ended with; outputs only up to JOB_INLINE_OUTPUT_MAX_BYTES. Empty for a map item. */
  dependencies: Record<string, DependencyResult>;
  /** BullMQ priority: 1 is the highest. */
  priority?: number;
  delayMs?: number;
  /** It passed limits per key: its end releases them (src/queue/gates.ts). */
  limited?: true;
  /** The key that submitted its task (the task's owner): a registered service's circuits count its calls by it. Absent without authentication. */
  owner?: string;
  /**
   * Its step was claimed for its first delivery in the decision that made it ready (Decider.claimsReady):
   * that delivery runs without a claim of its own. Later deliveries (a retry, a lost lock) claim as ever.
   */
  claimed?: true;
}

/** The options of a step that is not a tool (a sleep, a sub-workflow): it runs no attempts of its own. */
export const DEFAULT_RETRY_FOR_KINDS: StepOptions = Object.freeze({
  retry: Object.freeze({ attempts: 1, backoff: Object.freeze({ type: 'fixed', delay_ms: 0 }) }),
  timeout_ms: 0,
}) as StepOptions;

/** A concurrency (`c`) or rate (`r`, over `windowMs`) limit with its key resolved, as a plan carries it (src/engine/key-limits.ts). */
export interface KeyLimit {
  kind: 'c' | 'r';
  key: string;
  limit: number;
  windowMs?: number;
}
