-- CreateIndex
CREATE INDEX "dead_letters_replayed_at_idx" ON "dead_letters"("replayed_at") WHERE "replayed_at" IS NULL;
