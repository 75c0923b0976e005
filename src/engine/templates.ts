/**
 * `{{params.NAME}}` and `{{steps.ID.output.PATH}}` in workflow inputs and outputs, and in a
 * `for_each` step's input `{{item.PATH}}` and `{{index}}`, in a `repeat` step's input
 * `{{iteration}}` and `{{previous.output.PATH}}` (locals: names a modifier defines in a step's
 * input); `{{= CEL}}` is a computed value, a CEL expression over what a `when` sees, and the
 * step's locals (src/engine/condition.ts bounds and evaluates it).
 *
 * Templates are data: a reference is looked up, an expression evaluated, and a substituted value
 * is never scanned again, so template syntax inside params stays text. A string that is exactly one
 * template keeps the referenced value's type; a template inside a longer string is interpolated
 * as text.
 *
 * Strings are scanned by hand, in time linear in their length whatever they hold: the regular
 * expressions used before backtracked, and `{{` followed by 3,000 spaces held the process for
 * seconds.
 */

import { ExpressionError } from '../lib/errors.js';
import { jsonLengthAtLeast } from '../lib/limits.js';
import { evaluateExpression, ValueTooLargeError } from './condition.js';

const SEGMENT = /^[A-Za-z_][A-Za-z0-9_-]*$/;
const DIGITS = /^[0-9]+$/;

export type Reference =
  | { kind: 'params'; name: string; path: string[] }
  | { kind: 'steps'; step: string; field: 'output' | 'error' | 'status'; path: string[] }
  /** A name a modifier defines in its step's input (LOCALS). */
  | { kind: 'local'; name: Local; path: string[] }
  /** `{{= CEL}}`: a computed value (src/engine/condition.ts evaluates it). */
  | { kind: 'expression'; expression: string };

/**
 * Names a modifier defines in its step's input: a map's item and its position, a repeat's
 * iteration (0-based) and what the iteration before it gave (`previous.output`, null on the first).
 * True: the value has fields.
 */
export const LOCALS = { item: true, index: false, iteration: false, previous: true, task: true } as const;
export type Local = keyof typeof LOCALS;

export interface FoundReference {
  /** JSON path of the string holding the template, relative to the scanned value. */
  at: string;
  expression: string;
  /** Undefined when the expression is malformed; `problem` says why. */
  reference?: Reference;
  problem?: string;
}

/** Where a template sits in a string, and what is between its braces, trimmed. */
export interface Span {
  start: number;
  end: number;
  expression: string;
}

const OPEN = 0x7b; // {
const CLOSE = 0x7d; // }

/**
 * Every template in `text`, left to right: `{{`, then anything but braces, then `}}`. One pass
 * over the characters: a template's inside is a run without braces that follows `{{` and is
 * followed by `}}`, and such runs never overlap.
 */
export function spansOf(text: string): Span[] {
  const spans: Span[] = [];
  // Start of the run of non-brace characters after the latest `{{`; -1 when no `{{` is open.
  let inside = -1;
  for (let i = 0; i < text.length; i += 1) {
    const code = text.charCodeAt(i);
    if (code === OPEN) {
      inside = i > 0 && text.charCodeAt(i - 1) === OPEN ? i + 1 : -1;
    } else if (code === CLOSE) {
      if (inside >= 0 && text.charCodeAt(i + 1) === CLOSE) {
        spans.push({ start: inside - 2, end: i + 2, expression: text.slice(inside, i).trim() });
        i += 1;
      }
      inside = -1;
    }
  }
  return spans;
}

const DOT = 0x2e;
const LEFT = 0x5b; // [
const RIGHT = 0x5d; // ]
const isDigit = (code: number) => code >= 0x30 && code <= 0x39;

/**
 * Splits `a.b[0].c` into ['a', 'b', '0', 'c'] in one pass; undefined when it is not such a
 * path. `invalid` is the first name that is neither an identifier nor a number.
 */
