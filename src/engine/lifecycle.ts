import type { StepStatus, TaskStatus } from './status.js';

/**
 * How a step (and a map item) moves between its statuses: the one statement of the state machine
 * (docs/workflows.md "Workflows" draws it). The decider (decide.ts) checks every change it makes against it,
 * so a change the machine does not allow is a bug that fails loudly instead of a wrong record.
 *
 *   pending  → queued     its dependencies are done and it is a one-tool task's step: a job is enqueued
 *   pending  → running    a workflow's tool step made ready (claimed for its first delivery with its job), a map that started its items, or a sub-workflow whose child started
 *   pending  → waiting    a durable sleep, a wait step (reason signal, approval), or a tool step over a limit per key (reason concurrency, rate_limit)
 *   pending  → completed  done at once: a map over no items, a sub-workflow whose child had completed
 *   pending  → failed     it could not start: its `when` failed to evaluate, its input is too large…
 *   pending  → skipped    its `when` was false, its branch was not taken, or its task failed
 *   queued   → running    a worker claimed it
 *   queued   → completed|failed|cancelled   a one-tool task's step reports without a claim (it ran at once)
 *   queued   → skipped    its task failed before it started
 *   queued   → waiting    the circuit of the service it calls is open (reason circuit_open)
 *   running  → waiting    the same, on a retry (a retried step shows running while it waits for its next try)
 *   running  → queued     its job was lost (the reconciler enqueues it again)
 *   running  → pending    its task is retried while it still runs from the run that failed (its result will be refused)
 *   running  → completed|failed|cancelled   its result, its child's end, or its task's end
 *   waiting  → completed|cancelled          its wake-up, its signal or decision, or its task's end
 *   waiting  → failed     a wait step's timeout under on_timeout fail
 *   waiting  → queued     its turn came under its limits per key (a job is enqueued), or its service's circuit half-opened
 *   * → cancelled         its task was cancelled (steps already finished keep their status)
 *   failed|skipped|cancelled → pending   the task is retried: a new run (completed steps keep their output)
 *   completed → pending   the task is retried after its compensations ran: the new run starts over
 */
export const STEP_TRANSITIONS: Readonly<Record<StepStatus, readonly StepStatus[]>> = {
  pending: ['queued', 'running', 'waiting', 'completed', 'failed', 'skipped', 'cancelled'],
  queued: ['running', 'waiting', 'completed', 'failed', 'skipped', 'cancelled'],
  running: ['queued', 'pending', 'waiting', 'completed', 'failed', 'cancelled'],
  waiting: ['queued', 'completed', 'failed', 'cancelled'],
  completed: ['pending'],
  failed: ['pending'],
  skipped: ['pending'],
  cancelled: ['pending'],
};

/** A task: queued until a step starts, then running, then ended; a retry makes it queued again. */
export const TASK_TRANSITIONS: Readonly<Record<TaskStatus, readonly TaskStatus[]>> = {
  queued: ['running', 'completed', 'failed', 'cancelled'],
  running: ['completed', 'failed', 'cancelled'],
  completed: [],
  failed: ['queued'],
  cancelled: ['queued'],
};

/** A change the state machine does not allow: a bug in the decider, never a user's mistake. */
export class IllegalTransitionError extends Error {
  override name = 'IllegalTransitionError';
}

export function canMove(from: StepStatus, to: StepStatus): boolean {
  return from === to || STEP_TRANSITIONS[from].includes(to);
}

export function assertStepMove(what: string, from: StepStatus, to: StepStatus): void {
  if (!canMove(from, to)) throw new IllegalTransitionError(`${what}: a step may not go from ${from} to ${to}`);
}

export function assertTaskMove(what: string, from: TaskStatus, to: TaskStatus): void {
  if (from !== to && !TASK_TRANSITIONS[from].includes(to)) throw new IllegalTransitionError(`${what}: a task may not go from ${from} to ${to}`);
}
