/**
 * A step's `when`: a CEL expression (https://cel.dev) over `params` and `steps`, decided once the
 * step's dependencies are done. @bufbuild/cel parses and runs it; this module bounds it, checks it
 * against the workflow's declarations when it is stored, and caches what it compiles.
 *
 * Bounds: the text (CONDITION_MAX_CHARS), its nesting (CONDITION_MAX_DEPTH), and the work of one
 * evaluation (CONDITION_MAX_COST). The library counts no cost, so the parsed tree is instrumented
 * before it is planned: every comprehension pays for its range before it loops, and every call
 * whose work grows with its arguments pays for their size before it runs. `matches()` runs on
 * RE2, linear in the text, but also in the compiled pattern: it pays for both.
 *
 * Numbers: JSON has one number type, and CEL reads it as `double`, as it does
 * google.protobuf.Value. Comparisons across int and double are defined (`amount > 1000` holds for
 * 1500 and 1500.5), equality compares values (`1500.0 == 1500`), arithmetic does not mix
 * (`amount + 1.0`, or `int(amount) + 1`), so declared `integer` and `number` are both double.
 */

import {
  type CelInput,
  type CelList,
  CelScalar,
  type CelType,
  type CelValue,
  celEnv,
  celFunc,
  celList,
  celMap,
  isCelError,
  isCelList,
  isCelMap,
  isCelUint,
  parse,
  plan,
  unparse,
} from '@bufbuild/cel';
import { strings } from '@bufbuild/cel/ext';
import { ConstantSchema, type Expr, Expr_CallSchema, ExprSchema, type ParsedExpr, ParsedExprSchema } from '@bufbuild/cel-spec/cel/expr/syntax_pb.js';
import { clone, create } from '@bufbuild/protobuf';
import { RE2JS } from '@bufbuild/re2';
import type { z } from 'zod';
import { ConditionError, ExpressionError } from '../lib/errors.js';
import type { ParameterType } from './workflow-definition.js';

/** Longest condition, in characters. */
export const CONDITION_MAX_CHARS = 2000;
/** Deepest nesting of brackets, and of the parsed expression (macros such as `all()` count three levels). */
export const CONDITION_MAX_DEPTH = 64;
/**
 * The work one evaluation may do, in cost units of 0.1 to 0.2 µs each: the worst inputs of
 * test/engine/condition.test.ts stop within 70 to 200 ms. What costs what is in COST; a
 * comprehension pays for its whole range before its first item.
 */
export const CONDITION_MAX_COST = 1_000_000;
/** Longest pattern `matches()` takes: its compiled size can be a thousand times its length (`x{1000}`), and compiling takes about 1 µs per instruction. */
export const CONDITION_PATTERN_MAX_CHARS = 512;

/** Cost units of each kind of work, from the time @bufbuild/cel 0.6.1 took on Node 20 (test/engine/condition.test.ts holds the worst cases to the budget). */
const COST = {
  /** A node of a comprehension's body (with the calls that measure its arguments), per item of its range (0.2 to 0.5 µs). */
  loopNode: 4,
  /** An element of a list or map handed to a call that walks it all: compares, concatenates, converts (0.4 µs). */
  element: 4,
  /** An element of the list on the right of `in` (0.13 µs). */
  scannedElement: 1,
  /** Every STRING_CHUNK characters (or bytes) of a string handed to a call (0.1 µs). */
  stringChunk: 1,
  /** A character of text times an instruction of the compiled pattern, in matches() (0.05 to 0.17 µs). */
  regexStep: 1,
  /** An instruction of a pattern compiled anew (1 µs). */
  compiledInstruction: 10,
} as const;
const STRING_CHUNK = 64;
/** Compiled conditions kept: about 6 kB each for `steps.a.output.n > 1000 && params.notify`, 200 kB for 2,000 characters of `exists()`. */
const CACHE_SIZE = 500;
/** Compiled patterns kept. */
const PATTERN_CACHE_SIZE = 256;

/** A JSON Schema as z.toJSONSchema writes it. */
export type JsonSchema = z.core.JSONSchema.JSONSchema;

/** What a condition may refer to when it is stored (static check). */
export interface ConditionScope {
  /** Declared workflow parameters and their types. */
  params: Record<string, ParameterType>;
  /** The steps the condition may refer to (the step's ancestors), each with the JSON Schema of its output when known (otherwise any value). */
  steps: Record<string, { output?: JsonSchema }>;
  /** Other names it sees (a repeat's `output`, `iteration`), with the JSON Schema of their values when known. */
  vars?: Record<string, JsonSchema | undefined>;
}

/** What a condition sees when it runs. */
export interface ConditionData {
  params: Record<string, unknown>;
  /** The ancestors: status 'completed' | 'failed' | 'skipped'; output null (or absent) for a skipped step and for a failed one, which may carry `error: {name, message}`. */
  steps: Record<string, { status: string; output?: unknown; error?: unknown }>;
  /** Values of the scope's other names. */
  vars?: Record<string, unknown>;
}

/**
 * Every problem of `expression` against `scope`, as short messages (the caller adds the JSON
 * path): too long, nested too deep, does not parse, names an undeclared parameter or a step that
 * is not an ancestor, types that cannot work where the schemas know them, a result that cannot be
 * a boolean, a pattern that does not compile. Empty when the condition is fine.
 */
export function checkCondition(expression: string, scope: ConditionScope): string[] {
  // Stored conditions are few: the parsed tree is kept only while checking, the program in the cache.
  const compiled = compileUncached(expression);
  remember(expression, compiled);
  if ('error' in compiled) return [compiled.error];
  return new Checker(compiled.parsed, scope).run();
}

/**
 * Decides `expression` on `data`. Throws ConditionError when it cannot be evaluated (a missing
 * key, a type mismatch, division by zero…), gives something other than a boolean, or does more
 * work than CONDITION_MAX_COST. In a step's data, `output` and `error` are null when absent.
 */
export function evaluateCondition(expression: string, data: ConditionData): boolean {
  const result = evaluate(expression, data, 'a condition', (message, cause) => new ConditionError(message, cause === undefined ? undefined : { cause }));
  if (typeof result !== 'boolean') throw new ConditionError(`gives ${describeValue(result)}, not a boolean`);
  return result;
}

