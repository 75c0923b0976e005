import type { Plan, PreparedPlan } from '../engine/plan.js';
import { prepare } from '../engine/prepare.js';
import type { ItemState, Needs, StepState, TaskState } from '../engine/state.js';
import type { StepStatus, TaskStatus } from '../engine/status.js';
import type { ErrorRecord } from '../lib/errors.js';
import type { SqlRunner } from './sql.js';

/**
 * Reading tasks for the engine to decide about: ledger_load locks them (FOR UPDATE, until the
 * transaction that applies the decision commits) and answers each task, every step, and the map
 * items asked for; ledger_load_more answers what the engine found missing (outputs too large to
 * come with the task, every item of a map).
 */

/**
 * Plans never change once a task is stored: a process keeps the ones it has read (prepared for
 * the decider) and ledger_load leaves them out of its answer.
 */
export class PlanCache {
  private readonly plans = new Map<string, PreparedPlan>();

  constructor(private readonly capacity = 10_000) {}

  get(taskId: string): PreparedPlan | undefined {
    const plan = this.plans.get(taskId);
    if (plan) {
      // Most recently used last: the first entry is the one to evict.
      this.plans.delete(taskId);
      this.plans.set(taskId, plan);
    }
    return plan;
  }

  set(taskId: string, plan: PreparedPlan): void {
    this.plans.delete(taskId);
    this.plans.set(taskId, plan);
    if (this.plans.size > this.capacity) this.plans.delete(this.plans.keys().next().value!);
  }

  has(taskId: string): boolean {
    return this.plans.has(taskId);
  }
}

interface TaskRow {
  id: string;
  created_at: string;
  task_type: string;
  status: TaskStatus;
  run: number;
  params: Record<string, unknown>;
  plan: Plan | null;
  callback: boolean;
  owner: string;
  depth: number;
  parent_task_id: string | null;
  parent_step_id: string | null;
  started_at: string | null;
  finished_at: string | null;
  exit_status?: TaskStatus | null;
  result?: unknown;
  error: ErrorRecord | null;
}

interface StepRow {
  task_id: string;
  step_id: string;
  status: StepStatus;
  reason: string | null;
  attempts: number;
  run: number;
  output: unknown;
  output_big: boolean;
  error: ErrorRecord | null;
  started_at: string | null;
  finished_at: string | null;
  wake_at: string | null;
  child_task_id: string | null;
  items: StepState['items'];
  input?: unknown;
}

interface ItemRow {
  task_id: string;
  step_id: string;
  item: number;
  run: number;
  status: StepStatus;
  attempts: number;
  output: unknown;
  error: ErrorRecord | null;
  started_at: string | null;
  input?: unknown;
  child_task_id?: string | null;
}

const date = (value: string | null) => (value === null ? null : new Date(value));

function itemState(row: ItemRow): ItemState {
  return {
    item: row.item,
    run: row.run,
    status: row.status,
    attempts: row.attempts,
    output: row.output ?? null,
    error: row.error,
    startedAt: date(row.started_at),
    childTaskId: row.child_task_id ?? null,
    ...(row.input !== undefined ? { input: row.input } : {}),
  };
}

function addItems(states: Map<string, TaskState>, rows: ItemRow[]): void {
  for (const row of rows) {
    const task = states.get(row.task_id);
    if (!task) continue;
    const items = task.items.get(row.step_id) ?? new Map<number, ItemState>();
    items.set(row.item, itemState(row));
    task.items.set(row.step_id, items);
  }
}

/**
 * Loads and locks tasks (`times`: each one's created_at, see creationTimes), with the map items
 * given. Tasks not found (expired, removed) are left out.
 */
