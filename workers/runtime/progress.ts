import type { Job } from 'bullmq';
import type { Logger } from '../../src/lib/logger.js';
import type { StepJobData } from '../../src/queue/jobs.js';
import type { StepLedger } from '../../src/tasks/step-ledger.js';

/** At most one write of a step's progress per interval; the latest report wins. */
const INTERVAL_MS = 200;

/**
 * Turns an adapter's `ctx.progress()` calls into Bull Board progress, a PostgreSQL column and
 * an event, without letting a chatty adapter flood any of them.
 */
export function progressReporter(job: Job<StepJobData>, ledger: Pick<StepLedger, 'note'>, logger: Logger) {
  let latest: { percent: number; message?: string } | undefined;
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const flush = () => {
    timer = undefined;
    if (!latest || stopped) return;
    const report = latest;
    latest = undefined;
    const { taskId, run, stepId, item, tool } = job.data;
    job.updateProgress(report).catch((error: Error) => logger.debug('could not update job progress', { error: error.message }));
    // A map item's progress shows in Bull Board; the map step's own progress is its items done.
    if (item !== undefined) return;
    ledger.note({ tool, taskId, run, stepId, progress: report }).catch((error: Error) => logger.warn('could not record progress', { error: error.message }));
  };
  return {
    report(percent: number, message?: string) {
      if (stopped || !Number.isFinite(percent)) return;
      latest = {
        percent: Math.min(100, Math.max(0, Math.round(percent * 10) / 10)),
        ...(message !== undefined ? { message: String(message).slice(0, 500) } : {}),
      };
      timer ??= setTimeout(flush, INTERVAL_MS);
    },
    /** The step ended: pending reports are dropped (the result says more). */
    stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
    },
  };
}
