import { z } from 'zod';
import { TASK_STATUSES } from '../engine/status.js';

/**
 * Request shapes more than one route module uses (path parameters) or that are large enough to
 * read apart; a route's own query schema sits with its route. The router validates requests with
 * them and the API description is generated from them.
 */

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
