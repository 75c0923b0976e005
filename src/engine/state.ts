import type { ErrorRecord } from '../lib/errors.js';
import type { PreparedPlan } from './plan.js';
import type { StepOutcome, StepStatus, TaskStatus } from './status.js';
import type { ReadyStep } from './types.js';

/**
 * What the decider reads (a task as PostgreSQL holds it, loaded under the task's lock) and what
 * it decides (the changes the ledger applies and the effects the runtime carries out). Only
 * data: src/engine/decide.ts works on it, src/ledger/ reads and writes it.
 */

/** A map step's items, counted. */
export interface ItemCounts {
  total: number;
  /** Items that have their final result (completed, or failed under on_failure continue). */
  done: number;
  failed: number;
  /** Items queued or running: at most the step's max_parallel. */
  running: number;
  /** The items are a repeat's iterations (src/engine/modifiers/repeat.ts), not a map's. */
  iterations?: true;
}

export interface StepState {
  id: string;
  status: StepStatus;
  /** Why it is skipped (SkipReason) or waiting (WaitReason). */
  reason: string | null;
  attempts: number;
  run: number;
  /** Undefined when not loaded: large outputs are read only when a step needs them. */
  output: unknown;
  error: ErrorRecord | null;
  startedAt: Date | null;
  finishedAt: Date | null;
  wakeAt: Date | null;
  /** A sub-workflow step's child task. */
  childTaskId: string | null;
  items: ItemCounts | null;
  /** The resolved input of a queued or running step, when loaded to make its job again. */
  input?: unknown;
}

/** One item of a map, as loaded when the map needs all of them (to assemble its output). */
export interface ItemState {
  item: number;
  run: number;
  status: StepStatus;
  attempts: number;
  output: unknown;
  error: ErrorRecord | null;
  startedAt: Date | null;
  /** A sub-workflow map's item: the child task it runs (kept across its task's runs). */
  childTaskId: string | null;
  input?: unknown;
}

export interface TaskState {
  id: string;
  createdAt: Date;
  taskType: string;
  status: TaskStatus;
  run: number;
  params: Record<string, unknown>;
  plan: PreparedPlan;
  /** Whether a callback_url waits for the task's end. */
  callback: boolean;
  owner: string;
  /** 0 for a task submitted by a client; a sub-workflow's child is one deeper than its parent. */
  depth: number;
  parent: { taskId: string; stepId: string } | null;
  startedAt: Date | null;
  finishedAt: Date | null;
  /** While its exit handler runs (on_exit): the status its run ended with (src/engine/exit.ts). */
  exitStatus: TaskStatus | null;
  /** An ended task's error; its result only when loaded to repair what its end left undone (or while its exit handler runs). */
  error?: ErrorRecord | null;
  result?: unknown;
  steps: Map<string, StepState>;
  /**
   * Map items, by step id then position: the ones this batch reports about, and every item of a
   * map once the decider asked for them (`allItems`).
   */
  items: Map<string, Map<number, ItemState>>;
  /** Maps whose every item is in `items`. */
  allItemsLoaded: Set<string>;
}

/** What a worker, a timer or a child task reports about a step. */
export type Report =
  | {
      type: 'result';
      taskId: string;
      run: number;
      stepId: string;
      /** A map item's position; absent for a plain step. */
      item?: number;
      status: StepOutcome;
      output?: unknown;
      error?: ErrorRecord;
      /** The attempt's number, as the step's `attempts` count them (docs/architecture.md "Words, once"). */
      attempt: number;
      /** The retry policy's try it was (1 for the first), for the history. */
      try?: number;
      /** The worker that ran it and its job's id, for the history. */
      worker?: string;
      jobId?: string;
      startedAt: Date;
      finishedAt: Date;
      /** The input it ran with: kept with the dead letter of a failure. */
      input?: unknown;
    }
  | { type: 'wake'; taskId: string; run: number; stepId: string; at: Date }
  /**
   * A wait step's signal (POST /tasks/:id/signals/:name, payload checked against its schema) or
   * an approval's decision (through its link, or as a signal): the first one recorded stands.
   */
  | {
      type: 'signal';
      taskId: string;
      run: number;
      stepId: string;
      signal: string;
      payload: unknown;
      /** Who sent it: an API key's id, or an approver's name from their link. */
      by: string;
      /** How: with a key, or through an approval link. */
      via: 'key' | 'link';
      at: Date;
    }
  /**
   * Work held back by a limit per key got its turn: a waiting step (`stepId`), a queued map item
   * (`item`) or, with no `stepId`, the whole run (a workflow's own limit).
   */
  | { type: 'admitted'; taskId: string; run: number; stepId?: string; item?: number; at: Date }
  /**
   * A tool step's service has its circuit open (src/queue/circuits.ts): the step waits (reason
   * circuit_open) without using an attempt, its job delayed until the circuit half-opens; `open`
   * false: the circuit let it through, and it is queued again (its job exists: none is made).
   */
  | { type: 'circuit'; taskId: string; run: number; stepId: string; open: boolean; at: Date }
  /**
   * A job that went missing (Redis lost it, or it was taken over and given up): a step or item
   * of an active task that was queued or running is queued again (its job made again); one of a
   * task that ended while it ran is cancelled.
   */
  | { type: 'lost'; taskId: string; run: number; stepId: string; item?: number; at: Date }
  /**
   * The tool a step calls is gone for good (its service was deleted with `?force=true`): a tool
   * step of an active task that has not finished fails at once with `error`, its job dropped.
   */
  | { type: 'withdrawn'; taskId: string; run: number; stepId: string; error: ErrorRecord; at: Date }
  | {
      type: 'child';
      taskId: string;
      stepId: string;
      childTaskId: string;
      status: 'completed' | 'failed' | 'cancelled';
      output?: unknown;
      error?: ErrorRecord;
      /** The child was never made (its params were refused, or the policy denied it): its id names no task. */
      unstarted?: true;
      at: Date;
    };

