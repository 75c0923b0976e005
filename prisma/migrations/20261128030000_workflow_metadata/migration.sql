-- What a workflow version carries besides its definition (issue 34): the name it was posted
-- under when that name is not an id (seed 001's "Simple Notification": its id is the slug
-- simple-notification), its tags, the key that created the workflow, and the definition as it
-- was posted in another format (seed 001's actions), shown beside the native one.

-- AlterTable
ALTER TABLE "workflows" ADD COLUMN "display_name" TEXT,
ADD COLUMN "tags" TEXT[],
ADD COLUMN "created_by" TEXT,
ADD COLUMN "posted_form" JSONB;
