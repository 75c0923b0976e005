import type { Problem } from '../../lib/errors.js';
import type { Catalog, JsonSchema } from '../catalog.js';
import type { CheckContext, CompileContext, FlowContext, StepKindDefinition, StepRunner, TemplatePlace } from '../kinds/kind.js';
import type { PlanStep, StepKind, StepModifiers } from '../plan.js';
import type { Local } from '../templates.js';
import type { WorkflowDefinition, WorkflowStep } from '../workflow-definition.js';

/** What rewriting a definition may read: the catalog, and the kinds a step names. */
export interface ExpandContext {
  catalog: Catalog;
  /** The kinds whose fields the step has (one, for a step of a kind). */
  kindsOf(step: WorkflowStep): string[];
}

/**
 * A modifier: something a step may carry whatever it does (`when`, `for_each`, `compensate`,
 * `service_call`), as opposed to its kind, which says what it does. A modifier is one module in
 * src/engine/modifiers/ and one line of the registry (src/engine/registry.ts). Every hook is
 * optional and asked of every step: a hook looks for its own field and leaves other steps alone.
 * At run time the registry wraps a step's kind in the modifiers its plan step carries
 * (`applies`), each one's `around` given the runner inside it.
 */
export interface StepModifier<K extends StepKind = StepKind> {
  /**
   * The kinds it goes with; absent: any. This list is the rule: a step of another kind has it
   * refused (checkElsewhere), its output schema left alone, and its runner never wrapped in it.
   */
  readonly kinds?: readonly K[];

  /** Rewrites a definition before it is checked, and says what cannot be rewritten (a `service_call` becomes a tool step). */
  expand?(definition: WorkflowDefinition, context: ExpandContext): { definition: WorkflowDefinition; problems: Problem[] };
  /** Every problem of its fields on a step of a kind it goes with (of none, when it goes with any). */
  check?(step: WorkflowStep, index: number, context: CheckContext): void;
  /** Its fields on a step of a kind it does not go with. */
  checkElsewhere?(step: WorkflowStep, index: number, context: CheckContext, kind: StepKindDefinition<StepKind>): void;
  /** Problems only the dependency graph shows (a `when` over its ancestors' outputs); only asked when the graph has no cycle. */
  checkFlow?(step: WorkflowStep, index: number, context: FlowContext): void;
  /** JSON Schema of a step's output (of a kind it goes with), given its kind's: a map's is the list of its items'. */
  outputSchema?(step: WorkflowStep, schema: JsonSchema | undefined): JsonSchema | undefined;
  /** Where its fields hold templates (check.ts checks them with the others). */
  templatePlaces?(step: WorkflowStep, index: number): TemplatePlace[];
  /** The locals it defines in the step's input ({{item}} and {{index}} in a map's), with their values' JSON Schemas where known. */
  locals?(step: WorkflowStep): Partial<Record<Local, JsonSchema | undefined>> | undefined;
  /** Its fields of the step's plan. */
  compile?(step: WorkflowStep, context: CompileContext): StepModifiers;
  /** Steps it adds to the plan, after the definition's own (a compensation per compensated step). */
  planSteps?(definition: WorkflowDefinition, context: CompileContext): PlanStep[];

  /** Whether a plan step carries it: its runner then wraps the step's. */
  applies?(step: PlanStep): boolean;
  /** The plan step's values of its own that hold templates, resolved when the step becomes ready. */
  templates?(step: PlanStep): unknown[];
  /** Steps whose outputs the step reads when it becomes ready, beyond those its templates name (a `when`: every ancestor). */
  reads?(step: PlanStep, ancestors: ReadonlySet<string>): Iterable<string>;
  /** The hooks it changes of a step it applies to; `inner` is the runner inside it (the kind's, or another modifier's around it). */
  around?(inner: Required<StepRunner<PlanStep<K>>>): Partial<StepRunner<PlanStep<K>>>;
}
