import { findReferences } from './templates.js';
import type { KeyLimit, RetryPolicy, StepOptions } from './types.js';

/** A wait step as its task runs it (src/engine/steps/wait.ts): the signal it answers to, always named. */
export interface PlanWait {
  signal: string;
  /** JSON Schema of a signal's payload. */
  schema?: Record<string, unknown>;
  approval?: { approvers?: string[]; form?: Record<string, unknown>; show?: string[] };
  timeout_ms?: number;
  on_timeout: 'fail' | 'continue';
}

/** The kinds of step: what a step does once its dependencies are done (src/engine/steps/). */
export type StepKind = 'tool' | 'workflow' | 'sleep' | 'wait';

/**
 * A step as its task runs it: its definition with every choice made (a sub-workflow's version
 * pinned, retry and timeout filled in from the task, the step and the tool). It is stored with
 * the task (tasks.plan), so a later version of the definition never changes a running task.
 */
export interface PlanStep {
  id: string;
  kind: StepKind;
  /** Tool steps: the tool it runs (each item, for a map). */
  tool?: string;
  /** Sub-workflow steps: the workflow and the version the child task runs. */
  workflow?: { name: string; version: number };
  /** Sleep steps: how long, or until when (either may be a template). */
  sleep?: { ms?: number | string; until?: string };
  /** Wait steps: the signal it answers to (an approval's: its step id unless named) and how long it waits. */
  wait?: PlanWait;
  dependsOn: string[];
  onFailure: 'fail' | 'continue';
  /** Templates unresolved; a one-tool task's literal input. */
  input: unknown;
  /** A CEL condition: false skips the step. */
  when?: string;
  /** Tool steps: a template that gives the list to map over, or a literal list. */
  forEach?: unknown;
  /** With forEach: most items queued or running at once, across all workers. */
  maxParallel?: number;
  /** Tool steps (and sub-workflows: its priority). */
  options: StepOptions;
  /** Tool steps: limits per key on each run of it (each item, in a map), keys resolved. */
  limits?: KeyLimit[];
  /**
   * A compensation (README "Compensation"): the tool step that undoes this step of the plan. It
   * runs only while its task compensates, after the compensations of the steps below it.
   */
  compensationOf?: string;
}

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

/** A plan with what the decider looks up over and over, worked out once per task. */
export interface RunPlan {
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
}

function stepsNamedIn(value: unknown): Set<string> {
  const ids = new Set<string>();
  for (const found of findReferences(value)) if (found.reference?.kind === 'steps') ids.add(found.reference.step);
  return ids;
}

/** Works out a plan's lookups (the plan must be acyclic: definitions are checked when stored). */
export function prepare(plan: Plan): RunPlan {
  const byId = new Map(plan.steps.map((step) => [step.id, step]));
  const dependents = new Map<string, string[]>(plan.steps.map((step) => [step.id, []]));
  for (const step of plan.steps) for (const dep of step.dependsOn) dependents.get(dep)?.push(step.id);
  const order: PlanStep[] = [];
  const ancestors = new Map<string, Set<string>>();
  const visit = (step: PlanStep) => {
    if (ancestors.has(step.id)) return;
    const set = new Set<string>();
    ancestors.set(step.id, set);
    for (const dep of step.dependsOn) {
      const parent = byId.get(dep);
      if (!parent) continue;
      visit(parent);
      set.add(dep);
      for (const ancestor of ancestors.get(dep)!) set.add(ancestor);
    }
    order.push(step);
  };
  for (const step of plan.steps) visit(step);
  const reads = new Map(
    plan.steps.map((step) => {
      const ids = stepsNamedIn([step.input, step.forEach ?? null, step.sleep ?? null]);
      for (const dep of step.dependsOn) ids.add(dep);
      if (step.when !== undefined) for (const ancestor of ancestors.get(step.id)!) ids.add(ancestor);
      return [step.id, ids] as const;
    }),
  );
  return {
    plan,
    byId,
    order,
    dependents,
    ancestors,
    reads,
    ...(plan.output !== undefined && !plan.single ? { outputReads: stepsNamedIn(plan.output) } : {}),
    compensations: order.filter((step) => step.compensationOf !== undefined),
  };
}

/** Per-task overrides of the tool or workflow defaults (POST /assign-task's retry, timeout_ms, priority). */
export interface RunOverrides {
  retry?: RetryPolicy;
  timeout_ms?: number;
  priority?: number;
  /** A one-tool task's limits per key (its request's `concurrency`, `rate_limit`), keys resolved. */
  limits?: KeyLimit[];
}

/** A one-tool task: a run with one step named after the tool; params are its literal input. */
export function planToolTask(
  tool: { name: string; retry: RetryPolicy; timeout_ms: number; limits?: readonly KeyLimit[] },
  params: Record<string, unknown>,
  overrides: RunOverrides = {},
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
