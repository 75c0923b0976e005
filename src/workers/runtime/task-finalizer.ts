import { type Job, WaitingChildrenError } from 'bullmq';
import type { Config } from '../../config.js';
import { isFinished } from '../../engine/status.js';
import type { Logger } from '../../logger.js';
import type { Metrics } from '../../observability/metrics.js';
import type { RunClosed, StepResults, UnfinishedStep } from '../../persistence/step-results.js';
import { stepJobId, type TaskJobData } from '../../queue/jobs.js';
import type { TaskQueues } from '../../queue/task-queues.js';
import { postpone } from './postpone.js';
import { recordResult } from './record-result.js';

/** What BullMQ says became of an unfinished step's job. */
type JobFate = { step: UnfinishedStep; fate: 'gone' } | { step: UnfinishedStep; fate: 'pending' } | { step: UnfinishedStep; fate: 'failed'; reason: string };

/**
 * The root job of a run. BullMQ starts it once every step job of the run has finished, so it
 * is where a run is closed: normally the task already ended with its last step's commit, and
 * this only confirms it. If steps have no result yet, BullMQ is asked what became of their jobs:
 * - a job that failed outside the step processor (it stalled too often: its workers kept dying)
 *   records the step's failure with BullMQ's reason, and the run goes on as the step's
 *   on_failure policy says (dead letter, task failed, or dependents enqueued);
 * - a job still pending (added after BullMQ moved the root) makes the root wait again;
 * - a job that is really gone (removed by hand, lost with Redis) fails its step as lost, and
 *   the task with it, rather than leaving it running for ever.
 * PostgreSQL or Redis being away is never a reason to fail anything: the root waits and comes back.
 */
export function createTaskFinalizer(deps: { results: StepResults; logger: Logger; metrics: Metrics; queues: TaskQueues; config: Config }) {
  async function fateOf(ref: TaskJobData, step: UnfinishedStep): Promise<JobFate> {
    const job = await deps.queues.toolQueue(ref.taskId, step.tool).getJob(stepJobId(ref.taskId, ref.run, step.stepId));
    if (!job) return { step, fate: 'gone' };
    const state = await job.getState();
    if (state === 'failed') return { step, fate: 'failed', reason: job.failedReason || 'the step job failed' };
    // Completed without a result in PostgreSQL cannot come from the step processor, which
    // acknowledges a job only after its result is written: treat it as gone.
    if (state === 'completed' || state === 'unknown') return { step, fate: 'gone' };
    return { step, fate: 'pending' };
  }

  /** Resolves with how the run closed, or throws WaitingChildrenError when it has work left. */
  async function close(job: Job<TaskJobData>, token: string | undefined): Promise<RunClosed> {
    const ref = job.data;
    const closed = await deps.results.closeRun(ref.taskId, ref.run);
    if (!closed.unfinished) return closed;
    const withJobs = closed.unfinished.filter((step) => step.status !== 'pending');
    // Only steps waiting for dependencies that will never finish: nothing can run them any more.
    if (withJobs.length === 0)
      return deps.results.failLostSteps(
        ref.taskId,
        ref.run,
        closed.unfinished.map((step) => step.stepId),
      );
    const fates = await Promise.all(withJobs.map((step) => fateOf(ref, step)));
    let waitAgain = fates.some((entry) => entry.fate === 'pending');
    for (const entry of fates) {
      if (entry.fate !== 'failed') continue;
      const now = new Date();
      const outcome = await recordResult(deps.results, deps.queues, {
        taskId: ref.taskId,
        run: ref.run,
        stepId: entry.step.stepId,
        tool: entry.step.tool,
        attempt: 0,
        status: 'failed',
        error: { name: 'StepJobFailed', message: entry.reason, retryable: false },
        startedAt: now,
        finishedAt: now,
      });
      deps.logger.error('step job failed without a result; its failure is recorded', { task_id: ref.taskId, step_id: entry.step.stepId, reason: entry.reason });
      if (outcome.ready.length > 0) waitAgain = true;
    }
    if (waitAgain && token && (await job.moveToWaitingChildren(token))) throw new WaitingChildrenError();
    const lost = fates.filter((entry) => entry.fate === 'gone').map((entry) => entry.step.stepId);
    if (lost.length > 0) return deps.results.failLostSteps(ref.taskId, ref.run, lost);
    // Failures just recorded may have ended the task, or made steps ready that already ran: look again.
    const after = await deps.results.closeRun(ref.taskId, ref.run);
    if (after.unfinished) throw new Error(`the run still has steps without a result: ${after.unfinished.map((step) => step.stepId).join(', ')}`);
    return after;
  }

  return async function finalizeTask(job: Job<TaskJobData>, token?: string): Promise<{ status: string | undefined }> {
    let closed: RunClosed;
    try {
      closed = await close(job, token);
    } catch (error) {
      if (error instanceof WaitingChildrenError) throw error;
      return postpone(
        job,
        token,
        error,
        deps.logger.child({ task_id: job.data.taskId, run: job.data.run }),
        'could not close the run: its root job comes back later',
      );
    }
    const { status, lost, task, callbackUrl } = closed;
    // The run is over and nothing of it runs any more: its result is final, tell the client.
    if (callbackUrl && status && isFinished(status)) await deps.queues.enqueueCallback(job.data, deps.config.CALLBACK_MAX_ATTEMPTS);
    if (lost.length > 0 && task) {
      deps.metrics.tasksFinished.inc({ task_type: task.type, status: 'failed' });
      deps.metrics.taskDuration.observe({ task_type: task.type, status: 'failed' }, (Date.now() - task.createdAt.getTime()) / 1000);
    }
    deps.logger.debug('run closed', { task_id: job.data.taskId, run: job.data.run, status });
    return { status };
  };
}
