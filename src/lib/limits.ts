import { type Config, loadConfig } from './config.js';
import { LimitExceededError } from './errors.js';

/** The size limits (docs/configuration.md "Limits"), as configured. */
export type Limits = Pick<
  Config,
  | 'TEMPLATE_STRING_MAX_CHARS'
  | 'TEMPLATE_MAX_REFERENCES'
  | 'STEP_INPUT_MAX_BYTES'
  | 'STEP_OUTPUT_MAX_BYTES'
  | 'STEP_OUTPUT_MAX_DEPTH'
  | 'TASK_RESULT_MAX_BYTES'
  | 'JOB_INLINE_OUTPUT_MAX_BYTES'
  | 'MAP_MAX_ITEMS'
  | 'MAP_INPUTS_MAX_BYTES'
  | 'MAP_MAX_PARALLEL'
  | 'SUBWORKFLOW_MAX_DEPTH'
  | 'EXIT_CANCEL_TIMEOUT_MS'
>;

/** The defaults of src/lib/config.ts, for code built without a configuration at hand. */
export const DEFAULT_LIMITS: Limits = loadConfig({});

/**
 * A lower bound of the UTF-8 length of `JSON.stringify(value)`, found without building the text
 * and without recursion, that stops counting once it passes `stopAbove`. A string counts one
 * byte per UTF-16 unit (escapes and multi-byte characters only add), so a value whose bound
 * passes a limit surely passes it, and its text is never built.
 */
export function jsonLengthAtLeast(value: unknown, stopAbove = Number.POSITIVE_INFINITY): number {
  let total = 0;
  const stack: unknown[] = [value];
  while (stack.length > 0 && total <= stopAbove) {
    let current = stack.pop();
    if (current !== null && typeof current === 'object' && typeof (current as { toJSON?: unknown }).toJSON === 'function') {
      current = (current as { toJSON(): unknown }).toJSON();
    }
    if (typeof current === 'string') total += current.length + 2;
    else if (typeof current === 'number') total += Number.isFinite(current) ? String(current).length : 4;
    else if (typeof current === 'boolean') total += current ? 4 : 5;
    else if (current === null) total += 4;
    else if (Array.isArray(current)) {
      // Brackets and commas first: an array too long for the bound is not walked at all.
      total += 1 + Math.max(current.length, 1);
      if (total <= stopAbove) for (const item of current) stack.push(item);
    } else if (typeof current === 'object') {
      total += 2;
      let first = true;
      for (const key of Object.keys(current)) {
        const item = (current as Record<string, unknown>)[key];
        // JSON leaves these keys out.
        if (item === undefined || typeof item === 'function' || typeof item === 'symbol') continue;
        total += key.length + (first ? 3 : 4);
        if (total > stopAbove) break;
        first = false;
        stack.push(item);
      }
    }
  }
  return total;
}

/** Whether arrays and objects nest deeper than `max` in `value` (a scalar has depth 0). Without recursion. */
export function nestsDeeperThan(value: unknown, max: number): boolean {
  const stack: [unknown, number][] = [[value, 0]];
  while (stack.length > 0) {
    const [current, depth] = stack.pop()!;
    if (current === null || typeof current !== 'object') continue;
    if (depth + 1 > max) return true;
    for (const item of Array.isArray(current) ? current : Object.values(current)) stack.push([item, depth + 1]);
  }
  return false;
}

export interface JsonSize {
  /** Exact UTF-8 length of the value's JSON when within the bound; past it, a lower bound. */
  bytes: number;
  over: boolean;
}

/** The size of `value`'s JSON, measured without building text far larger than `maxBytes`. */
export function jsonSize(value: unknown, maxBytes: number): JsonSize {
  const bound = jsonLengthAtLeast(value, maxBytes);
  if (bound > maxBytes) return { bytes: bound, over: true };
  const bytes = Buffer.byteLength(JSON.stringify(value) ?? 'null');
  return { bytes, over: bytes > maxBytes };
}

/** Checks an adapter's output against STEP_OUTPUT_MAX_BYTES and STEP_OUTPUT_MAX_DEPTH; returns its size. */
export function checkStepOutput(output: unknown, limits: Limits): number {
  const tooLarge = () =>
    new LimitExceededError('StepOutputTooLarge', `the output is larger than ${limits.STEP_OUTPUT_MAX_BYTES} bytes of JSON (STEP_OUTPUT_MAX_BYTES)`, {
      limit: limits.STEP_OUTPUT_MAX_BYTES,
      setting: 'STEP_OUTPUT_MAX_BYTES',
    });
  // The bounded count first: it ends even on an output that refers to itself, and it bounds the
  // work of the depth walk (which would catch the cycle) and of the exact measure.
  if (jsonLengthAtLeast(output, limits.STEP_OUTPUT_MAX_BYTES) > limits.STEP_OUTPUT_MAX_BYTES) throw tooLarge();
  if (nestsDeeperThan(output, limits.STEP_OUTPUT_MAX_DEPTH)) {
    throw new LimitExceededError('StepOutputTooLarge', `the output nests deeper than ${limits.STEP_OUTPUT_MAX_DEPTH} levels (STEP_OUTPUT_MAX_DEPTH)`, {
      limit: limits.STEP_OUTPUT_MAX_DEPTH,
      setting: 'STEP_OUTPUT_MAX_DEPTH',
    });
  }
  const bytes = Buffer.byteLength(JSON.stringify(output) ?? 'null');
  if (bytes > limits.STEP_OUTPUT_MAX_BYTES) throw tooLarge();
  return bytes;
}

/** Stands in BullMQ (a job's return value) for an output too large to travel there. */
export interface StoredOutput {
  stored_in: 'postgresql';
  bytes: number;
}

/** What a step's job returns to BullMQ: the output when its JSON (`bytes` long) is at most JOB_INLINE_OUTPUT_MAX_BYTES, else a StoredOutput. */
export function jobReturnValue(output: unknown, bytes: number, limits: Pick<Limits, 'JOB_INLINE_OUTPUT_MAX_BYTES'>): unknown {
  return bytes <= limits.JOB_INLINE_OUTPUT_MAX_BYTES ? output : ({ stored_in: 'postgresql', bytes } satisfies StoredOutput);
}
