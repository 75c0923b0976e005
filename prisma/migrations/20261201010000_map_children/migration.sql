-- A map whose body is a sub-workflow (issue 31): each item runs a child task of its own, and
-- keeps its id (a retried parent resumes an item's child instead of starting another).

-- AlterTable
ALTER TABLE "step_items" ADD COLUMN "child_task_id" UUID;
