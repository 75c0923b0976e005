import { z } from 'zod';
import { parameterSchema, retryPolicySchema, workflowDefinitionSchema } from '../engine/workflow-definition.js';
import { OVERLAP_POLICIES } from '../schedules/decide-ticks.js';
import { errorRecordSchema, stepStatus, taskStatus, taskSummarySchema, taskViewSchema, timestamp, waitingForSchema } from '../tasks/task-view.js';

/**
 * Response shapes, one place for every body the API sends. The API description
 * (src/api/openapi.ts) is generated from these, and the functions that build the bodies
 * (describeTool, workflowView, ...) return their inferred types. The task as clients see it is
 * in src/tasks/task-view.ts: the workers send it in callbacks too.
 */

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

export const assignedSchema = z.object({
  task_id: z.uuid(),
  status: z.literal('assigned'),
  message: z.string(),
  timestamp,
});
export type AssignedBody = z.infer<typeof assignedSchema>;

/** A run of a workflow accepted: as a task assigned, with seed 001's names for the task and the workflow besides. */
export const executedSchema = assignedSchema.extend({
  execution_id: z.uuid().meta({ description: "The task id, by seed 001's name (GET /workflows/executions/{execution_id})." }),
  workflow_id: z.string().meta({ description: 'The workflow run (its id, when the path named its display name).' }),
});

const nextCursor = z.string().nullable().meta({ description: 'Pass as `cursor` for the next page; null on the last page.' });

export const taskListSchema = z.object({ items: z.array(taskSummarySchema), next_cursor: nextCursor });

export const taskCancelledSchema = z.object({
  task_id: z.uuid(),
  status: z.literal('cancelled'),
  message: z.string(),
  timestamp,
});

export const signalRecordedSchema = z.object({
  task_id: z.uuid(),
  step_id: z.string().meta({ description: 'The wait step that took the signal: it completed, its output the payload (an approval: the decision).' }),
  signal: z.string(),
  status: z.literal('recorded'),
  timestamp,
});

export const signalBufferedSchema = z.object({
  task_id: z.uuid(),
  step_id: z.string().meta({ description: 'The wait step that keeps the signal: it takes it when it starts waiting, checked against its schema then.' }),
  signal: z.string(),
  status: z.literal('buffered'),
  timestamp,
});

export const taskResumedSchema = z.object({
  task_id: z.uuid(),
  status: z.literal('queued'),
  run: z.int().min(2),
  message: z.string(),
  timestamp,
});

/** One item of a for_each step (GET /tasks/{task_id}/steps/{step_id}/items). */
export const stepItemSchema = z.object({
  item: z.int().min(0).meta({ description: "The item's place in the step's list, from 0." }),
  status: stepStatus,
  attempts: z.int().min(0),
  run: z.int().min(1),
  input: z.unknown().optional().meta({ description: "The item's input, its templates resolved ({{item}}, {{index}})." }),
  output: z.unknown().optional(),
  error: errorRecordSchema.optional(),
  started_at: timestamp.nullable(),
  finished_at: timestamp.nullable(),
  duration_ms: z.int().min(0).nullable(),
  child_task_id: z.uuid().optional().meta({ description: "A sub-workflow step's item: the child task it runs (GET /result/{task_id})." }),
});

export const stepItemListSchema = z.object({
  task_id: z.uuid(),
  step_id: z.string(),
  items: z.array(stepItemSchema),
  next_cursor: nextCursor,
});

/** One event of a task's durable history (GET /tasks/:id/history; docs/workflows.md "History"). */
export const historyEventSchema = z
  .object({
    seq: z.int().min(1).meta({ description: "The event's place: increasing in the order of the task's changes." }),
    type: z.string().meta({
      description:
        '`submitted`; `task_<status>` (`task_started`, `task_completed`, `task_failed`, `task_cancelled`) and `task_resumed`; `step_<status>` (`step_queued`, `step_running`, `step_waiting`, `step_skipped`, ...) and `step_woken`; `attempt_started`, `attempt_ended`, `retried`; `callback_delivered`, `callback_failed`; and what step kinds record (`signal_received`, `approval_decided`).',
    }),
    at: timestamp,
    run: z.int().min(1),
    step_id: z.string().optional(),
    item: z.int().min(0).optional().meta({ description: "A for_each step's item." }),
    attempt: z.int().min(0).optional().meta({ description: "An attempt's events: the step's delivery count (as the step's `attempts`)." }),
    data: z.record(z.string(), z.unknown()).optional().meta({
      description:
        'What the event says: a status change its `from`, `to` and `reason`; an attempt its `try`, `delivery`, `worker`, `job_id`, and at its end `status`, `error`, `duration_ms`, `will_retry`; a retry its `delay_ms`.',
    }),
  })
  .meta({ description: 'One event of a task history.' });

