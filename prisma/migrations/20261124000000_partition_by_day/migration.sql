-- Tasks and what belongs to them (steps, dead letters, callback deliveries) are partitioned by
-- the task's creation time, one partition per UTC day, so that retention drops a whole day at
-- once instead of deleting rows (src/persistence/partitions.ts). Done in place: the tables are
-- copied into their partitioned successors, which take their names, indexes and data.
--
-- Children carry their task's created_at (task_created_at) as their partition key: a day of
-- tasks and everything they own sit in partitions of the same day. There are no foreign keys:
-- dropping or detaching a partition that a foreign key references scans the referencing table,
-- which would make dropping a day cost as much as the data kept. Prisma keeps the relations in
-- its client (relationMode = "prisma").
--
-- A unique index on a partitioned table must contain the partition key, so idempotency keys
-- move to a table of their own, unique across days, deleted when their task's day is dropped.

ALTER TABLE "steps" DROP CONSTRAINT "steps_task_id_fkey";
ALTER TABLE "dead_letters" DROP CONSTRAINT "dead_letters_task_id_fkey";
ALTER TABLE "callback_deliveries" DROP CONSTRAINT "callback_deliveries_task_id_fkey";

ALTER TABLE "tasks" RENAME TO "tasks_unpartitioned";
ALTER TABLE "steps" RENAME TO "steps_unpartitioned";
ALTER TABLE "dead_letters" RENAME TO "dead_letters_unpartitioned";
ALTER TABLE "callback_deliveries" RENAME TO "callback_deliveries_unpartitioned";

CREATE TABLE "tasks" (LIKE "tasks_unpartitioned" INCLUDING DEFAULTS) PARTITION BY RANGE ("created_at");
CREATE TABLE "steps" (LIKE "steps_unpartitioned" INCLUDING DEFAULTS, "task_created_at" TIMESTAMPTZ(3) NOT NULL) PARTITION BY RANGE ("task_created_at");
CREATE TABLE "dead_letters" (LIKE "dead_letters_unpartitioned" INCLUDING DEFAULTS, "task_created_at" TIMESTAMPTZ(3) NOT NULL) PARTITION BY RANGE ("task_created_at");
CREATE TABLE "callback_deliveries" (LIKE "callback_deliveries_unpartitioned" INCLUDING DEFAULTS, "task_created_at" TIMESTAMPTZ(3) NOT NULL) PARTITION BY RANGE ("task_created_at");

-- Rows of a day that has no partition (a clock far ahead, a day the maintenance has not created
-- yet) land here rather than fail; retention deletes them once they expire.
CREATE TABLE "tasks_default" PARTITION OF "tasks" DEFAULT;
CREATE TABLE "steps_default" PARTITION OF "steps" DEFAULT;
CREATE TABLE "dead_letters_default" PARTITION OF "dead_letters" DEFAULT;
CREATE TABLE "callback_deliveries_default" PARTITION OF "callback_deliveries" DEFAULT;

-- The partitions of one UTC day, named <table>_pYYYYMMDD; nothing happens for those that exist.
-- The one definition of a day's partitions: the migration, the retention job and the bench use it.
CREATE FUNCTION "create_day_partitions"(day date) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  parent text;
BEGIN
  FOREACH parent IN ARRAY ARRAY['tasks', 'steps', 'dead_letters', 'callback_deliveries'] LOOP
    EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                   parent || '_p' || to_char(day, 'YYYYMMDD'), parent,
                   day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC');
  END LOOP;
END $$;

-- Drops one UTC day of tasks, steps, dead letters and callback deliveries: no row is read.
CREATE FUNCTION "drop_day_partitions"(day date) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  parent text;
BEGIN
  FOREACH parent IN ARRAY ARRAY['callback_deliveries', 'dead_letters', 'steps', 'tasks'] LOOP
    EXECUTE format('DROP TABLE IF EXISTS %I', parent || '_p' || to_char(day, 'YYYYMMDD'));
  END LOOP;
END $$;

-- Every day that holds tasks, and the next three (the retention job keeps creating ahead).
SELECT "create_day_partitions"(day)
  FROM (SELECT DISTINCT ("created_at" AT TIME ZONE 'UTC')::date AS day FROM "tasks_unpartitioned"
        UNION SELECT (now() AT TIME ZONE 'UTC')::date + n FROM generate_series(0, 3) AS n) AS days;

INSERT INTO "tasks" SELECT * FROM "tasks_unpartitioned";
INSERT INTO "steps" SELECT s.*, t."created_at" FROM "steps_unpartitioned" s JOIN "tasks_unpartitioned" t ON t."id" = s."task_id";
INSERT INTO "dead_letters" SELECT d.*, t."created_at" FROM "dead_letters_unpartitioned" d JOIN "tasks_unpartitioned" t ON t."id" = d."task_id";
INSERT INTO "callback_deliveries" SELECT c.*, t."created_at" FROM "callback_deliveries_unpartitioned" c JOIN "tasks_unpartitioned" t ON t."id" = c."task_id";

CREATE TABLE "idempotency_keys" (
    "owner_key" TEXT NOT NULL,
    "idempotency_key" TEXT NOT NULL,
    "task_id" UUID NOT NULL,
    "task_created_at" TIMESTAMPTZ(3) NOT NULL,
    CONSTRAINT "idempotency_keys_pkey" PRIMARY KEY ("owner_key", "idempotency_key")
);
INSERT INTO "idempotency_keys" SELECT "owner_key", "idempotency_key", "id", "created_at" FROM "tasks_unpartitioned" WHERE "idempotency_key" IS NOT NULL;
CREATE INDEX "idempotency_keys_task_created_at_idx" ON "idempotency_keys"("task_created_at");

DROP TABLE "callback_deliveries_unpartitioned", "dead_letters_unpartitioned", "steps_unpartitioned", "tasks_unpartitioned";

-- Indexes after the copy (faster than maintaining them row by row). Every unique index holds the
-- partition key, as PostgreSQL requires.
ALTER TABLE "tasks" ADD CONSTRAINT "tasks_pkey" PRIMARY KEY ("id", "created_at");
CREATE INDEX "tasks_status_created_at_idx" ON "tasks"("status", "created_at");
CREATE INDEX "tasks_task_type_created_at_idx" ON "tasks"("task_type", "created_at");
CREATE INDEX "tasks_created_at_idx" ON "tasks"("created_at");
CREATE INDEX "tasks_owner_key_created_at_idx" ON "tasks"("owner_key", "created_at");

ALTER TABLE "steps" ADD CONSTRAINT "steps_pkey" PRIMARY KEY ("task_id", "task_created_at", "step_id");

ALTER TABLE "dead_letters" ADD CONSTRAINT "dead_letters_pkey" PRIMARY KEY ("id", "task_created_at");
CREATE UNIQUE INDEX "dead_letters_task_id_task_created_at_step_id_run_key" ON "dead_letters"("task_id", "task_created_at", "step_id", "run");
CREATE INDEX "dead_letters_created_at_idx" ON "dead_letters"("created_at");
CREATE INDEX "dead_letters_replayed_at_idx" ON "dead_letters"("replayed_at") WHERE "replayed_at" IS NULL;

ALTER TABLE "callback_deliveries" ADD CONSTRAINT "callback_deliveries_pkey" PRIMARY KEY ("id", "task_created_at");
CREATE INDEX "callback_deliveries_task_id_task_created_at_created_at_idx" ON "callback_deliveries"("task_id", "task_created_at", "created_at");