/**
 * A computed value (`{{= expression}}` in an input or an output, src/engine/templates.ts): the
 * expression's value as JSON, over the same data as a condition. Ints and doubles become JSON
 * numbers (a double that holds an integer is one, as JSON has it); lists and maps with string
 * keys become arrays and objects. Throws ExpressionError when it cannot be evaluated, does more
 * work than CONDITION_MAX_COST, or gives what JSON cannot hold (bytes, a type, an int past 2^53).
 */
export function evaluateExpression(expression: string, data: ConditionData, maxBytes = Number.POSITIVE_INFINITY): unknown {
  const result = evaluate(expression, data, 'an expression', (message, cause) => new ExpressionError(message, cause === undefined ? undefined : { cause }));
  return toJson(result, maxBytes);
}

/**
 * A computed value whose JSON would pass the bytes it may take: thrown while it is converted,
 * before it is built. The cost budget counts the work of an evaluation, not the size of what it
 * gives: `list.map(x, list)` is cheap to run and its value shares one list N times.
 */
export class ValueTooLargeError extends Error {
  override name = 'ValueTooLargeError';
}

/** Every problem of a computed value's expression against `scope`: a condition's checks, but any result type. */
export function checkExpression(expression: string, scope: ConditionScope): string[] {
  const compiled = compileUncached(expression);
  remember(expression, compiled);
  if ('error' in compiled) return [compiled.error];
  return new Checker(compiled.parsed, scope, false).run();
}

/**
 * The steps an expression reads (`steps.ID…` or `steps['ID']…`); undefined when it cannot be
 * told (it uses `steps` otherwise, or does not compile): then it may read any step in its scope.
 */
export function stepsReadBy(expression: string): Set<string> | undefined {
  let parsed: ParsedExpr & { expr: Expr };
  try {
    if (expression.length > CONDITION_MAX_CHARS || bracketDepth(expression) > CONDITION_MAX_DEPTH) return undefined;
    parsed = parse(expression);
  } catch {
    return undefined;
  }
  const ids = new Set<string>();
  let unknown = false;
  const isSteps = (expr: Expr | undefined) => expr?.exprKind.case === 'identExpr' && expr.exprKind.value.name === 'steps';
  const stack: Expr[] = [parsed.expr];
  while (stack.length > 0) {
    const expr = stack.pop()!;
    const kind = expr.exprKind;
    if (kind.case === 'selectExpr' && isSteps(kind.value.operand)) {
      ids.add(kind.value.field);
      continue;
    }
    if (kind.case === 'callExpr' && kind.value.function === '_[_]' && isSteps(kind.value.args[0])) {
      const key = kind.value.args[1]?.exprKind;
      if (key?.case === 'constExpr' && key.value.constantKind.case === 'stringValue') {
        ids.add(key.value.constantKind.value);
        continue;
      }
    }
    if (isSteps(expr)) unknown = true;
    stack.push(...children(expr));
  }
  return unknown ? undefined : ids;
}

/** Runs a compiled expression under the cost budget; its errors are made by `fail`. */
function evaluate(expression: string, data: ConditionData, what: string, fail: (message: string, cause?: unknown) => Error): unknown {
  const program = compile(expression);
  if (typeof program !== 'function') throw fail(program.error);
  const bindings: Record<string, unknown> = { params: celData(data.params), steps: celMap(new LazyMap(data.steps, celStep)) };
  for (const [name, value] of Object.entries(data.vars ?? {})) bindings[name] = celData(value);
  const budget = new Budget(CONDITION_MAX_COST);
  running = budget;
  let result: unknown;
  try {
    result = program(bindings);
  } catch (error) {
    // The library returns its errors, but throws on a stack overflow.
    throw fail(`could not be evaluated: ${error instanceof Error ? error.message : String(error)}`, error);
  } finally {
    running = undefined;
  }
  if (budget.exceeded) throw fail(`does more work than ${what} may (over ${CONDITION_MAX_COST} cost units)`);
  if (isCelError(result)) throw fail(`could not be evaluated: ${result.message}`);
  return result;
}

/**
 * A CEL value as JSON; throws ExpressionError for what JSON cannot hold, and ValueTooLargeError
 * once the JSON is known to pass `maxBytes` (counted in lower bounds as it goes: a string by its
 * length, anything else by one or two). Without recursion: a value may nest deep.
 */
function toJson(value: unknown, maxBytes: number): unknown {
  let bytes = 0;
  const spend = (units: number) => {
    bytes += units;
    if (bytes > maxBytes) throw new ValueTooLargeError(`the value is larger than ${maxBytes} bytes of JSON`);
  };
  const scalar = (item: unknown): unknown => {
    if (item === null || typeof item === 'boolean' || typeof item === 'string') return item;
    if (typeof item === 'number') {
      if (!Number.isFinite(item)) throw new ExpressionError(`gives ${item}, which JSON cannot hold`);
      return item;
    }
    if (typeof item === 'bigint' || isCelUint(item)) {
      const big = typeof item === 'bigint' ? item : item.value;
      if (big > BigInt(Number.MAX_SAFE_INTEGER) || big < BigInt(Number.MIN_SAFE_INTEGER))
        throw new ExpressionError(`gives the int ${big}, past what a JSON number holds exactly (2^53)`);
      return Number(big);
    }
    throw new ExpressionError(`gives ${describeValue(item)}, which JSON cannot hold`);
  };
  const root: { value?: unknown } = {};
  const stack: [unknown, (converted: unknown) => void][] = [[value, (converted) => (root.value = converted)]];
  while (stack.length > 0) {
    const [item, put] = stack.pop()!;
    spend(typeof item === 'string' ? item.length + 2 : 2);
    if (isCelList(item)) {
      const out: unknown[] = [];
      put(out);
      let index = 0;
      for (const child of item) {
        const at = index++;
        stack.push([child, (converted) => (out[at] = converted)]);
      }
    } else if (isCelMap(item)) {
      const out: Record<string, unknown> = {};
      put(out);
      for (const [key, child] of item) {
        if (typeof key !== 'string') throw new ExpressionError('gives a map with a key that is not a string, which JSON cannot hold');
        // defineProperty: a "__proto__" key stays a plain key.
        stack.push([child, (converted) => Object.defineProperty(out, key, { value: converted, enumerable: true, writable: true, configurable: true })]);
      }
    } else put(scalar(item));
  }
  return root.value;
}

