-- The durable history of every task (docs/workflows.md "History"): one row per event, in the order of the
-- task's changes. Written by the ledger's functions in the statements that make the changes (no
-- round trip of its own), partitioned by the task's day like its steps, and dropped with that day.
--
-- Order: `seq` comes from one sequence (no per-session cache: numbers are handed out in the order
-- they are asked for). Every writer of a task's changes holds its task's row lock (ledger_load's
-- FOR UPDATE, ledger_claim's FOR SHARE, the UPDATE of ledger_finish_singles) while it asks, so a
-- task's events are numbered in the order its changes commit. Two claims of a task's different
-- steps may share the task (FOR SHARE) and interleave: they are concurrent changes of different steps.

CREATE TABLE "task_events" (
    "task_id" UUID NOT NULL,
    "task_created_at" TIMESTAMPTZ(3) NOT NULL,
    "seq" BIGSERIAL NOT NULL,
    "run" INTEGER NOT NULL,
    "step_id" TEXT,
    "item" INTEGER,
    "type" TEXT NOT NULL,
    "attempt" INTEGER,
    "at" TIMESTAMPTZ(3) NOT NULL,
    "data" JSONB,
    CONSTRAINT "task_events_pkey" PRIMARY KEY ("task_id", "task_created_at", "seq")
) PARTITION BY RANGE ("task_created_at");
CREATE TABLE "task_events_default" PARTITION OF "task_events" DEFAULT;

CREATE OR REPLACE FUNCTION "create_day_partitions"(day date) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  parent text;
BEGIN
  FOREACH parent IN ARRAY ARRAY['tasks', 'steps', 'step_items', 'dead_letters', 'callback_deliveries', 'task_events'] LOOP
    EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                   parent || '_p' || to_char(day, 'YYYYMMDD'), parent,
                   day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC');
  END LOOP;
END $$;

CREATE OR REPLACE FUNCTION "drop_day_partitions"(day date) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  parent text;
BEGIN
  FOREACH parent IN ARRAY ARRAY['task_events', 'callback_deliveries', 'dead_letters', 'step_items', 'steps', 'tasks'] LOOP
    EXECUTE format('DROP TABLE IF EXISTS %I', parent || '_p' || to_char(day, 'YYYYMMDD'));
  END LOOP;
END $$;

-- The history's partitions of every day that has the tasks' already.
SELECT "create_day_partitions"(to_date(substring(c.relname FROM '_p([0-9]{8})$'), 'YYYYMMDD'))
  FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
 WHERE i.inhparent = 'tasks'::regclass AND c.relname ~ '_p[0-9]{8}$';

-- ---- The ledger's functions, writing the history ------------------------------------------
-- Events the engine decided (src/engine/state.ts, HistoryEvent) come in `events`, in order, each
-- naming its task's created_at; the others (a claim's start, a retried attempt, a one-tool task's
-- end) are made here from what the statement changed. A batch without them writes none
-- (TASK_HISTORY=off).


