import { Router } from 'express';
import type { TaskService } from '../../tasks/task-service.js';
import { handle, parseOrThrow } from '../http.js';
import { assignTaskBody, listTasksQuery, resultQuery } from '../schemas.js';

export function taskRoutes(tasks: TaskService): Router {
  const router = Router();

  router.post(
    '/assign-task',
    handle(async (req) => {
      const body = parseOrThrow(assignTaskBody, req.body ?? {}, 'the request body');
      return tasks.submit(body);
    }),
  );

  router.get(
    '/result/:task_id',
    handle(async (req, res) => {
      const query = parseOrThrow(resultQuery, req.query, 'the query');
      // A client that hangs up stops its long-poll.
      const gone = new AbortController();
      res.on('close', () => gone.abort());
      return { status: 200, body: await tasks.result(String(req.params.task_id), query.wait ?? 0, gone.signal) };
    }),
  );

  router.get(
    '/tasks',
    handle(async (req) => {
      const query = parseOrThrow(listTasksQuery, req.query, 'the query');
      return {
        status: 200,
        body: await tasks.list({
          limit: query.limit,
          ...(query.status ? { status: query.status as never } : {}),
          ...(query.task_type ? { taskType: query.task_type } : {}),
          ...(query.created_after ? { createdAfter: new Date(query.created_after) } : {}),
          ...(query.created_before ? { createdBefore: new Date(query.created_before) } : {}),
          ...(query.cursor ? { cursor: query.cursor } : {}),
        }),
      };
    }),
  );

  router.get(
    '/tasks/:task_id',
    handle(async (req) => ({ status: 200, body: await tasks.result(String(req.params.task_id)) })),
  );

  router.post(
    '/tasks/:task_id/cancel',
    handle(async (req) => ({ status: 200, body: await tasks.cancel(String(req.params.task_id)) })),
  );

  router.post(
    '/tasks/:task_id/retry',
    handle(async (req) => ({ status: 202, body: await tasks.retry(String(req.params.task_id)) })),
  );

  return router;
}
