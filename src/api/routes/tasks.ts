import { z } from 'zod';
import { STEP_STATUSES, TASK_STATUSES, WAIT_REASONS } from '../../engine/status.js';
import { ValidationError } from '../../lib/errors.js';
import { UUID_PREFIX, uuidPrefixRange } from '../../lib/uuid7.js';
import { taskRequestSchema } from '../../tasks/task-request.js';
import type { Submitted } from '../../tasks/task-service.js';
import { taskSummary, taskViewSchema } from '../../tasks/task-view.js';
import { asker, ownerScope, submission, submitter, viewer } from '../access.js';
import { clientOf, slotsFull } from '../client-slots.js';
import type { Reply } from '../http.js';
import * as ex from '../openapi-examples.js';
import { assigned, conflict, gone, invalid, notFound, policyUnavailable, resumedOverQuota, tooManyRequests, unavailable } from '../replies.js';
import * as r from '../responses.js';
import { type Route, route } from '../route.js';
import { TASK_EVENTS_ROUTE, taskIdParam } from './task-events.js';

export const resultQuery = z.object({
  wait: z.coerce.number().min(0).optional().meta({ description: 'Hold the answer until the task ends or this many seconds pass (at most 30).' }),
  include: z
    .literal('params')
    .optional()
    .meta({ description: "`params`: the answer has the task's `params` too (left out otherwise: a poll of the result need not carry them each time)." }),
});

export const stepItemsParams = taskIdParam.extend({ step_id: z.string().max(64).meta({ description: 'A for_each step of the task.' }) });

export const stepItemsQuery = z
  .object({
    status: z.enum(STEP_STATUSES).optional().meta({ description: 'Only the items in this status (`failed`, say).' }),
    limit: z.coerce.number().int().min(1).max(500).default(100),
    cursor: z.string().max(20).optional(),
  })
  .strict();

export const historyQuery = z
  .object({
    after: z.string().max(64).optional().meta({ description: "The previous page's `next_cursor`." }),
    limit: z.coerce.number().int().min(1).max(500).default(100),
    step: z.string().min(1).max(80).optional().meta({ description: "Only this step's events (its items' too; a compensation's: `<step>.compensate`)." }),
  })
  .strict();

/** A search by params looks at this many days of tasks by default, and at most this many. */
export const PARAM_SEARCH_DEFAULT_DAYS = 7;
export const PARAM_SEARCH_MAX_DAYS = 31;
const PARAM_FILTER_MAX_KEYS = 5;

/** `params=`: a JSON object of top-level param names and scalar values. */
const paramsFilter = z
  .string()
  .max(1000)
  .transform((text, ctx) => {
    try {
      return JSON.parse(text) as unknown;
    } catch {
      ctx.addIssue({ code: 'custom', message: 'must be a JSON object, e.g. {"customer_id":"c-9"}' });
      return z.NEVER;
    }
  })
  .pipe(
    z
      .record(
        z.string().min(1).max(200),
        z.union([z.string().max(500), z.number(), z.boolean()]),
        'must be a JSON object of names and string, number or boolean values',
      )
      .refine((filter) => Object.keys(filter).length >= 1 && Object.keys(filter).length <= PARAM_FILTER_MAX_KEYS, {
        message: `names 1 to ${PARAM_FILTER_MAX_KEYS} params`,
      }),
  );

export const listTasksQuery = z
  .object({
    status: z
      .enum([...TASK_STATUSES, 'waiting'])
      .optional()
      .meta({
        description:
          '`waiting`: the unfinished tasks with a step waiting for someone (a signal or an approval), or for one of `waiting_reason`, each with `waiting_for`.',
      }),
    waiting_reason: z
      .string()
      .max(200)
      .transform((text) => text.split(','))
      .pipe(z.array(z.enum(WAIT_REASONS)).min(1))
      .optional()
      .meta({
        description: `With \`status=waiting\`: the reasons to list, comma-separated, of ${WAIT_REASONS.map((reason) => `\`${reason}\``).join(', ')} (default \`signal,approval\`): \`concurrency,rate_limit\` lists the tasks waiting for their turn under a limit per key, \`circuit_open\` those held by an open circuit.`,
        example: 'signal,approval,concurrency,rate_limit,circuit_open',
      }),
    task_type: z.string().min(1).max(200).optional(),
    id_prefix: z.string().regex(UUID_PREFIX, 'the start of a task id: hex digits, dashes where a task id has them').optional().meta({
      description:
        'Only the tasks whose id starts with this (case-insensitive), e.g. `0198c3f2` or `0198c3f2-7a1b`: from a few digits to a whole id. Found through the id and creation-time indexes (a task id starts with its creation time).',
      example: '0198c3f2-7a1b',
    }),
    created_after: z.iso.datetime({ offset: true }).optional(),
    created_before: z.iso.datetime({ offset: true }).optional(),
    parent: z.uuid().optional().meta({ description: "Only the child tasks of this task (its sub-workflow steps' children)." }),
    top_level: z
      .enum(['true', 'false'])
      .optional()
      .meta({ description: '`true`: only tasks that are no child of another (the console lists these, each with its children under it).' }),
    params: paramsFilter.optional().meta({
      description: `Only the tasks whose params have these top-level values, as a JSON object of at most ${PARAM_FILTER_MAX_KEYS} names and their string, number or boolean values, e.g. \`{"customer_id":"c-9"}\`. Not indexed: it looks at the tasks created in the last ${PARAM_SEARCH_DEFAULT_DAYS} days unless created_after says otherwise, and a window of at most ${PARAM_SEARCH_MAX_DAYS} days (400 beyond); narrow it with task_type too on a large table.`,
      example: '{"customer_id":"c-9"}',
    }),
    limit: z.coerce.number().int().min(1).max(200).default(50),
    cursor: z.string().max(200).optional(),
  })
  .strict();

