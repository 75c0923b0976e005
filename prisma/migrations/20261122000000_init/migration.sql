-- CreateEnum
CREATE TYPE "TaskStatus" AS ENUM ('queued', 'running', 'completed', 'failed', 'cancelled');

-- CreateEnum
CREATE TYPE "StepStatus" AS ENUM ('pending', 'queued', 'running', 'completed', 'failed', 'skipped', 'cancelled');

-- CreateEnum
CREATE TYPE "FailurePolicy" AS ENUM ('fail', 'continue');

-- CreateTable
CREATE TABLE "tasks" (
    "id" UUID NOT NULL,
    "task_type" TEXT NOT NULL,
    "workflow_name" TEXT,
    "workflow_version" INTEGER,
    "params" JSONB NOT NULL,
    "output_template" JSONB,
    "status" "TaskStatus" NOT NULL DEFAULT 'queued',
    "result" JSONB,
    "error" JSONB,
    "priority" INTEGER NOT NULL DEFAULT 0,
    "delay_ms" INTEGER NOT NULL DEFAULT 0,
    "callback_url" TEXT,
    "idempotency_key" TEXT,
    "request_hash" TEXT,
    "run" INTEGER NOT NULL DEFAULT 1,
    "steps_total" INTEGER NOT NULL,
    "steps_remaining" INTEGER NOT NULL,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "started_at" TIMESTAMPTZ(3),
    "finished_at" TIMESTAMPTZ(3),

    CONSTRAINT "tasks_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "steps" (
    "task_id" UUID NOT NULL,
    "step_id" TEXT NOT NULL,
    "position" INTEGER NOT NULL DEFAULT 0,
    "tool" TEXT NOT NULL,
    "depends_on" TEXT[],
    "dependents" TEXT[],
    "remaining_deps" INTEGER NOT NULL,
    "on_failure" "FailurePolicy" NOT NULL DEFAULT 'fail',
    "input_template" JSONB,
    "options" JSONB NOT NULL,
    "input" JSONB,
    "output" JSONB,
    "error" JSONB,
    "status" "StepStatus" NOT NULL DEFAULT 'pending',
    "attempts" INTEGER NOT NULL DEFAULT 0,
    "run" INTEGER NOT NULL DEFAULT 1,
    "queued_at" TIMESTAMPTZ(3),
    "started_at" TIMESTAMPTZ(3),
    "finished_at" TIMESTAMPTZ(3),

    CONSTRAINT "steps_pkey" PRIMARY KEY ("task_id","step_id")
);

-- CreateTable
CREATE TABLE "workflows" (
    "name" TEXT NOT NULL,
    "version" INTEGER NOT NULL,
    "description" TEXT,
    "definition" JSONB NOT NULL,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "archived_at" TIMESTAMPTZ(3),

    CONSTRAINT "workflows_pkey" PRIMARY KEY ("name","version")
);

-- CreateTable
CREATE TABLE "dead_letters" (
    "id" UUID NOT NULL,
    "task_id" UUID NOT NULL,
    "step_id" TEXT NOT NULL,
    "run" INTEGER NOT NULL,
    "tool" TEXT NOT NULL,
    "input" JSONB,
    "error" JSONB NOT NULL,
    "attempts" INTEGER NOT NULL,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "replayed_at" TIMESTAMPTZ(3),

    CONSTRAINT "dead_letters_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE UNIQUE INDEX "tasks_idempotency_key_key" ON "tasks"("idempotency_key");

-- CreateIndex
CREATE INDEX "tasks_status_created_at_idx" ON "tasks"("status", "created_at");

-- CreateIndex
CREATE INDEX "tasks_task_type_created_at_idx" ON "tasks"("task_type", "created_at");

-- CreateIndex
CREATE INDEX "tasks_created_at_idx" ON "tasks"("created_at");

-- CreateIndex
CREATE INDEX "dead_letters_created_at_idx" ON "dead_letters"("created_at");

-- CreateIndex
CREATE UNIQUE INDEX "dead_letters_task_id_step_id_run_key" ON "dead_letters"("task_id", "step_id", "run");

-- AddForeignKey
ALTER TABLE "steps" ADD CONSTRAINT "steps_task_id_fkey" FOREIGN KEY ("task_id") REFERENCES "tasks"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "dead_letters" ADD CONSTRAINT "dead_letters_task_id_fkey" FOREIGN KEY ("task_id") REFERENCES "tasks"("id") ON DELETE CASCADE ON UPDATE CASCADE;
