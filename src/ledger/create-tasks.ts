import type { TaskPlan } from '../engine/plan.js';
import type { SqlRunner } from './sql.js';
import { createdAtOf } from './task-days.js';

/** What the API knows of a task when it stores it (the rest is in its plan). */
export interface StoredTask {
  /** A UUIDv7 (src/lib/uuid7.ts): the task's created_at is its time. */
  id: string;
  /** Id of the API key that submitted it; idempotency keys are unique per owner. @defaultValue '' (no authentication) */
  owner?: string;
  idempotencyKey?: string;
  requestHash: string;
  priority: number;
  delayMs: number;
  callbackUrl?: string;
}

/**
 * Inserts tasks and their steps in one statement: one round trip and one commit for the whole
 * batch. A task whose (owner, idempotency key) is taken, in idempotency_keys, is skipped, and so
 * are its steps: they join the ids the task insert returned. Returns the ids stored.
 */
export async function createTasks(db: SqlRunner, entries: { plan: TaskPlan; task: StoredTask }[]): Promise<Set<string>> {
  const tasks = entries.map(({ plan, task }) => ({
    id: task.id,
    task_type: plan.taskType,
    workflow_name: plan.workflow?.name ?? null,
    workflow_version: plan.workflow?.version ?? null,
    params: plan.params,
    output_template: plan.workflow?.outputTemplate ?? null,
    priority: task.priority,
    delay_ms: task.delayMs,
    callback_url: task.callbackUrl ?? null,
    owner_key: task.owner ?? '',
    idempotency_key: task.idempotencyKey ?? null,
    request_hash: task.requestHash,
    steps_total: plan.steps.length,
    created_at: createdAtOf(task.id).toISOString(),
  }));
  const steps = entries.flatMap(({ plan, task }) =>
    plan.steps.map((step, position) => ({
      task_id: task.id,
      step_id: step.id,
      position,
      tool: step.tool,
      depends_on: step.dependsOn,
      dependents: step.dependents,
      remaining_deps: step.dependsOn.length,
      on_failure: step.onFailure,
      input_template: step.inputTemplate ?? null,
      input: step.input ?? null,
      options: step.options,
      status: step.dependsOn.length === 0 ? 'queued' : 'pending',
    })),
  );
  // Keys first: of two tasks with one key, in this batch or not, the one whose key row goes in
  // is stored (ON CONFLICT DO NOTHING skips a key taken earlier in the same statement too).
  const rows = await db.$queryRawUnsafe<{ id: string }[]>(
    `WITH x AS (
       SELECT * FROM jsonb_to_recordset($1::jsonb) AS x(id uuid, task_type text, workflow_name text, workflow_version int, params jsonb,
              output_template jsonb, priority int, delay_ms int, callback_url text, owner_key text, idempotency_key text,
              request_hash text, steps_total int, created_at timestamptz)
     ), k AS (
       INSERT INTO idempotency_keys (owner_key, idempotency_key, task_id, task_created_at)
       SELECT x.owner_key, x.idempotency_key, x.id, x.created_at FROM x WHERE x.idempotency_key IS NOT NULL
       ON CONFLICT (owner_key, idempotency_key) DO NOTHING
       RETURNING task_id
     ), t AS (
       INSERT INTO tasks (id, task_type, workflow_name, workflow_version, params, output_template, priority, delay_ms,
                          callback_url, owner_key, idempotency_key, request_hash, steps_total, steps_remaining, created_at)
       SELECT x.id, x.task_type, x.workflow_name, x.workflow_version, x.params, x.output_template, x.priority, x.delay_ms,
              x.callback_url, x.owner_key, x.idempotency_key, x.request_hash, x.steps_total, x.steps_total, x.created_at
         FROM x WHERE x.idempotency_key IS NULL OR x.id IN (SELECT task_id FROM k)
       RETURNING id, created_at
     ), s AS (
       INSERT INTO steps (task_id, task_created_at, step_id, position, tool, depends_on, dependents, remaining_deps, on_failure,
                          input_template, input, options, status, queued_at)
       SELECT x.task_id, t.created_at, x.step_id, x.position, x.tool, x.depends_on, x.dependents, x.remaining_deps, x.on_failure::"FailurePolicy",
              x.input_template, x.input, x.options, x.status::"StepStatus", CASE WHEN x.status = 'queued' THEN now() END
         FROM jsonb_to_recordset($2::jsonb) AS x(task_id uuid, step_id text, position int, tool text, depends_on text[],
              dependents text[], remaining_deps int, on_failure text, input_template jsonb, input jsonb, options jsonb, status text)
         JOIN t ON t.id = x.task_id
     )
     SELECT id::text AS id FROM t`,
    JSON.stringify(tasks),
    JSON.stringify(steps),
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
