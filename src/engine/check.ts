import { jsonPath, type Problem } from '../lib/errors.js';
import { DEFAULT_LIMITS } from '../lib/limits.js';
import { type Catalog, type JsonSchema, missingPath } from './catalog.js';
import { type ConditionScope, checkExpression } from './condition.js';
import { keyProblems, type LimitSpecs } from './key-limits.js';
import type { CheckContext, CheckLimits, FlowContext, TemplatePlace } from './kinds/kind.js';
import { exitPath, isExitStep, withExitSteps } from './modifiers/on-exit.js';
import { checkDefinition, checkFlow, checkStep, outputSchemaOf, templatePlaces } from './registry.js';
import { type FoundReference, findReferences, type Local, type Reference, stringsIn } from './templates.js';
import { parameterType, type WorkflowDefinition, type WorkflowStep } from './workflow-definition.js';

/**
 * Checks a workflow definition before it is stored, reporting every problem with its JSON path:
 * unique step ids, one kind per step, existing dependencies, no cycles, templates that refer to
 * declared parameters and to steps the step depends on (and to fields their outputs have), and
 * the sizes templates may have; each kind's and each modifier's own rules (`when` conditions
 * that parse and type-check, sub-workflows without cycles between workflows…) are theirs, asked
 * through the registry (src/engine/registry.ts). The catalog must hold every workflow the
 * definition reaches (referencedWorkflows, src/engine/kinds/workflow.ts).
 */

export type { CheckLimits } from './kinds/kind.js';

/** `base` and a path relative to it (`a.b`, `["odd key"]`, or nothing). */
function under(base: string, at: string): string {
  return at ? `${base}${at.startsWith('[') ? '' : '.'}${at}` : base;
}

export function checkWorkflow(stored: WorkflowDefinition, catalog: Catalog, limits: CheckLimits = DEFAULT_LIMITS): Problem[] {
  // The exit handler's steps are checked as steps after the definition's own, their paths on_exit[k] (modifiers/on-exit.ts).
  const definition = withExitSteps(stored);
  const problems = checkSteps(definition, catalog, limits);
  return problems.map((problem) => exitPath(problem, stored.steps.length));
}

