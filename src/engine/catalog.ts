import { z } from 'zod';
import { dereferenced, type JsonSchema } from './condition.js';
import type { KeyLimit, RetryPolicy } from './types.js';
import type { WorkflowDefinition } from './workflow-definition.js';

/**
 * What the checks and the compiler know of the world: the tools (their schemas and defaults)
 * and the stored workflows a definition names. The services fill it in (the tool registry, the
 * workflow store) before calling the engine, which reads nothing itself.
 */

export interface ToolSpec {
  name: string;
  input: z.ZodType;
  output: z.ZodType;
  retry: RetryPolicy;
  timeout_ms: number;
  /**
   * The JSON Schemas as written, when the tool was made from them (a service's OpenAPI
   * operation): the checks read these rather than the zod types made from them, which are
   * looser (an undeclared field of an answer is let through at run time, but a template that
   * names one is refused when the definition is stored).
   */
  schemas?: { input: JsonSchema; output: JsonSchema };
  /** Limits per key every step of this tool is under (a service's concurrency and rate limit). */
  limits?: readonly KeyLimit[];
  /** A registered service's operation: what a `service_call` step names it by, and where its parameters go. */
  operation?: ServiceOperationRef;
}

export interface ServiceOperationRef {
  service: string;
  /** Upper case: GET, POST… */
  method: string;
  /** The path template as the document writes it: `/items/{id}`. */
  path: string;
  parameters: readonly { name: string; in: 'path' | 'query' | 'header' }[];
}

export interface WorkflowSpec {
  name: string;
  version: number;
  definition: WorkflowDefinition;
}

export interface Catalog {
  tool(name: string): ToolSpec | undefined;
  toolNames(): string[];
  /** A stored version of a workflow (without `version`: its current one); undefined when unknown or archived. */
  workflow(name: string, version?: number): WorkflowSpec | undefined;
}

/** A JSON Schema (zod's type of one), as the checks and conditions read it. */
export type { JsonSchema } from './condition.js';

/** Each tool's output as JSON Schema, converted once: a definition may hold a thousand references. */
const outputSchemas = new WeakMap<ToolSpec, JsonSchema>();
export function toolOutputSchema(tool: ToolSpec): JsonSchema {
  let schema = outputSchemas.get(tool);
  if (!schema) {
    schema = tool.schemas?.output ?? (z.toJSONSchema(tool.output, { io: 'output', unrepresentable: 'any' }) as JsonSchema);
    outputSchemas.set(tool, schema);
  }
  return schema;
}

/**
 * The first path segment a JSON Schema rules out, or undefined when the path may exist. Local
 * references (`#/$defs/...`, as a service's schemas keep them) are followed within `root`.
 */
export function missingPath(raw: JsonSchema | boolean, path: readonly string[], walked: string[] = [], root: JsonSchema | boolean = raw): string | undefined {
  const schema = dereferenced(raw, root);
  // `true` (and a schema of a JSON Schema's boolean form) allows anything; `false` nothing, but nothing is written that way here.
  if (path.length === 0 || schema === undefined || typeof schema === 'boolean') return undefined;
  const under = (child: JsonSchema | boolean, rest: readonly string[], at: string[]) => missingPath(child, rest, at, root);
  const alternatives = schema.anyOf ?? schema.oneOf;
  if (alternatives) {
    const misses = alternatives.map((option) => under(option, path, walked));
    return misses.every((miss) => miss !== undefined) ? misses[0] : undefined;
  }
  const [segment, ...rest] = path as [string, ...string[]];
  const here = [...walked, segment];
  if (schema.type === 'array' || (Array.isArray(schema.type) && schema.type.includes('array'))) {
    if (!/^\d+$/.test(segment)) return `field ${here.join('.')} (it is a list; use an index)`;
    const items = Array.isArray(schema.items) ? schema.items[Number(segment)] : schema.items;
    return items ? under(items, rest, here) : undefined;
  }
  if (schema.properties) {
    const property = schema.properties[segment];
    if (property) return under(property, rest, here);
    if (schema.additionalProperties === undefined || schema.additionalProperties === false) return `field ${here.join('.')}`;
    return typeof schema.additionalProperties === 'object' ? under(schema.additionalProperties, rest, here) : undefined;
  }
  if (typeof schema.additionalProperties === 'object') return under(schema.additionalProperties, rest, here);
  if (typeof schema.type === 'string' && schema.type !== 'object') return `field ${here.join('.')} (it is a ${schema.type})`;
  // No declared shape (unknown, any): nothing to check.
  return undefined;
}
