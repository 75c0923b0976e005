-- Workflow engine v2: step kinds (tool, sub-workflow, sleep), `when` and `for_each`, a
-- `waiting` step state, and the ledger's operations as PL/pgSQL functions.
--
-- The engine (src/engine) decides; these functions apply its decisions. A function's statements
-- keep their plans for the life of a connection (PL/pgSQL caches them), which plain statements
-- sent by the driver cannot (they are planned afresh each time, 0.3-0.5 ms a statement), and a
-- function call is an ordinary statement that PgBouncer in transaction mode carries (named
-- prepared statements need PgBouncer 1.21). Every function forces generic plans: each touches
-- rows of a few days' partitions, found at run time from the `lo`/`hi` range of its batch
-- (run-time pruning), where a custom plan would be made again on every call.

ALTER TYPE "StepStatus" ADD VALUE IF NOT EXISTS 'waiting' AFTER 'running';

-- Tasks: the plan each runs (its steps as compiled, see src/engine/plan.ts) and, for a child
-- task of a sub-workflow step, its parent. The output template moves into the plan; the count
-- of steps left goes: the engine reads the steps themselves.
ALTER TABLE "tasks" ADD COLUMN "plan" JSONB,
                    ADD COLUMN "parent_task_id" UUID,
                    ADD COLUMN "parent_created_at" TIMESTAMPTZ(3),
                    ADD COLUMN "parent_step_id" TEXT,
                    ADD COLUMN "depth" INTEGER NOT NULL DEFAULT 0;

UPDATE "tasks" t SET "plan" = jsonb_build_object('steps', s.steps)
                              || CASE WHEN t."output_template" IS NOT NULL AND t."output_template" <> 'null'::jsonb
                                      THEN jsonb_build_object('output', t."output_template") ELSE '{}'::jsonb END
                              || CASE WHEN t."workflow_name" IS NULL THEN '{"single": true}'::jsonb ELSE '{}'::jsonb END
  FROM (SELECT "task_id", "task_created_at",
               jsonb_agg(jsonb_build_object('id', "step_id", 'kind', 'tool', 'tool', "tool", 'dependsOn', to_jsonb("depends_on"),
                                            'onFailure', "on_failure"::text, 'input', COALESCE("input_template", '{}'::jsonb),
                                            -- A row without them (none was written so) gets the tools' defaults.
                                            'options', "options" || jsonb_build_object(
                                              'retry', COALESCE("options"->'retry', '{"attempts": 3, "backoff": {"type": "exponential", "delay_ms": 1000}}'::jsonb),
                                              'timeout_ms', COALESCE("options"->'timeout_ms', '30000'::jsonb)))
                         ORDER BY "position") AS steps
          FROM "steps" GROUP BY "task_id", "task_created_at") s
 WHERE s."task_id" = t."id" AND s."task_created_at" = t."created_at";

ALTER TABLE "tasks" DROP COLUMN "steps_remaining", DROP COLUMN "output_template";

CREATE INDEX "tasks_parent_task_id_idx" ON "tasks"("parent_task_id") WHERE "parent_task_id" IS NOT NULL;

-- Steps: their kind, why they are skipped or waiting, a sleep's wake-up, a sub-workflow's child,
-- a map's item counts. What the plan holds goes from the rows (dependents, the remaining count,
-- the failure policy, the input template, the options); `input` is now the resolved input.
ALTER TABLE "steps" ADD COLUMN "kind" TEXT NOT NULL DEFAULT 'tool',
                    ADD COLUMN "reason" TEXT,
                    ADD COLUMN "wake_at" TIMESTAMPTZ(3),
                    ADD COLUMN "child_task_id" UUID,
                    ADD COLUMN "items" JSONB,
                    ALTER COLUMN "tool" DROP NOT NULL;
UPDATE "steps" SET "reason" = 'task_failed' WHERE "status" = 'skipped';
ALTER TABLE "steps" DROP COLUMN "dependents", DROP COLUMN "remaining_deps", DROP COLUMN "on_failure",
                    DROP COLUMN "input_template", DROP COLUMN "options";
DROP TYPE "FailurePolicy";