/** How many conditions were compiled since the process started (cache misses, and every check), how many are cached, and how many may be. */
export function conditionCacheStats(): { compiled: number; cached: number; capacity: number } {
  return { compiled: compilations, cached: cache.size, capacity: CACHE_SIZE };
}

// ---------------------------------------------------------------------------------------------
// Compiling, cached

interface Compiled {
  parsed: ParsedExpr & { expr: Expr };
  program: Program;
}
type Program = (bindings: Record<string, unknown>) => unknown;

const cache = new Map<string, Program | { error: string }>();
let compilations = 0;

function compile(expression: string): Program | { error: string } {
  const cached = cache.get(expression);
  if (cached) {
    // Least recently used first: a hit moves to the end.
    cache.delete(expression);
    cache.set(expression, cached);
    return cached;
  }
  const compiled = compileUncached(expression);
  return remember(expression, compiled);
}

function remember(expression: string, compiled: Compiled | { error: string }): Program | { error: string } {
  const entry = 'error' in compiled ? compiled : compiled.program;
  cache.delete(expression);
  cache.set(expression, entry);
  if (cache.size > CACHE_SIZE) cache.delete(cache.keys().next().value!);
  return entry;
}

function compileUncached(expression: string): Compiled | { error: string } {
  compilations += 1;
  if (expression.length > CONDITION_MAX_CHARS) return { error: `is ${expression.length} characters long, more than ${CONDITION_MAX_CHARS}` };
  // The parser recurses per bracket: a thousand of them overflow its stack.
  if (bracketDepth(expression) > CONDITION_MAX_DEPTH) return { error: `nests deeper than ${CONDITION_MAX_DEPTH} levels` };
  let parsed: ParsedExpr & { expr: Expr };
  try {
    parsed = parse(expression);
  } catch (error) {
    if (error instanceof RangeError) return { error: `nests deeper than ${CONDITION_MAX_DEPTH} levels` };
    const message = String((error as Error).message).replace(/^<input>:/, '');
    // The parser lists every token it expected: the first few say enough.
    return { error: `does not parse: ${message.length > 100 ? `${message.slice(0, 99)}…` : message}` };
  }
  if (exprDepth(parsed.expr) > CONDITION_MAX_DEPTH) return { error: `nests deeper than ${CONDITION_MAX_DEPTH} levels` };
  try {
    const program = plan(env, instrument(parsed.expr)) as Program;
    return { parsed, program };
  } catch (error) {
    return { error: `does not compile: ${(error as Error).message}` };
  }
}

/** The deepest nesting of brackets outside string literals (a crude scan; the parser has the last word). */
function bracketDepth(text: string): number {
  let depth = 0;
  let max = 0;
  let quote = '';
  for (let i = 0; i < text.length; i += 1) {
    const char = text[i]!;
    if (quote) {
      if (char === '\\') i += 1;
      else if (char === quote) quote = '';
    } else if (char === '"' || char === "'") quote = char;
    else if (char === '(' || char === '[' || char === '{') max = Math.max(max, ++depth);
    else if (char === ')' || char === ']' || char === '}') depth -= 1;
  }
  return max;
}

/** The children of a node, in evaluation order. */
function children(expr: Expr): Expr[] {
  const kind = expr.exprKind;
  switch (kind.case) {
    case 'selectExpr':
      return kind.value.operand ? [kind.value.operand] : [];
    case 'callExpr':
      return kind.value.target ? [kind.value.target, ...kind.value.args] : kind.value.args;
    case 'listExpr':
      return kind.value.elements;
    case 'structExpr':
      return kind.value.entries.flatMap((entry) => [...(entry.keyKind.case === 'mapKey' ? [entry.keyKind.value] : []), ...(entry.value ? [entry.value] : [])]);
    case 'comprehensionExpr': {
      const { iterRange, accuInit, loopCondition, loopStep, result } = kind.value;
      return [iterRange, accuInit, loopCondition, loopStep, result].filter((child) => child !== undefined);
    }
    default:
      return [];
  }
}

/** Without recursion: the tree is measured before anything recurses over it. */
function exprDepth(root: Expr): number {
  let max = 0;
  const stack: [Expr, number][] = [[root, 1]];
  while (stack.length > 0) {
    const [expr, depth] = stack.pop()!;
    max = Math.max(max, depth);
    for (const child of children(expr)) stack.push([child, depth + 1]);
  }
  return max;
}

function nodeCount(expr: Expr): number {
  return children(expr).reduce((sum, child) => sum + nodeCount(child), 1);
}

// ---------------------------------------------------------------------------------------------
// The cost budget

class Budget {
  spent = 0;
  exceeded = false;
  constructor(readonly limit: number) {}

  /** Throws once past the limit; the library turns the throw into a CEL error, and evaluateCondition reports the budget. */
  charge(units: number): void {
    this.spent += units;
    if (this.spent > this.limit) {
      this.exceeded = true;
      throw new Error('over the cost budget');
    }
  }

  get remaining(): number {
    return Math.max(0, this.limit - this.spent);
  }
}

/** The budget of the evaluation under way: evaluations are synchronous, so there is at most one. */
let running: Budget | undefined;

/** How `@cost` measures its argument. */
const Measure = {
  /** Lists and maps with everything in them, strings by length. */
  Deep: 0,
  /** Strings and bytes by length; lists and maps are free (`size()`). */
  Text: 1,
  /** Lists by element count, maps free (the right side of `in`). */
  Shallow: 2,
} as const;
type Measure = (typeof Measure)[keyof typeof Measure];

