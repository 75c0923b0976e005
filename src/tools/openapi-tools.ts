import { Validator } from '@cfworker/json-schema';
import { z } from 'zod';
import type { JsonSchema } from '../engine/catalog.js';
import type { KeyLimit } from '../engine/types.js';
import { NonRetryableError, RetryableError } from '../lib/errors.js';
import type { HostPolicy } from '../lib/host-policy.js';
import { patternMatcher } from '../lib/json-schema.js';
import { outboundRequest, parseRetryAfter } from '../lib/outbound-http.js';
import type { Secrets } from '../lib/secrets.js';
import { follow, isObject, type Json, SCHEMA_LISTS, SCHEMA_MAPS, SCHEMA_VALUES, type ServiceOperation } from './openapi-operations.js';
import { type AnyTool, DEFAULT_RETRY } from './tool.js';

/**
 * A registered service's OpenAPI operations as tools. Each operation with an operationId is a
 * tool `<service>.<operationId>` whose input is
 * `{path?: {...}, query?: {...}, headers?: {...}, body?: ...}` (the operation's parameters by
 * where they go, and its JSON request body) and whose output is the 2xx answer's JSON body, with
 * the schemas the document gives. Calls go through the outbound HTTP layer under the host
 * allowlist (HTTP_TOOL_ALLOWED_HOSTS), without following redirects: network errors, 5xx, 408 and
 * 429 are retried (honouring Retry-After), other 4xx fail at once.
 */

export function isServiceTool(name: string): boolean {
  return name.includes('.');
}

export function serviceOf(toolName: string): string {
  return toolName.slice(0, toolName.indexOf('.'));
}

export interface ServiceAuth {
  type: 'bearer' | 'basic' | 'header';
  /** The name of the secret (see src/lib/secrets.ts): never its value. */
  secret_ref: string;
  /** type header: the header that carries the secret. @defaultValue 'X-API-Key' */
  header_name?: string;
}

/** What a service's tools need to call it. */
export interface ServiceTarget {
  name: string;
  baseUrl: string;
  headers: Record<string, string>;
  auth?: ServiceAuth;
  timeoutMs: number;
  concurrency?: number;
  /** Starts per minute or second, across every worker. */
  rateLimit?: { per_minute?: number; per_second?: number };
}

/** A schema without the keywords the interpreter must not run: `pattern` (RE2 checks it), `patternProperties` and `format`. */
function withoutPatterns(schema: unknown): unknown {
  if (!isObject(schema)) return schema;
  const out: Json = {};
  for (const [key, value] of Object.entries(schema)) {
    if (key === 'pattern' || key === 'patternProperties' || key === 'format') continue;
    if (SCHEMA_MAPS.has(key) && isObject(value)) out[key] = Object.fromEntries(Object.entries(value).map(([name, child]) => [name, withoutPatterns(child)]));
    else if (SCHEMA_VALUES.has(key)) out[key] = withoutPatterns(value);
    else if (SCHEMA_LISTS.has(key) && Array.isArray(value)) out[key] = value.map(withoutPatterns);
    else out[key] = value;
  }
  return out;
}

