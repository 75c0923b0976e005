import type { Plan } from '../engine/plan.js';
import { jobTool } from '../engine/registry.js';
import type { Decision, StepSet, TaskSet } from '../engine/state.js';
import { eventRow, newItemRow } from './apply-decision.js';
import type { SqlRunner } from './sql.js';

/** What the API knows of a task when it stores it, besides its plan. */
export interface StoredTask {
  /** A UUIDv7 (src/lib/uuid7.ts): the task's created_at is its time. */
  id: string;
  createdAt: Date;
  taskType: string;
  workflow?: { name: string; version: number };
  params: Record<string, unknown>;
  /** Id of the API key that submitted it; idempotency keys are unique per owner. @defaultValue '' (no authentication) */
  owner?: string;
  idempotencyKey?: string;
  requestHash: string;
  priority: number;
  delayMs: number;
  callbackUrl?: string;
  /** The task.waiting callback may carry approval links (its submitter could see them). @defaultValue false */
  callbackLinks?: boolean;
  /** A sub-workflow's child: the parent task and its step that awaits it. */
  parent?: { taskId: string; createdAt: Date; stepId: string };
  depth?: number;
}

/** A new task with its plan and what the engine decided when it started it (src/engine/decide.ts, start). */
export interface NewTask {
  task: StoredTask;
  plan: Plan;
  decision: Decision;
}

/** The plan as stored: a one-tool task's input is its params, which the task row holds already. */
export function storedPlan(plan: Plan): Plan {
  return plan.single ? { ...plan, steps: plan.steps.map(({ input: _input, ...step }) => ({ ...step, input: undefined })) } : plan;
}

/**
 * Inserts tasks, their steps and their maps' items in one call for the whole batch
 * (prisma/functions/ledger_create.sql), each step as the engine left it when the task
 * started. A task whose (owner, idempotency key) is taken, in idempotency_keys, is skipped, and so
 * are its steps. Returns the ids stored.
 */
export async function createTasks(db: SqlRunner, entries: readonly NewTask[], options: { history?: boolean } = {}): Promise<Set<string>> {
  const tasks = entries.map(({ task, plan, decision }) => {
    const set: TaskSet = decision.tasks.find((change) => change.taskId === task.id)?.set ?? {};
    return {
      id: task.id,
      task_type: task.taskType,
      workflow_name: task.workflow?.name ?? null,
      workflow_version: task.workflow?.version ?? null,
      params: task.params,
      plan: storedPlan(plan),
      priority: task.priority,
      delay_ms: task.delayMs,
      callback_url: task.callbackUrl ?? null,
      callback_links: task.callbackLinks ?? false,
      owner_key: task.owner ?? '',
      idempotency_key: task.idempotencyKey ?? null,
      request_hash: task.requestHash,
      steps_total: plan.steps.length,
      created_at: task.createdAt,
      status: set.status ?? 'queued',
      result: set.result ?? null,
      error: set.error ?? null,
      started_at: set.started_at ?? null,
      finished_at: set.finished_at ?? null,
      // A run that ended as it started (every step skipped) runs its exit handler at once.
      exit_status: set.exit_status ?? null,
      parent_task_id: task.parent?.taskId ?? null,
      parent_created_at: task.parent?.createdAt ?? null,
      parent_step_id: task.parent?.stepId ?? null,
      depth: task.depth ?? 0,
    };
  });
  const steps = entries.flatMap(({ task, plan, decision }) => {
    const sets = new Map<string, StepSet>(decision.steps.filter((change) => change.taskId === task.id).map((change) => [change.stepId, change.set]));
    return plan.steps.map((step, position) => {
      const set = sets.get(step.id) ?? {};
      return {
        task_id: task.id,
        step_id: step.id,
        position,
        kind: step.kind,
        tool: jobTool(step) ?? null,
        depends_on: step.dependsOn,
        status: set.status ?? 'pending',
        reason: set.reason ?? null,
        input: set.input ?? null,
        output: set.output ?? null,
        error: set.error ?? null,
        queued_at: set.queued_at ?? null,
        started_at: set.started_at ?? null,
        finished_at: set.finished_at ?? null,
        wake_at: set.wake_at ?? null,
        child_task_id: set.child_task_id ?? null,
        items: set.items ?? null,
      };
    });
  });
  const items = entries.flatMap(({ task, decision }) => decision.newItems.filter((item) => item.taskId === task.id).map(newItemRow));
  // The history starts with the submission, then what starting the task changed.
  const events =
    options.history === false
      ? []
      : entries.flatMap(({ task, decision }) => [
          eventRow({
            taskId: task.id,
            createdAt: task.createdAt,
            run: 1,
            type: 'submitted',
            at: task.createdAt.toISOString(),
            data: {
              task_type: task.taskType,
              ...(task.workflow ? { workflow: task.workflow } : {}),
              ...(task.owner ? { owner: task.owner } : {}),
              ...(task.parent ? { parent: { task_id: task.parent.taskId, step_id: task.parent.stepId } } : {}),
              ...(task.delayMs > 0 ? { delay_ms: task.delayMs } : {}),
              ...(task.priority ? { priority: task.priority } : {}),
            },
          }),
          ...decision.history.filter((event) => event.taskId === task.id).map(eventRow),
        ]);
  const rows = await db.$queryRawUnsafe<{ id: string }[]>(
    'SELECT ledger_create($1::jsonb)::text AS id',
    JSON.stringify({ tasks, steps, items, ...(events.length > 0 ? { events } : {}) }),
  );
  return new Set(rows.map((row) => row.id));
}

/** The tasks that hold these (owner, idempotency key) pairs, and the request each was made with. */
export function keyHolders(db: SqlRunner, keys: { owner: string; key: string }[]) {
  return db.$queryRawUnsafe<{ id: string; owner_key: string; idempotency_key: string; request_hash: string | null }[]>(
    `SELECT k.task_id::text AS id, k.owner_key, k.idempotency_key, t.request_hash
       FROM idempotency_keys k JOIN unnest($1::text[], $2::text[]) AS v(owner_key, idempotency_key)
         ON k.owner_key = v.owner_key AND k.idempotency_key = v.idempotency_key
       LEFT JOIN tasks t ON t.id = k.task_id AND t.created_at = k.task_created_at`,
    keys.map((entry) => entry.owner),
    keys.map((entry) => entry.key),
  );
}
