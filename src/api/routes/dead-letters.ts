import { Router } from 'express';
import { z } from 'zod';
import type { TaskService } from '../../tasks/task-service.js';
import { requireAccess } from '../access.js';
import { handle, parseOrThrow } from '../http.js';

export const deadLettersQuery = z
  .object({
    task_id: z.string().max(100).optional(),
    tool: z.string().max(64).optional(),
    limit: z.coerce.number().int().min(1).max(200).default(50),
    cursor: z.string().max(200).optional(),
  })
  .strict();

/** Steps that exhausted their retries, with their input and error; replaying one resumes its task. */
export function deadLetterRoutes(tasks: TaskService): Router {
  const router = Router();
  router.get(
    '/dead-letters',
    requireAccess('monitor'),
    handle(async (req) => {
      const query = parseOrThrow(deadLettersQuery, req.query, 'the query');
      return {
        status: 200,
        body: await tasks.deadLetters({
          limit: query.limit,
          ...(query.task_id ? { taskId: query.task_id } : {}),
          ...(query.tool ? { tool: query.tool } : {}),
          ...(query.cursor ? { cursor: query.cursor } : {}),
        }),
      };
    }),
  );
  router.post(
    '/dead-letters/:id/replay',
    requireAccess('admin'),
    handle(async (req) => ({ status: 202, body: await tasks.replayDeadLetter(String(req.params.id)) })),
  );
  return router;
}