/** Fields of a step row to set; absent fields keep their value. */
export interface StepSet {
  status?: StepStatus;
  reason?: string | null;
  input?: unknown;
  output?: unknown;
  error?: ErrorRecord | null;
  attempts?: number;
  run?: number;
  queued_at?: string | null;
  started_at?: string | null;
  finished_at?: string | null;
  wake_at?: string | null;
  child_task_id?: string | null;
  items?: ItemCounts | null;
  progress?: null;
}

export interface TaskSet {
  status?: TaskStatus;
  run?: number;
  exit_status?: TaskStatus | null;
  result?: unknown;
  error?: ErrorRecord | null;
  started_at?: string | null;
  finished_at?: string | null;
}

export interface ItemSet {
  status?: StepStatus;
  run?: number;
  output?: unknown;
  error?: ErrorRecord | null;
  attempts?: number;
  started_at?: string | null;
  finished_at?: string | null;
  child_task_id?: string | null;
}

/** A map's item or a repeat's iteration, as it is stored: pending, or queued with its job, or running with its child task. */
export interface NewItem {
  item: number;
  input: unknown;
  status?: 'queued' | 'running';
  /** A sub-workflow's item started at once: its child, and when. */
  childTaskId?: string;
  startedAt?: string;
}

/**
 * A change to many items of one map at once: those in `from` move to `to` (with `run`, their
 * results cleared when `reset`), or are deleted; `start` queues the next `start` pending items
 * in list order. The ledger answers which items it moved (their jobs are made or dropped).
 */
export interface ItemSweep {
  taskId: string;
  createdAt: Date;
  stepId: string;
  from?: StepStatus[];
  to?: StepStatus;
  run?: number;
  reset?: boolean;
  delete?: boolean;
  start?: number;
}

/** A sub-workflow's child task to start (or resume, when the step had one in an earlier run). */
export interface ChildStart {
  parentTaskId: string;
  parentCreatedAt: Date;
  stepId: string;
  childTaskId: string;
  /** The child existed before this run (a retried parent): resume it instead of creating it. */
  existing: boolean;
  workflow: { name: string; version: number };
  params: Record<string, unknown>;
  depth: number;
  owner: string;
  priority?: number;
}

/**
 * A transition (docs/architecture.md "Words, once"): a task's or step's status change the engine decides (or a
 * claim makes). With `progress`, an adapter's progress report instead, its status unchanged. The
 * live stream shows each as an event (src/queue/event-log.ts); the history records transitions.
 */
export interface Transition {
  taskId: string;
  stepId?: string;
  /** The status it left (absent on progress reports). */
  from?: string;
  status: string;
  at: string;
  reason?: string;
  progress?: { percent: number; message?: string };
}

/**
 * One event of a task's durable history (docs/workflows.md "History"), stored by the ledger with the
 * decision. Every transition of the decision is one (historyEvent below); a step kind records
 * events that change no status (a signal received, an approval decided: src/tasks/waits.ts), and
 * the decider records each attempt's end. `type` is snake_case; `data` is free-form JSON.
 */
