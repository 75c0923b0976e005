import { z } from 'zod';
import { createScheduleSchema, scheduleName, updateScheduleSchema } from '../../schedules/schedule-request.js';
import { ownerScope, submitter } from '../access.js';
import * as ex from '../openapi-examples.js';
import { conflict, invalid, notFound, unavailable } from '../replies.js';
import * as r from '../responses.js';
import { type Route, route } from '../route.js';

const nameParam = z.object({ name: scheduleName });
const schedulesTag = ['schedules'];
const missing = notFound("No schedule has that name, or it is another client key's (`schedule_not_found`).");

/**
 * Schedules: a task on every tick of a cron expression or an interval. A client key sees and
 * changes only its own (their tasks are its own too); admin and read keys see every one.
 */
export const SCHEDULE_ROUTES: Route[] = [
  route({
    method: 'post',
    path: '/schedules',
    operationId: 'createSchedule',
    access: 'submit',
    summary: 'Create a schedule',
    description:
      'Exactly one of `cron` and `every_ms`. The task type and params are checked as /assign-task checks them. Its tasks belong to the key that creates it.',
    tags: schedulesTag,
    body: createScheduleSchema,
    invalidBody: { code: 'invalid_schedule', message: 'the schedule is invalid' },
    bodyExamples: ex.createScheduleExamples,
    responses: {
      201: { description: 'Stored and installed.', body: r.scheduleSchema, examples: ex.scheduleExamples },
      400: invalid(
        'The body is invalid (`invalid_schedule`: a bad cron expression or time zone, with the reason at its path), the task type is unknown (`unknown_task_type`) or the params do not fit it (`invalid_params`).',
      ),
      409: conflict('A schedule of that name exists (`schedule_exists`).'),
      503: unavailable,
    },
    handler: async ({ body, req }, { schedules }) => ({ status: 201, body: await schedules.create(body, submitter(req)) }),
  }),
  route({
    method: 'get',
    path: '/schedules',
    operationId: 'listSchedules',
    access: 'tasks',
    summary: 'List the schedules',
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
    paramExamples: { name: ex.EXAMPLE_SCHEDULE },
    responses: {
      200: { description: 'The schedule.', body: r.scheduleDetailSchema, examples: ex.scheduleDetailExamples },
      400: invalid('The name is not a schedule name.'),
      404: missing,
      503: unavailable,
    },
    handler: async ({ params, req }, { schedules }) => ({ status: 200, body: await schedules.get(params.name, ownerScope(req)) }),
  }),
  route({
    method: 'patch',
    path: '/schedules/{name}',
    operationId: 'updateSchedule',
    access: 'manageTasks',
    summary: 'Pause, resume or change a schedule',
    description:
      'Only the fields given change. `{"paused": true}` stops its ticks; `{"paused": false}` resumes it, and the ticks missed meanwhile run as `catch_up` says. A new cron, interval or time zone counts from now.',
    tags: schedulesTag,
    params: nameParam,
    body: updateScheduleSchema,
    invalidBody: { code: 'invalid_schedule', message: 'the schedule is invalid' },
    bodyExamples: ex.updateScheduleExamples,
    paramExamples: { name: ex.EXAMPLE_SCHEDULE },
    responses: {
      200: { description: 'Changed.', body: r.scheduleSchema, examples: ex.scheduleExamples },
      400: invalid('The body is invalid (`invalid_schedule`), the task type unknown (`unknown_task_type`) or the params do not fit it (`invalid_params`).'),
      404: missing,
      503: unavailable,
    },
    handler: async ({ params, body, req }, { schedules }) => ({ status: 200, body: await schedules.update(params.name, body, ownerScope(req)) }),
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
    paramExamples: { name: ex.EXAMPLE_SCHEDULE },
    responses: {
      200: { description: 'Deleted.', body: r.scheduleDeletedSchema, examples: ex.scheduleDeletedExamples },
      400: invalid('The name is not a schedule name.'),
      404: missing,
      503: unavailable,
    },
    handler: async ({ params, req }, { schedules }) => {
      await schedules.delete(params.name, ownerScope(req));
      return { status: 200, body: { name: params.name, deleted: true, message: 'Schedule deleted; the tasks it made are kept' } };
    },
  }),
];