export function splitPath(expression: string): { segments: string[]; invalid?: string } | undefined {
  const segments: string[] = [];
  let invalid: string | undefined;
  for (let at = 0; ; ) {
    // A part: a name (no brackets), then indexes `[digits]`; at least one of the two.
    let end = at;
    for (; end < expression.length; end += 1) {
      const code = expression.charCodeAt(end);
      if (code === DOT || code === LEFT) break;
      if (code === RIGHT) return undefined;
    }
    const named = end > at;
    if (named) {
      const name = expression.slice(at, end);
      segments.push(name);
      if (invalid === undefined && !SEGMENT.test(name) && !DIGITS.test(name)) invalid = name;
    }
    let indexes = 0;
    while (end < expression.length && expression.charCodeAt(end) === LEFT) {
      let close = end + 1;
      while (close < expression.length && isDigit(expression.charCodeAt(close))) close += 1;
      if (close === end + 1 || expression.charCodeAt(close) !== RIGHT) return undefined;
      segments.push(expression.slice(end + 1, close));
      indexes += 1;
      end = close + 1;
    }
    if (!named && indexes === 0) return undefined;
    if (end >= expression.length) return { segments, ...(invalid !== undefined ? { invalid } : {}) };
    if (expression.charCodeAt(end) !== DOT) return undefined;
    at = end + 1;
  }
}

export function parseReference(expression: string): { reference?: Reference; problem?: string } {
  if (expression.startsWith('=')) {
    const cel = expression.slice(1).trim();
    return cel ? { reference: { kind: 'expression', expression: cel } } : { problem: '{{=}} holds no expression' };
  }
  const split = splitPath(expression);
  if (!split) return { problem: `malformed template {{${expression}}}` };
  if (split.invalid !== undefined) return { problem: `malformed path segment "${split.invalid}" in {{${expression}}}` };
  const { segments } = split;
  const root = segments[0];
  if (root === 'params') {
    const name = segments[1];
    if (!name) return { problem: `{{${expression}}} names no parameter` };
    return { reference: { kind: 'params', name, path: segments.slice(2) } };
  }
  if (root === 'steps') {
    const step = segments[1];
    const field = segments[2];
    if (!step || !field) return { problem: `{{${expression}}} must look like steps.ID.output.PATH` };
    if (field !== 'output' && field !== 'error' && field !== 'status') {
      return { problem: `{{${expression}}}: a step exposes output, error and status, not "${field}"` };
    }
    if (field === 'status' && segments.length > 3) return { problem: `{{${expression}}}: status has no fields` };
    return { reference: { kind: 'steps', step, field, path: segments.slice(3) } };
  }
  if (root !== undefined && Object.hasOwn(LOCALS, root)) {
    const name = root as Local;
    if (!LOCALS[name] && segments.length > 1) return { problem: `{{${expression}}}: ${name} has no fields` };
    return { reference: { kind: 'local', name, path: segments.slice(1) } };
  }
  return { problem: `{{${expression}}} must start with params., steps., item, index, iteration, previous, task or = (a computed value)` };
}

function joinPath(base: string, key: string | number): string {
  if (typeof key === 'number') return `${base}[${key}]`;
  return /^[A-Za-z_][A-Za-z0-9_]*$/.test(key) ? (base ? `${base}.${key}` : key) : `${base}[${JSON.stringify(key)}]`;
}

/** Every string in a JSON value (not its keys), with where it sits. */
export function* stringsIn(value: unknown, at = ''): Generator<{ text: string; at: string }> {
  if (typeof value === 'string') yield { text: value, at };
  else if (Array.isArray(value)) for (const [index, item] of value.entries()) yield* stringsIn(item, joinPath(at, index));
  else if (value !== null && typeof value === 'object') for (const [key, item] of Object.entries(value)) yield* stringsIn(item, joinPath(at, key));
}

/** Every template in a JSON value, with where it sits. */
export function findReferences(value: unknown, at = ''): FoundReference[] {
  const found: FoundReference[] = [];
  for (const string of stringsIn(value, at)) {
    for (const { expression } of spansOf(string.text)) found.push({ at: string.at, expression, ...parseReference(expression) });
  }
  return found;
}

export function hasTemplates(value: unknown): boolean {
  for (const { text } of stringsIn(value)) if (spansOf(text).length > 0) return true;
  return false;
}

export interface TemplateContext {
  params: Record<string, unknown>;
  steps: Record<string, { status: string; output?: unknown; error?: unknown }>;
  /** The step's locals (LOCALS): a map item's `item` and `index`, a repeat's `iteration` and `previous`. */
  locals?: Partial<Record<Local, unknown>>;
}

export interface ResolveOptions {
  /**
   * Stop with a ResolvedSizeError as soon as the result's JSON is known to pass this many bytes
   * (UTF-8): resolution never builds much more than that, however often a large value is
   * referenced. @defaultValue no bound
   */
  maxBytes?: number;
}

