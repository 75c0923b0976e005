CREATE OR REPLACE FUNCTION ledger_load_more(p jsonb)
 RETURNS jsonb
 LANGUAGE plpgsql
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
-- What the engine asked for after a load: large outputs, and every item of some maps.
DECLARE
  lo timestamptz;
  hi timestamptz;
BEGIN
  SELECT min(c.created_at), max(c.created_at) INTO lo, hi FROM (
    SELECT (e->>'created_at')::timestamptz AS created_at FROM jsonb_array_elements(COALESCE(p->'outputs', '[]'::jsonb) || COALESCE(p->'items', '[]'::jsonb)) e) c;
  RETURN jsonb_build_object(
    'outputs', (SELECT COALESCE(jsonb_agg(jsonb_build_object('task_id', s.task_id, 'step_id', s.step_id, 'output', s.output)), '[]'::jsonb)
                  FROM jsonb_to_recordset(COALESCE(p->'outputs', '[]'::jsonb)) AS w(task_id uuid, created_at timestamptz, step_id text)
                  JOIN steps s ON s.task_id = w.task_id AND s.task_created_at = w.created_at AND s.step_id = w.step_id
                 WHERE s.task_created_at BETWEEN lo AND hi),
    'items', (SELECT COALESCE(jsonb_agg(jsonb_build_object(
                'task_id', i.task_id, 'step_id', i.step_id, 'item', i.item, 'run', i.run, 'status', i.status, 'attempts', i.attempts,
                'output', i.output, 'error', i.error, 'started_at', i.started_at, 'input', i.input, 'child_task_id', i.child_task_id)), '[]'::jsonb)
                FROM jsonb_to_recordset(COALESCE(p->'items', '[]'::jsonb)) AS w(task_id uuid, created_at timestamptz, step_id text)
                JOIN step_items i ON i.task_id = w.task_id AND i.task_created_at = w.created_at AND i.step_id = w.step_id
               WHERE i.task_created_at BETWEEN lo AND hi));
END $function$;