function checkSteps(definition: WorkflowDefinition, catalog: Catalog, limits: CheckLimits): Problem[] {
  const problems: Problem[] = [];
  const add = (path: (string | number)[], message: string) => problems.push({ path: jsonPath(path), message });
  const context: CheckContext = { catalog, definition, limits, add };

  if (catalog.tool(definition.name)) add(['name'], `a tool is already named ${definition.name}; task_type would be ambiguous`);

  // Parameters: unique names, defaults of the declared type.
  const parameters = new Map<string, (typeof definition.parameters)[number]>();
  definition.parameters.forEach((parameter, index) => {
    if (parameters.has(parameter.name)) add(['parameters', index, 'name'], `duplicate parameter ${parameter.name}`);
    parameters.set(parameter.name, parameter);
    if (parameter.default !== undefined) {
      if (parameter.required) add(['parameters', index, 'default'], 'a required parameter cannot have a default');
      if (!parameterType(parameter.type).safeParse(parameter.default).success)
        add(['parameters', index, 'default'], `the default is not of type ${parameter.type}`);
    }
  });

  // Steps: unique ids, one kind each (then the kind's and the modifiers' own rules), existing dependencies.
  const steps = new Map<string, number>();
  definition.steps.forEach((step, index) => {
    if (steps.has(step.id)) add(['steps', index, 'id'], `duplicate step id ${step.id} (also steps[${steps.get(step.id)}])`);
    else steps.set(step.id, index);
    checkStep(step, index, context);
  });
  const exits = new Set(definition.steps.filter(isExitStep).map((step) => step.id));
  definition.steps.forEach((step, index) => {
    const seen = new Set<string>();
    step.depends_on.forEach((dep, depIndex) => {
      if (dep === step.id) add(['steps', index, 'depends_on', depIndex], `step ${step.id} depends on itself`);
      else if (!steps.has(dep)) add(['steps', index, 'depends_on', depIndex], `no step is named ${dep}`);
      else if (exits.has(dep) && !exits.has(step.id))
        add(['steps', index, 'depends_on', depIndex], `${dep} is an on_exit step: it runs once the run has ended, so no main step can wait for it`);
      if (seen.has(dep)) add(['steps', index, 'depends_on', depIndex], `${dep} is listed twice`);
      seen.add(dep);
    });
  });

  const edges = new Map(definition.steps.map((step) => [step.id, step.depends_on.filter((dep) => dep !== step.id && steps.has(dep))]));
  const cycles = findCycles(edges);
  for (const cycle of cycles) add(['steps', steps.get(cycle[0]!)!, 'depends_on'], `dependency cycle: ${[...cycle, cycle[0]].join(' -> ')}`);
  const ancestors = cycles.length === 0 ? ancestorSets(edges) : undefined;
  // An exit step may read every main step (they have all ended when it runs), not only the exit steps it depends on.
  for (const id of exits) for (const other of steps.keys()) if (!exits.has(other)) ancestors?.get(id)?.add(other);
  const outputOf = (id: string): JsonSchema | undefined => outputSchemaOf(definition.steps[steps.get(id)!]!, catalog);

  // Where templates may be: step inputs, the kinds' and modifiers' fields (for_each, sleep, compensations), and
  // the output. Their strings have a bounded length, and the definition a bounded number of references (each
  // resolution copies values). A place resolved `as` another step (a compensation, its {{input…}} and {{output…}}
  // rewritten first) may refer to its step and the step's ancestors.
  const templated: (TemplatePlace & { step: WorkflowStep | undefined })[] = [
    ...definition.steps.flatMap((step, index) => templatePlaces(step, index).map((place) => ({ ...place, step }))),
    { base: 'output', value: definition.output, step: undefined },
  ];
  for (const place of templated) {
    for (const problem of place.problems ?? []) problems.push({ path: under(place.base, problem.at), message: problem.message });
  }
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
    templated.forEach(({ base, step, locals, as }, index) => {
      for (const reference of found[index]!) {
        const path = under(base, reference.at);
        if (!reference.reference) {
          problems.push({ path, message: reference.problem! });
          continue;
        }
        if (!step && reference.reference.kind === 'steps' && exits.has(reference.reference.step)) {
          problems.push({
            path,
            message: `the output is made when the run ends, before its exit handler runs: it cannot name on_exit step ${reference.reference.step}`,
          });
          continue;
        }
        const above = step ? ancestors?.get(step.id) : undefined;
        const allowed = as !== undefined && step && above ? new Set([...above, step.id]) : above;
        const stepId = as ?? step?.id;
        if (reference.reference.kind === 'expression') {
          // Checked as a `when` is, over the steps it may read: needs an acyclic graph.
          if (step && !allowed) continue;
          const scope: ConditionScope = {
            params: Object.fromEntries([...parameters].map(([name, parameter]) => [name, parameter.type])),
            steps: Object.fromEntries(
              [...(allowed ?? steps.keys())].map((id) => {
                const output = outputOf(id);
                return [id, output ? { output } : {}];
              }),
            ),
            ...(locals ? { vars: locals } : {}),
          };
          for (const message of checkExpression(reference.reference.expression, scope)) problems.push({ path, message });
          continue;
        }
        const message = checkReference(reference.reference, { parameters, steps, allowed, stepId, locals: locals ?? {}, outputOf });
        if (message) problems.push({ path, message });
      }
    });
  }

  // What only the dependency graph shows (a `when` over its ancestors' outputs).
  if (ancestors) {
    const flow: FlowContext = {
      ...context,
      parameters: Object.fromEntries([...parameters].map(([name, parameter]) => [name, parameter.type])),
      ancestors: (id) => ancestors.get(id) ?? new Set(),
      outputOf,
    };
    for (const [index, step] of definition.steps.entries()) checkFlow(step, index, flow);
  }

  // Limits per key: their keys name declared parameters only (filled in when a task is submitted).
  const names = [...parameters.keys()];
  const limited: { path: (string | number)[]; specs: LimitSpecs }[] = [
    { path: [], specs: definition },
    ...definition.steps.map((step, index) => ({ path: ['steps', index] as (string | number)[], specs: step as LimitSpecs })),
  ];
  for (const { path, specs } of limited) {
    for (const field of ['concurrency', 'rate_limit'] as const) {
      const key = specs[field]?.key;
      if (key !== undefined) for (const message of keyProblems(key, names)) add([...path, field, 'key'], message);
    }
  }

  checkDefinition(definition, context);
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

/** Where each local is defined, for the message that names it elsewhere. */
const LOCAL_HOMES: Record<Local, string> = {
  item: 'a for_each step',
  index: 'a for_each step',
  iteration: 'a repeat step',
  previous: 'a repeat step',
  task: 'an on_exit step',
};

interface ReferenceScope {
  parameters: Map<string, unknown>;
  steps: Map<string, number>;
  /** Steps the referring step depends on, directly or not; undefined means any step (the output). */
  allowed: Set<string> | undefined;
  stepId: string | undefined;
  /** The locals defined where the reference is (a for_each step's input: {{item}} and {{index}}). */
  locals: Partial<Record<Local, unknown>>;
  outputOf(id: string): JsonSchema | undefined;
}

function checkReference(reference: Exclude<Reference, { kind: 'expression' }>, scope: ReferenceScope): string | undefined {
  if (reference.kind === 'local') {
    return Object.hasOwn(scope.locals, reference.name) ? undefined : `{{${reference.name}}} is only defined in the input of ${LOCAL_HOMES[reference.name]}`;
  }
  if (reference.kind === 'params') {
    return scope.parameters.has(reference.name) ? undefined : `parameter ${reference.name} is not declared`;
  }
  if (!scope.steps.has(reference.step)) return `no step is named ${reference.step}`;
  if (scope.stepId !== undefined) {
    if (reference.step === scope.stepId) return `step ${scope.stepId} cannot refer to its own output`;
    if (scope.allowed && !scope.allowed.has(reference.step)) {
      return `step ${scope.stepId} refers to ${reference.step} but does not depend on it (add it to depends_on)`;
    }
  }
  if (reference.field !== 'output' || reference.path.length === 0) return undefined;
  const schema = scope.outputOf(reference.step);
  if (!schema) return undefined;
  const missing = missingPath(schema, reference.path);
  return missing === undefined ? undefined : `step ${reference.step}'s output has no ${missing}`;
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
