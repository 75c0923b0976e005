import { jsonPath, type Problem } from '../lib/errors.js';
import { DEFAULT_LIMITS, type Limits } from '../lib/limits.js';
import { type Catalog, type JsonSchema, missingPath } from './catalog.js';
import { checkCondition } from './condition.js';
import { keyProblems, type LimitSpecs } from './key-limits.js';
import type { StepKind } from './plan.js';
import { checkCompensation, compensationId, compensationInput } from './steps/compensate.js';
import type { CheckContext, StepKindModule } from './steps/kind.js';
import { sleepStep } from './steps/sleep.js';
import { toolStep } from './steps/tool.js';
import { waitStep } from './steps/wait.js';
import { workflowStep } from './steps/workflow.js';
import { type FoundReference, findReferences, type Reference, stringsIn } from './templates.js';
import { parameterType, type WorkflowDefinition, type WorkflowStep } from './workflow-definition.js';

/**
 * Checks a workflow definition before it is stored, reporting every problem with its JSON path:
 * unique step ids, one kind per step, existing dependencies, no cycles (between steps, and
 * between workflows through sub-workflow steps), templates that refer to declared parameters and
 * to steps the step depends on (and to fields their outputs have), `when` conditions that parse
 * and type-check, each kind's own rules (src/engine/steps/), and the sizes templates may have.
 * The catalog must hold every workflow the definition reaches (referencedWorkflows).
 */

const KINDS: Record<StepKind, StepKindModule> = { tool: toolStep, workflow: workflowStep, sleep: sleepStep, wait: waitStep };

/** The kind of a definition's step, by the field that names it; undefined when it names none or several. */
export function kindOf(step: WorkflowStep): StepKind | undefined {
  const kinds = (['tool', 'workflow', 'sleep', 'wait'] as const).filter((kind) => step[kind] !== undefined);
  return kinds.length === 1 ? kinds[0] : undefined;
}

export function kindModule(kind: StepKind): StepKindModule {
  return KINDS[kind];
}

/** The workflows a definition's sub-workflow steps name (a version, or the current one). */
export function referencedWorkflows(definition: Pick<WorkflowDefinition, 'steps'>): { name: string; version?: number }[] {
  return definition.steps.flatMap((step) => (step.workflow ? [{ name: step.workflow, ...(step.version !== undefined ? { version: step.version } : {}) }] : []));
}

export type CheckLimits = Pick<Limits, 'TEMPLATE_STRING_MAX_CHARS' | 'TEMPLATE_MAX_REFERENCES' | 'SUBWORKFLOW_MAX_DEPTH'>;

/** `base` and a path relative to it (`a.b`, `["odd key"]`, or nothing). */
function under(base: string, at: string): string {
  return at ? `${base}${at.startsWith('[') ? '' : '.'}${at}` : base;
}