/**
 * The creation times a search by params looks at: from created_after (default
 * PARAM_SEARCH_DEFAULT_DAYS ago) to created_before (default now), at most PARAM_SEARCH_MAX_DAYS.
 * The tasks are partitioned by day: the window bounds what the unindexed filter reads.
 */
function paramSearchWindow(createdAfter: string | undefined, createdBefore: string | undefined): { after: Date } {
  const before = createdBefore ? Date.parse(createdBefore) : Date.now();
  const after = createdAfter ? Date.parse(createdAfter) : before - PARAM_SEARCH_DEFAULT_DAYS * 86_400_000;
  if (before - after > PARAM_SEARCH_MAX_DAYS * 86_400_000) {
    throw new ValidationError('the query is invalid', [
      { path: 'created_after', message: `a search by params looks at ${PARAM_SEARCH_MAX_DAYS} days of tasks at most: narrow created_after and created_before` },
    ]);
  }
  return { after: new Date(after) };
}

/** Thrown by a long-poll's hold when its key has no slot left: the answer is 429. */
const SLOTS_FULL = new Error('too_many_long_polls');

/** The answer to a submitted task: 202, or 200 when its idempotency key replayed an earlier one. */
export function assignedReply(submitted: Submitted, taskType: string): Reply {
  return {
    status: submitted.replayed ? 200 : 202,
    body: {
      task_id: submitted.taskId,
      status: 'assigned',
      message: submitted.replayed ? `Task '${taskType}' was already assigned with this idempotency_key` : `Task '${taskType}' successfully assigned`,
      timestamp: new Date().toISOString(),
    },
  };
}

/** The answer to a resumed task (POST /tasks/{task_id}/retry, a replayed dead letter). */
export function resumedBody(taskId: string, run: number) {
  return { task_id: taskId, status: 'queued', run, message: 'Task resumed from its unfinished steps', timestamp: new Date().toISOString() };
}

const tasksTag = ['tasks'];

