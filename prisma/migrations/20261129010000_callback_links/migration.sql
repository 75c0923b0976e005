-- Whether a task's task.waiting callback may carry approval links (issue 28, separation of
-- duties): only when its submitter could see them itself, an admin key or no authentication. A
-- client key chooses its callback_url, so links sent there would reach the submitter. Tasks
-- stored before this column send none (false): the safe side.

-- AlterTable
ALTER TABLE "tasks" ADD COLUMN "callback_links" BOOLEAN NOT NULL DEFAULT false;
