CREATE OR REPLACE FUNCTION ledger_finish_singles(p jsonb)
 RETURNS jsonb
 LANGUAGE plpgsql
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
-- The results of one-tool tasks' steps, which end their tasks: what each task ends with was
-- decided by the engine before the call (src/engine/task-output.ts, singleRunEnding). A task's
-- row is updated only while its run is still active (a cancel that committed first wins), the
-- step's only when its task's was, and a failed step leaves a dead letter. With `history`, a
-- task's end records its attempt (and its start, when the step was never claimed), the step's end
-- and the task's. Returns the tasks ended, and (`before`) those whose run had ended already: a
-- redelivered result whose ending committed while its answer was lost, or one that a cancel beat.
-- Rows are found by their keys, never by the batch's range of created_at alone (which prunes the
-- partitions): a generic plan that joined the batch to that range read every task, or every
-- active one, created between its oldest and newest. LATERAL ... LIMIT 1 keeps a lookup per
-- entry; the tasks update names its keys (ids, cas) and compares status as text, so that neither
-- the status index nor a created_at range is the cheaper plan.
DECLARE
  lo timestamptz;
  hi timestamptz;
  ids uuid[];
  cas timestamptz[];
  answer jsonb;
BEGIN
  SELECT min(c.created_at), max(c.created_at), array_agg(c.task_id), array_agg(c.created_at) INTO lo, hi, ids, cas
    FROM jsonb_to_recordset(p) AS c(task_id uuid, created_at timestamptz);
  WITH v AS (
    SELECT * FROM jsonb_to_recordset(p) AS v(task_id uuid, created_at timestamptz, run int, step_id text, tool text, attempt int, status text,
           output jsonb, error jsonb, input jsonb, started_at timestamptz, finished_at timestamptz, task_status text,
           task_result jsonb, task_error jsonb, try int, worker text, job_id text, history boolean)
  ), was AS (
    -- The step's status before this statement: queued, it was never claimed (a fast first delivery).
    SELECT v.task_id, s.status FROM v CROSS JOIN LATERAL (
             SELECT s.status FROM steps s WHERE s.task_id = v.task_id AND s.task_created_at = v.created_at AND s.step_id = v.step_id
                AND s.task_created_at BETWEEN lo AND hi LIMIT 1) s
     WHERE v.history
  ), t AS (
    UPDATE tasks t SET status = v.task_status::"TaskStatus", result = v.task_result, error = v.task_error,
           started_at = COALESCE(t.started_at, v.started_at), finished_at = now()
      FROM v
     WHERE t.id = ANY(ids) AND t.created_at = ANY(cas) AND t.id = v.task_id AND t.created_at = v.created_at AND t.created_at BETWEEN lo AND hi AND t.run = v.run AND t.status::text IN ('queued', 'running')
    RETURNING t.id, t.created_at, t.status::text AS status, t.task_type, t.callback_url IS NOT NULL AS callback
  ), s AS (
    UPDATE steps s SET status = v.status::"StepStatus", output = v.output, error = v.error, attempts = GREATEST(s.attempts, v.attempt),
           started_at = COALESCE(s.started_at, v.started_at), finished_at = v.finished_at
      FROM v JOIN t ON t.id = v.task_id
     WHERE s.task_id = v.task_id AND s.task_created_at = t.created_at AND s.task_created_at BETWEEN lo AND hi
       AND s.step_id = v.step_id AND s.run = v.run AND s.status IN ('queued', 'running')
  ), d AS (
    INSERT INTO dead_letters (id, task_id, task_created_at, step_id, run, tool, input, error, attempts)
    SELECT gen_random_uuid(), v.task_id, t.created_at, v.step_id, v.run, v.tool, v.input, v.error, v.attempt
      FROM v JOIN t ON t.id = v.task_id
     WHERE v.status = 'failed'
    ON CONFLICT (task_id, task_created_at, step_id, run) DO NOTHING
  ), e AS (
    -- One pass over the tasks ended, each giving its events in order (a LATERAL list of them).
    INSERT INTO task_events (task_id, task_created_at, run, step_id, item, type, attempt, at, data)
    SELECT v.task_id, t.created_at, v.run, x.step_id, NULL, x.type, x.attempt, x.at, x.data
      FROM v JOIN t ON t.id = v.task_id LEFT JOIN was w ON w.task_id = v.task_id
     CROSS JOIN LATERAL (VALUES
       (0, w.status = 'queued', NULL::text, 'task_started', NULL::int, v.started_at, '{"from": "queued", "to": "running"}'::jsonb),
       (1, w.status = 'queued', v.step_id, 'step_running', NULL, v.started_at, '{"from": "queued", "to": "running"}'::jsonb),
       (2, w.status = 'queued', v.step_id, 'attempt_started', v.attempt, v.started_at,
        jsonb_strip_nulls(jsonb_build_object('try', v.try, 'delivery', v.attempt, 'worker', v.worker, 'job_id', v.job_id))),
       (3, true, v.step_id, 'attempt_ended', v.attempt, v.finished_at,
        jsonb_strip_nulls(jsonb_build_object('status', v.status, 'try', v.try, 'error', v.error, 'will_retry', false,
                                             'duration_ms', (extract(epoch FROM v.finished_at - v.started_at) * 1000)::int))),
       (4, true, v.step_id, 'step_' || v.status, NULL, v.finished_at, jsonb_build_object('from', 'running', 'to', v.status)),
       (5, true, NULL, 'task_' || t.status, NULL, v.finished_at,
        jsonb_strip_nulls(jsonb_build_object('from', 'running', 'to', t.status, 'error', v.task_error)))
     ) AS x(o, wanted, step_id, type, attempt, at, data)
     WHERE v.history AND x.wanted
     ORDER BY v.task_id, x.o
  )
  SELECT jsonb_build_object(
           'ended', COALESCE((SELECT jsonb_agg(jsonb_build_object('id', t.id, 'status', t.status, 'task_type', t.task_type,
                                                                  'created_at', t.created_at, 'callback', t.callback)) FROM t), '[]'::jsonb),
           -- Read as before this statement: a task this statement ends is not among them.
           'before', COALESCE((SELECT jsonb_agg(v.task_id) FROM v CROSS JOIN LATERAL (
                                 SELECT 1 FROM tasks o WHERE o.id = v.task_id AND o.created_at = v.created_at AND o.created_at BETWEEN lo AND hi
                                    AND o.run = v.run AND o.status IN ('completed', 'failed', 'cancelled') LIMIT 1) o), '[]'::jsonb))
    INTO answer;
  RETURN answer;
END $function$;