/** The cost of handing `value` to a call, counted up to `stop` and no further (the count is itself work). */
function sizeOf(value: CelValue, measure: Measure, stop: number): number {
  let units = 0;
  const stack: CelValue[] = [value];
  while (stack.length > 0 && units <= stop) {
    const current = stack.pop()!;
    if (typeof current === 'string' || current instanceof Uint8Array) units += Math.ceil(current.length / STRING_CHUNK) * COST.stringChunk;
    else if (measure === Measure.Text || current === null || typeof current !== 'object') continue;
    else if (isCelList(current)) {
      if (measure === Measure.Shallow) units += current.size * COST.scannedElement;
      else {
        units += current.size * COST.element;
        for (const item of current) stack.push(item);
      }
    } else if (isCelMap(current) && measure === Measure.Deep) {
      units += current.size * COST.element;
      for (const [key, item] of current) stack.push(key as CelValue, item);
    }
  }
  return units;
}

const DYN = CelScalar.DYN;
/** Names the parser can never produce: `@` starts no identifier. */
const COST_FN = '@cost';
const ITERATE = '@iterate';
const APPEND = '@append';
const CONTINUE = '@continue';

/** Lists that `@append` built and may still grow: a comprehension's accumulator, seen by nothing else. */
const growing = new WeakMap<CelList, CelValue[]>();

const costFunctions = [
  celFunc(COST_FN, [DYN, CelScalar.INT], DYN, (value, measure) => {
    if (running) running.charge(sizeOf(value, Number(measure) as Measure, running.remaining));
    return value;
  }),
  celFunc(ITERATE, [DYN, CelScalar.INT], DYN, (range, bodyNodes) => {
    if (running && (isCelList(range) || isCelMap(range))) running.charge(range.size * Number(bodyNodes) * COST.loopNode);
    return range;
  }),
  // Once over the budget, loops stop: `all()` goes on past an error, so a loop went on making one
  // at every step, and 3,000 items nested in 3,000 took 600 ms to fail (60 ms with this).
  celFunc(CONTINUE, [DYN], DYN, (condition) => (running?.exceeded ? false : condition)),
  // map() and filter() expand to `@result + [item]`: the library's concatenation nests a list per
  // item, which made map() over 10,000 items take 150 ms and reading its result overflow the stack.
  celFunc(APPEND, [DYN, DYN], DYN, (accumulator, items) => {
    if (!isCelList(accumulator) || !isCelList(items)) throw new Error('invalid accumulation');
    let array = growing.get(accumulator);
    let list = accumulator;
    if (!array) {
      array = [...accumulator];
      list = celList(array);
      growing.set(list, array);
    }
    for (const item of items) array.push(item);
    return list;
  }),
];

/** Calls whose work does not grow with their arguments; `size` and `in` are measured their own way. */
const CHEAP_CALLS = new Set(['_&&_', '_||_', '_?_:_', '_[_]', '_[?_]', '_?._', '@not_strictly_false', '!_', '-_', '_-_', '_*_', '_/_', '_%_', 'type', 'dyn']);

/** A copy of `root` whose comprehensions and size-dependent calls charge the budget. */
function instrument(root: Expr): Expr {
  const copy = clone(ExprSchema, root);
  let nextId = maxId(copy) + 1n;
  const node = (exprKind: Expr['exprKind']) => create(ExprSchema, { id: nextId++, exprKind });
  const int = (value: number) => node({ case: 'constExpr', value: create(ConstantSchema, { constantKind: { case: 'int64Value', value: BigInt(value) } }) });
  const call = (fn: string, args: Expr[]) => node({ case: 'callExpr', value: create(Expr_CallSchema, { function: fn, args }) });
  const measured = (arg: Expr, measure: Measure) => (arg.exprKind.case === 'constExpr' ? arg : call(COST_FN, [arg, int(measure)]));

  const visit = (expr: Expr, accumulator?: string) => {
    const kind = expr.exprKind;
    if (kind.case === 'comprehensionExpr') {
      const value = kind.value;
      for (const child of children(expr)) visit(child, child === value.loopStep ? value.accuVar : undefined);
      if (value.loopCondition) value.loopCondition = call(CONTINUE, [value.loopCondition]);
      // Counted with the calls added to them: those take most of a step's time.
      const bodyNodes = 1 + (value.loopCondition ? nodeCount(value.loopCondition) : 0) + (value.loopStep ? nodeCount(value.loopStep) : 0);
      if (value.iterRange) value.iterRange = call(ITERATE, [value.iterRange, int(bodyNodes)]);
      return;
    }
    for (const child of children(expr)) visit(child, accumulator);
    if (kind.case !== 'callExpr') return;
    const value = kind.value;
    const first = value.args[0];
    const appends = value.function === '_+_' && value.args[1]?.exprKind.case === 'listExpr';
    if (appends && accumulator && first?.exprKind.case === 'identExpr' && first.exprKind.value.name === accumulator) {
      value.function = APPEND;
      return;
    }
    if (CHEAP_CALLS.has(value.function)) return;
    if (value.function === 'size') {
      if (value.target) value.target = measured(value.target, Measure.Text);
      value.args = value.args.map((arg) => measured(arg, Measure.Text));
    } else if (value.function === '@in') {
      value.args = value.args.map((arg, index) => measured(arg, index === 1 ? Measure.Shallow : Measure.Deep));
    } else {
      if (value.target) value.target = measured(value.target, Measure.Deep);
      value.args = value.args.map((arg) => measured(arg, Measure.Deep));
    }
  };
  visit(copy);
  return copy;
}

function maxId(root: Expr): bigint {
  let max = root.id;
  for (const child of children(root)) {
    const id = maxId(child);
    if (id > max) max = id;
  }
  return max;
}

// ---------------------------------------------------------------------------------------------
// Patterns: RE2, compiled once, paid for by size

interface Pattern {
  re: RE2JS;
  /** Instructions of the compiled program: matching costs about this much per character of text. */
  size: number;
}

const patterns = new Map<string, Pattern>();

/** A compiled pattern; compiling a new one charges the running budget, if any. Throws on a pattern that does not compile. */
function compilePattern(pattern: string): Pattern {
  const cached = patterns.get(pattern);
  if (cached) {
    patterns.delete(pattern);
    patterns.set(pattern, cached);
    return cached;
  }
  if (pattern.length > CONDITION_PATTERN_MAX_CHARS)
    throw new Error(`the pattern is ${pattern.length} characters long, more than ${CONDITION_PATTERN_MAX_CHARS}`);
  // Paid for as one instruction per character first, the rest once its size is known.
  running?.charge(pattern.length * COST.compiledInstruction);
  const re = RE2JS.compile(pattern);
  const compiled = { re, size: re.re2().prog.numInst() };
  running?.charge(Math.max(0, compiled.size - pattern.length) * COST.compiledInstruction);
  patterns.set(pattern, compiled);
  if (patterns.size > PATTERN_CACHE_SIZE) patterns.delete(patterns.keys().next().value!);
  return compiled;
}

