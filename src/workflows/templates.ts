/**
 * `{{params.NAME}}` and `{{steps.ID.output.PATH}}` in workflow inputs and outputs.
 *
 * Templates are data: a reference is looked up, never evaluated, and a substituted value is not
 * scanned again, so template syntax inside params stays text. A string that is exactly one
 * template keeps the referenced value's type; a template inside a longer string is interpolated
 * as text.
 */

const TEMPLATE = /\{\{\s*([^{}]*?)\s*\}\}/g;
const WHOLE = /^\{\{\s*([^{}]*?)\s*\}\}$/;
const SEGMENT = /^[A-Za-z_][A-Za-z0-9_-]*$/;

export type Reference =
  | { kind: 'params'; name: string; path: string[] }
  | { kind: 'steps'; step: string; field: 'output' | 'error' | 'status'; path: string[] };

export interface FoundReference {
  /** JSON path of the string holding the template, relative to the scanned value. */
  at: string;
  expression: string;
  /** Undefined when the expression is malformed; `problem` says why. */
  reference?: Reference;
  problem?: string;
}

/** Splits `a.b[0].c` into ['a', 'b', '0', 'c']. */
function splitPath(expression: string): string[] | undefined {
  const segments: string[] = [];
  for (const part of expression.split('.')) {
    const match = /^([^[\]]*)((?:\[\d+\])*)$/.exec(part);
    if (!match) return undefined;
    if (match[1]) segments.push(match[1]);
    else if (!match[2]) return undefined;
    for (const index of match[2]!.matchAll(/\[(\d+)\]/g)) segments.push(index[1]!);
  }
  return segments;
}

export function parseReference(expression: string): { reference?: Reference; problem?: string } {
  const segments = splitPath(expression);
  if (!segments || segments.length === 0) return { problem: `malformed template {{${expression}}}` };
  const invalid = segments.find((segment) => !SEGMENT.test(segment) && !/^\d+$/.test(segment));
  if (invalid !== undefined) return { problem: `malformed path segment "${invalid}" in {{${expression}}}` };
  const [root, ...rest] = segments;
  if (root === 'params') {
    const [name, ...path] = rest;
    if (!name) return { problem: `{{${expression}}} names no parameter` };
    return { reference: { kind: 'params', name, path } };
  }
  if (root === 'steps') {
    const [step, field, ...path] = rest;
    if (!step || !field) return { problem: `{{${expression}}} must look like steps.ID.output.PATH` };
    if (field !== 'output' && field !== 'error' && field !== 'status') {
      return { problem: `{{${expression}}}: a step exposes output, error and status, not "${field}"` };
    }
    if (field === 'status' && path.length > 0) return { problem: `{{${expression}}}: status has no fields` };
    return { reference: { kind: 'steps', step, field, path } };
  }
  return { problem: `{{${expression}}} must start with params. or steps.` };
}

function joinPath(base: string, key: string | number): string {
  if (typeof key === 'number') return `${base}[${key}]`;
  return /^[A-Za-z_][A-Za-z0-9_]*$/.test(key) ? (base ? `${base}.${key}` : key) : `${base}[${JSON.stringify(key)}]`;
}

/** Every template in a JSON value, with where it sits. */
export function findReferences(value: unknown, at = ''): FoundReference[] {
  if (typeof value === 'string') {
    return [...value.matchAll(TEMPLATE)].map((match) => ({ at, expression: match[1]!, ...parseReference(match[1]!) }));
  }
  if (Array.isArray(value)) return value.flatMap((item, index) => findReferences(item, joinPath(at, index)));
  if (value !== null && typeof value === 'object') {
    return Object.entries(value).flatMap(([key, item]) => findReferences(item, joinPath(at, key)));
  }
  return [];
}

export function hasTemplates(value: unknown): boolean {
  return findReferences(value).length > 0;
}

export interface TemplateContext {
  params: Record<string, unknown>;
  steps: Record<string, { status: string; output?: unknown; error?: unknown }>;
}

/** Own properties only: `{{params.constructor}}` must not reach Object.prototype. */
function lookup(root: unknown, path: readonly string[]): unknown {
  let current = root;
  for (const segment of path) {
    if (current === null || typeof current !== 'object') return undefined;
    if (!Object.hasOwn(current, segment)) return undefined;
    current = (current as Record<string, unknown>)[segment];
  }
  return current;
}

function valueOf(reference: Reference, context: TemplateContext): unknown {
  if (reference.kind === 'params') return lookup(context.params, [reference.name, ...reference.path]);
  const step = Object.hasOwn(context.steps, reference.step) ? context.steps[reference.step] : undefined;
  if (!step) return undefined;
  return lookup(step, [reference.field, ...reference.path]);
}

function asText(value: unknown): string {
  if (value === undefined || value === null) return '';
  return typeof value === 'string' ? value : JSON.stringify(value);
}

function resolveString(text: string, context: TemplateContext): unknown {
  const whole = WHOLE.exec(text);
  if (whole) {
    const { reference } = parseReference(whole[1]!);
    // A missing value becomes null: JSON has no undefined, and the tool's schema decides.
    return reference ? (valueOf(reference, context) ?? null) : text;
  }
  return text.replace(TEMPLATE, (match, expression: string) => {
    const { reference } = parseReference(expression);
    return reference ? asText(valueOf(reference, context)) : match;
  });
}

/** A copy of `value` with every template replaced. Only the definition is scanned, never a substituted value. */
export function resolveTemplates(value: unknown, context: TemplateContext): unknown {
  if (typeof value === 'string') return resolveString(value, context);
  if (Array.isArray(value)) return value.map((item) => resolveTemplates(item, context));
  if (value !== null && typeof value === 'object') {
    // fromEntries defines own properties, so a "__proto__" key stays a plain key.
    return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, resolveTemplates(item, context)]));
  }
  return value;
}
