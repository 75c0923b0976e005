import type { ErrorRecord } from '../../lib/errors.js';
import type { Limits } from '../../lib/limits.js';
import type { Catalog, JsonSchema } from '../catalog.js';
import type { PlanStep, StepKind, StepKinds, TaskOverrides } from '../plan.js';
import type { Decision, ItemSet, ItemState, NewItem, Report, StepSet, StepState, TaskState } from '../state.js';
import type { SkipReason, StepStatus } from '../status.js';
import type { Local } from '../templates.js';
import type { KeyLimit, StepOptions } from '../types.js';
import type { ParameterType, WorkflowDefinition, WorkflowStep } from '../workflow-definition.js';

/** Values of a step's locals (src/engine/templates.ts LOCALS). */
export type Locals = Partial<Record<Local, unknown>>;

/**
 * What a step kind and a modifier are made of: the decider a kind acts through (Decider), what
 * it does at run time (StepRunner) and at definition time (StepKindDefinition). The registry
 * (src/engine/registry.ts) lists the kinds and the modifiers; src/engine/modifiers/modifier.ts says what a
 * modifier adds.
 */

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
  | 'EXIT_CANCEL_TIMEOUT_MS'
>;

/** A template resolved for a step: its value, or why there is none yet (data to load) or at all (too large). */
export type Resolved = { ok: true; value: unknown } | { ok: false; missing: true } | { ok: false; error: ErrorRecord };

/**
 * What a step kind may do to its task while the decider works on it (implemented by decide.ts's
 * TaskDecider, one per task decided on). A kind's module says what happens when its step becomes
 * ready and what a report about it means; the decider keeps the record of every change, checks
 * each against the state machine (lifecycle.ts) and turns them into the decision.
 */
export interface Decider {
  readonly task: TaskState;
  readonly now: Date;
  readonly limits: EngineLimits;
  /** The task is queued or running (and not compensating): its steps' results still decide its fate. */
  readonly active: boolean;
  /**
   * A step made ready is claimed in the same decision, for its job's first delivery (it is
   * `running` from then on, and that delivery runs without a claim): a workflow's level after the
   * first costs one commit, the one that records its dependencies' results. Only while the task
   * runs: a task stays queued until a worker takes its first step (a new task, a retried one, one
   * whose first jobs wait out a delay), and a one-tool task's start rides with its result.
   */
  readonly claimsReady: boolean;
  /** How the run ended, as an exit step sees it (`{{task.status}}`, `{{task.error}}`); undefined unless its exit handler runs. */
  exitTask(): { status: string; error: ErrorRecord | null } | undefined;
  /** Whether reports about this step still count (a compensation's count while its task compensates). */
  live(step: PlanStep): boolean;
  state(stepId: string): StepState;
  /**
   * Runs `run` with `locals` defined for every resolve in it that names none: a modifier gives the
   * kind inside it its locals (a repeat's iteration, for a sub-workflow's params).
   */
  withLocals<T>(locals: Locals, run: () => T): T;
  /** `value` with its templates resolved for `step` (with its locals: a map's item, a repeat's iteration); size-bounded by `maxBytes`. */
  resolve(step: PlanStep, value: unknown, options?: { locals?: Locals; maxBytes?: number }): Resolved;
  /** A loaded map item (the ones reported about, or every one after `needItems`). */
  item(stepId: string, item: number): ItemState | undefined;
  /** Every item of a map; undefined until they are loaded (the decider asks for them and decides again). */
  allItems(stepId: string): ItemState[] | undefined;
  setStep(step: PlanStep, set: StepSet): void;
  /** Stores new items of the step in its task's run, known to the rest of the decision (`all`: they are every item it has). */
  addItems(step: PlanStep, items: NewItem[], all?: boolean): void;
  setItem(step: PlanStep, item: number, set: ItemSet): void;
  /** The step ends completed with `output`. */
  complete(step: PlanStep, output: unknown): void;
  /** The step ends failed (its runner's `failed` follows); the task fails too unless its policy is to continue. */
  fail(step: PlanStep, error: ErrorRecord): void;
  /** The step was skipped for `reason`. */
  skip(step: PlanStep, reason: SkipReason): void;
  /**
   * A terminate step ends the run now: it completes, pending steps are skipped (`terminated`),
   * unfinished ones settled as a cancel settles them, and the task ends with `status`: completed
   * with `output` (absent: the workflow's output), or failed with `reason`.
   */
  terminate(step: PlanStep, end: { status: 'completed' | 'failed'; reason?: string; output?: unknown }): void;
  /** The task fails now with `error` (a step failed under on_failure fail, or a step was cancelled while the task ran). */
  failTask(error: ErrorRecord): void;
  /** The data is not loaded: the decision waits for it. */
  need(kind: 'output' | 'items', stepId: string): void;
  /** The id of a new task (a sub-workflow's child). */
  newTaskId(taskType: string): string;
  /**
   * Adds an event that is no status change to the task's history (docs/workflows.md "History"), e.g.
   * `{ type: 'signal_received', stepId, data: { by, at } }`; status changes are recorded by
   * setStep and setTask themselves. `at` defaults to the decision's time.
   */
  record(event: { type: string; stepId?: string; item?: number; attempt?: number; at?: Date; data?: Record<string, unknown> }): void;
  readonly decision: Decision;
}