/** The resolved value would be larger than ResolveOptions.maxBytes; `at` is where that became known. */
export class ResolvedSizeError extends Error {
  override name = 'ResolvedSizeError';
  constructor(
    readonly maxBytes: number,
    readonly at: string,
  ) {
    super(`larger than ${maxBytes} bytes of JSON once its templates are resolved${at ? ` (passed at ${at})` : ''}`);
  }
}

/** Own properties only: `{{params.constructor}}` must not reach Object.prototype. */
function own(value: unknown, key: string): unknown {
  if (value === null || typeof value !== 'object' || !Object.hasOwn(value, key)) return undefined;
  return (value as Record<string, unknown>)[key];
}

function lookup(root: unknown, first: string, path: readonly string[]): unknown {
  let current = own(root, first);
  for (const segment of path) {
    if (current === undefined) return undefined;
    current = own(current, segment);
  }
  return current;
}

function referencedValue(reference: Reference, context: TemplateContext, at: string, budget: Budget): unknown {
  if (reference.kind === 'expression') {
    try {
      return evaluateExpression(
        reference.expression,
        { params: context.params, steps: context.steps, ...(context.locals ? { vars: context.locals } : {}) },
        budget.remaining,
      );
    } catch (error) {
      if (error instanceof ValueTooLargeError) throw new ResolvedSizeError(budget.maxBytes, at);
      if (!(error instanceof ExpressionError)) throw error;
      throw new ExpressionError(`{{= ${reference.expression}}}${at ? ` at ${at}` : ''} ${error.message}`, { cause: error });
    }
  }
  if (reference.kind === 'params') return lookup(context.params, reference.name, reference.path);
  if (reference.kind === 'local') return lookup(context.locals, reference.name, reference.path);
  const step = own(context.steps, reference.step);
  return step === undefined ? undefined : lookup(step, reference.field, reference.path);
}

/**
 * Counts what resolution adds to the result's JSON, in lower bounds (a string's UTF-16 length),
 * before anything large is built.
 */
class Budget {
  used = 0;
  constructor(readonly maxBytes: number) {}

  /** What may still be spent. */
  get remaining(): number {
    return this.maxBytes - this.used;
  }

  spend(bytes: number, at: string): void {
    this.used += bytes;
    if (this.used > this.maxBytes) throw new ResolvedSizeError(this.maxBytes, at);
  }

  /** Spends the JSON size of a value taken whole. */
  spendValue(value: unknown, at: string): void {
    this.spend(jsonLengthAtLeast(value, this.maxBytes - this.used), at);
  }

  /** The value as interpolated text, paid for before its text is built. */
  text(value: unknown, at: string): string {
    if (value === undefined || value === null) return '';
    if (typeof value === 'string') {
      this.spend(value.length, at);
      return value;
    }
    this.spendValue(value, at);
    return JSON.stringify(value);
  }
}

function resolveString(text: string, context: TemplateContext, budget: Budget, at: string): unknown {
  const spans = spansOf(text);
  if (spans.length === 1 && spans[0]!.start === 0 && spans[0]!.end === text.length) {
    const { reference } = parseReference(spans[0]!.expression);
    // A missing value becomes null: JSON has no undefined, and the tool's schema decides.
    const value = reference ? (referencedValue(reference, context, at, budget) ?? null) : text;
    budget.spendValue(value, at);
    return value;
  }
  budget.spend(2, at);
  let out = '';
  let from = 0;
  for (const span of spans) {
    const { reference } = parseReference(span.expression);
    out += budget.text(text.slice(from, span.start), at);
    out += reference ? budget.text(referencedValue(reference, context, at, budget), at) : budget.text(text.slice(span.start, span.end), at);
    from = span.end;
  }
  return out + budget.text(text.slice(from), at);
}

function resolve(value: unknown, context: TemplateContext, budget: Budget, at: string): unknown {
  if (typeof value === 'string') return resolveString(value, context, budget, at);
  if (Array.isArray(value)) {
    budget.spend(1 + Math.max(value.length, 1), at);
    return value.map((item, index) => resolve(item, context, budget, joinPath(at, index)));
  }
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value);
    budget.spend(1 + Math.max(entries.length, 1), at);
    // fromEntries defines own properties, so a "__proto__" key stays a plain key.
    return Object.fromEntries(
      entries.map(([key, item]) => {
        const here = joinPath(at, key);
        budget.spend(key.length + 3, here);
        return [key, resolve(item, context, budget, here)];
      }),
    );
  }
  budget.spendValue(value, at);
  return value;
}

