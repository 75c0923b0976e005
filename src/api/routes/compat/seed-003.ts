import type { Request } from 'express';
import { z } from 'zod';
import { IDENTIFIER } from '../../../engine/workflow-definition.js';
import { NotFoundError } from '../../../lib/errors.js';
import { unstorableProblems } from '../../../lib/problems.js';
import { taskRequestSchema } from '../../../tasks/task-request.js';
import type { TaskService } from '../../../tasks/task-service.js';
import { errorRecordSchema, type TaskViewBody, taskStatus, timestamp } from '../../../tasks/task-view.js';
import type { WorkflowService } from '../../../workflows/workflow-service.js';
import { asker, ownerScope, submitter, viewer } from '../../access.js';
import { clientOf } from '../../client-slots.js';
import { errorBody } from '../../http.js';
import { conflict, gone, invalid, notFound, policyUnavailable, resumedOverQuota, unavailable } from '../../replies.js';
import * as r from '../../responses.js';
import { plainRoute, type Route, route } from '../../route.js';
import * as sx from './seed-003-examples.js';
import { SEED_003_TAG } from './tags.js';

/**
 * Seed 003's sessions. A session is a task: starting one submits it (POST /assign-task, with
 * the session id the client chose as its idempotency key), reading one is GET /result in the
 * seed's words, and its actions are cancel, retry and signals to its wait steps. Every path
 * goes through what the native routes call: access, admission, the policy gate, quotas and
 * idempotency apply unchanged. docs/compat/seed-003.md has the status table.
 */

const tags = [SEED_003_TAG];

/** Seed 003's words for a task's state; `waiting`: a step waits for an action (a signal or an approval). */
export const SESSION_STATUSES = ['pending', 'running', 'waiting', 'completed', 'failed', 'cancelled'] as const;
export type SessionStatus = (typeof SESSION_STATUSES)[number];

/** The actions that are not signals. */
const BUILT_IN_ACTIONS = ['cancel', 'retry'] as const;

const sessionBody = z
  .object({
    workflow: z.string().min(1).max(1000).optional().meta({ description: 'A workflow to run: its id or display name. Or give `task_type`.' }),
    task_type: taskRequestSchema.shape.task_type.optional().meta({ description: 'A tool or a workflow, as POST /assign-task takes it. Or give `workflow`.' }),
    parameters: z.record(z.string(), z.unknown()).optional().meta({ description: 'Its parameters (or `params`).' }),
    params: z.record(z.string(), z.unknown()).optional(),
    session_id: taskRequestSchema.shape.idempotency_key.meta({
      description:
        "An id of your choosing: it is the task's idempotency key (the same id and body again: the same session, 200; another body: 409). Without it, the session id is the task id.",
    }),
  })
  .strict()
  .superRefine((body, ctx) => {
    if ((body.workflow === undefined) === (body.task_type === undefined))
      ctx.addIssue({ code: 'custom', path: ['workflow'], message: 'give workflow or task_type, one of them' });
    if (body.parameters !== undefined && body.params !== undefined)
      ctx.addIssue({ code: 'custom', path: ['params'], message: 'give parameters or params, not both' });
  });

const sessionIdParam = z.object({
  session_id: z.string().min(1).max(255).meta({ description: 'What POST /v1/sessions answered: the id you chose, or the task id.' }),
});

const actionParams = sessionIdParam.extend({
  action: z.string().regex(IDENTIFIER, 'an action is cancel, retry or a signal name: a letter, then letters, digits, _ and - (at most 64)').meta({
    description: '`cancel`, `retry`, or the name of a signal a wait step of the task waits for (the body is its payload).',
  }),
});

const sessionSchema = z.object({
  session_id: z.string(),
  task_id: z.uuid(),
  task_type: z.string(),
  status: z.enum(SESSION_STATUSES).meta({ description: "In seed 003's words (docs/compat/seed-003.md); `task_status` is the task's own." }),
  task_status: taskStatus,
  awaiting: z
    .array(z.object({ action: z.string(), step_id: z.string(), timeout_at: timestamp.optional() }))
    .meta({ description: 'The actions (signals) its wait steps wait for: POST /v1/sessions/{session_id}/actions/{action}.' }),
  actions: z
    .array(z.string())
    .meta({ description: 'The actions it takes now: cancel while it runs, retry once it failed or was cancelled, and the awaited signals.' }),
  result: z.unknown().optional(),
  error: errorRecordSchema.optional(),
  progress: z.object({ completed: z.int().min(0), total: z.int().min(0) }),
  created_at: timestamp,
  started_at: timestamp.nullable(),
  finished_at: timestamp.nullable(),
  timestamp,
});

const sessionStartedSchema = z.object({
  session_id: z.string(),
  task_id: z.uuid(),
  task_type: z.string().meta({ description: 'What runs: the workflow (its id) or the tool.' }),
  status: z.enum(SESSION_STATUSES),
  timestamp,
});

