import type { Request } from 'express';
import { z } from 'zod';
import { createScheduleSchema, scheduleName, updateScheduleSchema } from '../../schedules/schedule-request.js';
import type { ScheduleAsker } from '../../schedules/schedule-service.js';
import { ownerScope } from '../access.js';
import * as ex from '../openapi-examples.js';
import { conflict, invalid, notFound, policyUnavailable, unavailable } from '../replies.js';
import * as r from '../responses.js';
import { type Route, route } from '../route.js';

const nameParam = z.object({ name: scheduleName });
const ownerQuery = z
  .object({
    owner: z.string().max(200).optional().meta({
      description:
        "Whose schedule of that name (a key id, as `owner` shows it), for admin and read keys when several keys use the name. A client key's is always its own.",
    }),
  })
  .strict();
const schedulesTag = ['schedules'];
const missing = notFound("No schedule of yours has that name (`schedule_not_found`): another client key's schedules are not found.");
const ambiguous = conflict('Several keys have a schedule of that name (`schedule_ambiguous`, `details.owners`): say whose with `?owner=`.');

/** Who asks: a client key reaches only its own schedules; `pick` names the owner meant by a key that sees every one. */
function asker(req: Request, pick?: string): ScheduleAsker {
  const owner = ownerScope(req);
  return {
    ...(owner !== undefined ? { owner } : {}),
    ...(pick !== undefined ? { pick } : {}),
    ...(req.apiKeyId !== undefined ? { keyId: req.apiKeyId } : {}),
    ...(req.apiKeyScope !== undefined ? { scope: req.apiKeyScope } : {}),
  };
}

/**
 * Schedules: a task on every tick of a cron expression or an interval. A schedule belongs to the
 * key that creates it, and its name is unique among that key's: a client key sees and changes only
 * its own (their tasks are its own too); admin and read keys see every one, with its owner.
 */
export const SCHEDULE_ROUTES: Route[] = [
  route({
    method: 'post',
    path: '/schedules',
    operationId: 'createSchedule',
    access: 'submit',
    gated: true,
    summary: 'Create a schedule',
    description:
      "Exactly one of `cron` and `every_ms`. The task type and params are checked as /assign-task checks them, and put to the policy (POLICY_URL, kind `schedule`); each tick asks again (kind `tick`) and counts against the owner's quotas. Its tasks belong to the key that creates it. A client key may have SCHEDULES_MAX_PER_KEY schedules.",
    tags: schedulesTag,
    body: createScheduleSchema,
    invalidBody: { code: 'invalid_schedule', message: 'the schedule is invalid' },
    bodyExamples: ex.createScheduleExamples,
    responses: {
      201: { description: 'Stored and installed.', body: r.scheduleSchema, examples: ex.scheduleExamples },
      400: invalid(
        'The body is invalid (`invalid_schedule`: a bad cron expression or time zone, with the reason at its path), the task type is unknown (`unknown_task_type`) or the params do not fit it (`invalid_params`).',
      ),
      409: conflict(
        "You have a schedule of that name (`schedule_exists`; another key's of the same name does not count), or as many schedules as SCHEDULES_MAX_PER_KEY allows a client key (`too_many_schedules`, `details.max` and `details.held`).",
      ),
      503: policyUnavailable,
    },
    handler: async ({ body, req }, { schedules }) => ({ status: 201, body: await schedules.create(body, asker(req)) }),
  }),
  route({
    method: 'get',
    path: '/schedules',
    operationId: 'listSchedules',
    access: 'tasks',
    summary: 'List the schedules (a client key: its own), each with its owner',
    tags: schedulesTag,
    responses: { 200: { description: 'The schedules, by name.', body: r.scheduleListSchema, examples: ex.scheduleListExamples }, 503: unavailable },
    handler: async ({ req }, { schedules }) => ({ status: 200, body: { schedules: await schedules.list(ownerScope(req)) } }),
  }),
  route({
    method: 'get',
    path: '/schedules/{name}',
    operationId: 'getSchedule',
    access: 'tasks',
    summary: 'Read a schedule, its next 5 ticks and its latest runs',
    tags: schedulesTag,
    params: nameParam,
    query: ownerQuery,
    paramExamples: { name: ex.EXAMPLE_SCHEDULE },
    responses: {
      200: { description: 'The schedule.', body: r.scheduleDetailSchema, examples: ex.scheduleDetailExamples },
      400: invalid('The name is not a schedule name.'),
      404: missing,
      409: ambiguous,
      503: unavailable,
    },
    handler: async ({ params, query, req }, { schedules }) => ({ status: 200, body: await schedules.get(params.name, asker(req, query.owner)) }),
  }),
  route({
    method: 'patch',
    path: '/schedules/{name}',
    operationId: 'updateSchedule',
    access: 'manageTasks',
    gated: true,
    summary: 'Pause, resume or change a schedule',
    description:
      'Only the fields given change. `{"paused": true}` stops its ticks; `{"paused": false}` resumes it, and the ticks missed meanwhile run as `catch_up` says. A new cron, interval or time zone counts from now.',
    tags: schedulesTag,
    params: nameParam,
    query: ownerQuery,
    body: updateScheduleSchema,
    invalidBody: { code: 'invalid_schedule', message: 'the schedule is invalid' },
    bodyExamples: ex.updateScheduleExamples,
    paramExamples: { name: ex.EXAMPLE_SCHEDULE },
    responses: {
      200: { description: 'Changed.', body: r.scheduleSchema, examples: ex.scheduleExamples },
      400: invalid('The body is invalid (`invalid_schedule`), the task type unknown (`unknown_task_type`) or the params do not fit it (`invalid_params`).'),
      404: missing,
      409: ambiguous,
      503: policyUnavailable,
    },
    handler: async ({ params, query, body, req }, { schedules }) => ({
      status: 200,
      body: await schedules.update(params.name, body, asker(req, query.owner)),
    }),
  }),
  route({
    method: 'delete',
    path: '/schedules/{name}',
    operationId: 'deleteSchedule',
    access: 'manageTasks',
    summary: 'Delete a schedule',
    description: 'No further tick makes a task; the tasks it made are kept and still name it.',
    tags: schedulesTag,
    params: nameParam,
    query: ownerQuery,
    paramExamples: { name: ex.EXAMPLE_SCHEDULE },
    responses: {
      200: { description: 'Deleted.', body: r.scheduleDeletedSchema, examples: ex.scheduleDeletedExamples },
      400: invalid('The name is not a schedule name.'),
      404: missing,
      409: ambiguous,
      503: unavailable,
    },
    handler: async ({ params, query, req }, { schedules }) => {
      await schedules.delete(params.name, asker(req, query.owner));
      return { status: 200, body: { name: params.name, deleted: true, message: 'Schedule deleted; the tasks it made are kept' } };
    },
  }),
];
