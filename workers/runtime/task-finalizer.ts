import type { Job } from 'bullmq';
import type { Logger } from '../../src/logger.js';
import type { TaskJobData } from '../../src/queue/jobs.js';
import type { StepResults } from '../../src/persistence/step-results.js';
import type { Metrics } from '../../src/observability/metrics.js';
import type { Config } from '../../src/config.js';
import { FINISHED_TASK } from '../../src/queue/event-log.js';
import type { TaskQueues } from '../../src/queue/task-queues.js';

/**
 * The root job of a run. BullMQ starts it once every step job of the run has finished, so it
 * is where a run is closed: normally the task already ended with its last step's commit, and
 * this only confirms it; otherwise a step was lost and the task is failed rather than left running.
 */
export function createTaskFinalizer(deps: { results: StepResults; logger: Logger; metrics: Metrics; queues: TaskQueues; config: Config }) {
  return async function finalizeTask(job: Job<TaskJobData>): Promise<{ status: string | undefined }> {
    const { status, lost, task, callbackUrl } = await deps.results.closeRun(job.data.taskId, job.data.run);
    // The run is over and nothing of it runs any more: its result is final, tell the client.
    if (callbackUrl && status && FINISHED_TASK.has(status)) await deps.queues.enqueueCallback(job.data, deps.config.CALLBACK_MAX_ATTEMPTS);
    if (lost.length > 0 && task) {
      deps.metrics.tasksFinished.inc({ task_type: task.type, status: 'failed' });
      deps.metrics.taskDuration.observe({ task_type: task.type, status: 'failed' }, (Date.now() - task.createdAt.getTime()) / 1000);
    }
    deps.logger.debug('run closed', { task_id: job.data.taskId, run: job.data.run, status });
    return { status };
  };
}
