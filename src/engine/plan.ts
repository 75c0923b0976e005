import type { KeyLimit, RetryPolicy, StepOptions } from './types.js';

/** What every step of a plan has, whatever its kind. */
export interface StepCommon {
  id: string;
  dependsOn: string[];
  onFailure: 'fail' | 'continue';
  /** Templates unresolved; a one-tool task's literal input. */
  input: unknown;
  /** Tool steps: how each run of it is tried (a sub-workflow's: its priority). */
  options: StepOptions;
  /** Tool steps: limits per key on each run of it (each item, in a map), keys resolved. */
  limits?: KeyLimit[];
}

/**
 * Each kind's own fields of a plan step, by kind: `tool: { tool: string }`. Empty here: every
 * kind's module adds its entry (`declare module '../plan.js'`, src/engine/kinds/), so a kind is
 * written in one place and this module needs none of them.
 */
// biome-ignore lint/suspicious/noEmptyInterface: filled in by declaration merging, one entry per kind's module
export interface StepKinds {}

/**
 * The fields of the modifiers (src/engine/modifiers/): `when`, `forEach`… Each is optional, and
 * its module adds it, as a kind's module adds its kind.
 */
// biome-ignore lint/suspicious/noEmptyInterface: filled in by declaration merging, one entry per modifier's module
export interface StepModifiers {}

/** The kinds of step: what a step does once its dependencies are done (src/engine/kinds/). */
export type StepKind = keyof StepKinds;

/**
 * A step as its task runs it: its definition with every choice made (a sub-workflow's version
 * pinned, retry and timeout filled in from the task, the step and the tool). A union on `kind`:
 * `PlanStep<'wait'>` has its `wait`, and no other kind's field. It is stored with the task
 * (tasks.plan, JSON) and read back by whatever version of the engine runs then, so a field once
 * written keeps its name (test/engine/stored-plan.test.ts runs a plan stored before this was a
 * union), and a later version of the definition never changes a running task.
 */
export type PlanStep<K extends StepKind = StepKind> = { [Kind in K]: StepCommon & StepModifiers & { kind: Kind } & StepKinds[Kind] }[K];

/** What a task runs: its steps, in the order they were written, and its output template. */
export interface Plan {
  steps: PlanStep[];
  /** The task's result; templates allowed. Absent: every completed step's output by id (a one-tool task: its step's output). */
  output?: unknown;
  /** A one-tool task: one step, whose output is the result. */
  single?: boolean;
  /** Limits per key on the whole run (a workflow's `concurrency`, `rate_limit`), keys resolved. */
  limits?: KeyLimit[];
}

/** A plan with what the decider looks up over and over, worked out once per task (src/engine/prepare.ts). */
export interface PreparedPlan {
  plan: Plan;
  byId: ReadonlyMap<string, PlanStep>;
  /** Steps in an order where every step comes after its dependencies. */
  order: readonly PlanStep[];
  dependents: ReadonlyMap<string, readonly string[]>;
  ancestors: ReadonlyMap<string, ReadonlySet<string>>;
  /**
   * The steps whose output a step reads when it becomes ready: those its templates name, and
   * for a `when`, every ancestor (an expression may name any of them).
   */
  reads: ReadonlyMap<string, ReadonlySet<string>>;
  /** The steps the output template names; undefined: every step (no template). */
  outputReads?: ReadonlySet<string>;
  /** The compensations, in `order` (each after those it waits for). */
  compensations: readonly PlanStep[];
  /** The exit handler's steps (on_exit), in `order`. */
  exits: readonly PlanStep[];
}

/** Per-task overrides of the tool or workflow defaults (POST /assign-task's retry, timeout_ms, priority). */
export interface TaskOverrides {
  retry?: RetryPolicy;
  timeout_ms?: number;
  priority?: number;
  /** A one-tool task's limits per key (its request's `concurrency`, `rate_limit`), keys resolved. */
  limits?: KeyLimit[];
}

/** A one-tool task's plan: one step named after the tool; params are its literal input. */
export function planToolTask(
  tool: { name: string; retry: RetryPolicy; timeout_ms: number; limits?: readonly KeyLimit[] },
  params: Record<string, unknown>,
  overrides: TaskOverrides = {},
): Plan {
  const limits = [...(overrides.limits ?? []), ...(tool.limits ?? [])];
  return {
    single: true,
    steps: [
      {
        id: tool.name,
        kind: 'tool',
        tool: tool.name,
        dependsOn: [],
        onFailure: 'fail',
        input: params,
        options: {
          retry: overrides.retry ?? tool.retry,
          timeout_ms: overrides.timeout_ms ?? tool.timeout_ms,
          ...(overrides.priority ? { priority: overrides.priority } : {}),
        },
        ...(limits.length > 0 ? { limits } : {}),
      },
    ],
  };
}
