CREATE OR REPLACE FUNCTION ledger_load(p jsonb)
 RETURNS jsonb
 LANGUAGE plpgsql
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
-- What the engine needs to decide about a batch's tasks, locked (FOR UPDATE, in id order) until
-- the transaction that applies the decision commits: each task (its plan unless the caller has
-- it), every step (outputs over 64 kB of stored JSON left out: the engine asks for them when a
-- step needs them; with `inputs`, the inputs of queued and running steps, to make their jobs
-- again), and the map items the batch reports about. Tasks are found by their keys (ids, cas), never by
-- the batch's range of created_at alone, which would read every task created in between.
DECLARE
  lo timestamptz;
  hi timestamptz;
  ids uuid[];
  cas timestamptz[];
  known uuid[];
BEGIN
  SELECT min(c.created_at), max(c.created_at), array_agg(DISTINCT c.id), array_agg(DISTINCT c.created_at) INTO lo, hi, ids, cas
    FROM jsonb_to_recordset(p->'tasks') AS c(id uuid, created_at timestamptz);
  SELECT COALESCE(array_agg(value::uuid), '{}') INTO known FROM jsonb_array_elements_text(COALESCE(p->'known', '[]'::jsonb));
  PERFORM 1 FROM tasks WHERE id = ANY(ids) AND created_at = ANY(cas) AND created_at BETWEEN lo AND hi ORDER BY id FOR UPDATE;
  RETURN jsonb_build_object(
    'tasks', (SELECT COALESCE(jsonb_agg(jsonb_build_object(
                'id', t.id, 'created_at', t.created_at, 'task_type', t.task_type, 'status', t.status, 'run', t.run, 'params', t.params,
                'plan', CASE WHEN t.id = ANY(known) THEN NULL ELSE t.plan END, 'callback', t.callback_url IS NOT NULL,
                'owner', t.owner_key, 'depth', t.depth, 'parent_task_id', t.parent_task_id, 'parent_step_id', t.parent_step_id,
                'started_at', t.started_at, 'finished_at', t.finished_at, 'exit_status', t.exit_status,
                'result', CASE WHEN (p->>'inputs')::boolean OR t.exit_status IS NOT NULL THEN t.result END, 'error', t.error)), '[]'::jsonb)
                FROM tasks t WHERE t.id = ANY(ids) AND t.created_at = ANY(cas) AND t.created_at BETWEEN lo AND hi),
    'steps', (SELECT COALESCE(jsonb_agg(jsonb_build_object(
                'task_id', s.task_id, 'step_id', s.step_id, 'status', s.status, 'reason', s.reason, 'attempts', s.attempts, 'run', s.run,
                'output', CASE WHEN pg_column_size(s.output) > 65536 THEN NULL ELSE s.output END,
                'output_big', COALESCE(pg_column_size(s.output) > 65536, false), 'error', s.error, 'started_at', s.started_at,
                'finished_at', s.finished_at, 'wake_at', s.wake_at, 'child_task_id', s.child_task_id, 'items', s.items,
                'input', CASE WHEN (p->>'inputs')::boolean AND s.status IN ('queued', 'running') THEN s.input END)), '[]'::jsonb)
                FROM steps s WHERE s.task_id = ANY(ids) AND s.task_created_at BETWEEN lo AND hi),
    'items', (SELECT COALESCE(jsonb_agg(jsonb_build_object(
                'task_id', i.task_id, 'step_id', i.step_id, 'item', i.item, 'run', i.run, 'status', i.status, 'attempts', i.attempts,
                'output', i.output, 'error', i.error, 'started_at', i.started_at, 'input', i.input, 'child_task_id', i.child_task_id)), '[]'::jsonb)
                FROM jsonb_to_recordset(COALESCE(p->'items', '[]'::jsonb)) AS w(task_id uuid, created_at timestamptz, step_id text, item int)
                JOIN step_items i ON i.task_id = w.task_id AND i.task_created_at = w.created_at AND i.step_id = w.step_id AND i.item = w.item
               WHERE i.task_created_at BETWEEN lo AND hi));
END $function$;
