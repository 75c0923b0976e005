import type { TaskPlan } from '../engine/plan.js';
import type { SqlRunner } from './sql.js';

/** What the API knows of a task when it stores it (the rest is in its plan). */
export interface StoredTask {
  id: string;
  /** Id of the API key that submitted it; idempotency keys are unique per owner. @defaultValue '' (no authentication) */
  owner?: string;
  idempotencyKey?: string;
  requestHash: string;
  priority: number;
  delayMs: number;
  callbackUrl?: string;
  /** When the API received the request: the task's created_at. */
  receivedAt: Date;
}

/**
 * Inserts tasks and their steps in one statement: one round trip and one commit for the whole
 * batch. A task whose (owner, idempotency key) is taken is skipped, and so are its steps: they
 * join the ids the task insert returned. Returns the ids stored.
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
    created_at: task.receivedAt.toISOString(),
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
  const rows = await db.$queryRawUnsafe<{ id: string }[]>(
    `WITH t AS (
       INSERT INTO tasks (id, task_type, workflow_name, workflow_version, params, output_template, priority, delay_ms,
                          callback_url, owner_key, idempotency_key, request_hash, steps_total, steps_remaining, created_at)
       SELECT x.id, x.task_type, x.workflow_name, x.workflow_version, x.params, x.output_template, x.priority, x.delay_ms,
              x.callback_url, x.owner_key, x.idempotency_key, x.request_hash, x.steps_total, x.steps_total, x.created_at
         FROM jsonb_to_recordset($1::jsonb) AS x(id uuid, task_type text, workflow_name text, workflow_version int, params jsonb,
              output_template jsonb, priority int, delay_ms int, callback_url text, owner_key text, idempotency_key text,
              request_hash text, steps_total int, created_at timestamptz)
       ON CONFLICT (owner_key, idempotency_key) DO NOTHING
       RETURNING id
     ), s AS (
       INSERT INTO steps (task_id, step_id, position, tool, depends_on, dependents, remaining_deps, on_failure,
                          input_template, input, options, status, queued_at)
       SELECT x.task_id, x.step_id, x.position, x.tool, x.depends_on, x.dependents, x.remaining_deps, x.on_failure::"FailurePolicy",
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

/** The tasks that hold these (owner, idempotency key) pairs. */
export function keyHolders(db: SqlRunner, keys: { owner: string; key: string }[]) {
  return db.$queryRawUnsafe<{ id: string; owner_key: string; idempotency_key: string; request_hash: string | null }[]>(
    `SELECT t.id::text AS id, t.owner_key, t.idempotency_key, t.request_hash
       FROM tasks t JOIN unnest($1::text[], $2::text[]) AS k(owner_key, idempotency_key)
         ON t.owner_key = k.owner_key AND t.idempotency_key = k.idempotency_key`,
    keys.map((entry) => entry.owner),
    keys.map((entry) => entry.key),
  );
}