/**
 * From the strings extension, those whose result is at most as large as what they are given, so
 * the cost of their arguments bounds them (`replace` and `format` can grow text by a product).
 */
const LINEAR_STRING_FUNCTIONS = new Set(['join', 'split', 'trim', 'lowerAscii', 'upperAscii', 'substring', 'charAt', 'indexOf', 'lastIndexOf']);

const env = celEnv({
  funcs: [...costFunctions, ...strings.filter((fn) => LINEAR_STRING_FUNCTIONS.has(fn.name))],
  re2: {
    compile(pattern: string) {
      const compiled = compilePattern(pattern);
      return {
        test(text: string) {
          running?.charge(text.length * compiled.size * COST.regexStep);
          return compiled.re.test(text);
        },
      };
    },
  },
});

// ---------------------------------------------------------------------------------------------
// Data

/**
 * A JSON object as the library's map, read where it lies: a value is converted when it is first
 * read, once per evaluation. The library copies a plain object into a Map at every access, so a
 * loop reading one field of a 50,000-key object would copy it per item; converting everything up
 * front took 500 ms for an output of 333,000 empty objects, most of it never read.
 */
class LazyMap<T> implements ReadonlyMap<string, CelInput> {
  private readonly converted = new Map<string, CelInput>();
  private names: string[] | undefined;

  constructor(
    private readonly object: Readonly<Record<string, T>>,
    private readonly convert: (value: T) => CelInput,
  ) {}

  get size(): number {
    return this.keyList().length;
  }

  get(key: string): CelInput | undefined {
    // The library asks with ints too (`m[1]`): a JSON object has none, and `object[1n]` would read "1".
    if (typeof key !== 'string' || !Object.hasOwn(this.object, key) || this.object[key] === undefined) return undefined;
    let value = this.converted.get(key);
    if (value === undefined) {
      value = this.convert(this.object[key]!);
      this.converted.set(key, value);
    }
    return value;
  }

  has(key: string): boolean {
    return this.get(key) !== undefined;
  }

  keys(): MapIterator<string> {
    return this.keyList().values();
  }

  *values(): MapIterator<CelInput> {
    for (const key of this.keyList()) yield this.get(key)!;
  }

  *entries(): MapIterator<[string, CelInput]> {
    for (const key of this.keyList()) yield [key, this.get(key)!];
  }

  [Symbol.iterator](): MapIterator<[string, CelInput]> {
    return this.entries();
  }

  forEach(callback: (value: CelInput, key: string, map: ReadonlyMap<string, CelInput>) => void): void {
    for (const [key, value] of this.entries()) callback(value, key, this);
  }

  private keyList(): string[] {
    this.names ??= Object.keys(this.object).filter((key) => this.object[key] !== undefined);
    return this.names;
  }
}

/** A JSON value as the library takes it: objects as lazy maps, arrays converted one level (their items are read through get()). */
function celData(value: unknown): CelInput {
  if (value === undefined || typeof value === 'function' || typeof value === 'symbol') return null;
  if (value === null || typeof value !== 'object') return value as CelInput;
  if (Array.isArray(value)) return celList(value.map(celData));
  const json = typeof (value as { toJSON?: unknown }).toJSON === 'function' ? (value as { toJSON(): unknown }).toJSON() : value;
  if (json !== value) return celData(json);
  return celMap(new LazyMap(value as Record<string, unknown>, celData));
}

function celStep(step: ConditionData['steps'][string]): CelInput {
  return celMap(
    new Map<string, CelInput>([
      ['status', step.status],
      ['output', celData(step.output ?? null)],
      ['error', celData(step.error ?? null)],
    ]),
  );
}

function describeValue(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value === 'bigint') return `an int (${value})`;
  if (typeof value === 'number') return `a double (${value})`;
  if (typeof value === 'string') return 'a string';
  if (isCelList(value)) return 'a list';
  if (isCelMap(value)) return 'a map';
  return 'a value of another type';
}

// ---------------------------------------------------------------------------------------------
// The static check

type Type =
  | { kind: 'dyn' }
  | { kind: 'scalar'; name: string }
  | { kind: 'list'; element: Type }
  | { kind: 'map'; value: Type }
  /** Known fields; `rest` types any other field, and without it another field is a problem (`missing` says which). */
  | { kind: 'object'; fields: ReadonlyMap<string, Type>; rest?: Type; missing: (field: string) => string };

const ANY: Type = { kind: 'dyn' };
const scalar = (name: string): Type => ({ kind: 'scalar', name });
const BOOL = scalar('bool');
const INT = scalar('int');
const DOUBLE = scalar('double');
const STRING = scalar('string');
const NULL = scalar('null_type');
const TYPE = scalar('type');

const TYPE_NAMES = new Set(['bool', 'int', 'uint', 'double', 'string', 'bytes', 'list', 'map', 'null_type', 'type', 'dyn']);
const NUMERIC = new Set(['int', 'uint', 'double']);

const PARAMETER_TYPES: Record<ParameterType, Type> = {
  string: STRING,
  number: DOUBLE,
  // JSON numbers reach CEL as double, whole or not.
  integer: DOUBLE,
  boolean: BOOL,
  object: { kind: 'map', value: ANY },
  array: { kind: 'list', element: ANY },
};

const OPERATORS: Record<string, string> = {
  '_+_': '+',
  '_-_': '-',
  '_*_': '*',
  '_/_': '/',
  '_%_': '%',
  '_<_': '<',
  '_<=_': '<=',
  '_>_': '>',
  '_>=_': '>=',
  '_==_': '==',
  '_!=_': '!=',
  '!_': '!',
  '-_': '-',
  '@in': 'in',
};
const ARITHMETIC = new Set(['_+_', '_-_', '_*_', '_/_', '_%_']);
/** Calls the planner evaluates itself rather than through a function. */
const SPECIAL_CALLS = new Set(['_&&_', '_||_', '@not_strictly_false', '_?_:_', '_[_]', '_[?_]', '_==_', '_!=_']);

