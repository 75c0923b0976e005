import { z } from 'zod';
import { TASK_STATUSES } from '../engine/status.js';

/**
 * Request shapes, one place for every endpoint: handlers validate with these and the API
 * description is generated from them.
 */

export const retryPolicySchema = z
  .object({
    attempts: z.int().min(1).max(100).meta({ description: 'Tries in all, the first included.' }),
    backoff: z
      .object({
        type: z.enum(['fixed', 'exponential']),
        delay_ms: z.int().min(0).max(86_400_000),
      })
      .strict()
      .default({ type: 'exponential', delay_ms: 1000 }),
  })
  .strict();

export const assignTaskBody = z
  .object({
    task_type: z.string().min(1).max(200).meta({ description: 'A tool name (a one-step task) or a registered workflow.' }),
    params: z.record(z.string(), z.unknown()).default({}).meta({ description: "Checked against the tool's or workflow's input schema." }),
    idempotency_key: z
      .string()
      .min(1)
      .max(255)
      .optional()
      .meta({ description: 'Same key and body: the first task is returned (200). Same key, other body: 409.' }),
    priority: z.int().min(1).max(2_097_152).optional().meta({ description: 'BullMQ priority: 1 runs first. Without one, a task goes before prioritised ones.' }),
    delay_ms: z.int().min(0).max(30 * 86_400_000).optional().meta({ description: 'Start no earlier than this many milliseconds from now.' }),
    callback_url: z.url({ protocol: /^https?$/ }).max(2048).optional().meta({ description: 'The final result is POSTed here.' }),
    retry: retryPolicySchema.optional().meta({ description: "Overrides the tool's (or every workflow step's) retry policy." }),
    timeout_ms: z.int().min(1).max(86_400_000).optional().meta({ description: "Overrides the tool's timeout per attempt." }),
  })
  .strict();
export type AssignTaskBody = z.output<typeof assignTaskBody>;

export const taskIdParam = z.object({
  task_id: z.string().meta({ description: 'The id (a UUID) that POST /assign-task answered. Anything else answers 404.' }),
});
export const workflowNameParam = z.object({ name: z.string().meta({ description: 'The name of a workflow.' }) });
export const deadLetterIdParam = z.object({ id: z.string().meta({ description: 'The id (a UUID) of a dead letter.' }) });

export const resultQuery = z.object({
  wait: z.coerce
    .number()
    .min(0)
    .optional()
    .meta({ description: 'Hold the answer until the task ends or this many seconds pass (at most 30).' }),
});

export const listTasksQuery = z
  .object({
    status: z.enum(TASK_STATUSES).optional(),
    task_type: z.string().min(1).max(200).optional(),
    created_after: z.iso.datetime({ offset: true }).optional(),
    created_before: z.iso.datetime({ offset: true }).optional(),
    limit: z.coerce.number().int().min(1).max(200).default(50),
    cursor: z.string().max(200).optional(),
  })
  .strict();