export const taskHistorySchema = z.object({
  task_id: z.uuid(),
  events: z.array(historyEventSchema),
  next_cursor: z.string().nullable().meta({ description: 'Pass as `after` for the next page; null on the last page.' }),
});

/** One event of GET /tasks/:id/events (the SSE `data:`; its `id:` is the event id). */
export const taskStreamEventSchema = z
  .object({
    type: z.enum(['task', 'step', 'progress']),
    task_id: z.uuid(),
    step_id: z.string().optional(),
    status: z.string().optional(),
    reason: z.string().optional().meta({ description: 'Why a step is skipped or waiting (as in GET /result).' }),
    waiting_for: waitingForSchema
      .optional()
      .meta({ description: 'A step that starts waiting for a signal or an approval: what it waits for (its approval links), as in GET /result.' }),
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
    data: z.union([taskViewSchema, taskStreamEventSchema, z.object({ reason: z.string(), message: z.string() }), z.object({ message: z.string() })]).meta({
      description:
        'The `data:` line, one line of JSON: the task (`TaskView`) for `snapshot`; a `TaskStreamEvent` for `task`, `step` and `progress`; `{reason, message}` for `reconnect`; `{message}` for `shutdown`.',
    }),
  })
  .meta({ description: 'One event of the stream; the stream is a sequence of them, each ended by a blank line.' });

// Tools

export const toolSchema = z.object({
  name: z.string(),
  description: z.string(),
  input_schema: z
    .record(z.string(), z.unknown())
    .meta({ description: 'JSON Schema of what the tool accepts (params of a one-step task, input of a workflow step).' }),
  output_schema: z.record(z.string(), z.unknown()).meta({ description: 'JSON Schema of what the tool returns.' }),
  retry: retryPolicySchema,
  timeout_ms: z.int().min(1),
  rate_limit: z.object({ max: z.int().min(1), duration_ms: z.int().min(1) }).nullable(),
  concurrency: z.int().min(1).nullable(),
  fleet: z
    .object({ version: z.int().min(1), live_workers: z.int().min(0) })
    .optional()
    .meta({
      description:
        "A tool that workers registered (/workers): users' own, and the built-in worker's six in a deployment. Its version, and how many live workers serve it now (0: its tasks queue until one returns). Absent for services' operations and for tools handed to a process in code (an embedded service, the tests' harness).",
    }),
});
export type ToolBody = z.infer<typeof toolSchema>;

export const stepLogsSchema = z.object({
  task_id: z.string(),
  step_id: z.string(),
  attempts: z.array(
    z.object({
      run: z.int(),
      item: z.int().optional().meta({ description: "A map's item: its own attempts." }),
      attempt: z.int(),
      try: z.int().optional(),
      at: z.string().meta({ description: 'When the attempt ended.' }),
      lines: z.array(z.object({ at: z.string(), level: z.string(), message: z.string(), fields: z.unknown().optional() })),
      dropped: z.int().min(0).meta({ description: 'Lines past 200 or 64 kB, not kept.' }),
    }),
  ),
});

export const toolListSchema = z.object({ tools: z.array(toolSchema) });

// Workflows

/** What a workflow carries besides its definition; `workflow_id` and `status` are seed 001's words for its name and state. */
const workflowMetadata = {
  workflow_id: z.string().meta({ description: 'Its id, the same as `name` (seed 001 reads `workflow_id`).' }),
  display_name: z.string().nullable().meta({
    description: 'The name it was posted under when that is not an id (it has spaces; the id is its slug): GET /workflows/{display name} finds it too.',
  }),
  tags: z.array(z.string()),
  created_by: z.string().nullable().meta({ description: 'The key that stored its first version; null without authentication.' }),
  status: z.enum(['active', 'archived']),
};

