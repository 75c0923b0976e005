import { DelayedError, type Job, WaitingChildrenError } from 'bullmq';
import type { Logger } from '../../src/lib/logger.js';
import type { HoldJobData, RootJobData } from '../../src/queue/jobs.js';
import { HOLD_RECHECK_MS } from '../../src/queue/task-queues.js';
import type { Runs } from '../../src/tasks/runs.js';
import { postpone } from './postpone.js';

/**
 * The processors of a workflow run's flow (src/queue/jobs.ts): its root, which BullMQ hands out
 * once every child is done, and its holds, which stand in for steps that wait with no job.
 */

/** How long a root whose run has nothing left in Redis, yet has not ended, waits before it looks again. */
const ROOT_RECHECK_MS = 5_000;

/**
 * A run's root: it completes when its run has ended, which the job that ended it wrote into the
 * root's progress (no PostgreSQL read), or PostgreSQL says so. A root that came up while its run
 * goes on (a child was lost with Redis, or the last one ended without its effects carried out)
 * makes what the run waits on again and waits for its children again; with nothing to wait for
 * in Redis it looks again a little later. Nothing is left waiting either way.
 */
export function createRootProcessor(deps: { runs: Runs; logger: Logger }) {
  return async function processRoot(job: Job<RootJobData>, token?: string): Promise<unknown> {
    const { taskId, run } = job.data;
    const marked = typeof job.progress === 'object' && job.progress !== null ? (job.progress as { ended?: string }).ended : undefined;
    if (marked) return { ended: marked };
    const logger = deps.logger.child({ task_id: taskId, run });
    let ended: boolean;
    try {
      ended = await deps.runs.closeRun(taskId, run);
    } catch (error) {
      return postpone(job, token, error, logger, 'could not look at a run whose root came up: it comes back later');
    }
    if (ended) return { ended: true };
    if (!token) throw new Error('a run root without a token cannot wait for its children');
    if (await job.moveToWaitingChildren(token)) throw new WaitingChildrenError();
    logger.warn('a run that has not ended has nothing in Redis to wait for: its root looks again later', { delay_ms: ROOT_RECHECK_MS });
    await job.moveToDelayed(Date.now() + ROOT_RECHECK_MS, token);
    throw new DelayedError();
  };
}

/**
 * A hold's delay ran out: it stays (delayed again) while its step still waits with no job, and
 * completes otherwise (its drop was lost), which lets its run's root go on.
 */
export async function processHold(job: Job<HoldJobData>, token: string | undefined, runs: Runs, logger: Logger): Promise<unknown> {
  let holds: boolean;
  try {
    [holds = false] = await runs.standing([job.data]);
  } catch (error) {
    return postpone(job, token, error, logger.child({ task_id: job.data.taskId, step_id: job.data.stepId }), 'could not look at a hold: it comes back later');
  }
  if (!holds || !token) return { held: false };
  await job.moveToDelayed(Date.now() + HOLD_RECHECK_MS, token);
  throw new DelayedError();
}
