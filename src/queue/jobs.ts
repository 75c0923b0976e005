import type { ReadyStep } from '../engine/types.js';
import type { ErrorRecord } from '../errors.js';

/**
 * Queue of the workflow runs' root jobs: each runs once all steps of its run have finished. A
 * one-tool task's run has no root: its step is its only job.
 */
export const TASKS_QUEUE = 'tasks';

/** Completion callbacks: one job per finished run whose task has a callback_url. */
export const CALLBACKS_QUEUE = 'callbacks';

export function callbackJobId(taskId: string, run: number): string {
  return `${taskId}.${run}.callback`;
}

export interface CallbackJobData {
  taskId: string;
  run: number;
}

/** One queue per tool, so each tool has its own concurrency, rate limit and workers. */
export function toolQueueName(tool: string): string {
  return `tool.${tool}`;
}

/** Job ids are deterministic (no ":"), so adding the same job twice is a no-op. */
export function taskJobId(taskId: string, run: number): string {
  return `${taskId}.${run}`;
}

export function stepJobId(taskId: string, run: number, stepId: string): string {
  return `${taskId}.${run}.${stepId}`;
}

/** Custom backoff type: the worker computes the delay (jitter, Retry-After). */
export const BACKOFF_TYPE = 'orchestrator';

export interface TaskJobData {
  taskId: string;
  run: number;
}

/** A step's result that could not be written yet (PostgreSQL unreachable); see step-processor.ts. */
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
  taskId: string;
  run: number;
  /** Set when the step already ran and only its result remains to be written. */
  parked?: ParkedResult;
  /**
   * Set on the job of a one-tool task's run, which is that run's only job: no root job waits
   * for it, so the step closes the run itself (see src/workers/runtime/single-run.ts).
   */
  single?: true;
}
