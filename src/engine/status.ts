/**
 * A task's statuses: the one list every layer uses (the API's schemas, the stores, the events),
 * the TaskStatus enum of prisma/schema.prisma (a test holds the two together).
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

/**
 * A step's statuses, the StepStatus enum of prisma/schema.prisma: a task's, plus `pending` (its
 * dependencies are not done) and `skipped` (its task failed before it could run).
 */
export const STEP_STATUSES = ['pending', 'queued', 'running', 'completed', 'failed', 'skipped', 'cancelled'] as const;

export type StepStatus = (typeof STEP_STATUSES)[number];

/** How a step that ran ended: what its result records. */
export type StepOutcome = Extract<StepStatus, 'completed' | 'failed' | 'cancelled'>;
