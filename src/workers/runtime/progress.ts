import type { Job } from 'bullmq';
import type { Logger } from '../../logger.js';
import type { StepResults } from '../../persistence/step-results.js';
import type { StepJobData } from '../../queue/jobs.js';

/** At most one write of a step's progress per interval; the latest report wins. */
const INTERVAL_MS = 200;

/**
 * Turns an adapter's `ctx.progress()` calls into Bull Board progress, a PostgreSQL column and
 * an event, without letting a chatty adapter flood any of them.
 */
export function progressReporter(job: Job<StepJobData>, results: StepResults, logger: Logger) {
  let latest: { percent: number; message?: string } | undefined;
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const flush = () => {
    timer = undefined;
    if (!latest || stopped) return;
    const report = latest;
    latest = undefined;
    const { taskId, run, stepId } = job.data;
    job.updateProgress(report).catch((error: Error) => logger.debug('could not update job progress', { error: error.message }));
    results
      .progress({ taskId, run, stepId, ...report, at: new Date() })
      .catch((error: Error) => logger.warn('could not record progress', { error: error.message }));
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