/** What the steps a task had not finished become when it ends: skipped (it failed) or cancelled. */
export type Settle = 'skipped' | 'cancelled';

/**
 * What a step does at run time: its kind's runner, with its modifiers' hooks around it (the
 * registry puts them together). The decider calls each hook at its moment and knows no kind;
 * every hook but `ready` is optional, and its absence says the step has nothing to do then.
 */
export interface StepRunner<S = PlanStep> {
  /** Its dependencies are done: start it (or skip it, fail it, or wait for data: Decider.need). */
  ready(decider: Decider, step: S, state: StepState): void;
  /**
   * A report about the step (a worker's result, a wake-up, a signal, a child task's end, a job
   * gone missing…), its run already checked; returns whether it was recorded.
   */
  report?(decider: Decider, step: S, state: StepState, report: Report): boolean;
  /** It failed with `error` (Decider.fail has set its status): what goes with that, e.g. a dead letter, a map's items left. */
  failed?(decider: Decider, step: S, state: StepState, error: ErrorRecord): void;
  /**
   * Its task ended before it finished (`to`: what its unstarted steps become): end it, and drop
   * what it holds outside PostgreSQL. Absent: endUnstarted.
   */
  settle?(decider: Decider, step: S, state: StepState, to: Settle): void;
  /**
   * What it waits on outside PostgreSQL (a job, a timer, a child task), to be made again where
   * it went missing (the reconciler asks). Asked of an ended task's steps too: then only a tool
   * step still running has anything (a job that finishes on its own).
   */
  outstanding?(decider: Decider, step: S, state: StepState): void;
  /** Work a limit per key held back got its turn (`item`: one map item); returns whether something moved. */
  admitted?(decider: Decider, step: S, state: StepState, item?: number): boolean;
  /** Its task is about to start a new run (`over`: from scratch, its compensations having run): ask for what must be loaded first. */
  loadForRerun?(decider: Decider, step: S, state: StepState, over: boolean): void;
  /** Its task starts run `next` and the step runs again: what it keeps of the last run (a map: its completed items). */
  rerun?(decider: Decider, step: S, state: StepState, over: boolean, next: number): Pick<StepSet, 'items'>;
}

/** Limits the checks enforce. */
export type CheckLimits = Pick<Limits, 'TEMPLATE_STRING_MAX_CHARS' | 'TEMPLATE_MAX_REFERENCES' | 'SUBWORKFLOW_MAX_DEPTH'>;

/** What a kind's static check may read and where it reports (with the problem's JSON path). */
export interface CheckContext {
  catalog: Catalog;
  definition: WorkflowDefinition;
  limits: CheckLimits;
  add(path: (string | number)[], message: string): void;
}

/** What a check that needs the dependency graph may read; only given when the graph has no cycle. */
export interface FlowContext extends CheckContext {
  /** The declared parameters' types, by name. */
  parameters: Record<string, ParameterType>;
  ancestors(stepId: string): ReadonlySet<string>;
  /** JSON Schema of a step's output; undefined when not known. */
  outputOf(stepId: string): JsonSchema | undefined;
}

/** A place in a step's definition that holds templates (check.ts checks each place's references and sizes). */
export interface TemplatePlace {
  /** Its JSON path, e.g. `steps[2].sleep`. */
  base: string;
  value: unknown;
  /** The locals defined in it (a map's input: {{item}} and {{index}}), with their values' JSON Schemas where known. */
  locals?: Partial<Record<Local, JsonSchema | undefined>>;
  /** The step it is resolved for when not its own: one that runs after the step, and may name it and its ancestors (a compensation). */
  as?: string;
  /** Problems found making the value (paths relative to `base`). */
  problems?: { at: string; message: string }[];
}

