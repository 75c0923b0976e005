-- The limits a registered tool runs under (issue 30): its concurrency per worker process and its
-- rate limit across them, as its workers apply them. GET /tools shows them for every registered
-- tool, the built-in ones included, which the API (importing no adapter) knows only from their
-- registration. Null: the tool declares none.

-- AlterTable
ALTER TABLE "worker_tools" ADD COLUMN "concurrency" INTEGER,
ADD COLUMN "rate_limit" JSONB;
