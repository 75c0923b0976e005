import { z } from 'zod';
import { type FoundReference, findReferences, hasTemplates, type Reference, stringsIn } from '../engine/templates.js';
import { parameterType, type WorkflowDefinition } from '../engine/workflow-definition.js';
import type { Problem } from '../errors.js';
import { jsonPath } from '../lib/problems.js';
import { DEFAULT_LIMITS, type Limits } from '../limits.js';
import type { AnyTool, ToolRegistry } from '../tools/tool.js';

/** `base` and a path relative to it (`a.b`, `["odd key"]`, or nothing). */
function under(base: string, at: string): string {
  return at ? `${base}${at.startsWith('[') ? '' : '.'}${at}` : base;
}

/**
 * Checks a workflow definition before it is stored, reporting every problem with its JSON path:
 * unique step ids, known tools, existing dependencies, no cycles, templates that refer to
 * declared parameters and to steps the step depends on (and to fields the tool's output
 * schema has), literal inputs that fit the tool's input schema, and the sizes templates may
 * have (TEMPLATE_STRING_MAX_CHARS, TEMPLATE_MAX_REFERENCES).
 */
export function checkWorkflow(
  definition: WorkflowDefinition,
  registry: ToolRegistry,
  limits: Pick<Limits, 'TEMPLATE_STRING_MAX_CHARS' | 'TEMPLATE_MAX_REFERENCES'> = DEFAULT_LIMITS,
): Problem[] {
  const problems: Problem[] = [];
  const add = (path: (string | number)[], message: string) => problems.push({ path: jsonPath(path), message });

  if (registry.has(definition.name)) add(['name'], `a tool is already named ${definition.name}; task_type would be ambiguous`);

  // Parameters: unique names, defaults of the declared type.
  const parameters = new Map<string, (typeof definition.parameters)[number]>();
  definition.parameters.forEach((parameter, index) => {
    if (parameters.has(parameter.name)) add(['parameters', index, 'name'], `duplicate parameter ${parameter.name}`);
    parameters.set(parameter.name, parameter);
    if (parameter.default !== undefined) {
      if (parameter.required) add(['parameters', index, 'default'], 'a required parameter cannot have a default');
      const fits = parameterType(parameter.type).safeParse(parameter.default);
      if (!fits.success) add(['parameters', index, 'default'], `the default is not of type ${parameter.type}`);
    }
  });

  // Steps: unique ids, known tools, existing dependencies.
  const steps = new Map<string, number>();
  definition.steps.forEach((step, index) => {
    if (steps.has(step.id)) add(['steps', index, 'id'], `duplicate step id ${step.id} (also steps[${steps.get(step.id)}])`);
    else steps.set(step.id, index);
    if (!registry.has(step.tool)) add(['steps', index, 'tool'], `unknown tool ${step.tool} (known: ${registry.names().join(', ')})`);
  });
  definition.steps.forEach((step, index) => {
    const seen = new Set<string>();
    step.depends_on.forEach((dep, depIndex) => {
      if (dep === step.id) add(['steps', index, 'depends_on', depIndex], `step ${step.id} depends on itself`);
      else if (!steps.has(dep)) add(['steps', index, 'depends_on', depIndex], `no step is named ${dep}`);
      if (seen.has(dep)) add(['steps', index, 'depends_on', depIndex], `${dep} is listed twice`);
      seen.add(dep);
    });
  });

  const edges = new Map(definition.steps.map((step) => [step.id, step.depends_on.filter((dep) => dep !== step.id && steps.has(dep))]));
  const cycles = findCycles(edges);
  for (const cycle of cycles) add(['steps', steps.get(cycle[0]!)!, 'depends_on'], `dependency cycle: ${[...cycle, cycle[0]].join(' -> ')}`);
  const ancestors = cycles.length === 0 ? ancestorSets(edges) : undefined;

  // Where templates may be: step inputs and the output. Their strings have a bounded length,
  // and the definition a bounded number of references (each resolution copies values).
  const templated = [
    ...definition.steps.map((step, index) => ({ base: `steps[${index}].input`, value: step.input as unknown, step })),
    { base: 'output', value: definition.output, step: undefined },
  ];
  for (const { base, value } of templated) {
    for (const { text, at } of stringsIn(value)) {
      if (text.length > limits.TEMPLATE_STRING_MAX_CHARS) {
        problems.push({
          path: under(base, at),
          message: `this string has ${text.length} characters; strings in step inputs and the output may have at most ${limits.TEMPLATE_STRING_MAX_CHARS} (TEMPLATE_STRING_MAX_CHARS)`,
        });
      }
    }
  }
  const found = templated.map(({ value }) => findReferences(value));
  const total = found.reduce((sum, references) => sum + references.length, 0);
  if (total > limits.TEMPLATE_MAX_REFERENCES) {
    const [base, reference] = nthReference(templated, found, limits.TEMPLATE_MAX_REFERENCES);
    problems.push({
      path: under(base, reference.at),
      message: `the definition holds ${total} template references; at most ${limits.TEMPLATE_MAX_REFERENCES} are allowed (TEMPLATE_MAX_REFERENCES)`,
    });
  } else {
    // Each reference: to a declared parameter, to a step the step depends on (any step, for the output).
    templated.forEach(({ base, step }, index) => {
      for (const reference of found[index]!) {
        const path = under(base, reference.at);
        if (!reference.reference) {
          problems.push({ path, message: reference.problem! });
          continue;
        }
        const allowed = step ? ancestors?.get(step.id) : undefined;
        const message = checkReference(reference.reference, { parameters, steps, definition, registry, allowed, stepId: step?.id });
        if (message) problems.push({ path, message });
      }
    });
  }

  // The literal parts of each input against the tool's schema.
  definition.steps.forEach((step, index) => {
    const tool = registry.get(step.tool);
    if (tool) for (const problem of literalProblems(tool, step.input)) add(['steps', index, 'input', ...problem.path], problem.message);
  });
  return problems;
}