-- A map's items: one row each, partitioned with its task.
CREATE TABLE "step_items" (
    "task_id" UUID NOT NULL,
    "task_created_at" TIMESTAMPTZ(3) NOT NULL,
    "step_id" TEXT NOT NULL,
    "item" INTEGER NOT NULL,
    "run" INTEGER NOT NULL DEFAULT 1,
    "status" "StepStatus" NOT NULL DEFAULT 'pending',
    "attempts" INTEGER NOT NULL DEFAULT 0,
    "input" JSONB,
    "output" JSONB,
    "error" JSONB,
    "started_at" TIMESTAMPTZ(3),
    "finished_at" TIMESTAMPTZ(3),
    CONSTRAINT "step_items_pkey" PRIMARY KEY ("task_id", "task_created_at", "step_id", "item")
) PARTITION BY RANGE ("task_created_at");
CREATE TABLE "step_items_default" PARTITION OF "step_items" DEFAULT;
-- The next items to start are the lowest pending ones: found without walking those started.
CREATE INDEX "step_items_pending_idx" ON "step_items"("task_id", "task_created_at", "step_id", "item") WHERE "status" = 'pending';

CREATE OR REPLACE FUNCTION "create_day_partitions"(day date) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  parent text;
BEGIN
  FOREACH parent IN ARRAY ARRAY['tasks', 'steps', 'step_items', 'dead_letters', 'callback_deliveries'] LOOP
    EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                   parent || '_p' || to_char(day, 'YYYYMMDD'), parent,
                   day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC');
  END LOOP;
END $$;

CREATE OR REPLACE FUNCTION "drop_day_partitions"(day date) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  parent text;
BEGIN
  FOREACH parent IN ARRAY ARRAY['callback_deliveries', 'dead_letters', 'step_items', 'steps', 'tasks'] LOOP
    EXECUTE format('DROP TABLE IF EXISTS %I', parent || '_p' || to_char(day, 'YYYYMMDD'));
  END LOOP;
END $$;

-- The items' partitions of every day that has the tasks' already.
SELECT "create_day_partitions"(to_date(substring(c.relname FROM '_p([0-9]{8})$'), 'YYYYMMDD'))
  FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
 WHERE i.inhparent = 'tasks'::regclass AND c.relname ~ '_p[0-9]{8}$';

-- ---- The ledger ---------------------------------------------------------------------------
-- Every function takes one JSON document (a batch) and names the tasks it touches with their
-- created_at (the partition key, which a task's id holds: src/ledger/task-days.ts). Every
-- statement is bounded by the lowest and highest created_at of its batch (`lo`, `hi`), which
-- prunes the day partitions at run time.

-- New tasks, their steps and their maps' items, in one statement. A task whose (owner,
-- idempotency key) is taken, or whose id exists, is not stored, nor are its steps. Returns the ids stored.
CREATE FUNCTION "ledger_create"(p jsonb) RETURNS SETOF uuid LANGUAGE plpgsql
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
  )
  SELECT t.id FROM t;
END $$;