export const storedWorkflowSchema = workflowDefinitionSchema
  .extend({
    version: z.int().min(1),
    created_at: timestamp,
    archived_at: timestamp.nullable(),
    ...workflowMetadata,
    actions: z
      .array(z.unknown())
      .optional()
      .meta({ description: "A workflow posted in seed 001's format: its actions as posted (`steps` are what they became)." }),
  })
  .meta({ description: 'A stored version of a workflow definition, with its defaults filled in.' });
export type StoredWorkflowBody = z.infer<typeof storedWorkflowSchema>;

export const workflowCheckSchema = z.object({
  valid: z.boolean().meta({ description: 'Whether POST /workflows would store this definition (true: no problems).' }),
  problems: z.array(problemSchema).meta({ description: 'Every problem with its JSON path, as POST /workflows would list them in its 400 `invalid_workflow`.' }),
});

export const workflowSummarySchema = z.object({
  name: z.string(),
  version: z.int().min(1).meta({ description: 'The current version.' }),
  description: z.string().nullable(),
  parameters: z.array(parameterSchema),
  steps: count.meta({ description: 'How many steps the current version has.' }),
  created_at: timestamp,
  ...workflowMetadata,
});
export type WorkflowSummaryBody = z.infer<typeof workflowSummarySchema>;

export const workflowListSchema = z.object({
  workflows: z.array(workflowSummarySchema),
  total: count.optional().meta({ description: 'With `page` or `page_size`: how many match, on all pages.' }),
  page: z.int().min(1).optional(),
  page_size: z.int().min(1).optional(),
});

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
  .object({ p50: z.number().nullable(), p90: z.number().nullable(), p95: z.number().nullable(), p99: z.number().nullable(), max: z.number().nullable() })
  .meta({ description: 'Durations in milliseconds, of finished tasks or steps only; null when none finished.' });

const byStatus = z
  .record(z.string(), count)
  .meta({ description: 'How many, by status; a task queued or running with a step waiting for a signal or an approval counts as `waiting`.' });
const lastCreatedAt = timestamp.meta({ description: 'When the newest of them (its task) was created.' });

export const statsSchema = z.object({
  window: z.object({ from: timestamp, to: timestamp }),
  tasks: z.object({
    total: count,
    by_status: byStatus,
    by_type: z.array(z.object({ task_type: z.string(), total: count, by_status: byStatus, last_created_at: lastCreatedAt, duration_ms: percentilesSchema })),
  }),
  steps: z.object({
    by_tool: z.array(z.object({ tool: z.string(), total: count, by_status: byStatus, last_created_at: lastCreatedAt, duration_ms: percentilesSchema })),
  }),
  series: z
    .object({
      bucket_ms: z.int().min(1).meta({
        description: 'A round width (1, 2, 5, 10, 15 or 30 s or min; 1, 2, 3, 6 or 12 h; 1, 2 or 7 days): the smallest that covers the window in 48 buckets.',
      }),
      points: z.array(
        z.object({
          at: timestamp.meta({ description: 'Where the bucket starts.' }),
          created: count,
          completed: count.meta({ description: 'Of the tasks created in the bucket, how many completed (so far).' }),
          failed: count,
          duration_ms: percentilesSchema,
        }),
      ),
    })
    .meta({
      description:
        "The window in at most 49 buckets of `bucket_ms`, on the clock's boundaries of that width (the first starts at or before the window; only the window's tasks count in it), oldest first, empty ones included: the tasks created in each, how many of them completed or failed, and their duration percentiles. A chart of throughput and latency over the window.",
    }),
  timestamp,
});

