-- Schedules (issue 21, part 2): the definitions, and one row per tick that was decided.
-- PostgreSQL holds them; the BullMQ job schedulers that fire the ticks are made again from here.

-- CreateTable
CREATE TABLE "schedules" (
    "id" UUID NOT NULL,
    "name" TEXT NOT NULL,
    "owner_key" TEXT NOT NULL DEFAULT '',
    "cron" TEXT,
    "every_ms" INTEGER,
    "timezone" TEXT NOT NULL DEFAULT 'UTC',
    "task_type" TEXT NOT NULL,
    "params" JSONB NOT NULL,
    "overlap" TEXT NOT NULL DEFAULT 'skip',
    "catch_up" TEXT NOT NULL DEFAULT 'none',
    "catch_up_window_ms" INTEGER,
    "paused" BOOLEAN NOT NULL DEFAULT false,
    "decided_until" TIMESTAMPTZ(3) NOT NULL,
    "missed_until" TIMESTAMPTZ(3),
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    -- Exactly one of cron and every_ms is set (src/schedules/schedule-request.ts checks it).
    CONSTRAINT "schedules_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "schedule_ticks" (
    "schedule_id" UUID NOT NULL,
    "tick_at" TIMESTAMPTZ(3) NOT NULL,
    "schedule_name" TEXT NOT NULL,
    "outcome" TEXT NOT NULL,
    "task_id" UUID,
    "error" TEXT,
    "recorded_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    -- One row per tick: a redelivered tick finds its row and makes no second task.
    CONSTRAINT "schedule_ticks_pkey" PRIMARY KEY ("schedule_id","tick_at")
);

-- CreateIndex
CREATE UNIQUE INDEX "schedules_name_key" ON "schedules"("name");

-- CreateIndex
CREATE INDEX "schedules_owner_key_idx" ON "schedules"("owner_key");

-- CreateIndex
CREATE INDEX "schedule_ticks_schedule_id_outcome_idx" ON "schedule_ticks"("schedule_id", "outcome");

-- CreateIndex
CREATE INDEX "schedule_ticks_task_id_idx" ON "schedule_ticks"("task_id");

-- CreateIndex
CREATE INDEX "schedule_ticks_recorded_at_idx" ON "schedule_ticks"("recorded_at");