-- A worker's claims to run steps (or map items), made before their adapters run: a claim takes
-- while its run is active and the step is queued, or running under an earlier delivery (its
-- worker died); for an item, while its map runs. The task becomes running with its first claim.
-- The tasks are locked first (FOR SHARE, in id order, as every writer locks them), and the claim
-- is a statement of its own so that it reads the steps as they are once those locks are held. A
-- claim lost with a crashed server is made again by the step's next delivery: its commit need not
-- wait for the disk.
CREATE FUNCTION "ledger_claim"(p jsonb) RETURNS jsonb LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
  lo timestamptz;
  hi timestamptz;
  ids uuid[];
  answer jsonb;
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  SELECT min(c.created_at), max(c.created_at), array_agg(DISTINCT c.task_id) INTO lo, hi, ids
    FROM jsonb_to_recordset(p) AS c(task_id uuid, created_at timestamptz);
  PERFORM 1 FROM tasks WHERE id = ANY(ids) AND created_at BETWEEN lo AND hi ORDER BY id FOR SHARE;
  WITH c AS (
    SELECT * FROM jsonb_to_recordset(p) AS c(task_id uuid, created_at timestamptz, run int, step_id text, item int, attempt int, at timestamptz)
  ), active AS (
    SELECT c.* FROM c JOIN tasks t ON t.id = c.task_id AND t.created_at = c.created_at AND t.created_at BETWEEN lo AND hi
     WHERE t.run = c.run AND t.status IN ('queued', 'running')
  ), st AS (
    UPDATE steps s SET status = 'running', attempts = GREATEST(s.attempts, a.attempt), started_at = COALESCE(s.started_at, a.at)
      FROM active a
     WHERE a.item IS NULL AND s.task_id = a.task_id AND s.task_created_at = a.created_at AND s.task_created_at BETWEEN lo AND hi
       AND s.step_id = a.step_id AND s.run = a.run AND (s.status = 'queued' OR (s.status = 'running' AND s.attempts <= a.attempt))
    RETURNING s.task_id, s.step_id, NULL::int AS item
  ), it AS (
    UPDATE step_items i SET status = 'running', attempts = GREATEST(i.attempts, a.attempt), started_at = COALESCE(i.started_at, a.at)
      FROM active a JOIN steps m ON m.task_id = a.task_id AND m.task_created_at = a.created_at AND m.step_id = a.step_id AND m.status = 'running'
     WHERE a.item IS NOT NULL AND m.task_created_at BETWEEN lo AND hi AND i.task_id = a.task_id AND i.task_created_at = a.created_at
       AND i.task_created_at BETWEEN lo AND hi AND i.step_id = a.step_id AND i.item = a.item AND i.run = a.run
       AND (i.status = 'queued' OR (i.status = 'running' AND i.attempts <= a.attempt))
    RETURNING i.task_id, i.step_id, i.item
  ), claimed AS (
    SELECT * FROM st UNION ALL SELECT * FROM it
  ), began AS (
    UPDATE tasks t SET status = 'running', started_at = COALESCE(t.started_at, now())
     WHERE t.id IN (SELECT task_id FROM claimed) AND t.created_at BETWEEN lo AND hi AND t.status = 'queued'
    RETURNING t.id
  )
  SELECT COALESCE(jsonb_agg(jsonb_build_object('task_id', c.task_id, 'step_id', c.step_id, 'item', c.item,
                                               'task_began', EXISTS (SELECT 1 FROM began b WHERE b.id = c.task_id))), '[]'::jsonb)
    INTO answer FROM claimed c;
  RETURN answer;
END $$;

-- What the engine needs to decide about a batch's tasks, locked (FOR UPDATE, in id order) until
-- the transaction that applies the decision commits: each task (its plan unless the caller has
-- it), every step (outputs over 64 kB of stored JSON left out: the engine asks for them when a
-- step needs them; with `inputs`, the inputs of queued and running steps, to make their jobs
-- again), and the map items the batch reports about.
CREATE FUNCTION "ledger_load"(p jsonb) RETURNS jsonb LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
  lo timestamptz;
  hi timestamptz;
  ids uuid[];
  known uuid[];
BEGIN
  SELECT min(c.created_at), max(c.created_at), array_agg(DISTINCT c.id) INTO lo, hi, ids
    FROM jsonb_to_recordset(p->'tasks') AS c(id uuid, created_at timestamptz);
  SELECT COALESCE(array_agg(value::uuid), '{}') INTO known FROM jsonb_array_elements_text(COALESCE(p->'known', '[]'::jsonb));
  PERFORM 1 FROM tasks WHERE id = ANY(ids) AND created_at BETWEEN lo AND hi ORDER BY id FOR UPDATE;
  RETURN jsonb_build_object(
    'tasks', (SELECT COALESCE(jsonb_agg(jsonb_build_object(
                'id', t.id, 'created_at', t.created_at, 'task_type', t.task_type, 'status', t.status, 'run', t.run, 'params', t.params,
                'plan', CASE WHEN t.id = ANY(known) THEN NULL ELSE t.plan END, 'callback', t.callback_url IS NOT NULL,
                'owner', t.owner_key, 'depth', t.depth, 'parent_task_id', t.parent_task_id, 'parent_step_id', t.parent_step_id,
                'started_at', t.started_at, 'finished_at', t.finished_at,
                'result', CASE WHEN (p->>'inputs')::boolean THEN t.result END, 'error', t.error)), '[]'::jsonb)
                FROM tasks t WHERE t.id = ANY(ids) AND t.created_at BETWEEN lo AND hi),
    'steps', (SELECT COALESCE(jsonb_agg(jsonb_build_object(
                'task_id', s.task_id, 'step_id', s.step_id, 'status', s.status, 'reason', s.reason, 'attempts', s.attempts, 'run', s.run,
                'output', CASE WHEN pg_column_size(s.output) > 65536 THEN NULL ELSE s.output END,
                'output_big', COALESCE(pg_column_size(s.output) > 65536, false), 'error', s.error, 'started_at', s.started_at,
                'finished_at', s.finished_at, 'wake_at', s.wake_at, 'child_task_id', s.child_task_id, 'items', s.items,
                'input', CASE WHEN (p->>'inputs')::boolean AND s.status IN ('queued', 'running') THEN s.input END)), '[]'::jsonb)
                FROM steps s WHERE s.task_id = ANY(ids) AND s.task_created_at BETWEEN lo AND hi),
    'items', (SELECT COALESCE(jsonb_agg(jsonb_build_object(
                'task_id', i.task_id, 'step_id', i.step_id, 'item', i.item, 'run', i.run, 'status', i.status, 'attempts', i.attempts,
                'output', i.output, 'error', i.error, 'started_at', i.started_at, 'input', i.input)), '[]'::jsonb)
                FROM jsonb_to_recordset(COALESCE(p->'items', '[]'::jsonb)) AS w(task_id uuid, created_at timestamptz, step_id text, item int)
                JOIN step_items i ON i.task_id = w.task_id AND i.task_created_at = w.created_at AND i.step_id = w.step_id AND i.item = w.item
               WHERE i.task_created_at BETWEEN lo AND hi));
