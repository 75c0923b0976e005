-- Schedules within bounds (issue 28): a schedule's name is unique among its owner's schedules
-- (another key may use it too, and learns nothing from it), and catch_up_window_ms holds the
-- documented 30 days (2,592,000,000 ms is past INTEGER).

-- DropIndex
DROP INDEX "schedules_name_key";

-- DropIndex: the unique index below leads with owner_key and serves its lookups.
DROP INDEX "schedules_owner_key_idx";

-- CreateIndex
CREATE UNIQUE INDEX "schedules_owner_key_name_key" ON "schedules"("owner_key", "name");

-- AlterTable
ALTER TABLE "schedules" ALTER COLUMN "catch_up_window_ms" SET DATA TYPE BIGINT;
