import { z } from 'zod';
import type { JsonSchema } from '../engine/catalog.js';
import type { KeyLimit } from '../engine/types.js';
import { NonRetryableError, RetryableError } from '../lib/errors.js';
import type { HostPolicy } from '../lib/host-policy.js';
import { outboundRequest, parseRetryAfter } from '../lib/outbound-http.js';
import type { Secrets } from '../lib/secrets.js';
import { type AnyTool, DEFAULT_RETRY, TOOL_NAME } from './tool.js';

/**
 * A registered service's OpenAPI operations as tools. Each operation with an operationId is a
 * tool `<service>.<operationId>` whose input is
 * `{path?: {...}, query?: {...}, headers?: {...}, body?: ...}` (the operation's parameters by
 * where they go, and its JSON request body) and whose output is the 2xx answer's JSON body, with
 * the schemas the document gives. Calls go through the outbound HTTP layer under the host
 * allowlist (HTTP_TOOL_ALLOWED_HOSTS), without following redirects: network errors, 5xx, 408 and
 * 429 are retried (honouring Retry-After), other 4xx fail at once.
 */

/** `<service>.<operationId>`: a service name and an operationId, each like a tool name. */
export const SERVICE_TOOL_NAME = /^[A-Za-z][A-Za-z0-9_-]{0,63}\.[A-Za-z][A-Za-z0-9_-]{0,63}$/;

export function isServiceTool(name: string): boolean {
  return name.includes('.');
}

export function serviceOf(toolName: string): string {
  return toolName.slice(0, toolName.indexOf('.'));
}

export const HTTP_METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'] as const;

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

export interface OperationParameter {
  name: string;
  in: 'path' | 'query' | 'header';
  required: boolean;
  schema: JsonSchema;
}

/** One operation of a document, with its schemas as JSON Schema (references resolved). */
export interface ServiceOperation {
  operationId: string;
  tool: string;
  method: string;
  /** The path template as the document writes it: `/users/{id}`. */
  path: string;
  summary: string;
  parameters: OperationParameter[];
  body?: { required: boolean; schema: JsonSchema };
  inputSchema: JsonSchema;
  outputSchema: JsonSchema;
}

export interface DocumentLimits {
  maxOperations: number;
}

type Json = Record<string, unknown>;

const isObject = (value: unknown): value is Json => value !== null && typeof value === 'object' && !Array.isArray(value);

/** Follows a local `#/...` reference; undefined when it leads nowhere. */
function follow(document: Json, ref: string): unknown {
  if (!ref.startsWith('#/')) return undefined;
  let current: unknown = document;
  for (const raw of ref.slice(2).split('/')) {
    const segment = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (!isObject(current) || !Object.hasOwn(current, segment)) return undefined;
    current = current[segment];
  }
  return current;
}

/** Most nested references inlined in one schema; deeper (a recursive schema) becomes `{}`. */
const MAX_REF_DEPTH = 12;

/**
 * A schema of the document as plain JSON Schema: local references inlined (a reference within
 * itself, and anything past MAX_REF_DEPTH, becomes `{}`, anything), OpenAPI 3.0's `nullable`
 * turned into a `null` type.
 */
export function plainSchema(document: Json, schema: unknown, seen: readonly string[] = []): JsonSchema {
  if (!isObject(schema)) return typeof schema === 'boolean' ? (schema ? {} : { not: {} }) : {};
  if (typeof schema.$ref === 'string') {
    const ref = schema.$ref;
    if (seen.includes(ref) || seen.length >= MAX_REF_DEPTH) return {};
    return plainSchema(document, follow(document, ref), [...seen, ref]);
  }
  const out: Json = {};
  for (const [key, value] of Object.entries(schema)) {
    if (key === 'nullable' || key === 'discriminator' || key === 'xml' || key === 'externalDocs' || key === 'example') continue;
    if ((key === 'properties' || key === 'patternProperties' || key === '$defs' || key === 'definitions') && isObject(value)) {
      out[key] = Object.fromEntries(Object.entries(value).map(([name, child]) => [name, plainSchema(document, child, seen)]));
    } else if ((key === 'items' || key === 'additionalProperties' || key === 'not' || key === 'contains') && (isObject(value) || typeof value === 'boolean')) {
      out[key] = typeof value === 'boolean' ? value : plainSchema(document, value, seen);
    } else if ((key === 'allOf' || key === 'anyOf' || key === 'oneOf' || key === 'prefixItems') && Array.isArray(value)) {
      out[key] = value.map((child) => plainSchema(document, child, seen));
    } else {
      out[key] = value;
    }
  }
  if (schema.nullable === true && typeof out.type === 'string') out.type = [out.type, 'null'];
  return out as JsonSchema;
}