-- ledger_create: as before, and the new tasks' first events.
CREATE OR REPLACE FUNCTION "ledger_create"(p jsonb) RETURNS SETOF uuid LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan AS $$
BEGIN
  RETURN QUERY
  WITH x AS (
    SELECT * FROM jsonb_to_recordset(p->'tasks') AS x(id uuid, task_type text, workflow_name text, workflow_version int, params jsonb,
           plan jsonb, priority int, delay_ms int, callback_url text, owner_key text, idempotency_key text, request_hash text,
           steps_total int, created_at timestamptz, status text, result jsonb, error jsonb, started_at timestamptz,
           finished_at timestamptz, parent_task_id uuid, parent_created_at timestamptz, parent_step_id text, depth int)
  ), k AS (
    INSERT INTO idempotency_keys (owner_key, idempotency_key, task_id, task_created_at)
    SELECT x.owner_key, x.idempotency_key, x.id, x.created_at FROM x WHERE x.idempotency_key IS NOT NULL
    ON CONFLICT (owner_key, idempotency_key) DO NOTHING
    RETURNING task_id
  ), t AS (
    INSERT INTO tasks (id, task_type, workflow_name, workflow_version, params, plan, priority, delay_ms, callback_url, owner_key,
                       idempotency_key, request_hash, steps_total, created_at, status, result, error, started_at, finished_at,
                       parent_task_id, parent_created_at, parent_step_id, depth)
    SELECT x.id, x.task_type, x.workflow_name, x.workflow_version, x.params, x.plan, x.priority, x.delay_ms, x.callback_url, x.owner_key,
           x.idempotency_key, x.request_hash, x.steps_total, x.created_at, x.status::"TaskStatus", x.result, x.error, x.started_at,
           x.finished_at, x.parent_task_id, x.parent_created_at, x.parent_step_id, x.depth
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
    INSERT INTO step_items (task_id, task_created_at, step_id, item, run, status, input)
    SELECT z.task_id, t.created_at, z.step_id, z.item, z.run, z.status::"StepStatus", z.input
      FROM jsonb_to_recordset(p->'items') AS z(task_id uuid, step_id text, item int, run int, status text, input jsonb)
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
END $$;

-- ledger_claim: as before; with `history` (on its first claim), each claim that took records its
-- attempt's start (try, delivery, worker, job id), and the step's and task's start when it moved them.
CREATE OR REPLACE FUNCTION "ledger_claim"(p jsonb) RETURNS jsonb LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
  lo timestamptz;
  hi timestamptz;
  ids uuid[];
  answer jsonb;
  history boolean;
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  SELECT min(c.created_at), max(c.created_at), array_agg(DISTINCT c.task_id) INTO lo, hi, ids
    FROM jsonb_to_recordset(p) AS c(task_id uuid, created_at timestamptz);
  history := COALESCE((p->0->>'history')::boolean, false);
  PERFORM 1 FROM tasks WHERE id = ANY(ids) AND created_at BETWEEN lo AND hi ORDER BY id FOR SHARE;
  WITH c AS (
    SELECT * FROM ROWS FROM (jsonb_to_recordset(p) AS (task_id uuid, created_at timestamptz, run int, step_id text, item int, attempt int, at timestamptz,
                                                       try int, worker text, job_id text)) WITH ORDINALITY
                  AS c(task_id, created_at, run, step_id, item, attempt, at, try, worker, job_id, n)
  ), active AS (
    SELECT c.* FROM c JOIN tasks t ON t.id = c.task_id AND t.created_at = c.created_at AND t.created_at BETWEEN lo AND hi
     WHERE t.run = c.run AND t.status IN ('queued', 'running')
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
     WHERE t.id IN (SELECT task_id FROM claimed) AND t.created_at BETWEEN lo AND hi AND t.status = 'queued'
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
END $$;

-- ledger_apply: as before, and the decision's events (its transitions and the events its step kinds recorded).
CREATE OR REPLACE FUNCTION "ledger_apply"(p jsonb) RETURNS jsonb LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
  lo timestamptz;
  hi timestamptz;
  sweep jsonb;
  swept "StepStatus";
  started jsonb := '[]'::jsonb;
  moved jsonb := '[]'::jsonb;
  found jsonb;
BEGIN
  SELECT min(c.created_at), max(c.created_at) INTO lo, hi FROM (
    SELECT (e->>'created_at')::timestamptz AS created_at
      FROM jsonb_array_elements(COALESCE(p->'tasks', '[]'::jsonb) || COALESCE(p->'steps', '[]'::jsonb) || COALESCE(p->'new_items', '[]'::jsonb)
                                || COALESCE(p->'items', '[]'::jsonb) || COALESCE(p->'sweeps', '[]'::jsonb) || COALESCE(p->'dead_letters', '[]'::jsonb)
                                || COALESCE(p->'events', '[]'::jsonb)) e) c;
  IF lo IS NULL THEN
    RETURN jsonb_build_object('started', started, 'moved', moved);
  END IF;

  UPDATE tasks t SET
    status = CASE WHEN c.s ? 'status' THEN (c.s->>'status')::"TaskStatus" ELSE t.status END,
    run = CASE WHEN c.s ? 'run' THEN (c.s->>'run')::int ELSE t.run END,
    result = CASE WHEN c.s ? 'result' THEN NULLIF(c.s->'result', 'null'::jsonb) ELSE t.result END,
    error = CASE WHEN c.s ? 'error' THEN NULLIF(c.s->'error', 'null'::jsonb) ELSE t.error END,
    started_at = CASE WHEN c.s ? 'started_at' THEN (c.s->>'started_at')::timestamptz ELSE t.started_at END,
    finished_at = CASE WHEN c.s ? 'finished_at' THEN (c.s->>'finished_at')::timestamptz ELSE t.finished_at END
  FROM (SELECT (e->>'task_id')::uuid AS task_id, (e->>'created_at')::timestamptz AS created_at, e->'set' AS s
          FROM jsonb_array_elements(COALESCE(p->'tasks', '[]'::jsonb)) e) c
  WHERE t.id = c.task_id AND t.created_at = c.created_at AND t.created_at BETWEEN lo AND hi;

  UPDATE steps s SET
    status = CASE WHEN c.s ? 'status' THEN (c.s->>'status')::"StepStatus" ELSE s.status END,
    reason = CASE WHEN c.s ? 'reason' THEN c.s->>'reason' ELSE s.reason END,
    input = CASE WHEN c.s ? 'input' THEN NULLIF(c.s->'input', 'null'::jsonb) ELSE s.input END,
    output = CASE WHEN c.s ? 'output' THEN NULLIF(c.s->'output', 'null'::jsonb) ELSE s.output END,
    error = CASE WHEN c.s ? 'error' THEN NULLIF(c.s->'error', 'null'::jsonb) ELSE s.error END,
    attempts = CASE WHEN c.s ? 'attempts' THEN (c.s->>'attempts')::int ELSE s.attempts END,
    run = CASE WHEN c.s ? 'run' THEN (c.s->>'run')::int ELSE s.run END,
    queued_at = CASE WHEN c.s ? 'queued_at' THEN (c.s->>'queued_at')::timestamptz ELSE s.queued_at END,
    started_at = CASE WHEN c.s ? 'started_at' THEN (c.s->>'started_at')::timestamptz ELSE s.started_at END,
    finished_at = CASE WHEN c.s ? 'finished_at' THEN (c.s->>'finished_at')::timestamptz ELSE s.finished_at END,
    wake_at = CASE WHEN c.s ? 'wake_at' THEN (c.s->>'wake_at')::timestamptz ELSE s.wake_at END,
    child_task_id = CASE WHEN c.s ? 'child_task_id' THEN (c.s->>'child_task_id')::uuid ELSE s.child_task_id END,
    items = CASE WHEN c.s ? 'items' THEN NULLIF(c.s->'items', 'null'::jsonb) ELSE s.items END,
    progress = CASE WHEN c.s ? 'progress' THEN NULLIF(c.s->'progress', 'null'::jsonb) ELSE s.progress END
  FROM (SELECT (e->>'task_id')::uuid AS task_id, (e->>'created_at')::timestamptz AS created_at, e->>'step_id' AS step_id, e->'set' AS s
          FROM jsonb_array_elements(COALESCE(p->'steps', '[]'::jsonb)) e) c
  WHERE s.task_id = c.task_id AND s.task_created_at = c.created_at AND s.task_created_at BETWEEN lo AND hi AND s.step_id = c.step_id;

  INSERT INTO step_items (task_id, task_created_at, step_id, item, run, status, input)
  SELECT z.task_id, z.created_at, z.step_id, z.item, z.run, COALESCE(z.status, 'pending')::"StepStatus", z.input
    FROM jsonb_to_recordset(COALESCE(p->'new_items', '[]'::jsonb)) AS z(task_id uuid, created_at timestamptz, step_id text, item int, run int, status text, input jsonb);

  UPDATE step_items i SET
    status = CASE WHEN c.s ? 'status' THEN (c.s->>'status')::"StepStatus" ELSE i.status END,
    output = CASE WHEN c.s ? 'output' THEN NULLIF(c.s->'output', 'null'::jsonb) ELSE i.output END,
    error = CASE WHEN c.s ? 'error' THEN NULLIF(c.s->'error', 'null'::jsonb) ELSE i.error END,
    attempts = CASE WHEN c.s ? 'attempts' THEN (c.s->>'attempts')::int ELSE i.attempts END,
    started_at = CASE WHEN c.s ? 'started_at' THEN (c.s->>'started_at')::timestamptz ELSE i.started_at END,
    finished_at = CASE WHEN c.s ? 'finished_at' THEN (c.s->>'finished_at')::timestamptz ELSE i.finished_at END
  FROM (SELECT (e->>'task_id')::uuid AS task_id, (e->>'created_at')::timestamptz AS created_at, e->>'step_id' AS step_id,
               (e->>'item')::int AS item, e->'set' AS s
          FROM jsonb_array_elements(COALESCE(p->'items', '[]'::jsonb)) e) c
  WHERE i.task_id = c.task_id AND i.task_created_at = c.created_at AND i.task_created_at BETWEEN lo AND hi AND i.step_id = c.step_id AND i.item = c.item;

  FOR sweep IN SELECT e FROM jsonb_array_elements(COALESCE(p->'sweeps', '[]'::jsonb)) e LOOP
    IF sweep ? 'start' THEN
      WITH next AS (
        SELECT i.item FROM step_items i
         WHERE i.task_id = (sweep->>'task_id')::uuid AND i.task_created_at = (sweep->>'created_at')::timestamptz
           AND i.task_created_at BETWEEN lo AND hi AND i.step_id = sweep->>'step_id' AND i.status = 'pending'
         ORDER BY i.item LIMIT (sweep->>'start')::int
      ), queued AS (
        UPDATE step_items i SET status = 'queued' FROM next
         WHERE i.task_id = (sweep->>'task_id')::uuid AND i.task_created_at = (sweep->>'created_at')::timestamptz
           AND i.task_created_at BETWEEN lo AND hi AND i.step_id = sweep->>'step_id' AND i.item = next.item
        RETURNING i.task_id, i.step_id, i.item, i.input
      )
      SELECT COALESCE(jsonb_agg(jsonb_build_object('task_id', q.task_id, 'step_id', q.step_id, 'item', q.item, 'input', q.input) ORDER BY q.item), '[]'::jsonb)
        INTO found FROM queued q;
      started := started || found;
    ELSIF sweep ? 'delete' THEN
      DELETE FROM step_items i
       WHERE i.task_id = (sweep->>'task_id')::uuid AND i.task_created_at = (sweep->>'created_at')::timestamptz
         AND i.task_created_at BETWEEN lo AND hi AND i.step_id = sweep->>'step_id';
    ELSE
      -- One plain UPDATE per status swept from, each answering the status its rows had (the
      -- statement's own): joining the items to themselves to learn it was a nested loop over a
      -- map's items (1,000 x 1,000 rows for a cancelled map of 1,000) whenever the planner
      -- misjudged their number. The target status goes first when it is swept from too (a resumed
      -- map's items go back to pending), so that no row is moved twice.
      FOR swept IN SELECT d.s FROM (SELECT DISTINCT f.s::"StepStatus" AS s FROM jsonb_array_elements_text(sweep->'from') AS f(s)) d
                    ORDER BY d.s::text = sweep->>'to' DESC LOOP
        WITH changed AS (
          UPDATE step_items i SET status = (sweep->>'to')::"StepStatus",
                 run = COALESCE((sweep->>'run')::int, i.run),
                 output = CASE WHEN (sweep->>'reset')::boolean THEN NULL ELSE i.output END,
                 error = CASE WHEN (sweep->>'reset')::boolean THEN NULL ELSE i.error END,
                 attempts = CASE WHEN (sweep->>'reset')::boolean THEN 0 ELSE i.attempts END,
                 started_at = CASE WHEN (sweep->>'reset')::boolean THEN NULL ELSE i.started_at END,
                 finished_at = CASE WHEN (sweep->>'reset')::boolean THEN NULL ELSE COALESCE(i.finished_at, now()) END
           WHERE i.task_id = (sweep->>'task_id')::uuid AND i.task_created_at = (sweep->>'created_at')::timestamptz
             AND i.task_created_at BETWEEN lo AND hi AND i.step_id = sweep->>'step_id' AND i.status = swept
          RETURNING i.task_id, i.step_id, i.item
        )
        SELECT COALESCE(jsonb_agg(jsonb_build_object('task_id', c.task_id, 'step_id', c.step_id, 'item', c.item, 'from', swept)), '[]'::jsonb)
          INTO found FROM changed c;
        moved := moved || found;
      END LOOP;
    END IF;
  END LOOP;

  INSERT INTO dead_letters (id, task_id, task_created_at, step_id, run, tool, input, error, attempts)
  SELECT gen_random_uuid(), d.task_id, d.created_at, d.step_id, d.run, d.tool, d.input, d.error, d.attempts
    FROM jsonb_to_recordset(COALESCE(p->'dead_letters', '[]'::jsonb))
         AS d(task_id uuid, created_at timestamptz, step_id text, run int, tool text, input jsonb, error jsonb, attempts int)
  ON CONFLICT (task_id, task_created_at, step_id, run) DO NOTHING;

  INSERT INTO task_events (task_id, task_created_at, run, step_id, item, type, attempt, at, data)
  SELECT (v->>'task_id')::uuid, (v->>'created_at')::timestamptz, (v->>'run')::int, v->>'step_id', (v->>'item')::int, v->>'type',
         (v->>'attempt')::int, (v->>'at')::timestamptz, v->'data'
    FROM jsonb_array_elements(COALESCE(p->'events', '[]'::jsonb)) WITH ORDINALITY AS ev(v, n)
   ORDER BY ev.n;

  RETURN jsonb_build_object('started', started, 'moved', moved);
END $$;

-- ledger_note: as before; a failed attempt that will be retried records its end and the retry.
CREATE OR REPLACE FUNCTION "ledger_note"(p jsonb) RETURNS jsonb LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
  lo timestamptz;
  hi timestamptz;
  answer jsonb;
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  SELECT min(c.created_at), max(c.created_at) INTO lo, hi FROM jsonb_to_recordset(p) AS c(created_at timestamptz);
  WITH c AS (
    SELECT * FROM jsonb_to_recordset(p) AS c(task_id uuid, created_at timestamptz, run int, step_id text, item int, attempt int, error jsonb, progress jsonb,
                                             try int, started_at timestamptz, finished_at timestamptz, delay_ms int, history boolean)
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
       (0, 'attempt_ended', jsonb_strip_nulls(jsonb_build_object('status', 'failed', 'try', c.try, 'error', c.error, 'will_retry', true,
                                                                 'duration_ms', (extract(epoch FROM c.finished_at - c.started_at) * 1000)::int))),
       (1, 'retried', jsonb_strip_nulls(jsonb_build_object('delay_ms', c.delay_ms, 'next_try', c.try + 1)))
     ) AS x(o, type, data)
     WHERE c.history AND c.error IS NOT NULL
     ORDER BY c.task_id, c.step_id, c.item, x.o
  )
  SELECT COALESCE(jsonb_agg(jsonb_build_object('task_id', n.task_id, 'step_id', n.step_id, 'item', n.item)), '[]'::jsonb) INTO answer
    FROM (SELECT * FROM st UNION ALL SELECT * FROM it) n;
  RETURN answer;
END $$;

-- ledger_finish_singles: as before; a one-tool task's end records its attempt (and its start, when the
-- step was never claimed), the step's end and the task's.
CREATE OR REPLACE FUNCTION "ledger_finish_singles"(p jsonb) RETURNS jsonb LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
  lo timestamptz;
  hi timestamptz;
  answer jsonb;
BEGIN
  SELECT min(c.created_at), max(c.created_at) INTO lo, hi FROM jsonb_to_recordset(p) AS c(created_at timestamptz);
  WITH v AS (
    SELECT * FROM jsonb_to_recordset(p) AS v(task_id uuid, created_at timestamptz, run int, step_id text, tool text, attempt int, status text,
           output jsonb, error jsonb, input jsonb, started_at timestamptz, finished_at timestamptz, task_status text,
           task_result jsonb, task_error jsonb, try int, worker text, job_id text, history boolean)
  ), was AS (
    -- The step's status before this statement: queued, it was never claimed (a fast first delivery).
    SELECT s.task_id, s.status FROM steps s JOIN v ON s.task_id = v.task_id AND s.task_created_at = v.created_at AND s.step_id = v.step_id
     WHERE v.history AND s.task_created_at BETWEEN lo AND hi
  ), t AS (
    UPDATE tasks t SET status = v.task_status::"TaskStatus", result = v.task_result, error = v.task_error,
           started_at = COALESCE(t.started_at, v.started_at), finished_at = now()
      FROM v
     WHERE t.id = v.task_id AND t.created_at = v.created_at AND t.created_at BETWEEN lo AND hi AND t.run = v.run AND t.status IN ('queued', 'running')
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
  SELECT COALESCE(jsonb_agg(jsonb_build_object('id', t.id, 'status', t.status, 'task_type', t.task_type, 'created_at', t.created_at,
                                               'callback', t.callback)), '[]'::jsonb)
    INTO answer FROM t;
  RETURN answer;
END $$;
