import { z } from 'zod';
import { TASK_STATUSES } from '../engine/status.js';
import { parameterSchema, workflowDefinitionSchema } from '../workflows/definition.js';
import { retryPolicySchema } from './schemas.js';

/**
 * Response shapes, one place for every body the API sends. The API description
 * (src/api/openapi.ts) is generated from these, and the functions that build the bodies
 * (taskView, describeTool, workflowView, ...) return their inferred types.
 */

export const timestamp = z.iso.datetime().meta({ description: 'ISO 8601 date and time, UTC.' });

const count = z.int().min(0);

// Errors

export const problemSchema = z
  .object({
    path: z.string().meta({ description: 'JSON path of the offending value, e.g. `params.batch_ids[2]`.' }),
    message: z.string(),
  })
  .meta({ description: 'One reason a request was refused.' });

export const errorBodySchema = z
  .object({
    error: z.object({
      code: z.string().meta({ description: 'Stable, snake_case: what went wrong, for programs.' }),
      message: z.string().meta({ description: 'What went wrong, for people.' }),
      details: z.unknown().optional().meta({ description: 'More about the error; its shape depends on the code.' }),
    }),
  })
  .meta({ description: 'Every error the API answers has this body.' });

export const validationErrorBodySchema = z
  .object({
    error: z.object({
      code: z.string().meta({ description: '`validation_error`, `invalid_params`, `invalid_workflow`, `invalid_json`, ...' }),
      message: z.string(),
      details: z.array(problemSchema).optional().meta({ description: 'One entry per problem (absent when the body is not JSON at all).' }),
    }),
  })
  .meta({ description: 'A request that does not fit the contract.' });

export type ErrorBody = z.infer<typeof errorBodySchema>;

// Tasks

export const taskStatus = z.enum(TASK_STATUSES);
export const stepStatus = z.enum(['pending', 'queued', 'running', 'completed', 'failed', 'skipped', 'cancelled']);

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

export const assignedSchema = z.object({
  task_id: z.uuid(),
  status: z.literal('assigned'),
  message: z.string(),
  timestamp,
});
export type AssignedBody = z.infer<typeof assignedSchema>;

export const stepViewSchema = z.object({
  id: z.string(),
  tool: z.string(),
  status: stepStatus,
  attempts: count,
  depends_on: z.array(z.string()),
  started_at: timestamp.nullable(),
  finished_at: timestamp.nullable(),
  duration_ms: count.nullable(),
  progress: z
    .object({ percent: z.number().min(0).max(100), message: z.string().optional() })
    .optional()
    .meta({ description: "The adapter's last progress report." }),
  output: z.unknown().optional().meta({ description: "The tool's output (completed steps)." }),
  error: errorRecordSchema.optional(),
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
        event: z.string().meta({ description: '`task.completed`, `task.failed` or `task.cancelled`.' }),
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
  error_message: z
    .string()
    .optional()
    .meta({
      description:
        'Present with `error`: the same in one line of text, for clients that print it: the failing step, its tool and attempts, then the error\'s name and message (`step fetch (http, 3 attempts) failed: ToolTimeoutError: step timed out after 30000 ms`). Meant for people; programs read `error`.',
    }),
  progress: z.object({
    completed: count.meta({ description: 'Steps that have finished, whatever their outcome.' }),
    total: count,
  }),
  run: z.int().min(1).meta({ description: '1, plus one for every retry of the task.' }),
  steps: z.array(stepViewSchema),
  callback: callbackSchema.optional(),
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
  created_at: timestamp,
  started_at: timestamp.nullable(),
  finished_at: timestamp.nullable(),
});
export type TaskSummaryBody = z.infer<typeof taskSummarySchema>;

const nextCursor = z.string().nullable().meta({ description: 'Pass as `cursor` for the next page; null on the last page.' });

export const taskListSchema = z.object({ items: z.array(taskSummarySchema), next_cursor: nextCursor });

export const taskCancelledSchema = z.object({
  task_id: z.uuid(),
  status: z.literal('cancelled'),
  message: z.string(),
  timestamp,
});

export const taskResumedSchema = z.object({
  task_id: z.uuid(),
  status: z.literal('queued'),
  run: z.int().min(2),
  message: z.string(),
  timestamp,
});

/** One event of GET /tasks/:id/events (the SSE `data:`; its `id:` is the event id). */
export const taskStreamEventSchema = z
  .object({
    type: z.enum(['task', 'step', 'progress']),
    task_id: z.uuid(),
    step_id: z.string().optional(),
    status: z.string().optional(),
    percent: z.number().min(0).max(100).optional(),
    message: z.string().optional(),
    at: timestamp,
  })
  .meta({ description: 'A task or step transition, or a progress report, as sent in the event stream.' });

/**
 * One message of GET /tasks/:id/events as its `id:`, `event:` and `data:` lines carry it. OpenAPI
 * 3.1 has no way to describe a stream's items, so the stream's schema is that of one message.
 */