/** The library's functions by name, for overload resolution. */
const FUNCTIONS = (() => {
  const byName = new Map<string, { target: CelType | undefined; args: readonly CelType[]; result: CelType }[]>();
  for (const fn of env.funcs) {
    if (fn.name.startsWith('@') && fn.name !== '@in') continue;
    byName.set(fn.name, [...(byName.get(fn.name) ?? []), { target: fn.target, args: fn.arguments, result: fn.result }]);
  }
  return byName;
})();

function typeName(type: Type): string {
  switch (type.kind) {
    case 'dyn':
      return 'dyn';
    case 'scalar':
      return { null_type: 'null', 'google.protobuf.Timestamp': 'timestamp', 'google.protobuf.Duration': 'duration' }[type.name] ?? type.name;
    case 'list':
      return 'list';
    default:
      return 'map';
  }
}

function isAny(type: Type): boolean {
  return type.kind === 'dyn';
}

/** Whether a value of `type` may be passed where the library's function takes `param`. */
function fits(type: Type, param: CelType): boolean {
  if (type.kind === 'dyn' || param === DYN) return true;
  switch (param.kind) {
    case 'scalar':
      return type.kind === 'scalar' && type.name === param.name;
    case 'list':
      return type.kind === 'list' && fits(type.element, param.element);
    case 'map':
      return type.kind === 'map' || type.kind === 'object';
    default:
      return type.kind === 'scalar' && type.name === param.name;
  }
}

function fromCelType(type: CelType): Type {
  if (type === DYN) return ANY;
  if (type.kind === 'list') return { kind: 'list', element: fromCelType(type.element) };
  if (type.kind === 'map') return { kind: 'map', value: fromCelType(type.value) };
  return scalar(type.name);
}

function sameType(a: Type, b: Type): boolean {
  if (a.kind !== b.kind) return false;
  if (a.kind === 'scalar' && b.kind === 'scalar') return a.name === b.name;
  if (a.kind === 'list' && b.kind === 'list') return sameType(a.element, b.element);
  return a.kind === 'dyn';
}

/** The type of a value that is either `a` or `b`. */
function join(a: Type, b: Type): Type {
  if (sameType(a, b)) return a;
  if (a.kind === 'list' && b.kind === 'list') return { kind: 'list', element: join(a.element, b.element) };
  return ANY;
}

/** Whether `==` between the two can ever hold: CEL compares numbers by value, and anything with null. */
function comparable(a: Type, b: Type): boolean {
  if (isAny(a) || isAny(b)) return true;
  if (a.kind === 'scalar' && b.kind === 'scalar')
    return a.name === b.name || a.name === 'null_type' || b.name === 'null_type' || (NUMERIC.has(a.name) && NUMERIC.has(b.name));
  if (a.kind === 'scalar' || b.kind === 'scalar') return (a.kind === 'scalar' && a.name === 'null_type') || (b.kind === 'scalar' && b.name === 'null_type');
  if (a.kind === 'list' || b.kind === 'list') return a.kind === b.kind && comparable((a as { element: Type }).element, (b as { element: Type }).element);
  return true;
}

/**
 * What a local reference (`#/$defs/Item`: a service's schemas keep theirs) in a schema under
 * `root` refers to; the schema itself when it is no reference, undefined when it leads nowhere.
 */
export function dereferenced(schema: JsonSchema | boolean, root: JsonSchema | boolean): JsonSchema | boolean | undefined {
  let current: unknown = schema;
  for (let hops = 0; hops < 8 && typeof current === 'object' && current !== null && typeof (current as JsonSchema).$ref === 'string'; hops += 1) {
    const ref = (current as JsonSchema).$ref!;
    if (!ref.startsWith('#/')) return undefined;
    current = root;
    for (const raw of ref.slice(2).split('/')) {
      const segment = raw.replace(/~1/g, '/').replace(/~0/g, '~');
      if (typeof current !== 'object' || current === null || !Object.hasOwn(current, segment)) return undefined;
      current = (current as Record<string, unknown>)[segment];
    }
  }
  return current as JsonSchema | boolean | undefined;
}

/** Schema nodes one output's type is read from: past them (references fanning out), values are dyn. */
const SCHEMA_TYPE_NODES = 2_000;

/** The CEL type of values that fit `schema`; any value (dyn) where it says too little or too much. */
function schemaType(
  raw: JsonSchema | boolean | undefined,
  path: string,
  depth = 0,
  root: JsonSchema | boolean | undefined = raw,
  budget = { left: SCHEMA_TYPE_NODES },
): Type {
  budget.left -= 1;
  const schema = raw === undefined || root === undefined ? undefined : dereferenced(raw, root);
  if (schema === undefined || typeof schema === 'boolean' || depth > 32 || budget.left < 0) return ANY;
  const schemaType_ = (child: JsonSchema | boolean | undefined, at: string) => schemaType(child, at, depth + 1, root, budget);
  const alternatives = schema.anyOf ?? schema.oneOf;
  if (alternatives) {
    // A nullable value (zod's .nullable()) has the type of its other alternative.
    const others = alternatives.filter((option) => option.type !== 'null');
    return others.length === 1 ? schemaType_(others[0], path) : ANY;
  }
  const types = (Array.isArray(schema.type) ? schema.type : schema.type ? [schema.type] : []).filter((type) => type !== 'null');
  const type = types.length === 1 ? types[0] : types.length === 0 && schema.properties ? 'object' : undefined;
  switch (type) {
    case 'string':
      return STRING;
    case 'number':
    case 'integer':
      return DOUBLE;
    case 'boolean':
      return BOOL;
    case 'array':
      return { kind: 'list', element: Array.isArray(schema.items) ? ANY : schemaType_(schema.items, `${path}[]`) };
    case 'object': {
      const extra = schema.additionalProperties;
      if (!schema.properties) {
        if (extra === false) return { kind: 'object', fields: new Map(), missing: (field) => `${path} has no field ${field}` };
        return { kind: 'map', value: typeof extra === 'object' ? schemaType_(extra, `${path}.*`) : ANY };
      }
      // Without additionalProperties, no other field, as src/workflows/check.ts reads templates (zod writes `false`).
      const fields = new Map(Object.entries(schema.properties).map(([name, property]) => [name, schemaType_(property, `${path}.${name}`)]));
      const object: Type = { kind: 'object', fields, missing: (field) => `${path} has no field ${field}` };
      if (extra === true || typeof extra === 'object') object.rest = schemaType_(extra, `${path}.*`);
      return object;
    }
    default:
      if (types.length === 0 && schema.type === 'null') return NULL;
      if (schema.const !== undefined) return constType(schema.const);
      if (schema.enum?.length && schema.enum.every((item) => typeof item === typeof schema.enum![0])) return constType(schema.enum[0]!);
      return ANY;
  }
}