/** The reference at (0-based) position `n` over all templated places, with its place's base path. */
function nthReference(places: { base: string }[], found: FoundReference[][], n: number): [string, FoundReference] {
  let left = n;
  for (const [index, references] of found.entries()) {
    if (left < references.length) return [places[index]!.base, references[left]!];
    left -= references.length;
  }
  throw new Error('fewer references than counted');
}

interface ReferenceScope {
  parameters: Map<string, unknown>;
  steps: Map<string, number>;
  definition: WorkflowDefinition;
  registry: ToolRegistry;
  /** Steps the referring step depends on, directly or not; undefined means any step (the output). */
  allowed: Set<string> | undefined;
  stepId: string | undefined;
}

function checkReference(reference: Reference, scope: ReferenceScope): string | undefined {
  if (reference.kind === 'params') {
    return scope.parameters.has(reference.name) ? undefined : `parameter ${reference.name} is not declared`;
  }
  const index = scope.steps.get(reference.step);
  if (index === undefined) return `no step is named ${reference.step}`;
  if (scope.stepId !== undefined) {
    if (reference.step === scope.stepId) return `step ${scope.stepId} cannot refer to its own output`;
    if (scope.allowed && !scope.allowed.has(reference.step)) {
      return `step ${scope.stepId} refers to ${reference.step} but does not depend on it (add it to depends_on)`;
    }
  }
  if (reference.field !== 'output' || reference.path.length === 0) return undefined;
  const tool = scope.registry.get(scope.definition.steps[index]!.tool);
  if (!tool) return undefined;
  const missing = missingOutputPath(outputSchema(tool), reference.path);
  return missing === undefined ? undefined : `the ${tool.name} tool's output has no ${missing}`;
}

/** Each tool's output as JSON Schema, converted once: a definition may hold a thousand references. */
const outputSchemas = new WeakMap<AnyTool, JsonSchema>();
function outputSchema(tool: AnyTool): JsonSchema {
  let schema = outputSchemas.get(tool);
  if (!schema) {
    schema = z.toJSONSchema(tool.output, { io: 'output', unrepresentable: 'any' }) as JsonSchema;
    outputSchemas.set(tool, schema);
  }
  return schema;
}