const sessionActedSchema = z.object({
  session_id: z.string(),
  task_id: z.uuid(),
  action: z.string(),
  status: z.enum(['cancelled', 'pending', 'recorded']).meta({ description: 'cancel: `cancelled`; retry: `pending` (queued again); a signal: `recorded`.' }),
  run: z.int().min(1).optional().meta({ description: 'retry: the run it started.' }),
  step_id: z.string().optional().meta({ description: 'A signal: the wait step that took it.' }),
  timestamp,
});

/** A task's status in seed 003's words. */
export function sessionStatus(task: Pick<TaskViewBody, 'status' | 'steps'>): SessionStatus {
  if (task.status === 'queued') return 'pending';
  if (task.status === 'running') return task.steps.some((step) => step.waiting_for !== undefined) ? 'waiting' : 'running';
  return task.status;
}

function sessionView(sessionId: string, task: TaskViewBody): z.output<typeof sessionSchema> {
  const awaiting = task.steps.flatMap((step) =>
    step.waiting_for
      ? [{ action: step.waiting_for.signal, step_id: step.id, ...(step.waiting_for.timeout_at ? { timeout_at: step.waiting_for.timeout_at } : {}) }]
      : [],
  );
  const finished = task.status === 'completed' || task.status === 'failed' || task.status === 'cancelled';
  return {
    session_id: sessionId,
    task_id: task.task_id,
    task_type: task.task_type,
    status: sessionStatus(task),
    task_status: task.status,
    awaiting,
    actions: [
      ...(finished ? [] : ['cancel']),
      ...(task.status === 'failed' || task.status === 'cancelled' ? ['retry'] : []),
      ...awaiting.map((entry) => entry.action),
    ],
    ...(task.result !== undefined ? { result: task.result } : {}),
    ...(task.error !== undefined ? { error: task.error } : {}),
    progress: task.progress,
    created_at: task.created_at,
    started_at: task.started_at,
    finished_at: task.finished_at,
    timestamp: task.timestamp,
  };
}

/**
 * The task a session id names: first the task this key started with that id as its
 * idempotency key, then a task with that id (a client key: only its own). 404 otherwise.
 */
async function taskOf(sessionId: string, req: Request, tasks: TaskService): Promise<string> {
  // An id PostgreSQL could not store (NUL, a lone surrogate) is no session's.
  if (unstorableProblems(sessionId).length > 0) throw new NotFoundError('session_not_found', `no session ${JSON.stringify(sessionId)}`);
  const keyed = await tasks.byIdempotencyKey(submitter(req), sessionId);
  if (keyed) return keyed;
  if (/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(sessionId)) return sessionId;
  throw new NotFoundError('session_not_found', `no session ${JSON.stringify(sessionId)}`);
}

async function taskTypeOf(body: z.output<typeof sessionBody>, workflows: WorkflowService): Promise<string> {
  if (body.task_type !== undefined) return body.task_type;
  const id = await workflows.resolve(body.workflow!);
  if (!id) throw new NotFoundError('workflow_not_found', `no active workflow is named ${JSON.stringify(body.workflow)}`);
  return id;
}

