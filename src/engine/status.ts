/**
 * A task's statuses: the one list every layer uses (the API's schemas, the stores, the events),
 * the TaskStatus enum of prisma/schema.prisma (a test holds the two together).
 *
 * "assigned", which POST /assign-task answers, is not a status: it says the request was taken.
 * The task it made is `queued` until a step starts.
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
 * A step's statuses (and a map item's), the StepStatus enum of prisma/schema.prisma, in its
 * order. How a step moves between them is src/engine/lifecycle.ts.
 */
export const STEP_STATUSES = ['pending', 'queued', 'running', 'waiting', 'completed', 'failed', 'skipped', 'cancelled'] as const;

export type StepStatus = (typeof STEP_STATUSES)[number];

/** How a step's attempt ended, as its worker reports it. */
export type StepOutcome = Extract<StepStatus, 'completed' | 'failed' | 'cancelled'>;

/** A step in one of these has its final state for the run. */
export const FINISHED_STEP_STATUSES: ReadonlySet<string> = new Set<StepStatus>(['completed', 'failed', 'skipped', 'cancelled']);

/**
 * Why a step was skipped: its `when` was false; every step it depends on was skipped (the
 * branch it is on was not taken); its task failed before it could run; or, a compensation,
 * there was nothing to undo (its task completed, or its step did not).
 */
export const SKIP_REASONS = ['condition', 'branch_not_taken', 'task_failed', 'not_needed', 'terminated'] as const;
export type SkipReason = (typeof SKIP_REASONS)[number];

/**
 * What a waiting step waits for: a durable sleep's wake-up time, its turn under a limit per
 * key (`concurrency`, `rate_limit`: src/engine/key-limits.ts), someone: a signal sent with a
 * key (`signal`) or a person's decision through a link (`approval`), or the circuit of the
 * service it calls to half-open (`circuit_open`).
 */
export const WAIT_REASONS = ['sleep', 'concurrency', 'rate_limit', 'signal', 'approval', 'circuit_open'] as const;
export type WaitReason = (typeof WAIT_REASONS)[number];

/** A step waiting for its turn under a limit per key: let in, it is queued. */
export function waitsForTurn(status: string, reason: string | null): boolean {
  return status === 'waiting' && (reason === 'concurrency' || reason === 'rate_limit');
}

/** A step waiting on someone (a signal or an approval), not on time or its turn. */
export function waitsForSomeone(status: string, reason: string | null): boolean {
  return status === 'waiting' && (reason === 'signal' || reason === 'approval');
}
