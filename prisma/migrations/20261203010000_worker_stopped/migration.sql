-- When a built-in worker stopped cleanly while no other live built-in worker served its tools:
-- its row stays (its tools stay built-in), and without this it counted as live for three more
-- heartbeats after its exit (GET /workers, GET /tools' live_workers). Null: running, or it
-- stopped without saying so (a crash), which the heartbeats still tell.

-- AlterTable
ALTER TABLE "workers" ADD COLUMN "stopped_at" TIMESTAMPTZ(3);
