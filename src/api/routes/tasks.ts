import { Router } from 'express';
import type { TaskService } from '../../tasks/task-service.js';
import { ownerScope, requireAccess, submitter } from '../access.js';
import { clientOf, slotsFull, type ClientSlots } from '../client-slots.js';
import { handle, parseOrThrow } from '../http.js';
import { assignTaskBody, listTasksQuery, resultQuery } from '../schemas.js';


/** `longPolls`: waiting GET /result requests per client (LONG_POLLS_PER_KEY). */
export function taskRoutes(tasks: TaskService, longPolls: ClientSlots): Router {
  const router = Router();

  router.post(
    '/assign-task',
    requireAccess('submit'),
    handle(async (req) => {
      const body = parseOrThrow(assignTaskBody, req.body ?? {}, 'the request body');
      return tasks.submit(body, { owner: submitter(req) });
    }),
  );

  router.get(
    '/result/:task_id',
    requireAccess('tasks'),
    handle(async (req, res) => {
      const query = parseOrThrow(resultQuery, req.query, 'the query');
      const wait = query.wait ?? 0;
      const release = wait > 0 ? await longPolls.acquire(clientOf(req)) : () => undefined;
      if (!release) {
        return slotsFull('too_many_long_polls', 'this API key (or address) has as many waiting requests open as LONG_POLLS_PER_KEY allows; retry later');
      }
      try {
        // A client that hangs up stops its long-poll.
        const gone = new AbortController();
        res.on('close', () => gone.abort());
        return { status: 200, body: await tasks.result(String(req.params.task_id), wait, gone.signal, ownerScope(req)) };
      } finally {
        release();
      }
    }),
  );

  router.get(
    '/tasks',
    requireAccess('tasks'),
    handle(async (req) => {
      const query = parseOrThrow(listTasksQuery, req.query, 'the query');
      const owner = ownerScope(req);
      return {
        status: 200,
        body: await tasks.list({
          limit: query.limit,
          ...(owner !== undefined ? { owner } : {}),
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
    requireAccess('tasks'),
    handle(async (req) => ({ status: 200, body: await tasks.result(String(req.params.task_id), 0, undefined, ownerScope(req)) })),
  );

  router.post(
    '/tasks/:task_id/cancel',
    requireAccess('manageTasks'),
    handle(async (req) => ({ status: 200, body: await tasks.cancel(String(req.params.task_id), ownerScope(req)) })),
  );

  router.post(
    '/tasks/:task_id/retry',
    requireAccess('manageTasks'),
    handle(async (req) => ({ status: 202, body: await tasks.retry(String(req.params.task_id), ownerScope(req)) })),
  );

  return router;
}
