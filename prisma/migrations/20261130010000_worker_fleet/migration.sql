-- Workers of users' own (issue 30): the tools they register, and the processes serving them
-- (their last heartbeat). A tool outlives its workers: tasks queue until one comes back.

-- CreateTable
CREATE TABLE "worker_tools" (
    "name" TEXT NOT NULL,
    "version" INTEGER NOT NULL DEFAULT 1,
    "description" TEXT NOT NULL,
    "input_schema" JSONB NOT NULL,
    "output_schema" JSONB NOT NULL,
    "retry" JSONB NOT NULL,
    "timeout_ms" INTEGER NOT NULL,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "worker_tools_pkey" PRIMARY KEY ("name")
);

-- CreateTable
CREATE TABLE "workers" (
    "id" TEXT NOT NULL,
    "owner" TEXT NOT NULL DEFAULT '',
    "host" TEXT NOT NULL,
    "pid" INTEGER NOT NULL,
    "version" TEXT NOT NULL,
    "concurrency" INTEGER NOT NULL,
    "tools" TEXT[],
    "running" JSONB NOT NULL DEFAULT '[]',
    "running_count" INTEGER NOT NULL DEFAULT 0,
    "started_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "last_seen_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "workers_pkey" PRIMARY KEY ("id")
);