function jsonContent(content: unknown): unknown {
  if (!isObject(content)) return undefined;
  const type = Object.keys(content).find((candidate) => /^application\/(.+\+)?json\b/i.test(candidate));
  return type !== undefined && isObject(content[type]) ? (content[type] as Json).schema : undefined;
}

function successResponse(responses: unknown): { schema: unknown } | undefined {
  if (!isObject(responses)) return undefined;
  const codes = Object.keys(responses)
    .filter((code) => /^2(\d\d|XX)$/i.test(code))
    .sort();
  for (const code of codes) {
    const response = responses[code];
    if (isObject(response)) return { schema: jsonContent(response.content) };
  }
  return undefined;
}

function group(parameters: OperationParameter[], where: OperationParameter['in']): JsonSchema | undefined {
  const these = parameters.filter((parameter) => parameter.in === where);
  if (these.length === 0) return undefined;
  const required = these.filter((parameter) => parameter.required).map((parameter) => parameter.name);
  return {
    type: 'object',
    properties: Object.fromEntries(these.map((parameter) => [parameter.name, parameter.schema])),
    ...(required.length > 0 ? { required } : {}),
    additionalProperties: false,
  } as JsonSchema;
}

/**
 * The operations of a validated document that become tools (those with an operationId that
 * makes a tool name), and the ones left out, with why.
 */
export function operationsOf(service: string, document: Json): { operations: ServiceOperation[]; skipped: { where: string; reason: string }[] } {
  const operations: ServiceOperation[] = [];
  const skipped: { where: string; reason: string }[] = [];
  const paths = isObject(document.paths) ? document.paths : {};
  for (const [path, rawItem] of Object.entries(paths)) {
    const item = isObject(rawItem) && typeof rawItem.$ref === 'string' ? follow(document, rawItem.$ref) : rawItem;
    if (!isObject(item)) continue;
    const shared = Array.isArray(item.parameters) ? item.parameters : [];
    for (const method of HTTP_METHODS) {
      const operation = item[method];
      if (!isObject(operation)) continue;
      const where = `${method.toUpperCase()} ${path}`;
      const operationId = operation.operationId;
      if (typeof operationId !== 'string') {
        skipped.push({ where, reason: 'no operationId' });
        continue;
      }
      const tool = `${service}.${operationId}`;
      if (!TOOL_NAME.test(operationId) || !SERVICE_TOOL_NAME.test(tool)) {
        skipped.push({
          where,
          reason: `operationId ${JSON.stringify(operationId)} must start with a letter and hold only letters, digits, _ and - (at most 64)`,
        });
        continue;
      }
      const byKey = new Map<string, OperationParameter>();
      for (const raw of [...shared, ...(Array.isArray(operation.parameters) ? operation.parameters : [])]) {
        const parameter = isObject(raw) && typeof raw.$ref === 'string' ? follow(document, raw.$ref) : raw;
        if (!isObject(parameter) || typeof parameter.name !== 'string') continue;
        if (parameter.in !== 'path' && parameter.in !== 'query' && parameter.in !== 'header') continue;
        byKey.set(`${parameter.in} ${parameter.name}`, {
          name: parameter.name,
          in: parameter.in,
          required: parameter.in === 'path' || parameter.required === true,
          schema: plainSchema(document, parameter.schema ?? jsonContent(parameter.content)),
        });
      }
      const parameters = [...byKey.values()];
      const requestBody =
        isObject(operation.requestBody) && typeof operation.requestBody.$ref === 'string'
          ? follow(document, operation.requestBody.$ref)
          : operation.requestBody;
      const bodySchema = isObject(requestBody) ? jsonContent(requestBody.content) : undefined;
      const body =
        isObject(requestBody) && bodySchema !== undefined ? { required: requestBody.required === true, schema: plainSchema(document, bodySchema) } : undefined;
      const parts: [string, JsonSchema | undefined][] = [
        ['path', group(parameters, 'path')],
        ['query', group(parameters, 'query')],
        ['headers', group(parameters, 'header')],
        ['body', body?.schema],
      ];
      const present = parts.filter((part): part is [string, JsonSchema] => part[1] !== undefined);
      const required = [
        ...(parameters.some((parameter) => parameter.in === 'path') ? ['path'] : []),
        ...(parameters.some((parameter) => parameter.in === 'query' && parameter.required) ? ['query'] : []),
        ...(parameters.some((parameter) => parameter.in === 'header' && parameter.required) ? ['headers'] : []),
        ...(body?.required ? ['body'] : []),
      ];
      const success = successResponse(operation.responses);
      operations.push({
        operationId,
        tool,
        method: method.toUpperCase(),
        path,
        summary: typeof operation.summary === 'string' ? operation.summary : typeof operation.description === 'string' ? operation.description : where,
        parameters,
        ...(body ? { body } : {}),
        inputSchema: {
          type: 'object',
          properties: Object.fromEntries(present),
          ...(required.length > 0 ? { required } : {}),
          additionalProperties: false,
        } as JsonSchema,
        outputSchema: success?.schema !== undefined ? plainSchema(document, success.schema) : {},
      });
    }
  }
  // By name: the document is stored as jsonb, which does not keep its keys' order, so the order
  // read back would differ from the order fetched; every listing must be the same.
  operations.sort((a, b) => (a.tool < b.tool ? -1 : a.tool > b.tool ? 1 : 0));
  return { operations, skipped };
}