function constType(value: string | number | boolean | null): Type {
  if (typeof value === 'string') return STRING;
  if (typeof value === 'number') return DOUBLE;
  if (typeof value === 'boolean') return BOOL;
  return ANY;
}

/** Types every node from the scope, the literals and the library's overloads; dyn where nothing is known, and a problem where nothing can work. */
class Checker {
  private readonly problems = new Set<string>();
  private readonly params: Type;
  private readonly steps: Type;

  private readonly vars: ReadonlyMap<string, Type>;

  constructor(
    private readonly parsed: ParsedExpr & { expr: Expr },
    scope: ConditionScope,
    /** A condition gives a boolean; a computed value anything. */
    private readonly boolean = true,
  ) {
    this.vars = new Map(Object.entries(scope.vars ?? {}).map(([name, schema]) => [name, schema ? schemaType(schema, name) : ANY]));
    this.params = {
      kind: 'object',
      fields: new Map(Object.entries(scope.params).map(([name, type]) => [name, PARAMETER_TYPES[type] ?? ANY])),
      missing: (field) => `params.${field} is not a declared parameter`,
    };
    this.steps = {
      kind: 'object',
      fields: new Map(
        Object.entries(scope.steps).map(([id, step]): [string, Type] => [
          id,
          {
            kind: 'object',
            fields: new Map<string, Type>([
              ['output', step.output ? schemaType(step.output, `steps.${id}.output`) : ANY],
              ['status', STRING],
              ['error', ANY],
            ]),
            missing: (field) => `steps.${id} has no field ${field} (a step has output, status and error)`,
          },
        ]),
      ),
      missing: (field) => `steps.${field} is not one of the steps this step depends on`,
    };
  }

  run(): string[] {
    const result = this.check(this.parsed.expr, new Map());
    if (this.boolean && !isAny(result) && !sameType(result, BOOL)) this.problems.add(`the result is ${article(typeName(result))}, not a boolean`);
    return [...this.problems];
  }

  private text(expr: Expr): string {
    let text: string;
    try {
      text = unparse(create(ParsedExprSchema, { expr, sourceInfo: this.parsed.sourceInfo }));
    } catch {
      text = 'an expression';
    }
    return text.length > 60 ? `${text.slice(0, 59)}…` : text;
  }

  private needBool(expr: Expr, type: Type): void {
    if (!isAny(type) && !sameType(type, BOOL)) this.problems.add(`${this.text(expr)} is ${article(typeName(type))}, not a boolean`);
  }

  private check(expr: Expr, locals: ReadonlyMap<string, Type>): Type {
    const kind = expr.exprKind;
    switch (kind.case) {
      case 'constExpr':
        switch (kind.value.constantKind.case) {
          case 'boolValue':
            return BOOL;
          case 'int64Value':
            return INT;
          case 'uint64Value':
            return scalar('uint');
          case 'doubleValue':
            return DOUBLE;
          case 'stringValue':
            return STRING;
          case 'bytesValue':
            return scalar('bytes');
          case 'nullValue':
            return NULL;
          default:
            return ANY;
        }
      case 'identExpr': {
        const name = kind.value.name;
        const local = locals.get(name);
        if (local) return local;
        if (name === 'params') return this.params;
        if (name === 'steps') return this.steps;
        const named = this.vars.get(name);
        if (named) return named;
        if (TYPE_NAMES.has(name)) return TYPE;
        const names = ['params', 'steps', ...this.vars.keys()];
        this.problems.add(`unknown name ${name} (${this.boolean ? 'a condition' : 'an expression'} sees ${names.slice(0, -1).join(', ')} and ${names.at(-1)})`);
        return ANY;
      }
      case 'selectExpr': {
        const operand = kind.value.operand ? this.check(kind.value.operand, locals) : ANY;
        const field = this.field(kind.value.operand!, operand, kind.value.field);
        return kind.value.testOnly ? BOOL : field;
      }
      case 'listExpr':
        return { kind: 'list', element: kind.value.elements.map((element) => this.check(element, locals)).reduce(join, ANY) };
      case 'structExpr': {
        let value: Type | undefined;
        for (const entry of kind.value.entries) {
          if (entry.keyKind.case === 'mapKey') this.check(entry.keyKind.value, locals);
          const type = entry.value ? this.check(entry.value, locals) : ANY;
          value = value ? join(value, type) : type;
        }
        return kind.value.messageName ? ANY : { kind: 'map', value: value ?? ANY };
      }
      case 'comprehensionExpr':
        return this.comprehension(kind.value, locals);
      case 'callExpr':
        return this.call(expr, kind.value, locals);
      default:
        return ANY;
    }
  }

  private field(operandExpr: Expr, operand: Type, field: string): Type {
    switch (operand.kind) {
      case 'object': {
        const type = operand.fields.get(field) ?? operand.rest;
        if (type) return type;
        this.problems.add(operand.missing(field));
        return ANY;
      }
      case 'map':
        return operand.value;
      case 'scalar':
        if (operand.name !== 'null_type') this.problems.add(`${this.text(operandExpr)} is ${article(typeName(operand))}; it has no field ${field}`);
        return ANY;
      case 'list':
        this.problems.add(`${this.text(operandExpr)} is a list; it has no field ${field}`);
        return ANY;
      default:
        return ANY;
    }
  }

