CREATE OR REPLACE FUNCTION ledger_note(p jsonb)
 RETURNS jsonb
 LANGUAGE plpgsql
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
-- Notes about running steps and items that do not change their status: an adapter's progress,
-- and a failed attempt that will be retried (its error shows while the step waits; with
-- `history`, the attempt's end and the retry are recorded). Lost with a crashed server, they are
-- only a little out of date: the commit need not wait for the disk. Answers the notes that were
-- taken (the step or item was still running in that run).
DECLARE
  lo timestamptz;
  hi timestamptz;
  answer jsonb;
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  SELECT min(c.created_at), max(c.created_at) INTO lo, hi FROM jsonb_to_recordset(p) AS c(created_at timestamptz);
  WITH c AS (
    SELECT * FROM jsonb_to_recordset(p) AS c(task_id uuid, created_at timestamptz, run int, step_id text, item int, attempt int, error jsonb, progress jsonb,
                                             try int, started_at timestamptz, finished_at timestamptz, delay_ms int, history boolean, worker text, job_id text)
  ), st AS (
    UPDATE steps s SET error = COALESCE(c.error, s.error), attempts = GREATEST(s.attempts, COALESCE(c.attempt, 0)), progress = COALESCE(c.progress, s.progress)
      FROM c
     WHERE c.item IS NULL AND s.task_id = c.task_id AND s.task_created_at = c.created_at AND s.task_created_at BETWEEN lo AND hi
       AND s.step_id = c.step_id AND s.run = c.run AND s.status = 'running'
    RETURNING s.task_id, s.step_id, NULL::int AS item
  ), it AS (
    UPDATE step_items i SET error = COALESCE(c.error, i.error), attempts = GREATEST(i.attempts, COALESCE(c.attempt, 0))
      FROM c
     WHERE c.item IS NOT NULL AND i.task_id = c.task_id AND i.task_created_at = c.created_at AND i.task_created_at BETWEEN lo AND hi
       AND i.step_id = c.step_id AND i.item = c.item AND i.run = c.run AND i.status = 'running'
    RETURNING i.task_id, i.step_id, i.item
  ), e AS (
    -- A failed attempt that will be retried: its end, and the retry with its delay.
    INSERT INTO task_events (task_id, task_created_at, run, step_id, item, type, attempt, at, data)
    SELECT c.task_id, c.created_at, c.run, c.step_id, c.item, x.type, c.attempt, c.finished_at, x.data
      FROM c JOIN (SELECT * FROM st UNION ALL SELECT * FROM it) n ON n.task_id = c.task_id AND n.step_id = c.step_id AND n.item IS NOT DISTINCT FROM c.item
     CROSS JOIN LATERAL (VALUES
       (0, 'attempt_ended', jsonb_strip_nulls(jsonb_build_object('status', 'failed', 'try', c.try, 'worker', c.worker, 'job_id', c.job_id, 'error', c.error, 'will_retry', true,
                                                                 'duration_ms', (extract(epoch FROM c.finished_at - c.started_at) * 1000)::int))),
       (1, 'retried', jsonb_strip_nulls(jsonb_build_object('delay_ms', c.delay_ms, 'next_try', c.try + 1)))
     ) AS x(o, type, data)
     WHERE c.history AND c.error IS NOT NULL
     ORDER BY c.task_id, c.step_id, c.item, x.o
  )
  SELECT COALESCE(jsonb_agg(jsonb_build_object('task_id', n.task_id, 'step_id', n.step_id, 'item', n.item)), '[]'::jsonb) INTO answer
    FROM (SELECT * FROM st UNION ALL SELECT * FROM it) n;
  RETURN answer;
END $function$;