/**
 * The zod type a tool checks values with at run time: the schema without `pattern` (a third
 * party's regular expression must not run on Node's backtracking engine) nor `format`; a schema
 * zod cannot read accepts anything (the document's schema still serves the checks and /tools).
 */
export function runtimeType(schema: JsonSchema): z.ZodType {
  // Inside `properties` the keys are names (a field may be called "pattern"), not keywords.
  const strip = (value: unknown, names = false): unknown => {
    if (Array.isArray(value)) return value.map((child) => strip(child));
    if (!isObject(value)) return value;
    const out: Json = {};
    for (const [key, child] of Object.entries(value)) {
      if (!names && (key === 'pattern' || key === 'format' || key === 'patternProperties')) continue;
      out[key] = strip(child, !names && (key === 'properties' || key === '$defs' || key === 'definitions'));
    }
    return out;
  };
  try {
    return z.fromJSONSchema(strip(schema) as Parameters<typeof z.fromJSONSchema>[0]);
  } catch {
    return z.unknown();
  }
}

/** Where a service tool's calls are judged and counted: the circuit breaker's side of a call. */
export interface CallGuard {
  /** A call ended: `failed` when the service failed (network error, timeout, 5xx, 408, 429), not when the request was refused (4xx). */
  record(service: string, failed: boolean): Promise<void>;
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
  const filled = operation.path.replace(/\{([^}]+)\}/g, (_, name: string) => encodeURIComponent(scalar(path[name])));
  const url = new URL(target.baseUrl.replace(/\/+$/, '') + filled);
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
    input: runtimeType(operation.inputSchema),
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
    async run(input: unknown, { signal }: { signal: AbortSignal }) {
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
        if (!(error instanceof NonRetryableError)) await deps.guard?.record(target.name, true);
        throw error;
      }
      const status = response.status;
      const failed = status >= 500 || status === 408 || status === 429;
      await deps.guard?.record(target.name, failed);
      const body = decode(response.body, response.headers['content-type']);
      if (failed) {
        throw new RetryableError(`HTTP ${status} from ${target.name} (${operation.operationId})`, parseRetryAfter(response.headers['retry-after']), { status });
      }
      if (status >= 300) throw new NonRetryableError(`HTTP ${status} from ${target.name} (${operation.operationId})`, { status, body });
      return body;
    },
  }) as unknown as AnyTool;
}
