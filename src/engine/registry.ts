import type { Problem } from '../lib/errors.js';
import type { Catalog, JsonSchema } from './catalog.js';
import {
  type CheckContext,
  type CompileContext,
  endUnstarted,
  type FlowContext,
  type KindFields,
  type KindStep,
  type StepKindModule,
  type StepRunner,
  type TemplatePlace,
} from './kinds/kind.js';
import { sleepKind } from './kinds/sleep.js';
import { terminateKind } from './kinds/terminate.js';
import { toolKind } from './kinds/tool.js';
import { waitKind } from './kinds/wait.js';
import { workflowKind } from './kinds/workflow.js';
import { compensate } from './modifiers/compensate.js';
import { map } from './modifiers/map.js';
import type { StepModifier } from './modifiers/modifier.js';
import { onExit } from './modifiers/on-exit.js';
import { repeat } from './modifiers/repeat.js';
import { serviceCall } from './modifiers/service-call.js';
import { when } from './modifiers/when.js';
import type { PlanStep, StepKind, StepModifiers } from './plan.js';
import type { StepStatus } from './status.js';
import type { WorkflowDefinition, WorkflowStep } from './workflow-definition.js';

/**
 * The registry of step kinds and modifiers: what a step does (its kind: tool, workflow, sleep,
 * wait, terminate) and what it may carry whatever it does (its modifiers: when, for_each, compensate,
 * service_call). The checks (check.ts), the compiler (compile.ts), the decider (decide.ts) and
 * the runtime that carries decisions out (src/tasks/runs/effects.ts, src/ledger/, the reconciler, the
 * task view) ask it about a step, and none of them names a kind.
 *
 * A new kind is its module, one line in KINDS, and tests:
 * 1. `src/engine/kinds/<kind>.ts`: its plan fields, added to StepKinds by `declare module
 *    '../plan.js'` (the kind's name is its definition field's, and is its PlanStep variant's
 *    `kind`), and a StepKindModule (src/engine/kinds/kind.ts): its check, output schema and
 *    compilation, and at run time what it does when ready, what each report means to it, and,
 *    when it holds anything outside PostgreSQL (a job, a timer, a child task), what its task's
 *    end does to that (`settle`) and how it is made again (`outstanding`). A hook it leaves out
 *    does nothing.
 * 2. A line in KINDS below.
 * 3. Its field in the definition schema (workflow-definition.ts's stepSchema: the HTTP contract,
 *    whose OpenAPI document is generated), which the typecheck asks for: kindsOf reads it.
 * 4. Tests: the decider's (test/engine/decide.test.ts), and a workflow that runs it
 *    (test/workflows/kinds.test.ts).
 * If it needs the outside world in a new way (a new kind of job or report), that is the runtime's
 * part (src/tasks/runs/effects.ts carries a Decision out), as it was for sleeps' timers.
 *
 * A new modifier is the same: `src/engine/modifiers/<name>.ts` (its plan fields added to
 * StepModifiers, and a StepModifier: src/engine/modifiers/modifier.ts), a line in MODIFIERS, its
 * definition field, and tests. Its `around` wraps the runner of every plan step it `applies` to,
 * whatever its kind, or only the `kinds` it names (for_each maps tool steps only: that list is
 * the rule, and its check refuses it elsewhere).
 */

/** Every kind, by name: the definition field that makes a step one of it, and its module. */
export const KINDS: { readonly [K in StepKind]: StepKindModule<K> } = {
  tool: toolKind,
  workflow: workflowKind,
  sleep: sleepKind,
  wait: waitKind,
  terminate: terminateKind,
};

/**
 * Every modifier, innermost first: at run time each wraps the runner of the ones before it, so
 * `when` is last (a false condition skips a map before its list is resolved).
 */
export const MODIFIERS: readonly StepModifier[] = [serviceCall, map, repeat, compensate, onExit, when];

/** The kinds' names, in KINDS's order (the API lists them so). */
export const STEP_KINDS = Object.keys(KINDS) as StepKind[];

/**
 * A kind's module for a step of that kind, or for any kind: KINDS pairs each kind with its
 * module, so what the hooks of KINDS[step.kind] take is that step (TypeScript does not follow the
 * pairing through an index, hence the one cast).
 */