export const queueDepthsSchema = z.object({
  queues: z.array(
    z.object({
      name: z.string().meta({ description: "A tool's queue (`tool.<name>`), `services`, `timers` or `callbacks`." }),
      counts: z.object({ wait: count, prioritized: count, active: count, delayed: count, 'waiting-children': count, failed: count, completed: count }).meta({
        description: 'Its jobs by BullMQ state, summed over the queue shards. Finished jobs only as many as QUEUE_KEEP_COMPLETED and QUEUE_KEEP_FAILED keep.',
      }),
    }),
  ),
  timestamp,
});

// System

const up = z.enum(['up', 'down']);
export const callbackSecretSchema = z.object({
  owner: z
    .string()
    .meta({ description: "The key's id, which every callback of its tasks names in `owner` (and the X-Orchestrator-Owner header); '' without keys." }),
  secret: z.string().meta({ description: "The HMAC-SHA256 key of this owner's callbacks, as this text (its UTF-8 bytes are the key)." }),
  algorithm: z.literal('HMAC-SHA256'),
  signature_header: z.string(),
  timestamp_header: z.string(),
  signed_content: z.string(),
});

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

export const readySchema = z.object({
  ready: z.literal(true),
  checks: dependencyChecksSchema,
  services: z.record(z.string(), z.enum(['up', 'down', 'unknown'])).meta({
    description:
      "Each registered service's last health check (`unknown`: none yet, or no health_path). Information only: a service down does not make this one unready.",
  }),
});

export const notReadySchema = z.object({
  error: z.object({
    code: z.literal('not_ready'),
    message: z.string(),
    details: z.object({ checks: dependencyChecksSchema }),
  }),
});

// Schedules

export const scheduleSchema = z
  .object({
    name: z.string(),
    owner: z.string().nullable().meta({
      description: "The key whose schedule it is (its id): its ticks' tasks are that key's. Names are unique per owner. Null without authentication.",
    }),
    cron: z.string().nullable(),
    every_ms: z.int().nullable(),
    timezone: z.string(),
    task_type: z.string(),
    params: z.record(z.string(), z.unknown()),
    overlap: z.enum(OVERLAP_POLICIES),
    catch_up: z.union([z.enum(['none', 'latest']), z.object({ all_within_ms: z.int() })]),
    paused: z.boolean(),
    next_fire_times: z.array(timestamp).meta({ description: 'The next 5 ticks (none while paused).' }),
    created_at: timestamp,
    updated_at: timestamp,
  })
  .meta({ description: 'A schedule: a task of `task_type` with `params` on every tick (docs/workflows.md "Schedules").' });

export const scheduleRunSchema = z.object({
  tick_at: timestamp.meta({ description: 'The tick the task was made for.' }),
  outcome: z.enum(['created', 'pending', 'skipped', 'buffered', 'failed', 'denied']).meta({
    description:
      "`created`: its task was made (`task_id`); `pending`: being made; `skipped`: the overlap policy made none; `buffered`: waits for the running task to end (buffer_one); `failed`: the task could not be made (`error`); `denied`: the policy service or the owner's quotas refused it (`error`: the reason), and no task was made.",
  }),
  task_id: z.uuid().nullable(),
  status: taskStatus.nullable().meta({ description: "The task's status; null without a task, or once it expired." }),
  error: z.string().optional(),
});

export const scheduleDetailSchema = scheduleSchema.extend({
  recent_runs: z.array(scheduleRunSchema).meta({ description: 'The latest 20 ticks, newest first (missed ticks that catch_up did not run leave none).' }),
});

export const scheduleListSchema = z.object({ schedules: z.array(scheduleSchema) });

export const scheduleDeletedSchema = z.object({ name: z.string(), deleted: z.literal(true), message: z.string() });

// Services