export const taskStreamMessageSchema = z
  .object({
    id: z.string().optional().meta({ description: 'The `id:` line, e.g. `1795372253145-0`: send it back as Last-Event-ID to resume. Absent on `shutdown`.' }),
    event: z.enum(['snapshot', 'task', 'step', 'progress', 'reconnect', 'shutdown']).meta({ description: 'The `event:` line.' }),
    data: z
      .union([
        taskViewSchema,
        taskStreamEventSchema,
        z.object({ reason: z.string(), message: z.string() }),
        z.object({ message: z.string() }),
      ])
      .meta({
        description:
          'The `data:` line, one line of JSON: the task (`TaskView`) for `snapshot`; a `TaskStreamEvent` for `task`, `step` and `progress`; `{reason, message}` for `reconnect`; `{message}` for `shutdown`.',
      }),
  })
  .meta({ description: 'One event of the stream; the stream is a sequence of them, each ended by a blank line.' });

// Tools

export const toolSchema = z.object({
  name: z.string(),
  description: z.string(),
  input_schema: z.record(z.string(), z.unknown()).meta({ description: 'JSON Schema of what the tool accepts (params of a one-step task, input of a workflow step).' }),
  output_schema: z.record(z.string(), z.unknown()).meta({ description: 'JSON Schema of what the tool returns.' }),
  retry: retryPolicySchema,
  timeout_ms: z.int().min(1),
  rate_limit: z.object({ max: z.int().min(1), duration_ms: z.int().min(1) }).nullable(),
  concurrency: z.int().min(1).nullable(),
});
export type ToolBody = z.infer<typeof toolSchema>;

export const toolListSchema = z.object({ tools: z.array(toolSchema) });

// Workflows

export const storedWorkflowSchema = workflowDefinitionSchema
  .extend({
    version: z.int().min(1),
    created_at: timestamp,
    archived_at: timestamp.nullable(),
  })
  .meta({ description: 'A stored version of a workflow definition, with its defaults filled in.' });
export type StoredWorkflowBody = z.infer<typeof storedWorkflowSchema>;

export const workflowSummarySchema = z.object({
  name: z.string(),
  version: z.int().min(1).meta({ description: 'The current version.' }),
  description: z.string().nullable(),
  parameters: z.array(parameterSchema),
  steps: count.meta({ description: 'How many steps the current version has.' }),
  created_at: timestamp,
});
export type WorkflowSummaryBody = z.infer<typeof workflowSummarySchema>;

export const workflowListSchema = z.object({ workflows: z.array(workflowSummarySchema) });

export const workflowVersionSchema = z.object({
  version: z.int().min(1),
  description: z.string().nullable(),
  created_at: timestamp,
  archived_at: timestamp.nullable(),
});
export type WorkflowVersionBody = z.infer<typeof workflowVersionSchema>;

export const workflowVersionsSchema = z.object({ name: z.string(), versions: z.array(workflowVersionSchema) });

export const workflowArchivedSchema = z.object({
  name: z.string(),
  archived: z.literal(true),
  versions: z.int().min(1).meta({ description: 'Versions archived (all of them; they stay readable with ?version=N).' }),
  message: z.string(),
});

// Dead letters

export const deadLetterSchema = z.object({
  id: z.uuid(),
  task_id: z.uuid(),
  step_id: z.string(),
  run: z.int().min(1),
  tool: z.string(),
  input: z.unknown().meta({ description: 'The input the step received (null when it failed before receiving one).' }),
  error: errorRecordSchema,
  attempts: count,
  created_at: timestamp,
  replayed_at: timestamp.nullable(),
});

export const deadLetterListSchema = z.object({ items: z.array(deadLetterSchema), next_cursor: nextCursor });

export const deadLetterReplayedSchema = taskResumedSchema.extend({ dead_letter_id: z.uuid() });

// Statistics

const percentilesSchema = z
  .object({ p50: z.number().nullable(), p90: z.number().nullable(), p99: z.number().nullable(), max: z.number().nullable() })
  .meta({ description: 'Durations in milliseconds, of finished tasks or steps only; null when none finished.' });

const byStatus = z.record(z.string(), count).meta({ description: 'How many, by status.' });

export const statsSchema = z.object({
  window: z.object({ from: timestamp, to: timestamp }),
  tasks: z.object({
    total: count,
    by_status: byStatus,
    by_type: z.array(z.object({ task_type: z.string(), total: count, by_status: byStatus, duration_ms: percentilesSchema })),
  }),
  steps: z.object({
    by_tool: z.array(z.object({ tool: z.string(), total: count, by_status: byStatus, duration_ms: percentilesSchema })),
  }),
  timestamp,
});

// System

const up = z.enum(['up', 'down']);
export const dependencyChecksSchema = z.object({ redis: up, database: up });

export const serviceInfoSchema = z.object({
  name: z.string(),
  version: z.string(),
  uptime_s: count,
  links: z.record(z.string(), z.string()).meta({ description: 'Where to go next, by name.' }),
});

export const healthSchema = z.object({
  status: z.enum(['ok', 'degraded']).meta({ description: '`degraded` while Redis or PostgreSQL does not answer; the process itself is alive.' }),
  uptime_s: count,
  checks: dependencyChecksSchema,
  timestamp,
});

export const readySchema = z.object({ ready: z.literal(true), checks: dependencyChecksSchema });

export const notReadySchema = z.object({
  error: z.object({
    code: z.literal('not_ready'),
    message: z.string(),
    details: z.object({ checks: dependencyChecksSchema }),
  }),
});
