import type { CallbackDelivery, Step, Task } from '../generated/prisma/client.js';
import type { StepViewBody, TaskSummaryBody, TaskViewBody } from '../api/responses.js';

const FINISHED_STEP = new Set(['completed', 'failed', 'skipped', 'cancelled']);

function iso(date: Date | null): string | null {
  return date ? date.toISOString() : null;
}

export function stepView(step: Step): StepViewBody {
  return {
    id: step.stepId,
    tool: step.tool,
    status: step.status,
    attempts: step.attempts,
    depends_on: step.dependsOn,
    started_at: iso(step.startedAt),
    finished_at: iso(step.finishedAt),
    duration_ms: step.startedAt && step.finishedAt ? step.finishedAt.getTime() - step.startedAt.getTime() : null,
    ...(step.progress !== null ? { progress: step.progress as StepViewBody['progress'] } : {}),
    ...(step.output !== null ? { output: step.output } : {}),
    ...(step.error !== null ? { error: step.error as StepViewBody['error'] } : {}),
  };
}

type TaskError = NonNullable<TaskViewBody['error']>;

/**
 * One line for clients that print a task's error rather than read its fields (those written
 * against the Celery-style contract this service replaces, where `error` is a string): the
 * failing step, its tool and attempts, then the error's name and message, e.g.
 * `step fetch (http, 3 attempts) failed: ToolTimeoutError: step timed out after 30000 ms`.
 */
export function errorSummary(error: TaskError, steps: readonly Pick<Step, 'stepId' | 'tool' | 'attempts'>[]): string {
  const cause = `${error.name}: ${error.message}`;
  if (error.step === undefined) return cause;
  const step = steps.find((candidate) => candidate.stepId === error.step);
  if (!step) return `step ${error.step} failed: ${cause}`;
  const attempts = `${step.attempts} attempt${step.attempts === 1 ? '' : 's'}`;
  return `step ${step.stepId} (${step.tool === step.stepId ? '' : `${step.tool}, `}${attempts}) failed: ${cause}`;
}

/** The contract's answer to GET /result/:task_id. */
function callbackView(url: string, deliveries: CallbackDelivery[]) {
  return {
    url,
    delivered: deliveries.some((delivery) => delivery.delivered),
    deliveries: deliveries.map((delivery) => ({
      attempt: delivery.attempt,
      run: delivery.run,
      event: delivery.event,
      status_code: delivery.statusCode,
      error: delivery.error,
      delivered: delivery.delivered,
      will_retry: delivery.willRetry,
      duration_ms: delivery.durationMs,
      at: delivery.createdAt.toISOString(),
    })),
  };
}

export function taskView(task: Task & { steps: Step[]; callbacks?: CallbackDelivery[] }): TaskViewBody {
  return {
    task_id: task.id,
    task_type: task.taskType,
    ...(task.workflowName ? { workflow: { name: task.workflowName, version: task.workflowVersion } } : {}),
    status: task.status,
    ...(task.result !== null ? { result: task.result } : {}),
    ...(task.error !== null ? { error: task.error as TaskError, error_message: errorSummary(task.error as TaskError, task.steps) } : {}),
    progress: {
      /** Steps that have finished, whatever their outcome. */
      completed: task.steps.filter((step) => FINISHED_STEP.has(step.status)).length,
      total: task.steps.length,
    },
    run: task.run,
    steps: task.steps.map(stepView),
    ...(task.callbackUrl ? { callback: callbackView(task.callbackUrl, task.callbacks ?? []) } : {}),
    created_at: task.createdAt.toISOString(),
    started_at: iso(task.startedAt),
    finished_at: iso(task.finishedAt),
    timestamp: new Date().toISOString(),
  };
}

export function taskSummary(task: Pick<Task, 'id' | 'taskType' | 'status' | 'createdAt' | 'startedAt' | 'finishedAt' | 'stepsTotal' | 'workflowName' | 'workflowVersion'>): TaskSummaryBody {
  return {
    task_id: task.id,
    task_type: task.taskType,
    ...(task.workflowName ? { workflow: { name: task.workflowName, version: task.workflowVersion } } : {}),
    status: task.status,
    steps_total: task.stepsTotal,
    created_at: task.createdAt.toISOString(),
    started_at: iso(task.startedAt),
    finished_at: iso(task.finishedAt),
  };
}