  private comprehension(value: Extract<Expr['exprKind'], { case: 'comprehensionExpr' }>['value'], locals: ReadonlyMap<string, Type>): Type {
    const range = value.iterRange ? this.check(value.iterRange, locals) : ANY;
    let item: Type = ANY;
    let second: Type = ANY;
    if (range.kind === 'list') {
      item = value.iterVar2 ? INT : range.element;
      second = range.element;
    } else if (range.kind === 'map') {
      item = STRING;
      second = range.value;
    } else if (range.kind === 'object') {
      item = STRING;
    } else if (range.kind === 'scalar') {
      this.problems.add(`cannot iterate over ${this.text(value.iterRange!)}, ${article(typeName(range))}`);
    }
    const accumulator = value.accuInit ? this.check(value.accuInit, locals) : ANY;
    const inner = new Map(locals);
    inner.set(value.iterVar, item);
    if (value.iterVar2) inner.set(value.iterVar2, second);
    inner.set(value.accuVar, accumulator);
    if (value.loopCondition) this.check(value.loopCondition, inner);
    const step = value.loopStep ? this.check(value.loopStep, inner) : ANY;
    // map() and filter() accumulate a list whose items the step adds: the result has the step's type.
    const done = new Map(locals);
    done.set(value.accuVar, accumulator.kind === 'list' && step.kind === 'list' ? step : accumulator);
    return value.result ? this.check(value.result, done) : ANY;
  }

  private call(expr: Expr, call: Extract<Expr['exprKind'], { case: 'callExpr' }>['value'], locals: ReadonlyMap<string, Type>): Type {
    const name = call.function;
    if (!FUNCTIONS.has(name) && !SPECIAL_CALLS.has(name)) {
      // Its arguments are not checked: in `cel.bind(x, 1, x)`, `x` is no variable without the function.
      const namespace = call.target?.exprKind.case === 'identExpr' ? `${call.target.exprKind.value.name}.` : '';
      this.problems.add(`unknown function ${namespace}${name}`);
      return ANY;
    }
    const target = call.target ? this.check(call.target, locals) : undefined;
    const args = call.args.map((arg) => this.check(arg, locals));
    switch (name) {
      case '_&&_':
      case '_||_':
        for (const [index, arg] of call.args.entries()) this.needBool(arg, args[index]!);
        return BOOL;
      case '@not_strictly_false':
        return BOOL;
      case '_?_:_':
        this.needBool(call.args[0]!, args[0]!);
        return join(args[1]!, args[2]!);
      case '_[_]':
      case '_[?_]':
        return this.index(call.args[0]!, args[0]!, call.args[1]!, args[1]!);
      case '_==_':
      case '_!=_':
        if (!comparable(args[0]!, args[1]!)) {
          this.problems.add(`${this.text(expr)} compares ${article(typeName(args[0]!))} with ${article(typeName(args[1]!))}, which are never equal`);
        }
        return BOOL;
    }
    if (name === 'matches' && call.args[0]?.exprKind.case === 'constExpr' && call.args[0].exprKind.value.constantKind.case === 'stringValue') {
      const pattern = call.args[0].exprKind.value.constantKind.value;
      try {
        compilePattern(pattern);
      } catch (error) {
        this.problems.add(`${this.text(call.args[0])} is not a pattern matches() can use: ${(error as Error).message}`);
      }
    }
    const overloads = FUNCTIONS.get(name)!;
    const shown = OPERATORS[name] ? `'${OPERATORS[name]}'` : name;
    const shaped = overloads.filter((overload) => (overload.target !== undefined) === (target !== undefined) && overload.args.length === args.length);
    if (shaped.length === 0) {
      this.problems.add(`${this.text(expr)}: ${shown} does not take ${target ? 'a receiver and ' : ''}${args.length} argument${args.length === 1 ? '' : 's'}`);
      return ANY;
    }
    const matching = shaped.filter((overload) => (!target || fits(target, overload.target!)) && args.every((arg, index) => fits(arg, overload.args[index]!)));
    if (matching.length === 0) {
      const types = [...(target ? [target] : []), ...args].map(typeName);
      const numbers = ARITHMETIC.has(name) && types.includes('double') && types.includes('int');
      const hint = !numbers
        ? ''
        : name === '_%_'
          ? ' (JSON numbers are doubles; % takes ints: convert with int())'
          : ' (JSON numbers are doubles: write 1.0, or convert with int() or double())';
      const on = OPERATORS[name]
        ? types.length === 1
          ? `${shown} does not apply to ${article(types[0]!)}`
          : `no ${shown} between ${types.join(' and ')}`
        : `${name} does not take ${types.map(article).join(', ')}`;
      this.problems.add(`${this.text(expr)}: ${on}${hint}`);
      return ANY;
    }
    if (name === '_+_' && args[0]!.kind === 'list' && args[1]!.kind === 'list') return join(args[0]!, args[1]!);
    const results = matching.map((overload) => fromCelType(overload.result));
    return results.every((result) => sameType(result, results[0]!)) ? results[0]! : ANY;
  }

  private index(operandExpr: Expr, operand: Type, keyExpr: Expr, key: Type): Type {
    const constant =
      keyExpr.exprKind.case === 'constExpr' && keyExpr.exprKind.value.constantKind.case === 'stringValue'
        ? keyExpr.exprKind.value.constantKind.value
        : undefined;
    const keyName = typeName(key);
    switch (operand.kind) {
      case 'list':
        if (!isAny(key) && !NUMERIC.has(keyName)) this.problems.add(`${this.text(operandExpr)} is a list: its index is a number, not ${article(keyName)}`);
        return operand.element;
      case 'object':
        if (constant !== undefined) return this.field(operandExpr, operand, constant);
        if (!isAny(key) && keyName !== 'string') this.problems.add(`${this.text(operandExpr)} is a map: its keys are strings, not ${article(keyName)}`);
        return ANY;
      case 'map':
        return operand.value;
      case 'scalar':
        if (operand.name !== 'null_type') this.problems.add(`${this.text(operandExpr)} is ${article(typeName(operand))}; it cannot be indexed`);
        return ANY;
      default:
        return ANY;
    }
  }
}

function article(name: string): string {
  if (name === 'null' || name === 'dyn') return name;
  return /^[aeiou]/.test(name) ? `an ${name}` : `a ${name}`;
}
