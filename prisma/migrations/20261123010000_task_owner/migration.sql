-- Tasks record the API key that submitted them, and idempotency keys become unique per key.
-- The owner is '' (not NULL) when authentication is off, so the unique index below treats all
-- unauthenticated tasks as one owner while tasks without an idempotency key (NULL) never clash.

-- AlterTable
ALTER TABLE "tasks" ADD COLUMN "owner_key" TEXT NOT NULL DEFAULT '';

-- DropIndex
DROP INDEX "tasks_idempotency_key_key";

-- CreateIndex
CREATE UNIQUE INDEX "tasks_owner_key_idempotency_key_key" ON "tasks"("owner_key", "idempotency_key");

-- CreateIndex
CREATE INDEX "tasks_owner_key_created_at_idx" ON "tasks"("owner_key", "created_at");
