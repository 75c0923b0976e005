import { z } from 'zod';
import { retryPolicySchema } from '../engine/workflow-definition.js';
import { ATTEMPT_LOG_MAX_LINES } from '../ledger/attempt-logs.js';
import { TOOL_NAME } from '../tools/tool.js';

/**
 * What a worker of a user's own (workers/sdk) and the API say to each other, over HTTP with a
 * `worker` key: the worker registers its tools and reports its steps; the API writes PostgreSQL.
 * The worker takes its jobs from Redis itself, from the queue prefix the registration answers with.
 * One module, so both sides read the same schemas.
 */

/** A JSON Schema a worker sends: bounded in size and depth, and without `$ref` (nothing to expand). */
const jsonSchema = z
  .record(z.string(), z.unknown())
  .superRefine((value, ctx) => {
    const text = JSON.stringify(value);
    if (text.length > SCHEMA_MAX_BYTES) ctx.addIssue({ code: 'custom', message: `is larger than ${SCHEMA_MAX_BYTES} bytes` });
    else if (/"\$ref"\s*:/.test(text)) ctx.addIssue({ code: 'custom', message: 'may not use $ref: register the schema with its definitions inlined' });
  })
  .meta({ description: 'A JSON Schema (2020-12), as z.toJSONSchema writes it; at most 64 kB, without `$ref`.' });

export const SCHEMA_MAX_BYTES = 65_536;
export const TOOLS_PER_WORKER_MAX = 200;

export const toolRegistrationSchema = z.strictObject({
  name: z.string().regex(TOOL_NAME).meta({ description: 'The tool, and the task_type that runs it alone.' }),
  description: z.string().max(2_000),
  input_schema: jsonSchema,
  output_schema: jsonSchema,
  retry: retryPolicySchema,
  timeout_ms: z.number().int().min(1).max(86_400_000),
  concurrency: z
    .number()
    .int()
    .min(1)
    .max(10_000)
    .optional()
    .meta({ description: "Most steps of the tool one worker process runs at once. @defaultValue the worker's concurrency" }),
  rate_limit: z
    .strictObject({ max: z.number().int().min(1).max(1_000_000), duration_ms: z.number().int().min(1).max(86_400_000) })
    .optional()
    .meta({ description: 'At most `max` steps of the tool start per `duration_ms`, across all the workers serving it. @defaultValue none' }),
});
export type ToolRegistration = z.output<typeof toolRegistrationSchema>;

/** A step a worker runs now, as its heartbeat reports it (GET /workers). */
export const runningStepSchema = z.strictObject({
  task_id: z.uuid(),
  step_id: z.string().min(1).max(200),
  item: z.number().int().min(0).optional(),
  tool: z.string().regex(TOOL_NAME),
  since: z.iso.datetime(),
});
export type RunningStep = z.output<typeof runningStepSchema>;
/** The most running steps a heartbeat reports; the rest are counted in `running_count`. */
export const RUNNING_STEPS_MAX = 100;

export const workerRegistrationSchema = z.strictObject({
  host: z.string().min(1).max(255),
  pid: z.number().int().min(0),
  version: z.string().min(1).max(100).meta({ description: "The worker's own version (its package's)." }),
  concurrency: z.number().int().min(1).max(10_000),
  tools: z.array(toolRegistrationSchema).min(1).max(TOOLS_PER_WORKER_MAX),
  running: z
    .array(runningStepSchema)
    .max(RUNNING_STEPS_MAX)
    .optional()
    .meta({ description: `The steps it runs now, oldest first (at most ${RUNNING_STEPS_MAX}); the heartbeat sends them again each time.` }),
  running_count: z.number().int().min(0).optional().meta({ description: 'How many steps it runs now, those past the list included.' }),
  replace: z
    .boolean()
    .optional()
    .meta({ description: 'Register tools whose schemas differ from what live workers serve anyway (a new version of each). @defaultValue false' }),
});
export type WorkerRegistration = z.output<typeof workerRegistrationSchema>;

