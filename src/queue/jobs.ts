import type { ReadyStep } from '../engine/types.js';
import type { ErrorRecord } from '../lib/errors.js';

/**
 * The queues of a shard (see shards.ts) and what their jobs carry.
 *
 * A one-tool task is one job in its tool's queue. A workflow's run is a BullMQ flow: a root job
 * in TASKS_QUEUE (one per run) whose children are everything the run waits on in Redis: its
 * steps' and map items' jobs (in their tools' queues), its sleeps' and waits' timers, holds (a
 * long-delayed placeholder for a step that waits with no job of its own: a signal, its turn under
 * a limit, a sub-workflow) and its sub-workflows' own roots. A step that makes others ready adds
 * their jobs under the same root before its own job completes, so the root has a pending child
 * while work remains and BullMQ releases it only after the last one. The run's graph stays in
 * PostgreSQL, where the engine decides which step is ready (flows are trees, and a diamond is
 * not one): BullMQ carries the tree, not the decisions. Every child ignores its own failure as
 * far as BullMQ is concerned (ignoreDependencyOnFailure): what a failure means is the engine's.
 */

/** The runs' roots: one job per workflow run (its id is rootJobId), which ends it or checks that it ended. */
export const TASKS_QUEUE = 'tasks';

export function rootJobId(taskId: string, run: number): string {
  return `${taskId}.${run}`;
}

/** A run's root job: what its processor checks (workers/runtime/run-roots.ts). */
export interface RootJobData {
  taskId: string;
  run: number;
}

/** A hold: the placeholder child of a step (or map item) that waits with no job of its own. */
export function holdJobId(taskId: string, run: number, stepId: string, item?: number): string {
  return item === undefined ? `${taskId}.${run}.${stepId}.hold` : `${taskId}.${run}.${stepId}.${item}.hold`;
}

/** A hold's data (job name `<step> (hold)`, in the timers queue). */
export interface HoldJobData {
  taskId: string;
  run: number;
  stepId: string;
  item?: number;
  hold: true;
}

/** A durable sleep's wake-up: a delayed job per sleeping step, which reports the step done. */
export const TIMERS_QUEUE = 'timers';

/** Completion callbacks: one job per finished run whose task has a callback_url. */
export const CALLBACKS_QUEUE = 'callbacks';

export function callbackJobId(taskId: string, run: number, waitingStep?: string): string {
  return waitingStep === undefined ? `${taskId}.${run}.callback` : `${taskId}.${run}.${waitingStep}.waiting`;
}

export interface CallbackJobData {
  taskId: string;
  run: number;
  /** A `task.waiting` callback: this step started waiting for a signal or an approval. Absent: the task's end. */
  waitingStep?: string;
}

/**
 * The one queue of every registered service's operations (`<service>.<operationId>`): services
 * come and go while workers run, and a service's own concurrency and rate limit are limits per
 * key (src/tools/openapi-tools.ts serviceLimits), not the queue's.
 */
export const SERVICES_QUEUE = 'services';

/** One queue per tool adapter, so each has its own concurrency, rate limit and workers; services' tools share SERVICES_QUEUE. */
export function toolQueueName(tool: string): string {
  return tool.includes('.') ? SERVICES_QUEUE : `tool.${tool}`;
}

/** Job ids are deterministic (no ":"), so adding the same job twice is a no-op. A map item's job names its item. */
export function stepJobId(taskId: string, run: number, stepId: string, item?: number): string {
  return item === undefined ? `${taskId}.${run}.${stepId}` : `${taskId}.${run}.${stepId}.${item}`;
}

export function timerJobId(taskId: string, run: number, stepId: string): string {
  return `${taskId}.${run}.${stepId}.wake`;
}

/** Custom backoff type: the worker computes the delay (jitter, Retry-After). */
export const BACKOFF_TYPE = 'orchestrator';

export interface TimerJobData {
  taskId: string;
  run: number;
  stepId: string;
}

/** A rate gate's wake-up (job name `gate`, in the timers queue): its line is let in as far as its window allows. */
export interface GateTimerData {
  gate: string;
}

/** A step's result that could not be written yet (PostgreSQL unreachable); see workers/runtime/step-processor.ts. */
export interface ParkedResult {
  status: 'completed' | 'failed' | 'cancelled';
  output?: unknown;
  error?: ErrorRecord;
  attempt: number;
  startedAt: string;
  finishedAt: string;
}

/** A ready step as its job carries it; priority and delay are the job's options, not its data. */
export interface StepJobData extends Omit<ReadyStep, 'priority' | 'delayMs'> {
  /** Set when the step already ran and only its result remains to be written. */
  parked?: ParkedResult;
  /**
   * Set on a one-tool task's step, whose result ends its task: the worker records both in one
   * statement, and may run it before claiming it (workers/runtime/step-processor.ts).
   */
  single?: true;
  /**
   * Set when the step's failure does not fail its task (on_failure `continue`): a final failure
   * completes the job with its error instead of failing it, so BullMQ (and Bull Board) show as
   * failed only the jobs whose failure mattered.
   */
  continues?: true;
  /** Set while the step waits for its service's circuit (workers/runtime/step-processor.ts holdForCircuit). */
  held?: true;
  /**
   * Deliveries that the open circuit held back (holdForCircuit) or a closing worker handed back
   * (workers/runtime/hand-back.ts): BullMQ counts them as started, but they ran nothing, so they
   * are no attempts of the step.
   */
  heldDeliveries?: number;
  /** When its first try started (ms since the epoch): set at its first retry when its policy has max_elapsed_ms. */
  firstTryAt?: number;
}
