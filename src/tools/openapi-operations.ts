import type { JsonSchema } from '../engine/catalog.js';
import { TOOL_NAME } from './tool.js';

/**
 * A service's OpenAPI document read into operations: their parameters and their input and
 * output JSON Schemas, references kept as `$defs`, within a budget. Runs on the document reader's
 * thread (src/services/document-reader.ts), which loads this module and little else.
 */
/** `<service>.<operationId>`: a service name and an operationId, each like a tool name. */
export const SERVICE_TOOL_NAME = /^[A-Za-z][A-Za-z0-9_-]{0,63}\.[A-Za-z][A-Za-z0-9_-]{0,63}$/;

export const HTTP_METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'] as const;

export interface OperationParameter {
  name: string;
  in: 'path' | 'query' | 'header';
  required: boolean;
  schema: JsonSchema;
}

/** One operation of a document, with its schemas as JSON Schema (references kept in `$defs`). */
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

/**
 * What a document's operations may cost once made into tools: their JSON Schemas (each with the
 * `$defs` it reaches) are what GET /tools serves and what every check and call walks.
 */
export interface SchemaBudget {
  /** SERVICE_SCHEMA_MAX_NODES: schema objects over all operations' schemas (a `$defs` entry counts in each operation that carries it). */
  maxNodes: number;
  /** SERVICE_SCHEMA_MAX_BYTES: JSON of all operations' schemas and summaries, as GET /tools serves them. */
  maxBytes: number;
}

/** A document whose schemas go over the budget: `where` is the JSON pointer in the document where it stopped. */
export class DocumentTooComplexError extends Error {
  override name = 'DocumentTooComplexError';
  constructor(
    message: string,
    readonly where: string,
  ) {
    super(message);
  }
}

export type Json = Record<string, unknown>;

export const isObject = (value: unknown): value is Json => value !== null && typeof value === 'object' && !Array.isArray(value);

/** Follows a local `#/...` reference; undefined when it leads nowhere. */
export function follow(document: Json, ref: string): unknown {
  if (!ref.startsWith('#/')) return undefined;
  let current: unknown = document;
  for (const raw of ref.slice(2).split('/')) {
    const segment = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (!isObject(current) || !Object.hasOwn(current, segment)) return undefined;
    current = current[segment];
  }
  return current;
}

