import { z } from 'zod';
import { compensationOf } from '../engine/modifiers/compensate.js';
import { KINDS, STEP_KINDS } from '../engine/registry.js';
import type { ItemCounts } from '../engine/state.js';
import { STEP_STATUSES, TASK_STATUSES, WAIT_REASONS, type WaitReason } from '../engine/status.js';
import type { CallbackDelivery, HistoryEvent, Step, Task } from '../generated/prisma/client.js';

/**
 * A task as clients see it (GET /result, the event stream's snapshot, completion callbacks): its
 * schema, from which the API description is generated, and the functions that build it.
 */

export const timestamp = z.iso.datetime().meta({ description: 'ISO 8601 date and time, UTC.' });

const count = z.int().min(0);

export const taskStatus = z.enum(TASK_STATUSES);
export const stepStatus = z.enum(STEP_STATUSES);

export const errorRecordSchema = z
  .looseObject({
    name: z.string(),
    message: z.string(),
    retryable: z.boolean().optional(),
    details: z.unknown().optional(),
    step: z.string().optional().meta({ description: 'On a task: the step whose failure failed it.' }),
  })
  .meta({ description: 'Why a step or task failed, as recorded.' });

const workflowRef = z
  .object({ name: z.string(), version: z.int().min(1).nullable() })
  .meta({ description: 'Present on tasks that run a workflow: the name and the version the task runs.' });

export const itemCountsSchema = z
  .object({
    total: count,
    done: count.meta({ description: 'Items with their final result (completed, or failed under on_failure continue).' }),
    failed: count,
    running: count.meta({ description: 'Items queued or running now (at most max_parallel).' }),
  })
  .meta({ description: 'A for_each step: its items, counted. GET /tasks/{task_id}/steps/{step_id}/items lists them.' });

export const waitingForSchema = z
  .object({
    signal: z.string().meta({ description: 'Send it with POST /tasks/{task_id}/signals/{signal} (an approval: its decision).' }),
    timeout_at: timestamp.optional(),
    approval: z
      .object({
        approvers: z.array(z.string()),
        links: z
          .array(z.object({ approver: z.string().nullable(), url: z.string(), expires_at: timestamp }))
          .optional()
          .meta({
            description:
              'Signed, single-use links to the approval page, one per approver (one for anyone without approvers). Shown only to admin keys (and in the task.waiting callback), who hand them to their approvers: a link decides for its approver, so the submitter never sees one. Empty when the server makes none (production without APPROVAL_SECRET or CALLBACK_SECRET).',
          }),
      })
      .optional(),
  })
  .meta({ description: 'A wait step waiting for someone: the signal it takes and, for an approval, its links.' });

