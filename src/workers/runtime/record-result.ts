import type { FinishOutcome, StepFinish, StepResults } from '../../persistence/step-results.js';
import type { TaskQueues } from '../../queue/task-queues.js';

/**
 * Writes a step's final result, then enqueues the steps it made ready, before the caller lets
 * BullMQ acknowledge anything. When the write is answered "already recorded" (an earlier write
 * went through but its answer was lost), the dependents that write made ready are looked up and
 * enqueued all the same (job ids are deterministic, so adding one twice is harmless). A failed
 * task's steps that never started are dropped from the queue.
 */
export async function recordResult(
  results: StepResults,
  queues: TaskQueues,
  finish: Omit<StepFinish, 'kind'>,
  /** `single`: the step is its run's only job (a one-tool task): it has no dependents nor siblings. */
  run: { single?: boolean } = {},
): Promise<FinishOutcome> {
  const outcome = await results.finish(finish, run);
  if (run.single) return outcome;
  const { taskId, stepId } = finish;
  const ready = outcome.recorded ? outcome.ready : await results.pendingDependents(taskId, finish.run, stepId);
  if (ready.length > 0) await queues.addSteps({ taskId, run: finish.run }, ready);
  if (outcome.skipped) await queues.dropUnstartedSteps({ taskId, run: finish.run });
  return outcome;
}
