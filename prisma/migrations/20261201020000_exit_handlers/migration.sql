-- Exit handlers (issue 31, a workflow's `on_exit`): while they run, the outcome the run ended
-- with waits here (the task shows running); set with its result or error, cleared when it ends.

-- AlterTable
ALTER TABLE "tasks" ADD COLUMN "exit_status" "TaskStatus";