export function checkWorkflow(definition: WorkflowDefinition, catalog: Catalog, limits: CheckLimits = DEFAULT_LIMITS): Problem[] {
  const problems: Problem[] = [];
  const add = (path: (string | number)[], message: string) => problems.push({ path: jsonPath(path), message });
  const context: CheckContext = { catalog, definition, add };

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

  // Steps: unique ids, one kind each (then the kind's own rules), existing dependencies.
  const steps = new Map<string, number>();
  definition.steps.forEach((step, index) => {
    if (steps.has(step.id)) add(['steps', index, 'id'], `duplicate step id ${step.id} (also steps[${steps.get(step.id)}])`);
    else steps.set(step.id, index);
    const kind = kindOf(step);
    if (kind) KINDS[kind].check(step, index, context);
    else add(['steps', index], 'a step has exactly one of tool, workflow, sleep or wait');
    if (step.version !== undefined && step.workflow === undefined) add(['steps', index, 'version'], 'version goes with workflow');
    checkCompensation(step, index, context);
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
  const outputOf = (id: string): JsonSchema | undefined => {
    const step = definition.steps[steps.get(id)!]!;
    const kind = kindOf(step);
    return kind ? KINDS[kind].outputSchema(step, catalog) : undefined;
  };

  // Where templates may be: step inputs, for_each, sleep, compensations, and the output. Their strings have a
  // bounded length, and the definition a bounded number of references (each resolution copies values).
  // A compensation's {{input…}} and {{output…}} are rewritten first; it may refer to its step and the step's ancestors.
  const templated: { base: string; value: unknown; step: WorkflowStep | undefined; inMap: boolean; compensation?: true }[] = [
    ...definition.steps.flatMap((step, index) => [
      { base: `steps[${index}].input`, value: step.input as unknown, step, inMap: step.for_each !== undefined },
      ...(typeof step.for_each === 'string' ? [{ base: `steps[${index}].for_each`, value: step.for_each as unknown, step, inMap: false }] : []),
      ...(step.sleep ? [{ base: `steps[${index}].sleep`, value: step.sleep as unknown, step, inMap: false }] : []),
      ...(step.compensate ? [compensationPlace(step, index)] : []),
    ]),
    { base: 'output', value: definition.output, step: undefined, inMap: false },
  ];
  function compensationPlace(step: WorkflowStep, index: number) {
    const base = `steps[${index}].compensate.input`;
    const rewritten = compensationInput(step);
    for (const problem of rewritten.problems) problems.push({ path: under(base, problem.at), message: problem.message });
    return { base, value: rewritten.value, step, inMap: false, compensation: true as const };
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
    templated.forEach(({ base, step, inMap, compensation }, index) => {
      for (const reference of found[index]!) {
        const path = under(base, reference.at);
        if (!reference.reference) {
          problems.push({ path, message: reference.problem! });
          continue;
        }
        const above = step ? ancestors?.get(step.id) : undefined;
        const allowed = compensation && above ? new Set([...above, step!.id]) : above;
        const stepId = compensation ? compensationId(step!.id) : step?.id;
        const message = checkReference(reference.reference, { parameters, steps, allowed, stepId, inMap, outputOf });
        if (message) problems.push({ path, message });
      }
    });
  }

  // Conditions: they parse, name declared parameters and ancestors only, and type-check against their schemas.
  if (ancestors) {
    definition.steps.forEach((step, index) => {
      if (step.when === undefined) return;
      const scope = {
        params: Object.fromEntries([...parameters].map(([name, parameter]) => [name, parameter.type])),
        steps: Object.fromEntries(
          [...(ancestors.get(step.id) ?? [])].map((id) => {
            const output = outputOf(id);
            return [id, output ? { output } : {}];
          }),
        ),
      };
      for (const message of checkCondition(step.when, scope)) add(['steps', index, 'when'], message);
    });
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

  checkSubWorkflows(definition, catalog, limits.SUBWORKFLOW_MAX_DEPTH, add);
  return problems;
}

/**
 * Sub-workflows may not call back into the workflow being stored (directly or through others),
 * nor nest deeper than SUBWORKFLOW_MAX_DEPTH; each problem names the path. A step that names
 * the stored workflow without a version names this very definition.
 */
function checkSubWorkflows(
  definition: WorkflowDefinition,
  catalog: Catalog,
  maxDepth: number,
  add: (path: (string | number)[], message: string) => void,
): void {
  const resolve = (name: string, version?: number): WorkflowDefinition | undefined =>
    name === definition.name && version === undefined ? definition : catalog.workflow(name, version)?.definition;
  /** The deepest chain of sub-workflows below `node`, or a cycle back to the stored definition. */
  const deepest = (node: WorkflowDefinition, path: string[], seen: Set<WorkflowDefinition>): { depth: number; path: string[]; cycle?: boolean } => {
    let best = { depth: 0, path };
    for (const step of node.steps) {
      if (!step.workflow) continue;
      const child = resolve(step.workflow, step.version);
      if (!child) continue;
      const childPath = [...path, step.version ? `${step.workflow} v${step.version}` : step.workflow];
      if (child === definition) return { depth: Number.POSITIVE_INFINITY, path: childPath, cycle: true };
      if (seen.has(child) || childPath.length > maxDepth + 2) continue;
      const below = deepest(child, childPath, new Set([...seen, child]));
      if (below.cycle) return below;
      if (below.depth + 1 > best.depth) best = { depth: below.depth + 1, path: below.path };
    }
    return best;
  };
  definition.steps.forEach((step, index) => {
    if (!step.workflow) return;
    const child = resolve(step.workflow, step.version);
    if (!child) return;
    const start = [definition.name, step.version ? `${step.workflow} v${step.version}` : step.workflow];
    if (child === definition) {
      add(['steps', index, 'workflow'], `workflow cycle: ${start.join(' -> ')}`);
      return;
    }
    const below = deepest(child, start, new Set([child]));
    if (below.cycle) add(['steps', index, 'workflow'], `workflow cycle: ${below.path.join(' -> ')}`);
    else if (below.depth + 1 > maxDepth) {
      add(['steps', index, 'workflow'], `sub-workflows nest ${below.depth + 1} deep (${below.path.join(' -> ')}); at most ${maxDepth} (SUBWORKFLOW_MAX_DEPTH)`);
    }
  });
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
  /** Steps the referring step depends on, directly or not; undefined means any step (the output). */
  allowed: Set<string> | undefined;
  stepId: string | undefined;
  /** The reference is in a for_each step's input, where {{item}} and {{index}} are. */
  inMap: boolean;
  outputOf(id: string): JsonSchema | undefined;
}

function checkReference(reference: Reference, scope: ReferenceScope): string | undefined {
  if (reference.kind === 'item' || reference.kind === 'index') {
    return scope.inMap ? undefined : `{{${reference.kind}}} is only defined in the input of a for_each step`;
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