function kindModule(kind: StepKind): StepKindModule<StepKind> {
  return KINDS[kind] as unknown as StepKindModule<StepKind>;
}

/** Whether a modifier goes with a kind (every modifier with every kind, and with a step of none, unless it names its kinds). */
function goesWith(modifier: StepModifier, kind: StepKind | undefined): boolean {
  return modifier.kinds === undefined || (kind !== undefined && modifier.kinds.includes(kind));
}

// ---- Definitions: check.ts, compile.ts, the workflow service -------------------------------

/** The kinds whose field a definition's step has: one, for a valid step. */
export function kindsOf(step: WorkflowStep): StepKind[] {
  return STEP_KINDS.filter((kind) => step[kind] !== undefined);
}

/** The kind of a definition's step, by the field that names it; undefined when it names none or several. */
export function kindOf(step: WorkflowStep): StepKind | undefined {
  const kinds = kindsOf(step);
  return kinds.length === 1 ? kinds[0] : undefined;
}

/** A definition as the modifiers rewrite it before it is checked (service_call), with what they could not rewrite. */
export function expand(definition: WorkflowDefinition, catalog: Catalog): { definition: WorkflowDefinition; problems: Problem[] } {
  const problems: Problem[] = [];
  let expanded = definition;
  for (const modifier of MODIFIERS) {
    if (!modifier.expand) continue;
    const result = modifier.expand(expanded, { catalog, kindsOf });
    expanded = result.definition;
    problems.push(...result.problems);
  }
  return { definition: expanded, problems };
}

const ONE_KIND = `a step has exactly one of ${STEP_KINDS.slice(0, -1).join(', ')} or ${STEP_KINDS.at(-1)}`;

/** The rules of a step's kind and modifiers that need only the step and the catalog. */
export function checkStep(step: WorkflowStep, index: number, context: CheckContext): void {
  const kind = kindOf(step);
  const module = kind !== undefined ? kindModule(kind) : undefined;
  if (module) module.check(step as KindStep<StepKind>, index, context);
  else context.add(['steps', index], ONE_KIND);
  for (const other of STEP_KINDS) if (other !== kind) kindModule(other).checkElsewhere?.(step, index, context);
  for (const modifier of MODIFIERS) {
    if (goesWith(modifier, kind)) modifier.check?.(step, index, context);
    else if (module) modifier.checkElsewhere?.(step, index, context, module);
  }
}

/** The rules that need the dependency graph (given only when it has no cycle). */
export function checkFlow(step: WorkflowStep, index: number, context: FlowContext): void {
  for (const modifier of MODIFIERS) modifier.checkFlow?.(step, index, context);
}

/** The rules over a whole definition. */
export function checkDefinition(definition: WorkflowDefinition, context: CheckContext): void {
  for (const kind of STEP_KINDS) kindModule(kind).checkDefinition?.(definition, context);
}

/** JSON Schema of a definition's step's output, for references to it and `when`s over it; undefined when not known. */
export function outputSchemaOf(step: WorkflowStep, catalog: Catalog): JsonSchema | undefined {
  const kind = kindOf(step);
  if (kind === undefined) return undefined;
  let schema = kindModule(kind).outputSchema(step as KindStep<StepKind>, catalog);
  for (const modifier of MODIFIERS) if (modifier.outputSchema && goesWith(modifier, kind)) schema = modifier.outputSchema(step, schema);
  return schema;
}

/**
 * Where a definition's step holds templates: its input, and its kind's and modifiers' fields
 * (those of every kind it names, when it names several: each is checked all the same).
 */
export function templatePlaces(step: WorkflowStep, index: number): TemplatePlace[] {
  return [
    { base: `steps[${index}].input`, value: step.input, ...localsOf(step) },
    ...kindsOf(step).flatMap((kind) => kindModule(kind).templatePlaces?.(step as KindStep<StepKind>, index) ?? []),
    ...MODIFIERS.flatMap((modifier) => modifier.templatePlaces?.(step, index) ?? []),
  ];
}

/** The locals the step's modifiers define in its input ({{item}} in a map's), as a template place carries them. */
function localsOf(step: WorkflowStep): Pick<TemplatePlace, 'locals'> {
  const locals = Object.assign({}, ...MODIFIERS.map((modifier) => modifier.locals?.(step) ?? {}));
  return Object.keys(locals).length > 0 ? { locals } : {};
}

