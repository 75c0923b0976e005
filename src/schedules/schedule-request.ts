import { z } from 'zod';
import { IDENTIFIER } from '../engine/workflow-definition.js';
import { CATCH_UP_POLICIES, OVERLAP_POLICIES } from './decide-ticks.js';
import { cronProblem, timezoneProblem } from './timing.js';

/** The largest params a schedule stores, as JSON (each tick's task gets a copy). */
export const SCHEDULE_PARAMS_MAX_BYTES = 65_536;
/** Ticks closer than this would be a queue of their own, not a schedule. */
export const MIN_EVERY_MS = 100;
/** every_ms is stored as a 32-bit integer: at most a week (use cron for longer periods). */
export const MAX_EVERY_MS = 7 * 86_400_000;
export const MAX_CATCH_UP_WINDOW_MS = 30 * 86_400_000;

export const scheduleName = z
  .string()
  .regex(IDENTIFIER, 'a schedule name starts with a letter and holds only letters, digits, _ and - (at most 64)')
  .meta({ description: "Unique among its owner's schedules (another key may use the same name); part of the URL.", example: 'nightly-report' });

const cron = z.string().min(1).max(200).meta({
  description: 'A cron expression: 5 fields (minute hour day-of-month month day-of-week), or 6 with seconds first. Evaluated in `timezone`.',
  example: '0 2 * * *',
});
const everyMs = z
  .int()
  .min(MIN_EVERY_MS)
  .max(MAX_EVERY_MS)
  .meta({ description: `Instead of cron: a tick every so many milliseconds, at multiples of it since 1970-01-01T00:00Z (at least ${MIN_EVERY_MS}).` });
const timezone = z.string().min(1).max(64).meta({ description: 'IANA time zone of the cron expression (ignored with every_ms).', example: 'Europe/Berlin' });
const params = z.record(z.string(), z.unknown()).meta({
  description: `The params of every task the schedule makes, checked like /assign-task's when stored (at most ${SCHEDULE_PARAMS_MAX_BYTES} bytes as JSON).`,
});
const overlap = z.enum(OVERLAP_POLICIES).meta({
  description:
    'A tick while an earlier task of the schedule is still queued or running: `skip` makes no task (the tick is recorded as skipped), `allow` makes one anyway, `buffer_one` lets one tick wait and starts it when the running task ends (further ticks are skipped).',
});
export const catchUpSchema = z
  .union([
    z.enum(CATCH_UP_POLICIES.filter((policy) => policy !== 'all_within_ms') as ['none', 'latest']),
    z.object({ all_within_ms: z.int().min(1).max(MAX_CATCH_UP_WINDOW_MS) }).strict(),
  ])
  .meta({
    description:
      'Ticks missed while the schedule was paused or no worker ran: `none` runs none, `latest` runs the most recent one, `{"all_within_ms": N}` runs those of the last N milliseconds (N at most 30 days), at most SCHEDULE_CATCH_UP_MAX (24 by default) of them per catch-up: the newest.',
  });
const paused = z.boolean().meta({ description: 'A paused schedule makes no task; resuming it applies `catch_up`.' });

type Ctx = z.RefinementCtx;

function checkTiming(value: { cron?: string | undefined; timezone?: string | undefined }, ctx: Ctx): void {
  const zoneProblem = value.timezone === undefined ? undefined : timezoneProblem(value.timezone);
  if (zoneProblem) ctx.addIssue({ code: 'custom', path: ['timezone'], message: zoneProblem });
  const problem = value.cron === undefined || zoneProblem ? undefined : cronProblem(value.cron, value.timezone);
  if (problem) ctx.addIssue({ code: 'custom', path: ['cron'], message: problem });
}

function checkParamsSize(value: { params?: Record<string, unknown> | undefined }, ctx: Ctx): void {
  if (value.params !== undefined && Buffer.byteLength(JSON.stringify(value.params)) > SCHEDULE_PARAMS_MAX_BYTES) {
    ctx.addIssue({ code: 'custom', path: ['params'], message: `params are larger than ${SCHEDULE_PARAMS_MAX_BYTES} bytes as JSON` });
  }
}

/** The body of POST /schedules. */
export const createScheduleSchema = z
  .object({
    name: scheduleName,
    cron: cron.optional(),
    every_ms: everyMs.optional(),
    timezone: timezone.default('UTC'),
    task_type: z.string().min(1).max(200).meta({ description: 'A tool or a registered workflow, as in /assign-task.' }),
    params: params.default({}),
    overlap: overlap.default('skip'),
    catch_up: catchUpSchema.default('none'),
    paused: paused.default(false),
  })
  .strict()
  .superRefine((value, ctx) => {
    if ((value.cron === undefined) === (value.every_ms === undefined)) {
      ctx.addIssue({ code: 'custom', path: value.cron === undefined ? ['cron'] : ['every_ms'], message: 'give exactly one of cron and every_ms' });
    }
    checkTiming(value, ctx);
    checkParamsSize(value, ctx);
  });
export type CreateSchedule = z.output<typeof createScheduleSchema>;

/** The body of PATCH /schedules/:name: the fields to change. A cron replaces an every_ms and the other way round. */
export const updateScheduleSchema = z
  .object({
    cron: cron.optional(),
    every_ms: everyMs.optional(),
    timezone: timezone.optional(),
    task_type: z.string().min(1).max(200).optional(),
    params: params.optional(),
    overlap: overlap.optional(),
    catch_up: catchUpSchema.optional(),
    paused: paused.optional(),
  })
  .strict()
  .superRefine((value, ctx) => {
    if (value.cron !== undefined && value.every_ms !== undefined)
      ctx.addIssue({ code: 'custom', path: ['every_ms'], message: 'give at most one of cron and every_ms' });
    checkTiming(value, ctx);
    checkParamsSize(value, ctx);
  });
export type UpdateSchedule = z.output<typeof updateScheduleSchema>;