/** `#/a/b~1c` -> `['a', 'b/c']`, array indexes as numbers. */
function pointerPath(pointer: string): PropertyKey[] {
  return pointer
    .replace(/^#/, '')
    .split('/')
    .slice(1)
    .map((segment) => decodeURIComponent(segment).replace(/~1/g, '/').replace(/~0/g, '~'))
    .map((segment) => (/^\d+$/.test(segment) ? Number(segment) : segment));
}

/** An interpreter's error as a problem at the value's path: a missing property at its own path. */
function problemOf(error: { instanceLocation: string; keyword: string; error: string }): { path: PropertyKey[]; message: string } {
  const path = pointerPath(error.instanceLocation);
  const missing = error.keyword === 'required' ? /property "(.*)"\.$/.exec(error.error) : null;
  if (missing) return { path: [...path, missing[1]!], message: 'is required' };
  // additionalProperties: false, or any `false` schema.
  if (error.keyword === 'false') return { path, message: 'is not a field of this schema' };
  return { path, message: error.error };
}

/**
 * Keywords whose errors only say that something under them failed: the failure itself is reported
 * too (`if`: 'does not match "then" schema', beside what of `then` or `else` failed).
 */
const WRAPPERS = new Set([
  'if',
  'properties',
  'items',
  'prefixItems',
  'additionalProperties',
  '$ref',
  'allOf',
  'unevaluatedProperties',
  'unevaluatedItems',
  'contains',
]);
const MAX_PROBLEMS = 20;

/**
 * The `pattern`s `value` breaks, on RE2, where the schema says which subschema a value is under
 * (properties, additionalProperties, items, prefixItems, allOf, references). Inside anyOf, oneOf,
 * not and if, which alternative applies is the interpreter's business: patterns there are not checked.
 */
function patternProblems(root: Json, schema: unknown, value: unknown, path: PropertyKey[], out: { path: PropertyKey[]; message: string }[], depth = 0): void {
  if (!isObject(schema) || depth > 64 || out.length >= MAX_PROBLEMS) return;
  if (typeof schema.$ref === 'string') {
    patternProblems(root, follow(root, schema.$ref), value, path, out, depth + 1);
    return;
  }
  if (typeof value === 'string' && typeof schema.pattern === 'string' && patternMatcher(schema.pattern)?.test(value) === false) {
    out.push({ path, message: `does not match the pattern ${JSON.stringify(schema.pattern)}` });
  }
  if (Array.isArray(schema.allOf)) for (const part of schema.allOf) patternProblems(root, part, value, path, out, depth + 1);
  if (isObject(value)) {
    const properties = isObject(schema.properties) ? schema.properties : {};
    for (const [key, child] of Object.entries(value)) {
      const under = Object.hasOwn(properties, key) ? properties[key] : schema.additionalProperties;
      patternProblems(root, under, child, [...path, key], out, depth + 1);
    }
  } else if (Array.isArray(value)) {
    const prefix = Array.isArray(schema.prefixItems) ? schema.prefixItems : [];
    for (const [index, child] of value.entries())
      patternProblems(root, index < prefix.length ? prefix[index] : schema.items, child, [...path, index], out, depth + 1);
  }
}

/**
 * The zod type a tool checks values with at run time. The schema is interpreted
 * (@cfworker/json-schema), never compiled: a large document costs nothing until a value is
 * checked, and checking costs what the value holds. Its `pattern`s run on RE2 (a third party's
 * regular expression must not run on Node's backtracking engine); `format` is not checked.
 * `refine` adds checks of its own (a service's path parameters).
 */
export function runtimeType(schema: JsonSchema, refine?: (value: unknown) => { path: PropertyKey[]; message: string }[]): z.ZodType {
  let validator: Validator | undefined;
  return z.unknown().superRefine((value, ctx) => {
    validator ??= new Validator(withoutPatterns(schema) as Record<string, unknown>, '2020-12', false);
    const problems: { path: PropertyKey[]; message: string }[] = [];
    const result = validator.validate(value);
    if (!result.valid) {
      const leaves = result.errors.filter((error) => !WRAPPERS.has(error.keyword));
      for (const error of (leaves.length > 0 ? leaves : result.errors).slice(0, MAX_PROBLEMS)) problems.push(problemOf(error));
    }
    patternProblems(schema as Json, schema, value, [], problems);
    problems.push(...(refine?.(value) ?? []));
    for (const problem of problems.slice(0, MAX_PROBLEMS)) ctx.addIssue({ code: 'custom', message: problem.message, path: problem.path });
  });
}

/**
 * Path parameters whose values would change the path's structure: a segment that becomes `.` or
 * `..` (which URL resolution climbs with) or empty. Other characters cannot: each value is
 * percent-encoded into its segment (`/` as `%2F`).
 */
export function pathProblems(template: string, values: unknown): { path: PropertyKey[]; message: string }[] {
  if (!isObject(values)) return [];
  const problems: { path: PropertyKey[]; message: string }[] = [];
  for (const segment of template.split('/')) {
    const names = [...segment.matchAll(/\{([^}]+)\}/g)].map((match) => match[1]!);
    if (names.length === 0 || names.some((name) => values[name] === undefined)) continue;
    const filled = segment.replace(/\{([^}]+)\}/g, (_, name: string) => encodeURIComponent(scalar(values[name])));
    if (filled !== '' && filled !== '.' && filled !== '..') continue;
    const what = filled === '' ? 'an empty path segment' : `the path segment ${JSON.stringify(filled)}, which would climb out of it`;
    for (const name of names) problems.push({ path: ['path', name], message: `would make ${what} (in ${template})` });
  }
  return problems;
}

/** Where a service tool's calls are judged and counted: the circuit breaker's side of a call. */
export interface CallGuard {
  /**
   * A call ended: `failed` when the service failed (network error, timeout, 5xx, 408, 429), not
   * when the request was refused (4xx). `caller`: the key that submitted the task, whose own
   * circuit counts it too.
   */
  record(service: string, failed: boolean, caller?: string): Promise<void>;
}

export interface ServiceToolDeps {
  policy: HostPolicy;
  secrets: Secrets;
  guard?: CallGuard;
}

/** The limits per key a service's concurrency and rate limit make, on every step that calls it. */
export function serviceLimits(target: ServiceTarget): KeyLimit[] {
  const key = `service:${target.name}`;
  const limits: KeyLimit[] = [];
  if (target.concurrency !== undefined) limits.push({ kind: 'c', key, limit: target.concurrency });
  if (target.rateLimit?.per_second !== undefined) limits.push({ kind: 'r', key, limit: target.rateLimit.per_second, windowMs: 1_000 });
  else if (target.rateLimit?.per_minute !== undefined) limits.push({ kind: 'r', key, limit: target.rateLimit.per_minute, windowMs: 60_000 });
  return limits;
}