export const serviceSchema = z
  .object({
    name: z.string(),
    base_url: z.string(),
    openapi_url: z.string().nullable(),
    headers: z.record(z.string(), z.string()),
    auth: z
      .object({
        type: z.enum(['bearer', 'basic', 'header']),
        secret_ref: z.string(),
        header_name: z.string().optional(),
        secret_set: z
          .boolean()
          .meta({ description: 'Whether this process finds the secret (SERVICE_SECRET_<REF> or SERVICE_SECRETS_FILE). Its value is never shown.' }),
      })
      .nullable(),
    health_path: z.string().nullable(),
    timeout_ms: z.int(),
    circuit: z
      .object({
        failure_threshold: z.int(),
        failure_ratio: z.number(),
        window_ms: z.int(),
        min_calls: z.int(),
        open_ms: z.int(),
        half_open_probes: z.int(),
        keys_to_open: z.int(),
      })
      .meta({ description: 'The circuit breaker settings in force (defaults filled in).' }),
    concurrency: z.int().nullable(),
    rate_limit: z.object({ per_minute: z.int().optional(), per_second: z.int().optional() }).nullable(),
    document_version: z.int().min(0).meta({ description: 'The version of the OpenAPI document in use; 0: none.' }),
    operations: z
      .array(z.object({ tool: z.string(), method: z.string(), path: z.string(), summary: z.string() }))
      .meta({ description: 'Its operations as tools (`<service>.<operationId>`): see GET /tools for their schemas.' }),
    health: z
      .object({ status: z.enum(['up', 'down']), checked_at: timestamp, http_status: z.int().optional(), error: z.string().optional() })
      .nullable()
      .meta({ description: 'The last background check of health_path; null before the first, or without health_path.' }),
    error: z.string().nullable().meta({
      description:
        'Why its stored document gives no tools (it is over SERVICE_SCHEMA_MAX_NODES or SERVICE_SCHEMA_MAX_BYTES, lowered since it was stored, say); null when its tools are in use. POST /services/{name}/refresh or a PATCH of openapi_url reads it again.',
    }),
    circuit_state: z
      .object({
        state: z.enum(['closed', 'open', 'half_open']),
        since: timestamp.nullable(),
        open_until: timestamp.nullable(),
        failures_in_a_row: z.int(),
        window: z.object({ calls: z.int(), failures: z.int() }),
        transitions: z.array(z.object({ from: z.string(), to: z.string(), at: timestamp })).meta({ description: 'The latest transitions, newest first.' }),
        keys: z
          .array(
            z.object({
              key: z.string(),
              state: z.enum(['closed', 'open', 'half_open']),
              since: timestamp.nullable(),
              open_until: timestamp.nullable(),
              failures_in_a_row: z.int(),
              window: z.object({ calls: z.int(), failures: z.int() }),
            }),
          )
          .optional()
          .meta({ description: "Admin keys only: each calling key's own circuit, which holds back that key's calls alone (the most recent 100 keys)." }),
      })
      .nullable()
      .meta({
        description:
          "The service's shared circuit breaker as every worker shares it (Redis); null when Redis does not answer. It holds back every key's calls: it opens on failures of several keys (keys_to_open) or a failed health check.",
      }),
    created_at: timestamp,
    updated_at: timestamp,
  })
  .meta({ description: 'A registered service. Secrets are referred to by name only.' });

export const serviceListSchema = z.object({ services: z.array(serviceSchema) });

export const registeredServiceSchema = z.object({
  service: serviceSchema,
  imported: z.object({
    version: z.int().min(0),
    tools: z.array(z.string()),
    skipped: z
      .array(z.object({ where: z.string(), reason: z.string() }))
      .meta({ description: 'Operations that did not become tools (no operationId, or one that makes no tool name).' }),
  }),
});

export const affectedWorkflowsSchema = z
  .array(z.object({ name: z.string(), version: z.int(), problems: z.array(problemSchema) }))
  .meta({ description: 'The active workflows the change breaks: an operation they call is gone, or its schemas no longer fit their inputs or templates.' });

export const serviceRefreshSchema = z.object({
  name: z.string(),
  version: z.int().min(0),
  changed: z.boolean().meta({ description: 'false: the document is the same as the stored one; nothing was stored.' }),
  operations: z.object({ added: z.array(z.string()), removed: z.array(z.string()), changed: z.array(z.string()) }),
  affected_workflows: affectedWorkflowsSchema,
});

export const serviceDeletedSchema = z.object({
  deleted: z.string(),
  affected_workflows: affectedWorkflowsSchema,
  failed_tasks: z.array(z.string()).meta({ description: 'With `?force=true`: the unfinished tasks whose steps that used the service failed at once.' }),
});