export const stepViewSchema = z.object({
  id: z.string(),
  kind: z.enum(STEP_KINDS).meta({ description: `${STEP_KINDS.map((kind) => `${kind}: ${KINDS[kind].summary}`).join('; ')}.` }),
  tool: z.string().nullable().meta({ description: 'The tool a tool step runs; null for the other kinds.' }),
  status: stepStatus,
  reason: z.string().optional().meta({
    description:
      "Why a step is skipped (`condition`, `branch_not_taken`, `task_failed`; a compensation with nothing to undo: `not_needed`) or waiting (`sleep`, `signal`, `approval`, its turn under a limit per key: `concurrency`, `rate_limit`, or its service's circuit breaker to half-open: `circuit_open`).",
  }),
  attempts: count,
  last_attempts: z
    .array(
      z.object({
        attempt: count.meta({ description: "The step's delivery count at this attempt (as `attempts`)." }),
        try: z.int().min(1).optional().meta({ description: "The retry policy's try (1 for the first)." }),
        status: z.string().meta({ description: '`completed`, `failed` or `cancelled`.' }),
        error: errorRecordSchema.optional(),
        duration_ms: count.nullable(),
        will_retry: z.boolean(),
        ended_at: timestamp,
      }),
    )
    .optional()
    .meta({
      description:
        "The step's last ended attempts in this run, newest first (at most 3), each with its error and duration, from its history (GET /tasks/{task_id}/history has them all). Absent when none is recorded (TASK_HISTORY off, or not run yet).",
    }),
  depends_on: z.array(z.string()),
  started_at: timestamp.nullable(),
  finished_at: timestamp.nullable(),
  duration_ms: count.nullable(),
  progress: z
    .object({ percent: z.number().min(0).max(100), message: z.string().optional() })
    .optional()
    .meta({ description: "The adapter's last progress report." }),
  input: z.unknown().optional().meta({ description: "The input it ran with, its templates resolved (a sub-workflow: its child's params)." }),
  output: z.unknown().optional().meta({ description: "The step's output (completed steps): a map's is the list of its items' outputs." }),
  error: errorRecordSchema.optional(),
  wake_at: timestamp.optional().meta({ description: 'A sleeping step: when it wakes; a wait step: when it times out.' }),
  waiting_for: waitingForSchema.optional(),
  items: itemCountsSchema.optional(),
  iterations: count.optional().meta({
    description: 'A repeat step: how many iterations it has run or is running (each one of its items, GET /tasks/{task_id}/steps/{step_id}/items).',
  }),
  child_task_id: z.uuid().optional().meta({ description: 'A sub-workflow step: its child task (GET /result/{child_task_id}).' }),
  compensation_of: z.string().optional().meta({
    description: 'A compensation (`<step>.compensate`): the step it undoes. It runs only when the task fails after that step completed.',
  }),
});
export type StepViewBody = z.infer<typeof stepViewSchema>;

export const callbackSchema = z
  .object({
    url: z.string(),
    delivered: z.boolean().meta({ description: 'Whether any attempt was answered with a 2xx.' }),
    deliveries: z.array(
      z.object({
        attempt: z.int().min(1),
        run: z.int().min(1),
        event: z.string().meta({
          description: '`task.completed`, `task.failed` or `task.cancelled`; `task.waiting` when a step started waiting for a signal or an approval.',
        }),
        status_code: z.int().nullable().meta({ description: "The receiver's HTTP status; null when it could not be reached." }),
        error: z.string().nullable(),
        delivered: z.boolean(),
        will_retry: z.boolean().meta({ description: 'Whether another attempt follows this failed one; false on the last attempt.' }),
        duration_ms: count,
        at: timestamp,
      }),
    ),
  })
  .meta({ description: 'Present when the task was submitted with a callback_url: every delivery attempt of its final result.' });

export const taskViewSchema = z.object({
  task_id: z.uuid(),
  task_type: z.string(),
  workflow: workflowRef.optional(),
  status: taskStatus,
  result: z.unknown().optional().meta({ description: 'The final result (completed tasks).' }),
  error: errorRecordSchema.optional().meta({ description: 'Why the task failed or was cancelled. `step` names the step whose failure failed it.' }),
  error_message: z.string().optional().meta({
    description:
      "Present with `error`: the same in one line of text, for clients that print it: the failing step, its tool and attempts, then the error's name and message (`step fetch (http, 3 attempts) failed: ToolTimeoutError: step timed out after 30000 ms`). Meant for people; programs read `error`.",
  }),
  progress: z.object({
    completed: count.meta({ description: 'Steps that have finished, whatever their outcome.' }),
    total: count,
  }),
  run: z.int().min(1).meta({ description: '1, plus one for every retry of the task.' }),
  compensated: z
    .union([z.literal(true), z.literal('partial')])
    .optional()
    .meta({
      description:
        'A task that failed after steps with `compensate` completed: true when every compensation completed, `partial` when one failed or was cancelled (its dead letter says why). A retry then starts over.',
    }),
  compensating: z
    .literal(true)
    .optional()
    .meta({ description: 'The task failed (`error` says why) and runs its compensations; it ends `failed` once they are done.' }),
  parent: z
    .object({ task_id: z.uuid(), step_id: z.string() })
    .optional()
    .meta({ description: "A sub-workflow's child task: its parent task and the step that awaits it." }),
  steps: z.array(stepViewSchema),
  callback: callbackSchema.optional(),
  params: z
    .record(z.string(), z.unknown())
    .optional()
    .meta({ description: 'What the task was submitted with: only with `?include=params` (GET /result/{task_id}).' }),
  schedule: z
    .object({ name: z.string(), tick_at: timestamp })
    .optional()
    .meta({ description: 'A task a schedule made: the schedule and the tick it was made for (GET /schedules/{name}).' }),
  created_at: timestamp,
  started_at: timestamp.nullable(),
  finished_at: timestamp.nullable(),
  timestamp,
});
export type TaskViewBody = z.infer<typeof taskViewSchema>;

