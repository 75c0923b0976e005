import { z } from 'zod';
import { concurrencySchema, rateLimitSchema } from '../engine/key-limits.js';
import { retryPolicySchema } from '../engine/workflow-definition.js';

/** BullMQ's lowest priority, its largest number (BullMQ refuses 2 ** 21 and above): a task of a client over its share runs at it (SubmitOptions.behindOthers). */
export const LOWEST_PRIORITY = 2_097_151;

/**
 * What a client asks for when it submits a task: the body of POST /assign-task, and (with
 * `params` from its `parameters`) of POST /workflows/:name/execute.
 */
export const taskRequestSchema = z
  .object({
    task_type: z.string().min(1).max(200).meta({ description: 'A tool name (a one-step task) or a registered workflow.' }),
    params: z.record(z.string(), z.unknown()).default({}).meta({ description: "Checked against the tool's or workflow's input schema." }),
    version: z.int().min(1).optional().meta({ description: 'A workflow task: the version to run (without it, the current one). Not for a tool.' }),
    idempotency_key: z
      .string()
      .min(1)
      .max(255)
      .optional()
      .meta({ description: 'Same key and body: the first task is returned (200). Same key, other body: 409.' }),
    priority: z.int().min(1).max(LOWEST_PRIORITY).optional().meta({
      description:
        "BullMQ priority: 1 runs first. Without one, a task goes before prioritised ones. While work waits, a client holding more than an equal share of the unfinished tasks gets the lowest (2097151) instead, whatever it asks: other clients' tasks run first.",
    }),
    delay_ms: z
      .int()
      .min(0)
      .max(30 * 86_400_000)
      .optional()
      .meta({ description: 'Start no earlier than this many milliseconds from now.' }),
    callback_url: z
      .url({ protocol: /^https?$/ })
      .max(2048)
      .optional()
      .meta({ description: 'The final result is POSTed here.' }),
    retry: retryPolicySchema.optional().meta({ description: "Overrides the tool's (or every workflow step's) retry policy." }),
    timeout_ms: z.int().min(1).max(86_400_000).optional().meta({ description: "Overrides the tool's timeout per attempt." }),
    concurrency: concurrencySchema.optional().meta({
      description: 'A one-tool task: at most `limit` such tasks run at once per key ({{params.NAME}} allowed); a workflow sets its own in its definition.',
    }),
    rate_limit: rateLimitSchema
      .optional()
      .meta({ description: 'A one-tool task: at most so many such tasks start per minute (or second) per key; a workflow sets its own in its definition.' }),
  })
  .strict();
export type TaskRequest = z.output<typeof taskRequestSchema>;
