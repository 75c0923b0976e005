import { RE2JS } from '@bufbuild/re2';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import addFormats from 'ajv-formats';
import { jsonPath, type Problem } from './errors.js';

/**
 * JSON Schemas that users write into workflow definitions (a signal's payload, an approval's
 * form), checked when the definition is stored and applied to what people send. Ajv compiles
 * them; its `pattern`s run on RE2 (linear time), so a schema cannot make a payload's check take
 * exponential time, and nothing is ever fetched (`$ref` resolves within the schema or fails).
 */

const PATTERN_MAX_CHARS = 1000;
/** Compiled validators kept, by the schema's JSON (least recently used dropped first). */
const CACHE_SIZE = 500;

function re2(pattern: string): { test(text: string): boolean } {
  if (pattern.length > PATTERN_MAX_CHARS) throw new Error(`a pattern is ${pattern.length} characters long, more than ${PATTERN_MAX_CHARS}`);
  const compiled = RE2JS.compile(pattern);
  return { test: (text: string) => compiled.test(text) };
}

const matchers = new Map<string, { test(text: string): boolean } | null>();

/**
 * A JSON Schema `pattern` a third party wrote (a service's OpenAPI document), on RE2: found
 * anywhere in the text, in time linear in it. Undefined when RE2 cannot run it (a lookaround, a
 * backreference, longer than PATTERN_MAX_CHARS): such a pattern is not checked.
 */
export function patternMatcher(pattern: string): { test(text: string): boolean } | undefined {
  let found = matchers.get(pattern);
  if (found === undefined) {
    try {
      found = re2(pattern);
    } catch {
      found = null;
    }
    matchers.set(pattern, found);
    if (matchers.size > CACHE_SIZE) matchers.delete(matchers.keys().next().value!);
  }
  return found ?? undefined;
}

function makeAjv(coerceTypes: boolean): Ajv {
  // Strict about what is surely a mistake (unknown keywords and formats), not about what JSON
  // Schema allows (`required` without `properties`, `properties` without `type`).
  const ajv = new Ajv({
    allErrors: true,
    strict: true,
    strictRequired: false,
    strictTypes: false,
    strictTuples: false,
    coerceTypes,
    code: { regExp: re2 as never },
  });
  (addFormats as unknown as (ajv: Ajv) => Ajv)(ajv);
  return ajv;
}

const plain = makeAjv(false);
// A form posted by a browser sends every field as text: "3" fits an integer field.
const coercing = makeAjv(true);
const cache = new Map<string, ValidateFunction>();

function compiled(schema: object, coerce: boolean): ValidateFunction {
  const key = `${coerce ? 'c' : 'p'}${JSON.stringify(schema)}`;
  const found = cache.get(key);
  if (found) {
    cache.delete(key);
    cache.set(key, found);
    return found;
  }
  const validate = (coerce ? coercing : plain).compile(schema);
  cache.set(key, validate);
  if (cache.size > CACHE_SIZE) cache.delete(cache.keys().next().value!);
  return validate;
}

/** Why `schema` is not a usable JSON Schema, or undefined when it is. */
export function schemaProblem(schema: object): string | undefined {
  try {
    compiled(schema, false);
    return undefined;
  } catch (error) {
    return (error as Error).message.slice(0, 500);
  }
}

function problemOf(error: ErrorObject, prefix: PropertyKey[]): Problem {
  const segments = error.instancePath
    .split('/')
    .slice(1)
    .map((part) => part.replaceAll('~1', '/').replaceAll('~0', '~'));
  if (error.keyword === 'required') segments.push((error.params as { missingProperty: string }).missingProperty);
  if (error.keyword === 'additionalProperties') segments.push((error.params as { additionalProperty: string }).additionalProperty);
  return { path: jsonPath([...prefix, ...segments]), message: error.message ?? 'does not fit the schema' };
}

/**
 * What in `value` does not fit `schema` (which passed schemaProblem), each at its JSON path under
 * `prefix`. `coerce`: text fields become the numbers and booleans the schema asks for, in place.
 */
export function schemaProblems(schema: object, value: unknown, prefix: PropertyKey[] = [], coerce = false): Problem[] {
  const validate = compiled(schema, coerce);
  if (validate(value)) return [];
  return (validate.errors ?? []).slice(0, 20).map((error) => problemOf(error, prefix));
}
