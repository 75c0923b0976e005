-- AlterTable
ALTER TABLE "callback_deliveries" ADD COLUMN     "will_retry" BOOLEAN NOT NULL DEFAULT false;
