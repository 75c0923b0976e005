/**
 * A task's statuses: the one list every layer uses (the API's schemas, the stores, the events).
 * A step has more (`pending`, `skipped`): see the StepStatus enum in prisma/schema.prisma.
 */
export const TASK_STATUSES = ['queued', 'running', 'completed', 'failed', 'cancelled'] as const;

export type TaskStatus = (typeof TASK_STATUSES)[number];

/** A run in one of these can still record results. */
export const ACTIVE_TASK_STATUSES: ReadonlySet<string> = new Set<TaskStatus>(['queued', 'running']);

/** A task in one of these has ended (a retry starts a new run). */
export const FINISHED_TASK_STATUSES: ReadonlySet<string> = new Set<TaskStatus>(['completed', 'failed', 'cancelled']);

export function isFinished(status: string): boolean {
  return FINISHED_TASK_STATUSES.has(status);
}
