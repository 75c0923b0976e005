import type { ErrorRecord } from '../errors.js';
import type { StepOutcome } from './status.js';

/** A step result just recorded for a task that was still active, with the step's place in the graph. */
export interface RecordedResult {
  taskId: string;
  stepId: string;
  status: StepOutcome;
  error?: ErrorRecord;
  onFailure: 'fail' | 'continue';
  dependents: string[];
}

/** What a batch of recorded results means for their tasks. */
export interface ResultTransitions {
  /** Tasks that fail now; `result` is the index of the result that failed each. */
  failed: { taskId: string; result: number; error: ErrorRecord & { step: string } }[];
  /** Per dependent of a task that did not fail: how many of its dependencies just resolved. */
  resolved: { taskId: string; stepId: string; count: number }[];
  /** Per task that did not fail: how many of its steps just finished. */
  finished: { taskId: string; count: number }[];
}

/**
 * Decides, in the order the results were recorded, what they do to their tasks. A completed
 * step, or a failed one whose policy is to continue, resolves one dependency of each of its
 * dependents; any other result (the fail policy, a cancelled attempt) fails its task, after
 * which the task's other results in the batch count for nothing. The caller counts the
 * resolved dependencies and finished steps down: a dependent is ready, and a task is over,
 * when its count reaches zero.
 */
export function resultTransitions(results: readonly RecordedResult[]): ResultTransitions {
  const failed: ResultTransitions['failed'] = [];
  const failedTasks = new Set<string>();
  const resolved = new Map<string, { taskId: string; stepId: string; count: number }>();
  const finished = new Map<string, number>();
  results.forEach((result, index) => {
    if (failedTasks.has(result.taskId)) return;
    finished.set(result.taskId, (finished.get(result.taskId) ?? 0) + 1);
    if (result.status === 'completed' || (result.status === 'failed' && result.onFailure === 'continue')) {
      for (const stepId of result.dependents) {
        const key = `${result.taskId}/${stepId}`;
        const entry = resolved.get(key) ?? { taskId: result.taskId, stepId, count: 0 };
        entry.count += 1;
        resolved.set(key, entry);
      }
    } else {
      failedTasks.add(result.taskId);
      failed.push({ taskId: result.taskId, result: index, error: stepFailure(result.stepId, result.error) });
    }
  });
  return {
    failed,
    resolved: [...resolved.values()].filter((entry) => !failedTasks.has(entry.taskId)),
    finished: [...finished].filter(([taskId]) => !failedTasks.has(taskId)).map(([taskId, count]) => ({ taskId, count })),
  };
}

/** A task's error when one of its steps failed it: the step's error, naming the step. */
export function stepFailure(stepId: string, error: ErrorRecord | undefined): ErrorRecord & { step: string } {
  return { step: stepId, ...(error ?? { name: 'Error', message: 'step failed' }) };
}
