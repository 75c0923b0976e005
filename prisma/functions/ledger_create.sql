CREATE OR REPLACE FUNCTION ledger_create(p jsonb)
 RETURNS SETOF uuid
 LANGUAGE plpgsql
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
-- New tasks, their steps, their maps' items and their first history events (submitted, then what
-- starting them changed), in one statement. A task whose (owner, idempotency key) is taken, or
-- whose id exists, is not stored, nor are its steps, items or events. Returns the ids stored.
BEGIN
  RETURN QUERY
  WITH x AS (
    SELECT * FROM jsonb_to_recordset(p->'tasks') AS x(id uuid, task_type text, workflow_name text, workflow_version int, params jsonb,
           plan jsonb, priority int, delay_ms int, callback_url text, callback_links boolean, owner_key text, idempotency_key text, request_hash text,
           steps_total int, created_at timestamptz, status text, result jsonb, error jsonb, started_at timestamptz,
           finished_at timestamptz, exit_status text, parent_task_id uuid, parent_created_at timestamptz, parent_step_id text, depth int)
  ), k AS (
    INSERT INTO idempotency_keys (owner_key, idempotency_key, task_id, task_created_at)
    SELECT x.owner_key, x.idempotency_key, x.id, x.created_at FROM x WHERE x.idempotency_key IS NOT NULL
    ON CONFLICT (owner_key, idempotency_key) DO NOTHING
    RETURNING task_id
  ), t AS (
    INSERT INTO tasks (id, task_type, workflow_name, workflow_version, params, plan, priority, delay_ms, callback_url, callback_links, owner_key,
                       idempotency_key, request_hash, steps_total, created_at, status, result, error, started_at, finished_at,
                       exit_status, parent_task_id, parent_created_at, parent_step_id, depth)
    SELECT x.id, x.task_type, x.workflow_name, x.workflow_version, x.params, x.plan, x.priority, x.delay_ms, x.callback_url, coalesce(x.callback_links, false), x.owner_key,
           x.idempotency_key, x.request_hash, x.steps_total, x.created_at, x.status::"TaskStatus", x.result, x.error, x.started_at,
           x.finished_at, x.exit_status::"TaskStatus", x.parent_task_id, x.parent_created_at, x.parent_step_id, x.depth
      FROM x WHERE x.idempotency_key IS NULL OR x.id IN (SELECT task_id FROM k)
    -- A task made again under the id it was given (a sub-workflow's child, whose id its parent's step holds) is made once.
    ON CONFLICT (id, created_at) DO NOTHING
    RETURNING id, created_at
  ), s AS (
    INSERT INTO steps (task_id, task_created_at, step_id, position, kind, tool, depends_on, status, reason, input, output, error,
                       queued_at, started_at, finished_at, wake_at, child_task_id, items)
    SELECT y.task_id, t.created_at, y.step_id, y.position, y.kind, y.tool, y.depends_on, y.status::"StepStatus", y.reason, y.input,
           y.output, y.error, y.queued_at, y.started_at, y.finished_at, y.wake_at, y.child_task_id, y.items
      FROM jsonb_to_recordset(p->'steps') AS y(task_id uuid, step_id text, position int, kind text, tool text, depends_on text[],
           status text, reason text, input jsonb, output jsonb, error jsonb, queued_at timestamptz, started_at timestamptz,
           finished_at timestamptz, wake_at timestamptz, child_task_id uuid, items jsonb)
      JOIN t ON t.id = y.task_id
  ), i AS (
    INSERT INTO step_items (task_id, task_created_at, step_id, item, run, status, input, child_task_id, started_at)
    SELECT z.task_id, t.created_at, z.step_id, z.item, z.run, z.status::"StepStatus", z.input, z.child_task_id, z.started_at
      FROM jsonb_to_recordset(p->'items') AS z(task_id uuid, step_id text, item int, run int, status text, input jsonb, child_task_id uuid, started_at timestamptz)
      JOIN t ON t.id = z.task_id
  ), e AS (
    -- A new task's history: submitted, then what starting it changed. Only for the tasks stored.
    INSERT INTO task_events (task_id, task_created_at, run, step_id, item, type, attempt, at, data)
    SELECT t.id, t.created_at, (v->>'run')::int, v->>'step_id', (v->>'item')::int, v->>'type', (v->>'attempt')::int, (v->>'at')::timestamptz, v->'data'
      FROM jsonb_array_elements(COALESCE(p->'events', '[]'::jsonb)) WITH ORDINALITY AS ev(v, n)
      JOIN t ON t.id = (ev.v->>'task_id')::uuid
     ORDER BY ev.n
  )
  SELECT t.id FROM t;
END $function$;