const pointerSegment = (key: string) => key.replace(/~/g, '~0').replace(/\//g, '~1');
/** Nesting of one schema as the document writes it (references do not nest: they are `$defs`). */
const MAX_NESTING = 100;
export const SCHEMA_MAPS = new Set(['properties', 'patternProperties', '$defs', 'definitions', 'dependentSchemas']);
export const SCHEMA_VALUES = new Set([
  'items',
  'additionalProperties',
  'not',
  'contains',
  'propertyNames',
  'if',
  'then',
  'else',
  'unevaluatedProperties',
  'unevaluatedItems',
]);
export const SCHEMA_LISTS = new Set(['allOf', 'anyOf', 'oneOf', 'prefixItems']);
const DROPPED = new Set(['nullable', 'discriminator', 'xml', 'externalDocs', 'example', '$schema', '$id', '$anchor', '$dynamicAnchor']);

interface Definition {
  name: string;
  schema: JsonSchema;
  nodes: number;
  /** The pointers its own references name. */
  refs: Set<string>;
}

/**
 * Makes a document's schemas plain JSON Schema without inlining references: each local `$ref`
 * becomes `#/$defs/<name>`, and the root of an operation's input or output carries the `$defs`
 * it reaches. So a schema's size is the document's, never its references' fan-out multiplied
 * (six levels of ten references each were a million nodes inlined). OpenAPI 3.0's `nullable`
 * becomes a `null` type; a reference's siblings are ignored, as OpenAPI 3.0 says. Every schema
 * object made is counted against the budget, which stops at the first one over it.
 */
export class SchemaConverter {
  private readonly definitions = new Map<string, Definition>();
  /** Each referenced pointer's name in `$defs`, given when first met. */
  private readonly names = new Map<string, string>();
  private nodes = 0;
  private bytes = 0;

  constructor(
    private readonly document: Json,
    private readonly budget: SchemaBudget,
  ) {}

  /** Counts `nodes` more, stopping at `where` when they are over the budget. */
  private spend(nodes: number, where: string): void {
    this.nodes += nodes;
    if (this.nodes > this.budget.maxNodes) {
      throw new DocumentTooComplexError(
        `its schemas need more than ${this.budget.maxNodes} schema objects (SERVICE_SCHEMA_MAX_NODES); stopped at ${where}`,
        where,
      );
    }
  }

  /** Counts the JSON an operation's tool serves. */
  spendBytes(bytes: number, where: string): void {
    this.bytes += bytes;
    if (this.bytes > this.budget.maxBytes) {
      throw new DocumentTooComplexError(
        `its operations' schemas take more than ${this.budget.maxBytes} bytes of JSON (SERVICE_SCHEMA_MAX_BYTES); stopped at ${where}`,
        where,
      );
    }
  }

  /**
   * A component schema is named as the document names it (`Item`); anything else by its pointer
   * (`components/parameters/Id/schema`). From the pointer alone, so the names do not depend on the
   * order the document is read in (jsonb keeps no key order).
   */
  private nameOf(pointer: string): string {
    let name = this.names.get(pointer);
    if (name === undefined) {
      const component = /^#\/components\/schemas\/([^/]+)$/.exec(pointer);
      name = component ? component[1]!.replace(/~1/g, '/').replace(/~0/g, '~') : pointer.slice(2);
      this.names.set(pointer, name);
    }
    return name;
  }

  /** What `pointer` refers to, converted once per document (its references are followed by `root`, not here). */
  private definition(pointer: string): Definition {
    let found = this.definitions.get(pointer);
    if (!found) {
      const refs = new Set<string>();
      const before = this.nodes;
      const schema = this.convert(follow(this.document, pointer), pointer, refs, 0);
      found = { name: this.nameOf(pointer), schema, nodes: this.nodes - before, refs };
      this.definitions.set(pointer, found);
    }
    return found;
  }

  /** `schema` (at `pointer` in the document) as JSON Schema; the references it makes are added to `refs`. */
  private convert(schema: unknown, pointer: string, refs: Set<string>, depth: number): JsonSchema {
    if (!isObject(schema)) return typeof schema === 'boolean' ? (schema ? {} : { not: {} }) : {};
    if (depth > MAX_NESTING) throw new DocumentTooComplexError(`a schema is nested more than ${MAX_NESTING} deep; stopped at ${pointer}`, pointer);
    this.spend(1, pointer);
    if (typeof schema.$ref === 'string') {
      // A reference to nowhere (or elsewhere than this document) allows anything, as before.
      if (!schema.$ref.startsWith('#/') || follow(this.document, schema.$ref) === undefined) return {};
      refs.add(schema.$ref);
      return { $ref: `#/$defs/${pointerSegment(this.nameOf(schema.$ref))}` } as JsonSchema;
    }
    const out: Json = {};
    for (const [key, value] of Object.entries(schema)) {
      if (DROPPED.has(key)) continue;
      const at = `${pointer}/${pointerSegment(key)}`;
      if (SCHEMA_MAPS.has(key) && isObject(value)) {
        out[key] = Object.fromEntries(
          Object.entries(value).map(([name, child]) => [name, this.convert(child, `${at}/${pointerSegment(name)}`, refs, depth + 1)]),
        );
      } else if (SCHEMA_VALUES.has(key) && (isObject(value) || typeof value === 'boolean')) {
        out[key] = typeof value === 'boolean' ? value : this.convert(value, at, refs, depth + 1);
      } else if (SCHEMA_LISTS.has(key) && Array.isArray(value)) {
        out[key] = value.map((child, index) => this.convert(child, `${at}/${index}`, refs, depth + 1));
      } else {
        out[key] = value;
      }
    }
    if (schema.nullable === true && typeof out.type === 'string') out.type = [out.type, 'null'];
    return out as JsonSchema;
  }

  /**
   * One root schema (an operation's input or output) made of `parts`, built by `build` from their
   * converted forms, with the `$defs` they reach; references point into them.
   */
  root<T extends unknown[]>(parts: { [K in keyof T]: { schema: unknown; pointer: string } }, build: (converted: JsonSchema[]) => JsonSchema): JsonSchema {
    const refs = new Set<string>();
    const converted = parts.map((part) => {
      const own = new Set<string>();
      const schema = this.unwrapped(this.convert(part.schema, part.pointer, own, 0), own);
      for (const ref of own) refs.add(ref);
      return schema;
    });
    const root = build(converted);
    const reached = new Map<string, Definition>();
    const queue = [...refs];
    while (queue.length > 0) {
      const pointer = queue.pop()!;
      if (reached.has(pointer)) continue;
      const found = this.definition(pointer);
      reached.set(pointer, found);
      // Each root carries its own copy of what it reaches: that is what is served and walked.
      this.spend(found.nodes, pointer);
      queue.push(...found.refs);
    }
    if (reached.size === 0) return root;
    const $defs: Json = {};
    for (const found of reached.values()) $defs[found.name] = found.schema;
    return { ...root, $defs } as JsonSchema;
  }

  /** A schema that is only a reference becomes what it refers to (a root shows its shape, not a `$ref`). */
  private unwrapped(schema: JsonSchema, refs: Set<string>): JsonSchema {
    let current = schema;
    for (let hops = 0; hops < 8 && typeof (current as Json).$ref === 'string' && Object.keys(current).length === 1; hops += 1) {
      // `refs` holds this part's one reference: what it refers to makes the part, with the references it makes.
      const [pointer] = refs;
      const found = this.definition(pointer!);
      refs.clear();
      for (const ref of found.refs) refs.add(ref);
      current = found.schema;
    }
    return current;
  }
}

/** The JSON media type of a `content` map: its schema and where it is. */
function jsonContent(content: unknown, pointer: string): { schema: unknown; pointer: string } | undefined {
  if (!isObject(content)) return undefined;
  const type = Object.keys(content).find((candidate) => /^application\/(.+\+)?json\b/i.test(candidate));
  if (type === undefined || !isObject(content[type])) return undefined;
  const schema = (content[type] as Json).schema;
  return schema === undefined ? undefined : { schema, pointer: `${pointer}/${pointerSegment(type)}/schema` };
}

function successResponse(responses: unknown, pointer: string): { schema: unknown; pointer: string } | undefined {
  if (!isObject(responses)) return undefined;
  const codes = Object.keys(responses)
    .filter((code) => /^2(\d\d|XX)$/i.test(code))
    .sort();
  for (const code of codes) {
    const response = responses[code];
    if (isObject(response)) return jsonContent(response.content, `${pointer}/${code}/content`) ?? { schema: undefined, pointer };
  }
  return undefined;
}

/** An object that may be a `$ref` to the real one (a path item, a parameter, a request body), and where the real one is. */
function dereferenced(document: Json, value: unknown, pointer: string): { value: unknown; pointer: string } {
  return isObject(value) && typeof value.$ref === 'string' ? { value: follow(document, value.$ref), pointer: value.$ref } : { value, pointer };
}

function group(parameters: readonly OperationParameter[], schemas: readonly JsonSchema[], where: OperationParameter['in']): JsonSchema | undefined {
  const these = parameters.flatMap((parameter, index) => (parameter.in === where ? [{ parameter, schema: schemas[index]! }] : []));
  if (these.length === 0) return undefined;
  const required = these.filter(({ parameter }) => parameter.required).map(({ parameter }) => parameter.name);
  return {
    type: 'object',
    properties: Object.fromEntries(these.map(({ parameter, schema }) => [parameter.name, schema])),
    ...(required.length > 0 ? { required } : {}),
    additionalProperties: false,
  } as JsonSchema;
}

/**
 * The operations of a validated document that become tools (those with an operationId that
 * makes a tool name), and the ones left out, with why. Throws DocumentTooComplexError when their
 * schemas go over `budget`.
 */
export function operationsOf(
  service: string,
  document: Json,
  budget: SchemaBudget,
): { operations: ServiceOperation[]; skipped: { where: string; reason: string }[] } {
  const operations: ServiceOperation[] = [];
  const skipped: { where: string; reason: string }[] = [];
  const converter = new SchemaConverter(document, budget);
  const paths = isObject(document.paths) ? document.paths : {};
  // In name order: where the budget stops must not depend on the order jsonb gives the keys.
  for (const path of Object.keys(paths).sort()) {
    const { value: item, pointer: itemAt } = dereferenced(document, paths[path], `#/paths/${pointerSegment(path)}`);
    if (!isObject(item)) continue;
    const shared = (Array.isArray(item.parameters) ? item.parameters : []).map((raw, index) => ({ raw, at: `${itemAt}/parameters/${index}` }));
    for (const method of HTTP_METHODS) {
      const operation = item[method];
      if (!isObject(operation)) continue;
      const operationAt = `${itemAt}/${method}`;
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
      try {
        operations.push(operationOf(converter, document, { tool, operationId, method, path, operation, operationAt, shared, where }));
      } catch (error) {
        if (error instanceof DocumentTooComplexError) throw new DocumentTooComplexError(`${error.message} (making ${tool}, ${where})`, error.where);
        throw error;
      }
    }
  }
  // By name: the document is stored as jsonb, which does not keep its keys' order, so the order
  // read back would differ from the order fetched; every listing must be the same.
  operations.sort((a, b) => (a.tool < b.tool ? -1 : a.tool > b.tool ? 1 : 0));
  return { operations, skipped };
}

/** One operation with an operationId as a tool's description, its schemas made by `converter`. */
function operationOf(
  converter: SchemaConverter,
  document: Json,
  at: {
    tool: string;
    operationId: string;
    method: string;
    path: string;
    operation: Json;
    operationAt: string;
    shared: { raw: unknown; at: string }[];
    where: string;
  },
): ServiceOperation {
  const { tool, operationId, method, path, operation, operationAt, shared, where } = at;
  const own = (Array.isArray(operation.parameters) ? operation.parameters : []).map((raw, index) => ({ raw, at: `${operationAt}/parameters/${index}` }));
  const byKey = new Map<string, { parameter: OperationParameter; schema: { schema: unknown; pointer: string } }>();
  for (const { raw, at } of [...shared, ...own]) {
    const { value: parameter, pointer } = dereferenced(document, raw, at);
    if (!isObject(parameter) || typeof parameter.name !== 'string') continue;
    if (parameter.in !== 'path' && parameter.in !== 'query' && parameter.in !== 'header') continue;
    byKey.set(`${parameter.in} ${parameter.name}`, {
      parameter: { name: parameter.name, in: parameter.in, required: parameter.in === 'path' || parameter.required === true, schema: {} },
      schema:
        parameter.schema !== undefined
          ? { schema: parameter.schema, pointer: `${pointer}/schema` }
          : (jsonContent(parameter.content, `${pointer}/content`) ?? { schema: undefined, pointer }),
    });
  }
  const found = [...byKey.values()];
  const { value: requestBody, pointer: bodyAt } = dereferenced(document, operation.requestBody, `${operationAt}/requestBody`);
  const bodySchema = isObject(requestBody) ? jsonContent(requestBody.content, `${bodyAt}/content`) : undefined;
  const bodyRequired = isObject(requestBody) && requestBody.required === true;
  let bodyConverted: JsonSchema | undefined;
  let parameterSchemas: JsonSchema[] = [];
  const parameters = found.map(({ parameter }) => parameter);
  const inputSchema = converter.root([...found.map(({ schema }) => schema), ...(bodySchema ? [bodySchema] : [])], (converted) => {
    parameterSchemas = converted.slice(0, found.length);
    bodyConverted = bodySchema ? converted[found.length] : undefined;
    const parts: [string, JsonSchema | undefined][] = [
      ['path', group(parameters, parameterSchemas, 'path')],
      ['query', group(parameters, parameterSchemas, 'query')],
      ['headers', group(parameters, parameterSchemas, 'header')],
      ['body', bodyConverted],
    ];
    const required = [
      ...(parameters.some((parameter) => parameter.in === 'path') ? ['path'] : []),
      ...(parameters.some((parameter) => parameter.in === 'query' && parameter.required) ? ['query'] : []),
      ...(parameters.some((parameter) => parameter.in === 'header' && parameter.required) ? ['headers'] : []),
      ...(bodyRequired && bodySchema ? ['body'] : []),
    ];
    return {
      type: 'object',
      properties: Object.fromEntries(parts.filter((part): part is [string, JsonSchema] => part[1] !== undefined)),
      ...(required.length > 0 ? { required } : {}),
      additionalProperties: false,
    } as JsonSchema;
  });
  for (const [index, parameter] of parameters.entries()) parameter.schema = parameterSchemas[index]!;
  const success = successResponse(operation.responses, `${operationAt}/responses`);
  const outputSchema = success?.schema !== undefined ? converter.root([success], ([converted]) => converted!) : {};
  const summary = typeof operation.summary === 'string' ? operation.summary : typeof operation.description === 'string' ? operation.description : where;
  converter.spendBytes(JSON.stringify(inputSchema).length + JSON.stringify(outputSchema).length + summary.length, operationAt);
  return {
    operationId,
    tool,
    method: method.toUpperCase(),
    path,
    summary,
    parameters,
    ...(bodySchema && bodyConverted ? { body: { required: bodyRequired, schema: bodyConverted } } : {}),
    inputSchema,
    outputSchema,
  };
}