/** Submit tasks and follow them. */
export const TASK_ROUTES: Route[] = [
  route({
    method: 'post',
    path: '/assign-task',
    operationId: 'assignTask',
    access: 'submit',
    admission: true,
    summary: 'Submit a task',
    description:
      '`task_type` names a tool (a one-step task) or a registered workflow; `params` is checked against its input schema before anything is enqueued. Also answers on `/assign-task/`.',
    tags: tasksTag,
    body: taskRequestSchema,
    bodyExamples: ex.assignTaskExamples,
    responses: {
      202: assigned('Accepted: the task is stored and enqueued.', ex.assignedExamples),
      200: assigned('The same `idempotency_key` with the same body was seen before: the first task, nothing new enqueued.', ex.replayedExamples),
      400: {
        ...invalid(
          'The body does not fit the contract (`validation_error`), or `params` do not fit the input schema (`invalid_params`; also when a policy service rewrote them into params that do not fit): one entry per problem. A `callback_url` on a server without CALLBACK_SECRET: `callbacks_disabled`.',
        ),
        examples: ex.assignTaskInvalidExamples,
      },
      404: { ...notFound('No tool or workflow has that name (`unknown_task_type`); `details` lists the known ones.'), examples: ex.unknownTaskTypeExamples },
      409: conflict('The `idempotency_key` was used with a different body (`idempotency_conflict`).'),
    },
    handler: async ({ body, req }, { tasks }) => assignedReply(await tasks.submit(body, submission(req)), body.task_type),
  }),
  route({
    method: 'get',
    path: '/result/{task_id}',
    operationId: 'getResult',
    access: 'tasks',
    summary: 'Read a task, its steps and its result',
    description:
      'With `?wait=N` the answer waits until the task ends or N seconds pass (at most RESULT_WAIT_MAX_S, 30 by default). A key (or an address, without keys) may have LONG_POLLS_PER_KEY such waiting requests open at once.',
    tags: tasksTag,
    params: taskIdParam,
    query: resultQuery,
    responses: {
      200: { description: 'The task.', body: taskViewSchema, examples: ex.taskViewExamples },
      400: invalid('The query is invalid.'),
      404: notFound('No such task (`task_not_found`).'),
      410: gone,
      429: tooManyRequests(
        'The key already has LONG_POLLS_PER_KEY waiting requests open (`too_many_long_polls`), or sent more than RATE_LIMIT_PER_MINUTE requests this minute (`rate_limited`).',
      ),
      503: unavailable,
    },
    handler: async ({ params, query, req, res }, { tasks, longPolls }) => {
      const wait = query.wait ?? 0;
      // Taken only by a request that is to wait (its task found unfinished): a task that ended answers at once, counting nothing.
      let release: (() => void) | undefined;
      const hold = async () => {
        release = await longPolls.acquire(clientOf(req));
        if (!release) throw SLOTS_FULL;
      };
      try {
        // A client that hangs up stops its long-poll.
        const hungUp = new AbortController();
        // Closed after its answer too (every request): only a close before it stops anything, and
        // aborting then makes no DOMException (0.8 % of the API's busy time in the seed's loop).
        res.on('close', () => {
          if (!res.writableFinished) hungUp.abort();
        });
        return {
          status: 200,
          body: await tasks.result(params.task_id, wait, hungUp.signal, { ...viewer(req), params: query.include === 'params' }, wait > 0 ? hold : undefined),
        };
      } catch (error) {
        if (error !== SLOTS_FULL) throw error;
        return slotsFull('too_many_long_polls', 'this API key (or address) has as many waiting requests open as LONG_POLLS_PER_KEY allows; retry later');
      } finally {
        release?.();
      }
    },
  }),
  route({
    method: 'get',
    path: '/tasks',
    operationId: 'listTasks',
    access: 'tasks',
    summary: 'List tasks, newest first',
    tags: tasksTag,
    query: listTasksQuery,
    responses: {
      200: { description: 'A page of tasks.', body: r.taskListSchema, examples: ex.taskListExamples },
      400: invalid('The query or the cursor is invalid.'),
      503: unavailable,
    },
    handler: async ({ query, req }, { tasks }) => {
      if (query.waiting_reason && query.status !== 'waiting') {
        throw new ValidationError('the query is invalid', [{ path: 'waiting_reason', message: 'goes with status=waiting' }]);
      }
      const owner = ownerScope(req);
      const window = query.params ? paramSearchWindow(query.created_after, query.created_before) : undefined;
      const page = await tasks.list({
        limit: query.limit,
        ...(owner !== undefined ? { owner } : {}),
        ...(query.status ? { status: query.status } : {}),
        ...(query.waiting_reason ? { waitingReasons: query.waiting_reason } : {}),
        ...(query.task_type ? { taskType: query.task_type } : {}),
        ...(query.id_prefix ? { ids: uuidPrefixRange(query.id_prefix) } : {}),
        ...(query.created_after ? { createdAfter: new Date(query.created_after) } : {}),
        ...(query.created_before ? { createdBefore: new Date(query.created_before) } : {}),
        ...(window ? { createdAfter: window.after } : {}),
        ...(query.parent ? { parent: query.parent } : {}),
        ...(query.top_level === 'true' ? { topLevel: true } : {}),
        ...(query.params ? { params: query.params } : {}),
        ...(query.cursor ? { cursor: query.cursor } : {}),
      });
      return { status: 200, body: { items: page.items.map((task) => taskSummary(task)), next_cursor: page.nextCursor } };
    },
  }),
  route({
    method: 'get',
    path: '/tasks/{task_id}',
    operationId: 'getTask',
    access: 'tasks',
    summary: 'Read a task (as GET /result, without waiting)',
    tags: tasksTag,
    params: taskIdParam,
    responses: {
      200: { description: 'The task.', body: taskViewSchema, examples: ex.taskViewExamples },
      404: notFound('No such task (`task_not_found`).'),
      410: gone,
      503: unavailable,
    },
    handler: async ({ params, req }, { tasks }) => ({ status: 200, body: await tasks.result(params.task_id, 0, undefined, viewer(req)) }),
  }),
  route({
    method: 'get',
    path: '/tasks/{task_id}/steps/{step_id}/items',
    operationId: 'listStepItems',
    access: 'tasks',
    summary: "List a for_each step's items: each one's status, attempts, input, output and error",
    description: 'In item order, a page at a time. GET /result shows the step with its items counted; this shows them one by one.',
    tags: tasksTag,
    params: stepItemsParams,
    query: stepItemsQuery,
    responses: {
      200: { description: 'A page of items.', body: r.stepItemListSchema, examples: ex.stepItemListExamples },
      400: invalid('The query or the cursor is invalid.'),
      404: notFound('No such task (`task_not_found`), or no such step (`step_not_found`).'),
      410: gone,
      503: unavailable,
    },
    handler: async ({ params, query, req }, { tasks }) => ({
      status: 200,
      body: await tasks.items(
        params.task_id,
        params.step_id,
        { limit: query.limit, ...(query.status ? { status: query.status } : {}), ...(query.cursor ? { cursor: query.cursor } : {}) },
        ownerScope(req),
      ),
    }),
  }),
  route({
    method: 'get',
    path: '/tasks/{task_id}/steps/{step_id}/logs',
    operationId: 'getStepLogs',
    access: 'tasks',
    summary: "Read what a step's tool logged through ctx.logger, attempt by attempt",
    description:
      'Each attempt keeps up to 200 lines or 64 kB of what its tool logged (`ctx.logger`), the rest counted in `dropped`; secret-named fields are redacted as in the process log. Kept with the task (RETENTION_DAYS), not with TASK_HISTORY=off. At most 50 attempts, oldest first.',
    tags: tasksTag,
    params: stepItemsParams,
    responses: {
      200: { description: "The step's attempts with their lines.", body: r.stepLogsSchema, examples: ex.stepLogsExamples },
      404: notFound('No such task (`task_not_found`), or no such step (`step_not_found`).'),
      410: gone,
      503: unavailable,
    },
    handler: async ({ params, req }, { tasks }) => ({ status: 200, body: await tasks.stepLogs(params.task_id, params.step_id, ownerScope(req)) }),
  }),
  route({
    method: 'get',
    path: '/tasks/{task_id}/history',
    operationId: 'getTaskHistory',
    access: 'tasks',
    summary: "Read a task's durable history: every state change, attempt, retry and callback delivery, in order",
    description:
      'Kept as long as the task (RETENTION_DAYS). Each event has its `seq` (increasing in the order of the changes), `type`, `at`, `run`, the step (and item) it concerns and its `data`; docs/workflows.md "History" lists them. A page at a time, oldest first; `?step=` keeps one step\'s events.',
    tags: tasksTag,
    params: taskIdParam,
    query: historyQuery,
    responses: {
      200: { description: 'A page of events.', body: r.taskHistorySchema, examples: ex.taskHistoryExamples },
      400: invalid('The query or the cursor is invalid.'),
      404: notFound('No such task (`task_not_found`).'),
      410: gone,
      503: unavailable,
    },
    handler: async ({ params, query, req }, { tasks }) => ({
      status: 200,
      body: await tasks.history(
        params.task_id,
        { limit: query.limit, ...(query.after !== undefined ? { after: query.after } : {}), ...(query.step !== undefined ? { stepId: query.step } : {}) },
        ownerScope(req),
      ),
    }),
  }),
  TASK_EVENTS_ROUTE,
  route({
    method: 'post',
    path: '/tasks/{task_id}/cancel',
    operationId: 'cancelTask',
    access: 'manageTasks',
    summary: 'Cancel a task',
    description: 'No further step starts, and running steps are aborted on whichever worker holds them.',
    tags: tasksTag,
    params: taskIdParam,
    responses: {
      200: { description: 'Cancelled.', body: r.taskCancelledSchema, examples: ex.taskCancelledExamples },
      404: notFound('No such task (`task_not_found`).'),
      410: gone,
      409: conflict('The task already ended (`task_finished`).'),
      503: unavailable,
    },
    handler: async ({ params, req }, { tasks }) => {
      await tasks.cancel(params.task_id, ownerScope(req), submitter(req));
      return {
        status: 200,
        body: { task_id: params.task_id, status: 'cancelled', message: 'Task cancelled; running steps are being stopped', timestamp: new Date().toISOString() },
      };
    },
  }),
  route({
    method: 'post',
    path: '/tasks/{task_id}/retry',
    operationId: 'retryTask',
    access: 'manageTasks',
    gated: true,
    summary: 'Resume a failed or cancelled task',
    description:
      "Steps that completed are not run again. The resumed task is work again: the policy is asked (POLICY_URL, kind `retry`) and it counts against its owner's quotas.",
    tags: tasksTag,
    params: taskIdParam,
    responses: {
      202: { description: 'Resumed: its unfinished steps are enqueued again.', body: r.taskResumedSchema, examples: ex.taskResumedExamples },
      404: notFound('No such task (`task_not_found`).'),
      410: gone,
      409: conflict('The task neither failed nor was cancelled (`task_not_retryable`).'),
      429: resumedOverQuota,
      503: policyUnavailable,
    },
    handler: async ({ params, req }, { tasks }) => ({
      status: 202,
      body: resumedBody(params.task_id, (await tasks.retry(params.task_id, asker(req))).run),
    }),
  }),
];