export const SEED_003_ROUTES: Route[] = [
  route({
    method: 'post',
    path: '/v1/sessions',
    operationId: 'startSession',
    access: 'submit',
    admission: true,
    summary: 'Start a session (seed 003): a task, as POST /assign-task submits it',
    description:
      "`workflow` (an id or a display name) or `task_type`, with `parameters` or `params`. The session id is the task id, or the `session_id` you give, kept as the task's idempotency key: the same id and body again answer 200 with the same session, another body 409. Admission, the policy (kind `submit`) and quotas apply as to any submission.",
    tags,
    body: sessionBody,
    bodyExamples: sx.startSessionExamples,
    responses: {
      202: { description: 'Started: the task is stored and enqueued.', body: sessionStartedSchema, examples: sx.sessionStartedExamples },
      200: {
        description: 'This `session_id` was started before with the same body: that session.',
        body: sessionStartedSchema,
        examples: sx.sessionReplayedExamples,
      },
      400: invalid('The body is invalid, or the parameters do not fit (`invalid_params`, at `parameters.*` or `params.*`).'),
      404: notFound('No tool or workflow has that name (`unknown_task_type`, `workflow_not_found`).'),
      409: conflict('This `session_id` was used with another body (`idempotency_conflict`).'),
    },
    handler: async ({ body, req }, { tasks, workflows }) => {
      const taskType = await taskTypeOf(body, workflows);
      const paramsField = body.params !== undefined ? 'params' : 'parameters';
      const submitted = await tasks.submit(
        { task_type: taskType, params: body.params ?? body.parameters ?? {}, ...(body.session_id !== undefined ? { idempotency_key: body.session_id } : {}) },
        {
          ...(body.workflow !== undefined ? { workflowOnly: true } : {}),
          paramsField,
          owner: submitter(req),
          scope: req.apiKeyScope,
          client: clientOf(req),
        },
      );
      const sessionId = body.session_id ?? submitted.taskId;
      if (!submitted.replayed) {
        return {
          status: 202,
          body: { session_id: sessionId, task_id: submitted.taskId, task_type: taskType, status: 'pending', timestamp: new Date().toISOString() },
        };
      }
      const task = await tasks.result(submitted.taskId, 0, undefined, viewer(req));
      return {
        status: 200,
        body: { session_id: sessionId, task_id: submitted.taskId, task_type: taskType, status: sessionStatus(task), timestamp: task.timestamp },
      };
    },
  }),
  route({
    method: 'get',
    path: '/v1/sessions/{session_id}',
    operationId: 'getSession',
    access: 'tasks',
    summary: "Read a session (seed 003): its task, in the seed's words, with the actions it awaits",
    description: 'A session id you chose is found for the key that started the session; a task id, for any key that may read the task (a client key: its own).',
    tags,
    params: sessionIdParam,
    responses: {
      200: { description: 'The session.', body: sessionSchema, examples: sx.sessionExamples },
      404: notFound('No such session (`session_not_found`, `task_not_found`).'),
      410: gone,
      503: unavailable,
    },
    handler: async ({ params, req }, { tasks }) => {
      const taskId = await taskOf(params.session_id, req, tasks);
      return { status: 200, body: sessionView(params.session_id, await tasks.result(taskId, 0, undefined, viewer(req))) };
    },
  }),
  route({
    method: 'post',
    path: '/v1/sessions/{session_id}/actions/{action}',
    operationId: 'sessionAction',
    access: 'manageTasks',
    gated: true,
    summary: 'Act on a session (seed 003): cancel, retry, or a signal with the body as its payload',
    description:
      "`cancel`: POST /tasks/{task_id}/cancel. `retry`: POST /tasks/{task_id}/retry (the policy is asked, kind `retry`). Any other action is the signal of that name, the body its payload, under the rules of POST /tasks/{task_id}/signals/{name}: the owner only, the wait step's schema, 409 once signalled or ended, and the policy (kind `signal`).",
    tags,
    params: actionParams,
    paramExamples: { action: 'approval' },
    body: z.unknown(),
    bodyExamples: sx.sessionActionExamples,
    responses: {
      200: { description: 'Done: cancelled, or the signal recorded.', body: sessionActedSchema, examples: sx.sessionActedExamples },
      202: { description: 'Retried: its unfinished steps are enqueued again.', body: sessionActedSchema, examples: sx.sessionRetriedExamples },
      400: invalid("The payload does not fit the signal's schema (`invalid_payload`)."),
      404: notFound('No such session (`session_not_found`, `task_not_found`), or no step waits for that signal (`signal_not_found`).'),
      409: conflict(
        'cancel: it ended (`task_finished`); retry: it neither failed nor was cancelled (`task_not_retryable`); a signal: already given, not awaited yet, or the task ended (`already_signalled`, `not_waiting`, `task_finished`).',
      ),
      410: gone,
      429: resumedOverQuota,
      503: policyUnavailable,
    },
    handler: async ({ params, body, req }, { tasks }) => {
      const taskId = await taskOf(params.session_id, req, tasks);
      const acted = { session_id: params.session_id, task_id: taskId, action: params.action, timestamp: new Date().toISOString() };
      switch (params.action as (typeof BUILT_IN_ACTIONS)[number] | string) {
        case 'cancel':
          await tasks.cancel(taskId, ownerScope(req), submitter(req));
          return { status: 200, body: { ...acted, status: 'cancelled' } };
        case 'retry': {
          const { run } = await tasks.retry(taskId, asker(req));
          return { status: 202, body: { ...acted, status: 'pending', run } };
        }
        default: {
          const { stepId } = await tasks.signal(taskId, params.action, body, asker(req));
          return { status: 200, body: { ...acted, status: 'recorded', step_id: stepId } };
        }
      }
    },
  }),
  plainRoute({
    method: 'get',
    path: '/v1/{rest}',
    operationId: 'goneSessionRoutes',
    access: 'catalog',
    summary: "Seed 003's other routes: gone (410)",
    description:
      "Any method, any path below /v1/ but the three session routes: 410 `gone`, since sessions are tasks here. `details.use` names the routes to use: `POST /v1/sessions`, `GET /v1/sessions/{session_id}`, `POST /v1/sessions/{session_id}/actions/{action}`, `GET /tasks` (the list), `GET /tasks/{task_id}/history`. The policy engine's `/v1/evaluate` is the policy service's own route (POLICY_ENGINE_URL), not this service's.",
    tags,
    params: z.object({ rest: z.string() }),
    paramExamples: { rest: 'evaluate' },
    mount: true,
    responses: { 410: { description: 'Gone: sessions are tasks here.', body: r.errorBodySchema } },
    serve: () => (req, res) => {
      res.status(410).json(
        errorBody(
          'gone',
          `${req.method} ${req.originalUrl.split('?')[0]} means nothing here: sessions are tasks, read and changed through the session routes or the task routes`,
          {
            use: [
              'POST /v1/sessions',
              'GET /v1/sessions/{session_id}',
              'POST /v1/sessions/{session_id}/actions/{action}',
              'GET /tasks',
              'GET /tasks/{task_id}/history',
            ],
          },
        ),
      );
    },
  }),
];