/** What compiling a kind's step may read: the catalog (tools' defaults, current workflow versions) and the task's overrides. */
export interface CompileContext {
  catalog: Catalog;
  overrides: TaskOverrides;
}

/**
 * A definition's step of kind K, its kind's field present: a kind is named after the definition
 * field that makes a step one of it (`tool`, `workflow`, `sleep`, `wait`).
 */
export type KindStep<K extends StepKind> = K extends StepKind ? WorkflowStep & { [F in K & keyof WorkflowStep]-?: NonNullable<WorkflowStep[F]> } : never;

/** What compiling a step of kind K gives: its kind's fields, its options, and the limits it brings (a service's). */
export type KindFields<K extends StepKind> = K extends StepKind ? { kind: K; options: StepOptions; limits?: KeyLimit[] } & StepKinds[K] : never;

/** A kind's definition-time story: the fields it owns, checked when a definition is stored, and compiled into each task's plan. */
export interface StepKindDefinition<K extends StepKind> {
  /** The kind, and the definition field that makes a step one of it. */
  readonly name: K;
  /** How messages name a step of this kind: "a sub-workflow step has no retry". */
  readonly label: string;
  /** What a step of it does, for the API's description of a step's `kind`. */
  readonly summary: string;
  /** Every problem of the fields this kind owns. */
  check(step: KindStep<K>, index: number, context: CheckContext): void;
  /** Rules its fields set on a step of another kind, or of none (a sub-workflow's `version`). */
  checkElsewhere?(step: WorkflowStep, index: number, context: CheckContext): void;
  /** Rules over the whole definition (sub-workflows: no cycle between workflows, bounded nesting). */
  checkDefinition?(definition: WorkflowDefinition, context: CheckContext): void;
  /** JSON Schema of the step's output, for references to it and `when`s over it; undefined when not known. */
  outputSchema(step: KindStep<K>, catalog: Catalog): JsonSchema | undefined;
  /** Where its fields hold templates, besides the input. */
  templatePlaces?(step: KindStep<K>, index: number): TemplatePlace[];
  /** The kind's fields of the step's plan; the step is known to have passed its check. */
  compile(step: KindStep<K>, context: CompileContext): KindFields<K>;
  /** The plan step's values that hold templates besides its input, resolved when it becomes ready. */
  templates?(step: PlanStep<K>): unknown[];
  /** The tool whose queue runs its jobs; absent for a kind that runs none (it waits on a timer or a child task). */
  jobTool?(step: PlanStep<K>): string;
  /**
   * Whether the step, in this state, waits with nothing of its own in Redis (no job, no timer):
   * in a flow (src/queue/jobs.ts) its run's root then gets a hold in its place, so that the root
   * is not released while the run still waits. Absent: never.
   */
  waitsWithoutJob?(status: StepStatus, reason: string | null, hasTimer: boolean): boolean;
}

/** A step kind: one module in src/engine/kinds/, one line of the registry (src/engine/registry.ts). */
export type StepKindModule<K extends StepKind> = StepRunner<PlanStep<K>> & StepKindDefinition<K>;

/** Reports each field in `fields` that the step has and its kind does not take. */
export function refuseFields(step: WorkflowStep, index: number, context: CheckContext, kind: string, fields: (keyof WorkflowStep)[]): void {
  for (const field of fields) {
    if (step[field] !== undefined) context.add(['steps', index, field], `a ${kind} step has no ${field}`);
  }
}

/**
 * Ends a step of an ended task that had not started: pending or queued, skipped when its task
 * failed (`task_failed`) or cancelled when it was cancelled; waiting, cancelled and its timer
 * dropped. A kind drops whatever else it holds (a queued job) first.
 */
export function endUnstarted(decider: Decider, step: PlanStep, state: StepState, to: Settle): void {
  if (state.status === 'pending' || state.status === 'queued') {
    if (to === 'skipped') decider.skip(step, 'task_failed');
    else decider.setStep(step, { status: 'cancelled', finished_at: decider.now.toISOString() });
  } else if (state.status === 'waiting') {
    decider.decision.dropJobs.push({ taskId: decider.task.id, run: decider.task.run, stepId: step.id });
    decider.setStep(step, { status: 'cancelled', finished_at: decider.now.toISOString() });
  }
}

/** A waiting step's timer (a sleep's wake-up, a wait's timeout), made again where it went missing. */
export function outstandingTimer(decider: Decider, step: PlanStep, state: StepState): void {
  if (state.status === 'waiting' && state.wakeAt)
    decider.decision.timers.push({ taskId: decider.task.id, run: decider.task.run, stepId: step.id, at: state.wakeAt });
}
