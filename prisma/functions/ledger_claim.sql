CREATE OR REPLACE FUNCTION ledger_claim(p jsonb)
 RETURNS jsonb
 LANGUAGE plpgsql
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
-- A worker's claims to run steps (or map items), made before their adapters run: a claim takes
-- while its run is active and the step is queued, or running under an earlier delivery (its
-- worker died); for an item, while its map runs. The task becomes running with its first claim.
-- The tasks are locked first (FOR SHARE, in id order, as every writer locks them), and the claim
-- is a statement of its own so that it reads the steps as they are once those locks are held. A
-- claim lost with a crashed server is made again by the step's next delivery: its commit need not
-- wait for the disk. With `history` (on the batch's first claim), each claim that took records its
-- attempt's start (try, delivery, worker, job id), and the step's and the task's start when it
-- moved them. Answers the claims that took.
DECLARE
  lo timestamptz;
  hi timestamptz;
  ids uuid[];
  cas timestamptz[];
  answer jsonb;
  history boolean;
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  SELECT min(c.created_at), max(c.created_at), array_agg(DISTINCT c.task_id), array_agg(DISTINCT c.created_at) INTO lo, hi, ids, cas
    FROM jsonb_to_recordset(p) AS c(task_id uuid, created_at timestamptz);
  history := COALESCE((p->0->>'history')::boolean, false);
  -- Tasks by their keys (ids, cas): a range of created_at alone would read every task created in between.
  PERFORM 1 FROM tasks WHERE id = ANY(ids) AND created_at = ANY(cas) AND created_at BETWEEN lo AND hi ORDER BY id FOR SHARE;
  WITH c AS (
    SELECT * FROM ROWS FROM (jsonb_to_recordset(p) AS (task_id uuid, created_at timestamptz, run int, step_id text, item int, attempt int, at timestamptz,
                                                       try int, worker text, job_id text)) WITH ORDINALITY
                  AS c(task_id, created_at, run, step_id, item, attempt, at, try, worker, job_id, n)
  ), active AS (
    SELECT c.* FROM c JOIN tasks t ON t.id = c.task_id AND t.created_at = c.created_at AND t.created_at BETWEEN lo AND hi
     WHERE t.id = ANY(ids) AND t.created_at = ANY(cas) AND t.run = c.run AND t.status::text IN ('queued', 'running')
  ), st AS (
    UPDATE steps s SET status = 'running', attempts = GREATEST(s.attempts, a.attempt), started_at = COALESCE(s.started_at, a.at)
      FROM active a
     WHERE a.item IS NULL AND s.task_id = a.task_id AND s.task_created_at = a.created_at AND s.task_created_at BETWEEN lo AND hi
       AND s.step_id = a.step_id AND s.run = a.run AND (s.status = 'queued' OR (s.status = 'running' AND s.attempts <= a.attempt))
    RETURNING s.task_id, s.step_id, NULL::int AS item, a.n
  ), it AS (
    UPDATE step_items i SET status = 'running', attempts = GREATEST(i.attempts, a.attempt), started_at = COALESCE(i.started_at, a.at)
      FROM active a JOIN steps m ON m.task_id = a.task_id AND m.task_created_at = a.created_at AND m.step_id = a.step_id AND m.status = 'running'
     WHERE a.item IS NOT NULL AND m.task_created_at BETWEEN lo AND hi AND i.task_id = a.task_id AND i.task_created_at = a.created_at
       AND i.task_created_at BETWEEN lo AND hi AND i.step_id = a.step_id AND i.item = a.item AND i.run = a.run
       AND (i.status = 'queued' OR (i.status = 'running' AND i.attempts <= a.attempt))
    RETURNING i.task_id, i.step_id, i.item, a.n
  ), claimed AS (
    SELECT * FROM st UNION ALL SELECT * FROM it
  ), began AS (
    UPDATE tasks t SET status = 'running', started_at = COALESCE(t.started_at, now())
     WHERE t.id IN (SELECT task_id FROM claimed) AND t.id = ANY(ids) AND t.created_at = ANY(cas) AND t.created_at BETWEEN lo AND hi
       AND t.status::text = 'queued'
    RETURNING t.id
  ), was AS (
    -- The steps' statuses before this statement (its snapshot): a claim of a queued step moved it.
    SELECT s.task_id, s.step_id, s.status FROM steps s JOIN active a ON s.task_id = a.task_id AND s.task_created_at = a.created_at AND s.step_id = a.step_id
     WHERE history AND a.item IS NULL AND s.task_created_at BETWEEN lo AND hi
  ), e AS (
    -- One pass over the claims that took, each giving its events in order: the task's start (with
    -- its first claim), the step's (when the claim moved it), the attempt's.
    INSERT INTO task_events (task_id, task_created_at, run, step_id, item, type, attempt, at, data)
    SELECT a.task_id, a.created_at, a.run, x.step_id, x.item, x.type, x.attempt, a.at, x.data
      FROM (SELECT k.*, k.n = min(k.n) OVER (PARTITION BY k.task_id) AS first FROM claimed k) k
      JOIN active a ON a.n = k.n
      LEFT JOIN began b ON b.id = k.task_id
      LEFT JOIN was w ON k.item IS NULL AND w.task_id = k.task_id AND w.step_id = k.step_id
     CROSS JOIN LATERAL (VALUES
       (0, k.first AND b.id IS NOT NULL, NULL::text, NULL::int, 'task_started', NULL::int, '{"from": "queued", "to": "running"}'::jsonb),
       (1, w.status = 'queued', a.step_id, NULL, 'step_running', NULL, '{"from": "queued", "to": "running"}'::jsonb),
       (2, true, a.step_id, a.item, 'attempt_started', a.attempt,
        jsonb_strip_nulls(jsonb_build_object('try', a.try, 'delivery', a.attempt, 'worker', a.worker, 'job_id', a.job_id)))
     ) AS x(o, wanted, step_id, item, type, attempt, data)
     WHERE history AND x.wanted
     ORDER BY k.n, x.o
  )
  SELECT COALESCE(jsonb_agg(jsonb_build_object('task_id', c.task_id, 'step_id', c.step_id, 'item', c.item,
                                               'task_began', EXISTS (SELECT 1 FROM began b WHERE b.id = c.task_id))), '[]'::jsonb)
    INTO answer FROM claimed c;
  RETURN answer;
END $function$;