function authHeaders(auth: ServiceAuth | undefined, secrets: Secrets): Record<string, string> {
  if (!auth) return {};
  const secret = secrets.get(auth.secret_ref);
  if (secret === undefined) throw new NonRetryableError(`the secret ${auth.secret_ref} is not set (SERVICE_SECRET_* or SERVICE_SECRETS_FILE)`);
  switch (auth.type) {
    case 'bearer':
      return { authorization: `Bearer ${secret}` };
    case 'basic':
      return { authorization: `Basic ${Buffer.from(secret, 'utf8').toString('base64')}` };
    case 'header':
      return { [auth.header_name ?? 'X-API-Key']: secret };
  }
}

function scalar(value: unknown): string {
  return typeof value === 'string' ? value : typeof value === 'number' || typeof value === 'boolean' ? String(value) : JSON.stringify(value);
}

/** The request an operation's input makes. */
export function operationRequest(
  target: ServiceTarget,
  operation: ServiceOperation,
  input: Json,
): { url: string; headers: Record<string, string>; body?: string } {
  const path = isObject(input.path) ? input.path : {};
  // Checked when the input was, and again here: nothing may take a call out of base_url.
  const [problem] = pathProblems(operation.path, path);
  if (problem) throw new NonRetryableError(`path parameter ${String(problem.path[1])} ${problem.message}`);
  const filled = operation.path.replace(/\{([^}]+)\}/g, (_, name: string) => encodeURIComponent(scalar(path[name])));
  const base = new URL(target.baseUrl);
  const url = new URL(target.baseUrl.replace(/\/+$/, '') + filled);
  const basePath = base.pathname.replace(/\/+$/, '');
  if (url.origin !== base.origin || (url.pathname !== basePath && !url.pathname.startsWith(`${basePath}/`))) {
    throw new NonRetryableError(`the call would leave the service's base_url (${url.pathname} is not under ${basePath || '/'})`);
  }
  if (isObject(input.query)) {
    for (const [name, value] of Object.entries(input.query)) {
      if (value === undefined || value === null) continue;
      for (const one of Array.isArray(value) ? value : [value]) url.searchParams.append(name, scalar(one));
    }
  }
  const headers: Record<string, string> = { accept: 'application/json', ...target.headers };
  if (isObject(input.headers)) for (const [name, value] of Object.entries(input.headers)) if (value !== undefined) headers[name] = scalar(value);
  if (input.body === undefined) return { url: url.toString(), headers };
  headers['content-type'] = 'application/json';
  return { url: url.toString(), headers, body: JSON.stringify(input.body) };
}

function decode(body: Buffer, contentType: string | undefined): unknown {
  if (body.length === 0) return null;
  const text = body.toString('utf8');
  if (contentType && /[/+]json\b/i.test(contentType)) {
    try {
      return JSON.parse(text);
    } catch {
      return text;
    }
  }
  return text;
}

/** A tool that calls one operation of a service. */
export function serviceTool(target: ServiceTarget, operation: ServiceOperation, deps: ServiceToolDeps): AnyTool {
  return Object.freeze({
    name: operation.tool,
    description: `${operation.method} ${operation.path} on ${target.name}: ${operation.summary}`.slice(0, 2000),
    input: runtimeType(operation.inputSchema, (value) => pathProblems(operation.path, isObject(value) ? value.path : undefined)),
    output: runtimeType(operation.outputSchema),
    schemas: { input: operation.inputSchema, output: operation.outputSchema },
    limits: serviceLimits(target),
    operation: {
      service: target.name,
      method: operation.method,
      path: operation.path,
      parameters: operation.parameters.map((parameter) => ({ name: parameter.name, in: parameter.in })),
    },
    retry: DEFAULT_RETRY,
    timeout_ms: target.timeoutMs,
    ...(target.concurrency !== undefined ? { concurrency: target.concurrency } : {}),
    async run(input: unknown, { signal, caller }: { signal: AbortSignal; caller?: string }) {
      const request = operationRequest(target, operation, isObject(input) ? input : {});
      const headers = { ...request.headers, ...authHeaders(target.auth, deps.secrets) };
      let response: Awaited<ReturnType<typeof outboundRequest>>;
      try {
        response = await outboundRequest(deps.policy, {
          method: operation.method,
          url: request.url,
          headers,
          ...(request.body !== undefined ? { body: request.body } : {}),
          timeoutMs: target.timeoutMs,
          signal,
          maxRedirects: 0,
        });
      } catch (error) {
        // A refused host is the registration's fault, not the service's; a network error or a timeout is.
        if (!(error instanceof NonRetryableError)) await deps.guard?.record(target.name, true, caller);
        throw error;
      }
      const status = response.status;
      const failed = status >= 500 || status === 408 || status === 429;
      await deps.guard?.record(target.name, failed, caller);
      const body = decode(response.body, response.headers['content-type']);
      if (failed) {
        throw new RetryableError(`HTTP ${status} from ${target.name} (${operation.operationId})`, parseRetryAfter(response.headers['retry-after']), { status });
      }
      if (status >= 300) throw new NonRetryableError(`HTTP ${status} from ${target.name} (${operation.operationId})`, { status, body });
      return body;
    },
  }) as unknown as AnyTool;
}