/** A worker as GET /workers shows it. */
export const workerViewSchema = z.object({
  worker_id: z.string(),
  owner: z.string().meta({
    description:
      'The name of the key it registered with (`worker@NAME:KEY`); empty without one; `orchestrator:built-in` for the built-in worker, which registers without a key.',
  }),
  host: z.string(),
  pid: z.number().int(),
  version: z.string(),
  concurrency: z.number().int(),
  tools: z.array(z.string()),
  started_at: z.string(),
  last_heartbeat_at: z.string(),
  live: z.boolean().meta({ description: 'It registered within three heartbeats, and has not said it stopped.' }),
  running: z.array(runningStepSchema).meta({ description: 'The steps it ran at its last heartbeat, oldest first (at most 100); none when it is not live.' }),
  running_count: z.number().int().meta({ description: 'How many steps it ran at its last heartbeat.' }),
});
export type FleetWorkerView = z.output<typeof workerViewSchema>;

export const registeredWorkerSchema = z.object({
  worker_id: z.string(),
  /** Where the worker finds its jobs in Redis: the queue prefix and how many shards. */
  queue_prefix: z.string(),
  queue_shards: z.number().int(),
  /** How often to register again (the heartbeat); a worker silent for three of these is not live. */
  heartbeat_ms: z.number().int(),
  /** After this long a one-tool step records that it runs (STEP_RUNNING_AFTER_MS). */
  step_running_after_ms: z.number().int(),
  task_result_max_bytes: z.number().int(),
  tools: z.array(z.object({ name: z.string(), version: z.number().int(), changed: z.boolean() })),
});
export type RegisteredWorker = z.output<typeof registeredWorkerSchema>;

const errorRecord = z.object({ name: z.string(), message: z.string(), retryable: z.boolean().optional(), details: z.unknown().optional() }).loose();

/** Which step (or map item) a report is about, as its job names it. */
const stepRef = {
  task_id: z.uuid(),
  run: z.number().int().min(1),
  step_id: z.string().min(1).max(200),
  item: z.number().int().min(0).optional(),
  tool: z.string().regex(TOOL_NAME),
  single: z.boolean().optional(),
  limited: z.boolean().optional(),
};
const who = { attempt: z.number().int().min(0), try: z.number().int().min(1), job_id: z.string().max(400).optional() };

export const stepReportSchema = z.discriminatedUnion('op', [
  z.strictObject({ op: z.literal('claim'), ...stepRef, ...who, at: z.iso.datetime() }),
  z.strictObject({
    op: z.literal('result'),
    ...stepRef,
    ...who,
    status: z.enum(['completed', 'failed', 'cancelled']),
    output: z.unknown().optional(),
    error: errorRecord.optional(),
    input: z.unknown().optional(),
    started_at: z.iso.datetime(),
    finished_at: z.iso.datetime(),
  }),
  z.strictObject({
    op: z.literal('note'),
    ...stepRef,
    attempt: z.number().int().min(0).optional(),
    try: z.number().int().min(1).optional(),
    job_id: z.string().max(400).optional(),
    error: errorRecord.optional(),
    progress: z.object({ percent: z.number().min(0).max(100), message: z.string().max(500).optional() }).optional(),
    delay_ms: z.number().int().min(0).optional(),
    started_at: z.iso.datetime().optional(),
    finished_at: z.iso.datetime().optional(),
  }),
  z.strictObject({ op: z.literal('settle'), ...stepRef }),
  z.strictObject({
    op: z.literal('logs'),
    ...stepRef,
    attempt: z.number().int().min(0),
    try: z.number().int().min(1).optional(),
    lines: z
      .array(z.object({ at: z.iso.datetime(), level: z.string().max(20), message: z.string().max(2_000), fields: z.unknown().optional() }))
      .max(ATTEMPT_LOG_MAX_LINES),
    dropped: z.number().int().min(0),
  }),
]);
export type StepReport = z.output<typeof stepReportSchema>;

export const stepReportAnswerSchema = z.object({
  /** claim: whether the step may run; result: whether it was recorded; note, settle: true. */
  ok: z.boolean(),
});

/** Most reports in one request. */
export const REPORTS_PER_REQUEST_MAX = 100;
/** Several reports in one request (the SDK's group send): each applied as if sent alone. */
export const stepReportBatchSchema = z.strictObject({ reports: z.array(stepReportSchema).min(1).max(REPORTS_PER_REQUEST_MAX) });
export const stepReportBatchAnswerSchema = z.object({ answers: z.array(stepReportAnswerSchema) });