export const taskSummarySchema = z.object({
  task_id: z.uuid(),
  task_type: z.string(),
  workflow: workflowRef.optional(),
  status: taskStatus,
  steps_total: count,
  parent_task_id: z.uuid().optional().meta({ description: "A sub-workflow's child task: its parent." }),
  waiting_for: z
    .array(
      z.object({
        step_id: z.string(),
        reason: z.enum(WAIT_REASONS),
        timeout_at: timestamp.optional().meta({ description: 'A signal or an approval: when the wait times out; a sleep: when it wakes.' }),
      }),
    )
    .optional()
    .meta({
      description:
        'With `status=waiting`: the steps that wait for someone (GET /result shows their signals and approval links), or for one of `waiting_reason`.',
    }),
  created_at: timestamp,
  started_at: timestamp.nullable(),
  finished_at: timestamp.nullable(),
});
export type TaskSummaryBody = z.infer<typeof taskSummarySchema>;

const FINISHED_STEP = new Set(['completed', 'failed', 'skipped', 'cancelled']);

function iso(date: Date | null): string | null {
  return date ? date.toISOString() : null;
}

/** How many of a step's last attempts GET /result shows. */
export const LAST_ATTEMPTS = 3;

type AttemptView = NonNullable<StepViewBody['last_attempts']>[number];

/** The last LAST_ATTEMPTS ended attempts of each step in `run`, newest first, from its history's attempt_ended events (newest first). */
function lastAttempts(events: readonly Pick<HistoryEvent, 'stepId' | 'run' | 'attempt' | 'at' | 'data'>[], run: number): Map<string, AttemptView[]> {
  const byStep = new Map<string, AttemptView[]>();
  for (const event of events) {
    if (event.run !== run || event.stepId === null) continue;
    const list = byStep.get(event.stepId) ?? [];
    if (list.length >= LAST_ATTEMPTS) continue;
    const data = (event.data ?? {}) as { status?: string; try?: number; error?: AttemptView['error']; duration_ms?: number; will_retry?: boolean };
    list.push({
      attempt: event.attempt ?? 0,
      ...(data.try !== undefined ? { try: data.try } : {}),
      status: data.status ?? 'failed',
      ...(data.error ? { error: data.error } : {}),
      duration_ms: data.duration_ms ?? null,
      will_retry: data.will_retry === true,
      ended_at: event.at.toISOString(),
    });
    byStep.set(event.stepId, list);
  }
  return byStep;
}

export function stepView(step: Step, attempts?: AttemptView[]): StepViewBody {
  return {
    id: step.stepId,
    kind: step.kind as StepViewBody['kind'],
    tool: step.tool,
    status: step.status,
    ...(step.reason !== null ? { reason: step.reason } : {}),
    attempts: step.attempts,
    ...(attempts && attempts.length > 0 ? { last_attempts: attempts } : {}),
    depends_on: step.dependsOn,
    started_at: iso(step.startedAt),
    finished_at: iso(step.finishedAt),
    duration_ms: step.startedAt && step.finishedAt ? step.finishedAt.getTime() - step.startedAt.getTime() : null,
    ...(step.progress !== null ? { progress: step.progress as StepViewBody['progress'] } : {}),
    ...(step.input !== null ? { input: step.input } : {}),
    ...(step.output !== null ? { output: step.output } : {}),
    ...(step.error !== null ? { error: step.error as StepViewBody['error'] } : {}),
    ...(step.wakeAt !== null && step.status === 'waiting' ? { wake_at: step.wakeAt.toISOString() } : {}),
    ...itemsView(step.items as ItemCounts | null),
    ...(step.childTaskId !== null ? { child_task_id: step.childTaskId } : {}),
    ...(compensationOf(step.stepId) !== undefined ? { compensation_of: compensationOf(step.stepId) } : {}),
  };
}

