import type { ErrorRecord } from '../../lib/errors.js';
import type { Limits } from '../../lib/limits.js';
import type { Catalog, JsonSchema } from '../catalog.js';
import type { PlanStep, RunOverrides } from '../plan.js';
import type { Decision, ItemSet, ItemState, Report, StepSet, StepState, TaskState } from '../state.js';
import type { SkipReason } from '../status.js';
import type { WorkflowDefinition, WorkflowStep } from '../workflow-definition.js';

/** The limits the decider enforces. */
export type EngineLimits = Pick<
  Limits,
  | 'STEP_INPUT_MAX_BYTES'
  | 'STEP_OUTPUT_MAX_BYTES'
  | 'JOB_INLINE_OUTPUT_MAX_BYTES'
  | 'TASK_RESULT_MAX_BYTES'
  | 'MAP_MAX_ITEMS'
  | 'MAP_INPUTS_MAX_BYTES'
  | 'MAP_MAX_PARALLEL'
  | 'SUBWORKFLOW_MAX_DEPTH'
>;

/** A template resolved for a step: its value, or why there is none yet (data to load) or at all (too large). */
export type Resolved = { ok: true; value: unknown } | { ok: false; missing: true } | { ok: false; error: ErrorRecord };

/**
 * What a step kind may do to its task's run while the decider works on it (implemented by
 * decide.ts). A kind's module says what happens when its step becomes ready and what a report
 * about it means; the run keeps the record of every change, checks each against the state
 * machine (lifecycle.ts) and turns them into the decision.
 */
export interface Run {
  readonly task: TaskState;
  readonly now: Date;
  readonly limits: EngineLimits;
  /** The task is queued or running (and not compensating): its steps' results still decide its fate. */
  readonly active: boolean;
  /** Whether reports about this step still count (a compensation's count while its task compensates). */
  live(step: PlanStep): boolean;
  state(stepId: string): StepState;
  /** `value` with its templates resolved for `step` (and `item`, in a map); size-bounded by `maxBytes`. */
  resolve(step: PlanStep, value: unknown, options?: { item?: { value: unknown; index: number }; maxBytes?: number }): Resolved;
  /** A loaded map item (the ones reported about, or every one after `needItems`). */
  item(stepId: string, item: number): ItemState | undefined;
  /** Every item of a map; undefined until they are loaded (the decider asks for them and decides again). */
  allItems(stepId: string): ItemState[] | undefined;
  setStep(step: PlanStep, set: StepSet): void;
  setItem(step: PlanStep, item: number, set: ItemSet): void;
  /** The step ends completed with `output`. */
  complete(step: PlanStep, output: unknown): void;
  /** The step ends failed; the task fails too unless its policy is to continue. */
  fail(step: PlanStep, error: ErrorRecord): void;
  /** The step was skipped for `reason`. */
  skip(step: PlanStep, reason: SkipReason): void;
  /** The task fails now with `error` (a step failed under on_failure fail, or a step was cancelled while the task ran). */
  failTask(error: ErrorRecord): void;
  /** The data is not loaded: the decision waits for it. */
  need(kind: 'output' | 'items', stepId: string): void;
  /** The id of a new task (a sub-workflow's child). */
  newTaskId(taskType: string): string;
  /**
   * Adds an event that is no status change to the task's history (README "History"), e.g.
   * `{ type: 'signal_received', stepId, data: { by, at } }`; status changes are recorded by
   * setStep and setTask themselves. `at` defaults to the decision's time.
   */
  record(event: { type: string; stepId?: string; item?: number; attempt?: number; at?: Date; data?: Record<string, unknown> }): void;
  readonly decision: Decision;
}

/** What a step kind does at run time. `ready`: its dependencies are done and its `when` held. */
export interface StepKindRunner {
  ready(run: Run, step: PlanStep, state: StepState): void;
  /** A report about the step; returns whether it was recorded. */
  report?(run: Run, step: PlanStep, state: StepState, report: Report): boolean;
}

/** What a kind's static check may read and where it reports (with the problem's JSON path). */
export interface CheckContext {
  catalog: Catalog;
  definition: WorkflowDefinition;
  add(path: (string | number)[], message: string): void;
}

/** What compiling a kind's step may read: the catalog (tools' defaults, current workflow versions) and the task's overrides. */
export interface CompileContext {
  catalog: Catalog;
  overrides: RunOverrides;
}

/** A kind's definition-time story: the fields it owns, checked when a definition is stored, and compiled into each task's plan. */
export interface StepKindDefinition {
  /** Every problem of the fields this kind owns. */
  check(step: WorkflowStep, index: number, context: CheckContext): void;
  /** JSON Schema of the step's output, for references to it and `when`s over it; undefined when not known. */
  outputSchema(step: WorkflowStep, catalog: Catalog): JsonSchema | undefined;
  /** The kind's fields of the step's plan; the step is known to have passed its check. */
  compile(step: WorkflowStep, context: CompileContext): Pick<PlanStep, 'kind' | 'tool' | 'workflow' | 'sleep' | 'wait' | 'forEach' | 'maxParallel' | 'options'>;
}

export type StepKindModule = StepKindRunner & StepKindDefinition;

/** Reports each field in `fields` that the step has and its kind does not take. */
export function refuseFields(step: WorkflowStep, index: number, context: CheckContext, kind: string, fields: (keyof WorkflowStep)[]): void {
  for (const field of fields) {
    if (step[field] !== undefined) context.add(['steps', index, field], `a ${kind} step has no ${field}`);
  }
}