type JsonSchema = {
  type?: string | string[];
  properties?: Record<string, JsonSchema>;
  additionalProperties?: boolean | JsonSchema;
  items?: JsonSchema | JsonSchema[];
  anyOf?: JsonSchema[];
  oneOf?: JsonSchema[];
  allOf?: JsonSchema[];
};

/** The first path segment a JSON Schema rules out, or undefined when the path may exist. */
function missingOutputPath(schema: JsonSchema, path: readonly string[], walked: string[] = []): string | undefined {
  if (path.length === 0) return undefined;
  const alternatives = schema.anyOf ?? schema.oneOf;
  if (alternatives) {
    const misses = alternatives.map((option) => missingOutputPath(option, path, walked));
    return misses.every((miss) => miss !== undefined) ? misses[0] : undefined;
  }
  const [segment, ...rest] = path as [string, ...string[]];
  const here = [...walked, segment];
  if (schema.type === 'array' || (Array.isArray(schema.type) && schema.type.includes('array'))) {
    if (!/^\d+$/.test(segment)) return `field ${here.join('.')} (it is a list; use an index)`;
    const items = Array.isArray(schema.items) ? schema.items[Number(segment)] : schema.items;
    return items ? missingOutputPath(items, rest, here) : undefined;
  }
  if (schema.properties) {
    const property = schema.properties[segment];
    if (property) return missingOutputPath(property, rest, here);
    if (schema.additionalProperties === undefined || schema.additionalProperties === false) return `field ${here.join('.')}`;
    return typeof schema.additionalProperties === 'object' ? missingOutputPath(schema.additionalProperties, rest, here) : undefined;
  }
  if (typeof schema.additionalProperties === 'object') return missingOutputPath(schema.additionalProperties, rest, here);
  if (typeof schema.type === 'string' && schema.type !== 'object') return `field ${here.join('.')} (it is a ${schema.type})`;
  // No declared shape (unknown, any): nothing to check.
  return undefined;
}

/** Problems of the literal part of an input: issues under a templated value are left for run time. */
function literalProblems(tool: AnyTool, input: Record<string, unknown>): { path: (string | number)[]; message: string }[] {
  const parsed = tool.input.safeParse(input);
  if (parsed.success) return [];
  return parsed.error.issues
    .filter((issue) => !underTemplate(input, issue.path))
    .map((issue) => ({ path: issue.path as (string | number)[], message: `${issue.message} (the ${tool.name} tool's input schema)` }));
}

function underTemplate(root: unknown, path: readonly PropertyKey[]): boolean {
  let current = root;
  for (const segment of path) {
    if (typeof current === 'string') return hasTemplates(current);
    if (current === null || typeof current !== 'object') return false;
    current = (current as Record<PropertyKey, unknown>)[segment as string];
  }
  return typeof current === 'string' && hasTemplates(current);
}

/** Every elementary cycle found by a depth-first search, each once (named from its first step). */
export function findCycles(edges: Map<string, string[]>): string[][] {
  const cycles: string[][] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const stack: string[] = [];
  const seen = new Set<string>();
  const visit = (node: string) => {
    state.set(node, 'visiting');
    stack.push(node);
    for (const next of edges.get(node) ?? []) {
      if (state.get(next) === 'visiting') {
        const cycle = stack.slice(stack.indexOf(next));
        const key = [...cycle].sort().join('\u0000');
        if (!seen.has(key)) {
          seen.add(key);
          cycles.push(cycle);
        }
      } else if (!state.has(next)) visit(next);
    }
    stack.pop();
    state.set(node, 'done');
  };
  for (const node of edges.keys()) if (!state.has(node)) visit(node);
  return cycles;
}

/** For each step, every step it depends on directly or transitively. The graph must be acyclic. */
export function ancestorSets(edges: Map<string, string[]>): Map<string, Set<string>> {
  const memo = new Map<string, Set<string>>();
  const of = (node: string): Set<string> => {
    const known = memo.get(node);
    if (known) return known;
    const set = new Set<string>();
    for (const dep of edges.get(node) ?? []) {
      set.add(dep);
      for (const ancestor of of(dep)) set.add(ancestor);
    }
    memo.set(node, set);
    return set;
  };
  for (const node of edges.keys()) of(node);
  return memo;
}