/** A checked step's kind's fields and its modifiers' fields of the plan. */
export function compileStep(step: WorkflowStep, context: CompileContext): KindFields<StepKind> & StepModifiers {
  const kind = kindOf(step);
  if (kind === undefined) throw new Error(`step ${step.id} has no kind (the definition was not checked)`);
  let fields: KindFields<StepKind> & StepModifiers = kindModule(kind).compile(step as KindStep<StepKind>, context);
  for (const modifier of MODIFIERS) if (modifier.compile) fields = { ...fields, ...modifier.compile(step, context) };
  return fields;
}

/** The steps the modifiers add to a plan, after the definition's (compensations). */
export function addedSteps(definition: WorkflowDefinition, context: CompileContext): PlanStep[] {
  return MODIFIERS.flatMap((modifier) => modifier.planSteps?.(definition, context) ?? []);
}

// ---- Plans: decide.ts, prepare.ts, and the runtime that carries decisions out ---------------

/** Whether a plan step is of `kind` (and has its fields). */
export function isKind<K extends StepKind>(step: PlanStep, kind: K): step is Extract<PlanStep, { kind: K }> {
  return step.kind === kind;
}

/** The tool whose queue runs a step's jobs (and its map items'); undefined for a kind that runs none. */
export function jobTool(step: PlanStep): string | undefined {
  return kindModule(step.kind).jobTool?.(step);
}

/** Whether a step in this state waits with nothing of its own in Redis (its kind's waitsWithoutJob). */
export function waitsWithoutJob(step: PlanStep, status: StepStatus, reason: string | null, hasTimer: boolean): boolean {
  return kindModule(step.kind).waitsWithoutJob?.(status, reason, hasTimer) ?? false;
}

/** The modifiers a plan step carries, innermost first (a modifier goes only with the kinds it names). */
function carried(step: PlanStep): StepModifier[] {
  return MODIFIERS.filter((modifier) => modifier.applies?.(step) && goesWith(modifier, step.kind));
}

/** A plan step's values that hold templates, resolved when it becomes ready: its input, and its kind's and modifiers' fields. */
export function templatesOf(step: PlanStep): unknown[] {
  return [step.input, ...(kindModule(step.kind).templates?.(step) ?? []), ...carried(step).flatMap((modifier) => modifier.templates?.(step) ?? [])];
}

/** The steps whose outputs a step reads when it becomes ready besides those its templates name (a `when`: its ancestors). */
export function readsOf(step: PlanStep, ancestors: ReadonlySet<string>): string[] {
  return carried(step).flatMap((modifier) => [...(modifier.reads?.(step, ancestors) ?? [])]);
}

/** What a runner does at the moments its kind has nothing to say. */
const NOTHING: Omit<Required<StepRunner>, 'ready'> = {
  report: () => false,
  failed: () => undefined,
  settle: endUnstarted,
  outstanding: () => undefined,
  admitted: () => false,
  loadForRerun: () => undefined,
  rerun: () => ({ items: null }),
};

const runners = new WeakMap<PlanStep, Required<StepRunner>>();

/**
 * What a plan step does at run time: its kind's runner, wrapped in the modifiers it carries.
 * Made once per step of a loaded plan (plans are cached with their tasks).
 */
export function runnerOf(step: PlanStep): Required<StepRunner> {
  let runner = runners.get(step);
  if (runner) return runner;
  const kind = kindModule(step.kind);
  runner = {
    ready: kind.ready,
    report: kind.report ?? NOTHING.report,
    failed: kind.failed ?? NOTHING.failed,
    settle: kind.settle ?? NOTHING.settle,
    outstanding: kind.outstanding ?? NOTHING.outstanding,
    admitted: kind.admitted ?? NOTHING.admitted,
    loadForRerun: kind.loadForRerun ?? NOTHING.loadForRerun,
    rerun: kind.rerun ?? NOTHING.rerun,
  };
  for (const modifier of carried(step)) if (modifier.around) runner = { ...runner, ...modifier.around(runner) };
  runners.set(step, runner);
  return runner;
}
