import type { Config } from '../../config.js';
import { isFinished } from '../../engine/status.js';
import type { Logger } from '../../logger.js';
import type { FinishOutcome, StepResults } from '../../persistence/step-results.js';
import type { RunKey, TaskQueues } from '../../queue/task-queues.js';
import { recordResult } from './record-result.js';

export interface SingleRunDeps {
  results: StepResults;
  queues: TaskQueues;
  config: Pick<Config, 'CALLBACK_MAX_ATTEMPTS'>;
  logger: Logger;
}

/**
 * A one-tool task's run is its step's job alone (TaskQueues.startRuns): no root job waits for
 * it, so what a root does when its run ends is done here.
 *
 * After a result that ended the task, its callback is enqueued. A delivery whose result was not
 * recorded (recorded already by a delivery whose worker died before acknowledging, or its task
 * ended meanwhile) closes the run as a root would: a step of a failed or cancelled task still
 * without a result is skipped, and a callback still due is enqueued. Callback job ids are per
 * run, so enqueueing one twice is harmless. A result refused while its run is still active
 * throws, to be written again later (see below).
 */
export async function closeSingleRun(deps: SingleRunDeps, ref: RunKey, outcome?: FinishOutcome): Promise<void> {
  if (outcome?.recorded) {
    if (outcome.taskEnded && outcome.task?.callback) await deps.queues.enqueueCallback(ref, deps.config.CALLBACK_MAX_ATTEMPTS);
    return;
  }
  const closed = await deps.results.closeRun(ref.taskId, ref.run);
  // A result refused although its run is active and its step has none: the statement read the
  // task as it was before a retry's transaction committed (a retry enqueues the new run's job
  // just before its commit, and this job ran in between). Nothing is lost: the caller keeps the
  // result in the job, whose next delivery writes it.
  if (outcome && closed.unfinished && closed.unfinished.length > 0) {
    throw new Error(`the result of run ${ref.run} was refused while that run is active: it is written on the job's next delivery`);
  }
  if (closed.callbackUrl && closed.status && isFinished(closed.status)) await deps.queues.enqueueCallback(ref, deps.config.CALLBACK_MAX_ATTEMPTS);
}

/**
 * A single run's job that BullMQ failed without the step processor (it stalled too often: its
 * workers kept dying): the step's failure is recorded with BullMQ's reason, as a root would.
 * Called when a worker sees the stall, and by the reconciler for a job found failed later.
 */
export async function recordJobFailure(deps: SingleRunDeps, ref: RunKey & { stepId: string; tool: string }, reason: string): Promise<void> {
  const now = new Date();
  const outcome = await recordResult(
    deps.results,
    deps.queues,
    {
      taskId: ref.taskId,
      run: ref.run,
      stepId: ref.stepId,
      tool: ref.tool,
      attempt: 0,
      status: 'failed',
      error: { name: 'StepJobFailed', message: reason, retryable: false },
      startedAt: now,
      finishedAt: now,
    },
    { single: true },
  );
  if (outcome.recorded) deps.logger.error('step job failed without a result; its failure is recorded', { task_id: ref.taskId, step_id: ref.stepId, reason });
  await closeSingleRun(deps, ref, outcome);
}