/**
 * A copy of `value` with every template replaced. Only the definition is scanned, never a
 * substituted value. With `maxBytes`, throws a ResolvedSizeError instead of returning a value
 * whose JSON is larger.
 */
export function resolveTemplates(value: unknown, context: TemplateContext, options: ResolveOptions = {}): unknown {
  const maxBytes = options.maxBytes ?? Number.POSITIVE_INFINITY;
  const budget = new Budget(maxBytes);
  const resolved = resolve(value, context, budget, '');
  // The budget counted UTF-16 units: escapes and multi-byte characters make the text at most six
  // times longer, so the exact size needs measuring only near the bound.
  if (budget.used * 6 > maxBytes && Buffer.byteLength(JSON.stringify(resolved)) > maxBytes) throw new ResolvedSizeError(maxBytes, '');
  return resolved;
}

/**
 * A compensation's input (docs/tools-and-workers.md "Compensation (sagas)") refers to its step's own input and output as
 * `{{input.PATH}}` and `{{output.PATH}}`; they are rewritten once, when the definition is
 * checked and compiled, into templates the resolver knows: `{{output.PATH}}` becomes
 * `{{steps.ID.output.PATH}}`, and `{{input.PATH}}` what the step's input holds at PATH (a
 * literal, or the step's own template — a path below a template that is a whole string extends
 * it). Resolved when the compensation runs, they give what the step ran with: params and
 * completed steps' outputs never change within a run. `problems` says where a path leads nowhere.
 */
export function rewriteOwnReferences(
  value: unknown,
  step: { id: string; input: Record<string, unknown> },
): { value: unknown; problems: { at: string; message: string }[] } {
  const problems: { at: string; message: string }[] = [];
  const rewriteString = (text: string, at: string): unknown => {
    const spans = spansOf(text);
    if (spans.length === 0) return text;
    const whole = spans.length === 1 && spans[0]!.start === 0 && spans[0]!.end === text.length;
    let out = '';
    let from = 0;
    for (const span of spans) {
      const replaced = ownReference(span.expression, step);
      if (replaced === undefined) {
        out += text.slice(from, span.end);
      } else if ('problem' in replaced) {
        problems.push({ at, message: replaced.problem });
        out += text.slice(from, span.end);
      } else if (whole) {
        return replaced.value;
      } else if (typeof replaced.value === 'string' || typeof replaced.value === 'number' || typeof replaced.value === 'boolean') {
        out += text.slice(from, span.start) + String(replaced.value);
      } else {
        problems.push({ at, message: `{{${span.expression}}} is not text: only a whole string may be an object or a list` });
        out += text.slice(from, span.end);
      }
      from = span.end;
    }
    return out + text.slice(from);
  };
  const walk = (node: unknown, at: string): unknown => {
    if (typeof node === 'string') return rewriteString(node, at);
    if (Array.isArray(node)) return node.map((item, index) => walk(item, joinPath(at, index)));
    if (node !== null && typeof node === 'object') return Object.fromEntries(Object.entries(node).map(([key, item]) => [key, walk(item, joinPath(at, key))]));
    return node;
  };
  return { value: walk(value, ''), problems };
}

/** What `{{input…}}` or `{{output…}}` stands for; undefined for any other template. */
function ownReference(expression: string, step: { id: string; input: Record<string, unknown> }): { value: unknown } | { problem: string } | undefined {
  const split = splitPath(expression);
  const root = split?.segments[0];
  if (!split || (root !== 'input' && root !== 'output')) return undefined;
  const path = split.segments.slice(1);
  const suffix = path.map((segment) => (DIGITS.test(segment) ? `[${segment}]` : `.${segment}`)).join('');
  if (root === 'output') return { value: `{{steps.${step.id}.output${suffix}}}` };
  let current: unknown = step.input;
  for (const [index, segment] of path.entries()) {
    if (typeof current === 'string') {
      const spans = spansOf(current);
      const template = spans.length === 1 && spans[0]!.start === 0 && spans[0]!.end === current.length ? spans[0]!.expression : undefined;
      if (template === undefined) return { problem: `{{${expression}}}: the step's input at ${path.slice(0, index).join('.')} is text, with no fields` };
      const rest = path
        .slice(index)
        .map((part) => (DIGITS.test(part) ? `[${part}]` : `.${part}`))
        .join('');
      return { value: `{{${template}${rest}}}` };
    }
    current = own(current, segment);
    if (current === undefined) return { problem: `{{${expression}}}: the step's input has no ${path.slice(0, index + 1).join('.')}` };
  }
  return { value: current };
}
