CREATE OR REPLACE FUNCTION ledger_apply(p jsonb)
 RETURNS jsonb
 LANGUAGE plpgsql
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
-- Applies a decision of the engine (src/engine/state.ts, Decision) to tasks loaded and locked by
-- ledger_load in the same transaction: the changed fields of tasks, steps and items (a field
-- absent from `set` keeps its value; JSON null clears it), new map items, sweeps over a map's
-- items, dead letters, and the decision's history events in order (its transitions and the events
-- its step kinds recorded). Answers the items that sweeps queued (with their inputs, for their
-- jobs) and those they moved (with the status they had, so that queued ones get their jobs dropped).
DECLARE
  lo timestamptz;
  hi timestamptz;
  cas timestamptz[];
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

  -- The tasks by their keys (cas): a range of created_at alone would read every task created in between.
  SELECT array_agg(DISTINCT (e->>'created_at')::timestamptz) INTO cas FROM jsonb_array_elements(COALESCE(p->'tasks', '[]'::jsonb)) e;
  UPDATE tasks t SET
    status = CASE WHEN c.s ? 'status' THEN (c.s->>'status')::"TaskStatus" ELSE t.status END,
    run = CASE WHEN c.s ? 'run' THEN (c.s->>'run')::int ELSE t.run END,
    exit_status = CASE WHEN c.s ? 'exit_status' THEN (c.s->>'exit_status')::"TaskStatus" ELSE t.exit_status END,
    result = CASE WHEN c.s ? 'result' THEN NULLIF(c.s->'result', 'null'::jsonb) ELSE t.result END,
    error = CASE WHEN c.s ? 'error' THEN NULLIF(c.s->'error', 'null'::jsonb) ELSE t.error END,
    started_at = CASE WHEN c.s ? 'started_at' THEN (c.s->>'started_at')::timestamptz ELSE t.started_at END,
    finished_at = CASE WHEN c.s ? 'finished_at' THEN (c.s->>'finished_at')::timestamptz ELSE t.finished_at END
  FROM (SELECT (e->>'task_id')::uuid AS task_id, (e->>'created_at')::timestamptz AS created_at, e->'set' AS s
          FROM jsonb_array_elements(COALESCE(p->'tasks', '[]'::jsonb)) e) c
  WHERE t.id = c.task_id AND t.created_at = c.created_at AND t.created_at = ANY(cas) AND t.created_at BETWEEN lo AND hi;

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

  -- A step's items deleted (a retried task's map or repeat starts over) go before the new ones
  -- go in: the same decision may start the step again, with items of the same numbers.
  DELETE FROM step_items i USING jsonb_array_elements(COALESCE(p->'sweeps', '[]'::jsonb)) e
   WHERE e ? 'delete' AND i.task_id = (e->>'task_id')::uuid AND i.task_created_at = (e->>'created_at')::timestamptz
     AND i.task_created_at BETWEEN lo AND hi AND i.step_id = e->>'step_id';

  INSERT INTO step_items (task_id, task_created_at, step_id, item, run, status, input, child_task_id, started_at)
  SELECT z.task_id, z.created_at, z.step_id, z.item, z.run, COALESCE(z.status, 'pending')::"StepStatus", z.input, z.child_task_id, z.started_at
    FROM jsonb_to_recordset(COALESCE(p->'new_items', '[]'::jsonb))
      AS z(task_id uuid, created_at timestamptz, step_id text, item int, run int, status text, input jsonb, child_task_id uuid, started_at timestamptz);

  UPDATE step_items i SET
    status = CASE WHEN c.s ? 'status' THEN (c.s->>'status')::"StepStatus" ELSE i.status END,
    run = CASE WHEN c.s ? 'run' THEN (c.s->>'run')::int ELSE i.run END,
    output = CASE WHEN c.s ? 'output' THEN NULLIF(c.s->'output', 'null'::jsonb) ELSE i.output END,
    error = CASE WHEN c.s ? 'error' THEN NULLIF(c.s->'error', 'null'::jsonb) ELSE i.error END,
    attempts = CASE WHEN c.s ? 'attempts' THEN (c.s->>'attempts')::int ELSE i.attempts END,
    started_at = CASE WHEN c.s ? 'started_at' THEN (c.s->>'started_at')::timestamptz ELSE i.started_at END,
    finished_at = CASE WHEN c.s ? 'finished_at' THEN (c.s->>'finished_at')::timestamptz ELSE i.finished_at END,
    child_task_id = CASE WHEN c.s ? 'child_task_id' THEN (c.s->>'child_task_id')::uuid ELSE i.child_task_id END
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
      NULL; -- done above, before the new items
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
END $function$;