/** A map's items counted; a repeat's too, with how many iterations it ran. */
function itemsView(items: ItemCounts | null): Pick<StepViewBody, 'items' | 'iterations'> {
  if (items === null) return {};
  const { iterations, ...counts } = items;
  return { items: counts, ...(iterations ? { iterations: counts.total } : {}) };
}

/** Whether a failed task's compensations ran, and how they ended (docs/tools-and-workers.md "Compensation (sagas)"). */
function compensationView(
  task: Pick<Task, 'status' | 'error'> & { steps: Pick<Step, 'stepId' | 'status'>[] },
): Pick<TaskViewBody, 'compensated' | 'compensating'> {
  // Only a compensating task runs with its error recorded (src/engine/decide.ts).
  if (task.status === 'running' && task.error !== null) return { compensating: true };
  const ran = task.steps.filter((step) => compensationOf(step.stepId) !== undefined && step.status !== 'pending' && step.status !== 'skipped');
  if (ran.length === 0 || task.status === 'completed') return {};
  return { compensated: ran.every((step) => step.status === 'completed') ? true : 'partial' };
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

/** `waitingFor`: what a step waiting on someone waits for (src/tasks/waits.ts). */
export function taskView(
  task: Task & { steps: Step[]; callbacks?: CallbackDelivery[]; events?: Pick<HistoryEvent, 'stepId' | 'run' | 'attempt' | 'at' | 'data'>[] },
  waitingFor?: (step: Step) => StepViewBody['waiting_for'],
): TaskViewBody {
  const attempts = task.events ? lastAttempts(task.events, task.run) : undefined;
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
    ...compensationView(task),
    ...(task.parentTaskId && task.parentStepId ? { parent: { task_id: task.parentTaskId, step_id: task.parentStepId } } : {}),
    steps: task.steps.map((step) => {
      const view = stepView(step, attempts?.get(step.stepId));
      const waiting = waitingFor?.(step);
      return waiting ? { ...view, waiting_for: waiting } : view;
    }),
    ...(task.callbackUrl ? { callback: callbackView(task.callbackUrl, task.callbacks ?? []) } : {}),
    created_at: task.createdAt.toISOString(),
    started_at: iso(task.startedAt),
    finished_at: iso(task.finishedAt),
    timestamp: new Date().toISOString(),
  };
}

export function taskSummary(
  task: Pick<
    Task,
    'id' | 'taskType' | 'status' | 'createdAt' | 'startedAt' | 'finishedAt' | 'stepsTotal' | 'workflowName' | 'workflowVersion' | 'parentTaskId'
  > & { steps?: Pick<Step, 'stepId' | 'reason' | 'wakeAt'>[] },
): TaskSummaryBody {
  return {
    task_id: task.id,
    task_type: task.taskType,
    ...(task.workflowName ? { workflow: { name: task.workflowName, version: task.workflowVersion } } : {}),
    status: task.status,
    steps_total: task.stepsTotal,
    ...(task.parentTaskId ? { parent_task_id: task.parentTaskId } : {}),
    ...(task.steps && task.steps.length > 0
      ? {
          waiting_for: task.steps.map((step) => ({
            step_id: step.stepId,
            reason: step.reason as WaitReason,
            ...(step.wakeAt ? { timeout_at: step.wakeAt.toISOString() } : {}),
          })),
        }
      : {}),
    created_at: task.createdAt.toISOString(),
    started_at: iso(task.startedAt),
    finished_at: iso(task.finishedAt),
  };
}