END $$;

-- What the engine asked for after a load: large outputs, and every item of some maps.
CREATE FUNCTION "ledger_load_more"(p jsonb) RETURNS jsonb LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan AS $$
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
                'output', i.output, 'error', i.error, 'started_at', i.started_at, 'input', i.input)), '[]'::jsonb)
                FROM jsonb_to_recordset(COALESCE(p->'items', '[]'::jsonb)) AS w(task_id uuid, created_at timestamptz, step_id text)
                JOIN step_items i ON i.task_id = w.task_id AND i.task_created_at = w.created_at AND i.step_id = w.step_id
               WHERE i.task_created_at BETWEEN lo AND hi));
END $$;

-- Applies a decision of the engine (src/engine/state.ts, Decision) to tasks loaded and locked by
-- ledger_load in the same transaction: the changed fields of tasks, steps and items (a field
-- absent from `set` keeps its value; JSON null clears it), new map items, sweeps over a map's
-- items, dead letters. Answers the items that sweeps queued (with their inputs, for their jobs)
-- and those they moved (with the status they had, so that queued ones get their jobs dropped).
CREATE FUNCTION "ledger_apply"(p jsonb) RETURNS jsonb LANGUAGE plpgsql
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
                                || COALESCE(p->'items', '[]'::jsonb) || COALESCE(p->'sweeps', '[]'::jsonb) || COALESCE(p->'dead_letters', '[]'::jsonb)) e) c;
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

  RETURN jsonb_build_object('started', started, 'moved', moved);
END $$;

-- Notes about running steps and items that do not change their status: an adapter's progress,
-- and a failed attempt that will be retried (its error shows while the step waits). Lost with a
-- crashed server, they are only a little out of date: the commit need not wait for the disk.
-- Answers the notes that were taken (the step or item was still running in that run).
CREATE FUNCTION "ledger_note"(p jsonb) RETURNS jsonb LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
  lo timestamptz;
  hi timestamptz;
  answer jsonb;
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  SELECT min(c.created_at), max(c.created_at) INTO lo, hi FROM jsonb_to_recordset(p) AS c(created_at timestamptz);
  WITH c AS (
    SELECT * FROM jsonb_to_recordset(p) AS c(task_id uuid, created_at timestamptz, run int, step_id text, item int, attempt int, error jsonb, progress jsonb)
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
  )
  SELECT COALESCE(jsonb_agg(jsonb_build_object('task_id', n.task_id, 'step_id', n.step_id, 'item', n.item)), '[]'::jsonb) INTO answer
    FROM (SELECT * FROM st UNION ALL SELECT * FROM it) n;
  RETURN answer;
END $$;

-- The results of one-tool tasks' steps, which end their tasks: what each task ends with was
-- decided by the engine before the call (src/engine/task-output.ts, singleRunEnding). A task's
-- row is updated only while its run is still active (a cancel that committed first wins), the
-- step's only when its task's was, and a failed step leaves a dead letter. Returns the tasks ended.
CREATE FUNCTION "ledger_finish_singles"(p jsonb) RETURNS jsonb LANGUAGE plpgsql
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
           task_result jsonb, task_error jsonb)
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
  )
  SELECT COALESCE(jsonb_agg(jsonb_build_object('id', t.id, 'status', t.status, 'task_type', t.task_type, 'created_at', t.created_at,
                                               'callback', t.callback)), '[]'::jsonb)
    INTO answer FROM t;
  RETURN answer;
END $$;