export async function loadTasks(
  tx: SqlRunner,
  times: ReadonlyMap<string, Date>,
  request: {
    taskIds: readonly string[];
    items?: readonly { taskId: string; stepId: string; item: number }[];
    /** Also the inputs of queued and running steps (to make their jobs again). */
    inputs?: boolean;
  },
  plans: PlanCache,
): Promise<TaskState[]> {
  const ids = request.taskIds.filter((id) => times.has(id));
  if (ids.length === 0) return [];
  const [row] = await tx.$queryRawUnsafe<{ loaded: { tasks: TaskRow[]; steps: StepRow[]; items: ItemRow[] } }[]>(
    'SELECT ledger_load($1::jsonb) AS loaded',
    JSON.stringify({
      tasks: ids.map((id) => ({ id, created_at: times.get(id) })),
      known: ids.filter((id) => plans.has(id)),
      inputs: request.inputs ?? false,
      items: (request.items ?? [])
        .filter((item) => times.has(item.taskId))
        .map((item) => ({ task_id: item.taskId, created_at: times.get(item.taskId), step_id: item.stepId, item: item.item })),
    }),
  );
  const loaded = row!.loaded;
  const states = new Map<string, TaskState>();
  for (const task of loaded.tasks) {
    let plan = plans.get(task.id);
    if (!plan) {
      const stored = task.plan!;
      // A one-tool task's plan is stored without its input: its params are the input.
      plan = prepare(stored.single ? { ...stored, steps: stored.steps.map((step) => ({ ...step, input: task.params })) } : stored);
      plans.set(task.id, plan);
    }
    states.set(task.id, {
      id: task.id,
      createdAt: new Date(task.created_at),
      taskType: task.task_type,
      status: task.status,
      run: task.run,
      params: task.params,
      plan,
      callback: task.callback,
      owner: task.owner,
      depth: task.depth,
      parent: task.parent_task_id && task.parent_step_id ? { taskId: task.parent_task_id, stepId: task.parent_step_id } : null,
      startedAt: date(task.started_at),
      finishedAt: date(task.finished_at),
      exitStatus: task.exit_status ?? null,
      error: task.error,
      ...(task.result !== undefined && task.result !== null ? { result: task.result } : {}),
      steps: new Map(),
      items: new Map(),
      allItemsLoaded: new Set(),
    });
  }
  for (const step of loaded.steps) {
    states.get(step.task_id)?.steps.set(step.step_id, {
      id: step.step_id,
      status: step.status,
      reason: step.reason,
      attempts: step.attempts,
      run: step.run,
      output: step.output_big ? undefined : (step.output ?? null),
      error: step.error,
      startedAt: date(step.started_at),
      finishedAt: date(step.finished_at),
      wakeAt: date(step.wake_at),
      childTaskId: step.child_task_id,
      items: step.items,
      ...(step.input !== undefined && step.input !== null ? { input: step.input } : {}),
    });
  }
  addItems(states, loaded.items);
  return [...states.values()];
}

/** Loads what the engine found missing into the tasks it decides about (in the same transaction). */
export async function loadMore(tx: SqlRunner, needs: Needs, tasks: readonly TaskState[]): Promise<void> {
  const byId = new Map(tasks.map((task) => [task.id, task]));
  const at = (taskId: string) => byId.get(taskId)!.createdAt;
  const [row] = await tx.$queryRawUnsafe<{ more: { outputs: { task_id: string; step_id: string; output: unknown }[]; items: ItemRow[] } }[]>(
    'SELECT ledger_load_more($1::jsonb) AS more',
    JSON.stringify({
      outputs: needs.outputs.map((need) => ({ task_id: need.taskId, created_at: at(need.taskId), step_id: need.stepId })),
      items: needs.items.map((need) => ({ task_id: need.taskId, created_at: at(need.taskId), step_id: need.stepId })),
    }),
  );
  for (const output of row!.more.outputs) {
    const step = byId.get(output.task_id)?.steps.get(output.step_id);
    if (step) step.output = output.output ?? null;
  }
  // Asked for and absent: a step with no output at all.
  for (const need of needs.outputs) {
    const step = byId.get(need.taskId)?.steps.get(need.stepId);
    if (step && step.output === undefined) step.output = null;
  }
  addItems(byId, row!.more.items);
  for (const need of needs.items) byId.get(need.taskId)?.allItemsLoaded.add(need.stepId);
}