export interface HistoryEvent {
  taskId: string;
  /** The task's created_at (its partition). */
  createdAt: Date;
  /** The task's run when it happened. */
  run: number;
  stepId?: string;
  item?: number;
  type: string;
  /** The attempt's number (as the step's `attempts`), for an attempt's events. */
  attempt?: number;
  at: string;
  data?: Record<string, unknown>;
}

/**
 * A transition as a history event: `task_<status>` or `step_<status>` with from, to and the
 * reason; a resumed task is `task_resumed`, a task's start `task_started`, and a step leaving
 * `waiting` for anything but its end by cancellation `step_woken` (with the status it went to
 * and why it had waited). Generic over step kinds: a new kind's transitions need no code here.
 */
export function historyEvent(transition: Transition, task: { run: number; createdAt: Date }): HistoryEvent {
  const { taskId, stepId, from, status, at, reason } = transition;
  let type: string;
  if (stepId === undefined) {
    type = status === 'running' ? 'task_started' : status === 'queued' && (from === 'failed' || from === 'cancelled') ? 'task_resumed' : `task_${status}`;
  } else {
    type = from === 'waiting' && status !== 'cancelled' && status !== 'waiting' ? 'step_woken' : `step_${status}`;
  }
  // Built without a spread before other keys, which is slow on Node 20 (see freshState in decide.ts):
  // every transition of every task makes one.
  const data: Record<string, unknown> = from !== undefined ? { from, to: status } : { to: status };
  if (reason !== undefined) data.reason = reason;
  const event: HistoryEvent = { taskId, createdAt: task.createdAt, run: task.run, type, at, data };
  if (stepId !== undefined) event.stepId = stepId;
  return event;
}

/** A job no longer wanted: its step was skipped or cancelled before it started. */
export interface JobRef {
  taskId: string;
  run: number;
  stepId: string;
  item?: number;
  /** The tool queue of a step's job; absent for a sleep's timer. */
  tool?: string;
  /**
   * The step is running: its job is dropped only if it waits out a retry's backoff, and then the
   * step is settled (reported lost, hence cancelled, its task having ended).
   */
  running?: true;
}

export interface DeadLetterRow {
  taskId: string;
  createdAt: Date;
  stepId: string;
  run: number;
  tool: string;
  input: unknown;
  error: ErrorRecord;
  attempts: number;
}

/** Data the decider lacks: load it and decide again. */
export interface Needs {
  /** Outputs too large to be loaded with the task, by task id. */
  outputs: { taskId: string; stepId: string }[];
  /** Every item of these maps. */
  items: { taskId: string; stepId: string }[];
}

export interface Decision {
  /** Per report given: whether it was recorded (false: a duplicate, or its run or task has moved on). */
  recorded: boolean[];
  tasks: { taskId: string; createdAt: Date; set: TaskSet }[];
  steps: { taskId: string; createdAt: Date; stepId: string; set: StepSet }[];
  /** A map's items, stored when it starts: pending, or queued for the first max_parallel. */
  newItems: (NewItem & { taskId: string; createdAt: Date; stepId: string; run: number })[];
  items: { taskId: string; createdAt: Date; stepId: string; item: number; set: ItemSet }[];
  sweeps: ItemSweep[];
  deadLetters: DeadLetterRow[];
  /** Tool steps to enqueue (items are enqueued from what the ledger answers for `start` sweeps). */
  jobs: ReadyStep[];
  timers: { taskId: string; run: number; stepId: string; at: Date }[];
  children: ChildStart[];
  /** Active child tasks to cancel: their parent ended. */
  cancelChildren: string[];
  /** Runs whose running steps workers are told to abort: a terminate step ended them. */
  stops: { taskId: string; run: number; spare?: string[] }[];
  /** What ended child tasks report to their parents' steps. */
  parentReports: Report[];
  dropJobs: JobRef[];
  transitions: Transition[];
  /**
   * The tasks' history (HistoryEvent): every transition above, in order, with the events that
   * are not status changes between them. The ledger stores it with the changes (TASK_HISTORY).
   */
  history: HistoryEvent[];
  /** Tasks that ended: their callbacks, metrics and waiting clients. */
  ended: { taskId: string; run: number; status: TaskStatus; taskType: string; createdAt: Date; callback: boolean }[];
  needs?: Needs;
}

export function emptyDecision(): Decision {
  return {
    recorded: [],
    tasks: [],
    steps: [],
    newItems: [],
    items: [],
    sweeps: [],
    deadLetters: [],
    jobs: [],
    timers: [],
    children: [],
    cancelChildren: [],
    stops: [],
    parentReports: [],
    dropJobs: [],
    transitions: [],
    history: [],
    ended: [],
  };
}
