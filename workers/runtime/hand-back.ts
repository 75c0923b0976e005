import { type Job, WaitingError } from 'bullmq';
import type { Logger } from '../../src/lib/logger.js';
import type { StepJobData } from '../../src/queue/jobs.js';
import { deliveredUnrun } from './step-processor.js';

type Processor<J extends Job> = (job: J, token?: string) => Promise<unknown>;

/**
 * A processor that a closing worker does not run: the job goes back to the front of its queue
 * (among jobs of its priority), for another worker, without running or using up a try. BullMQ
 * can hand a worker a job after its close() began: a blocking fetch in flight at that moment
 * still returns the job whose add woke it (bullmq 6.7, `Worker._getNextJob` takes it without
 * looking at `closing`; beside two busy loops, a step submitted after the worker said it was
 * closing ran there). Run there, it would hold the drain up, or be cut off at
 * WORKER_SHUTDOWN_TIMEOUT_MS and wait out its lock.
 *
 * `mark` gives the job's data for its next delivery (a step counts this delivery as one that ran
 * nothing: heldDeliveries). If Redis does not take the job back, it is left active under this
 * worker's lock, which lapses: BullMQ's stall check delivers it again, as after a crash.
 */
export function handBackWhenClosing<J extends Job>(
  closing: () => boolean,
  processor: Processor<J>,
  logger: Logger,
  mark?: (job: J) => J['data'],
): Processor<J> {
  return async (job, token) => {
    // Without a token the job was not taken by a Worker (a test calling a processor).
    if (!closing() || !token) return processor(job, token);
    try {
      if (mark) await job.updateData(mark(job));
      await job.moveToWait(token);
      logger.info('worker closing: job handed back to its queue', { queue: job.queueName, job_id: job.id });
    } catch (error) {
      logger.warn('worker closing: could not hand a job back; it runs again once its lock lapses', {
        queue: job.queueName,
        job_id: job.id,
        error: (error as Error).message,
      });
    }
    // BullMQ leaves a job whose processor threw this as it is (moved on purpose): no try is used.
    throw new WaitingError();
  };
}

/** handBackWhenClosing for a step's processor (the built-in worker's and a user's): the delivery handed back is no attempt of the step. */
export function handBackStepsWhenClosing(closing: () => boolean, processor: Processor<Job<StepJobData>>, logger: Logger): Processor<Job<StepJobData>> {
  return handBackWhenClosing(closing, processor, logger, (job) => deliveredUnrun(job.data));
}
