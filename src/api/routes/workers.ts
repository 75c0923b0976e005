import { z } from 'zod';
import {
  registeredWorkerSchema,
  type StepReport,
  stepReportAnswerSchema,
  stepReportBatchAnswerSchema,
  stepReportBatchSchema,
  stepReportSchema,
  workerRegistrationSchema,
  workerViewSchema,
} from '../../fleet/protocol.js';
import { HEARTBEAT_MS } from '../../fleet/worker-fleet.js';
import { ValidationError } from '../../lib/errors.js';
import { submitter } from '../access.js';
import type { ApiExample } from '../openapi-examples.js';
import { conflict, invalid, notFound, unavailable } from '../replies.js';
import { type Route, type RouteContext, route } from '../route.js';

const workerParam = z.object({
  worker_id: z
    .string()
    .regex(/^[A-Za-z0-9_.:@-]{1,200}$/)
    .meta({ description: 'The worker process, as it names itself (the SDK: `<host>-<pid>-<random>`).' }),
});
const workersTag = ['workers'];

const shout = {
  name: 'shout',
  description: 'Upper-cases a text.',
  input_schema: {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    type: 'object',
    properties: { text: { type: 'string' } },
    required: ['text'],
    additionalProperties: false,
  },
  output_schema: {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    type: 'object',
    properties: { text: { type: 'string' } },
    required: ['text'],
    additionalProperties: false,
  },
  retry: { attempts: 3, backoff: { type: 'exponential', delay_ms: 1000 } },
  timeout_ms: 30000,
};
const registrationExamples: Record<string, ApiExample> = {
  one: { summary: 'A worker with one tool', value: { host: 'app-1', pid: 4242, version: '1.0.0', concurrency: 10, tools: [shout] } },
};
const registeredExamples: Record<string, ApiExample> = {
  registered: {
    summary: 'Registered: where its jobs are',
    value: {
      worker_id: 'app-1-4242-9f3a',
      queue_prefix: 'orchestrator',
      queue_shards: 1,
      heartbeat_ms: HEARTBEAT_MS,
      step_running_after_ms: 1000,
      task_result_max_bytes: 1048576,
      tools: [{ name: 'shout', version: 1, changed: false }],
    },
  },
};
const exampleWorker = {
  worker_id: 'app-1-4242-9f3a',
  owner: 'billing',
  host: 'app-1',
  pid: 4242,
  version: '1.0.0',
  concurrency: 10,
  tools: ['shout'],
  started_at: '2026-11-25T09:00:00.000Z',
  last_heartbeat_at: '2026-11-25T09:12:05.000Z',
  live: true,
  running: [{ task_id: '0193a0c2-7b1e-7c3a-9d4f-2a1b3c4d5e6f', step_id: 'shout', tool: 'shout', since: '2026-11-25T09:12:04.210Z' }],
  running_count: 1,
};
const reportExamples: Record<string, ApiExample> = {
  result: {
    summary: "A step's result",
    value: {
      op: 'result',
      task_id: '0193a0c2-7b1e-7c3a-9d4f-2a1b3c4d5e6f',
      run: 1,
      step_id: 'shout',
      tool: 'shout',
      single: true,
      attempt: 1,
      try: 1,
      status: 'completed',
      output: { text: 'HELLO' },
      started_at: '2026-11-25T09:12:05.000Z',
      finished_at: '2026-11-25T09:12:05.010Z',
    },
  },
};

/**
 * Workers of users' own (src/fleet): they register their tools and report their steps here with
 * a `worker` key, and never hold the database; operators list and forget them.
 */
export const WORKER_ROUTES: Route[] = [
  route({
    method: 'put',
    path: '/workers/{worker_id}',
    operationId: 'registerWorker',
    access: 'work',
    summary: 'Register a worker and its tools (again: its heartbeat); answers where its jobs are',
    description:
      'Each tool is stored with its JSON Schemas (what `POST /assign-task` validates params with) and stays known when its workers stop: its tasks queue until one returns. A tool registered with other schemas, description, retry or timeout is a new version; while another live worker serves the old one it is refused (409 `tool_conflict`, naming what differs) unless `replace` is true. Answers the queue prefix and shards the worker takes its jobs from in Redis; never a database address.',
    tags: workersTag,
    params: workerParam,
    paramExamples: { worker_id: 'app-1-4242-9f3a' },
    body: workerRegistrationSchema,
    invalidBody: { code: 'invalid_worker', message: 'the registration is invalid' },
    bodyExamples: registrationExamples,
    responses: {
      200: { description: 'Registered.', body: registeredWorkerSchema, examples: registeredExamples },
      400: invalid('The registration is invalid (`invalid_worker`).'),
      409: conflict('A tool is built in, or differs from what live workers serve (`tool_conflict`).'),
      503: unavailable,
    },
    handler: async ({ params, body, req }, ctx) => {
      const builtIn = new Set(ctx.tools().flatMap((tool) => (ctx.fleet.get(tool.name) ? [] : [tool.name])));
      const tools = await ctx.fleet.register(params.worker_id, submitter(req), body, builtIn);
      return {
        status: 200,
        body: {
          worker_id: params.worker_id,
          queue_prefix: ctx.config.QUEUE_PREFIX,
          queue_shards: ctx.config.QUEUE_SHARDS,
          heartbeat_ms: HEARTBEAT_MS,
          step_running_after_ms: ctx.config.STEP_RUNNING_AFTER_MS,
          task_result_max_bytes: ctx.config.TASK_RESULT_MAX_BYTES,
          tools,
        },
      };
    },
  }),
  route({
    method: 'get',
    path: '/workers',
    operationId: 'listWorkers',
    access: 'monitor',
    summary: 'List the workers of users’ own: their tools, concurrency and last heartbeat',
    tags: workersTag,
    responses: {
      200: {
        description: 'The workers, live or not.',
        body: z.object({ workers: z.array(workerViewSchema) }),
        examples: { one: { summary: 'One live worker', value: { workers: [exampleWorker] } } },
      },
      503: unavailable,
    },
    handler: async (_input, ctx) => ({ status: 200, body: { workers: await ctx.fleet.workers() } }),
  }),
  route({
    method: 'delete',
    path: '/workers/{worker_id}',
    operationId: 'forgetWorker',
    access: 'work',
    summary: 'Forget a worker that stopped (its tools stay)',
    description:
      'An admin key forgets any worker; a worker key only one it registered itself, as the SDK does when its worker stops (so a restarted worker whose tools changed is not refused for the old one, which would count as live for three heartbeats).',
    tags: workersTag,
    params: workerParam,
    paramExamples: { worker_id: 'app-1-4242-9f3a' },
    responses: {
      200: {
        description: 'Forgotten.',
        body: z.object({ worker_id: z.string(), forgotten: z.literal(true) }),
        examples: { forgotten: { summary: 'Forgotten', value: { worker_id: 'app-1-4242-9f3a', forgotten: true } } },
      },
      404: notFound('No worker has this id, or none that this worker key registered (`worker_not_found`).'),
      503: unavailable,
    },
    handler: async ({ params, req }, ctx) => {
      await ctx.fleet.forget(params.worker_id, req.apiKeyScope === 'worker' ? submitter(req) : undefined);
      return { status: 200, body: { worker_id: params.worker_id, forgotten: true } };
    },
  }),
  route({
    method: 'post',
    path: '/workers/{worker_id}/steps',
    operationId: 'reportStep',
    access: 'work',
    summary: "A worker's report on a step it runs: a claim, its result, a note (progress, a failed try), or settle",
    description:
      'What the built-in worker writes to PostgreSQL itself (src/tasks/step-ledger.ts), said over HTTP: the same rules apply. Only steps of tools registered through `/workers` may be reported on. One report, or `{reports: [...]}` (at most 100): the SDK sends the reports that queue while a request is on its way in the next one, so a busy worker makes one request for many steps.',
    tags: workersTag,
    params: workerParam,
    paramExamples: { worker_id: 'app-1-4242-9f3a' },
    body: z.union([stepReportSchema, stepReportBatchSchema]),
    bodyExamples: reportExamples,
    responses: {
      200: {
        description: 'claim: whether the step may run; result: whether it was recorded. For a batch, one answer per report, in order.',
        body: z.union([stepReportAnswerSchema, stepReportBatchAnswerSchema]),
        examples: { recorded: { summary: 'Recorded', value: { ok: true } } },
      },
      400: invalid('The report is invalid, or its tool is not one registered through /workers (`validation_error`).'),
      503: unavailable,
    },
    handler: async ({ params, body }, ctx) => {
      if (!('reports' in body)) return { status: 200, body: await applyReport(body, params.worker_id, ctx) };
      return { status: 200, body: { answers: await Promise.all(body.reports.map((report) => applyReport(report, params.worker_id, ctx))) } };
    },
  }),
];

/**
 * Applies one report with the built-in worker's own rules (src/tasks/step-ledger.ts); reports of
 * one batch go through the ledger side by side, so its group commit writes them together.
 */
async function applyReport(body: StepReport, worker: string, ctx: RouteContext): Promise<{ ok: boolean }> {
  if (!ctx.fleet.get(body.tool))
    throw new ValidationError(`${body.tool} is not a tool registered through /workers`, [{ path: 'tool', message: 'not registered through /workers' }]);
  const ref = {
    taskId: body.task_id,
    run: body.run,
    stepId: body.step_id,
    ...(body.item !== undefined ? { item: body.item } : {}),
    tool: body.tool,
    ...(body.single ? { single: true } : {}),
    ...(body.limited ? { limited: true } : {}),
  };
  const item = body.item !== undefined ? { item: body.item } : {};
  // Which step a claim, a note or log lines are about, as the ledger names it.
  const step = { tool: body.tool, taskId: body.task_id, run: body.run, stepId: body.step_id, ...item };
  switch (body.op) {
    case 'claim':
      return {
        ok: await ctx.ledger.claim({
          ...step,
          attempt: body.attempt,
          at: new Date(body.at),
          try: body.try,
          worker,
          ...(body.job_id !== undefined ? { jobId: body.job_id } : {}),
        }),
      };
    case 'result':
      return {
        ok: await ctx.ledger.finish(ref, {
          attempt: body.attempt,
          try: body.try,
          worker,
          ...(body.job_id !== undefined ? { jobId: body.job_id } : {}),
          status: body.status,
          ...(body.output !== undefined ? { output: body.output } : {}),
          ...(body.error !== undefined ? { error: body.error } : {}),
          ...(body.input !== undefined ? { input: body.input } : {}),
          startedAt: new Date(body.started_at),
          finishedAt: new Date(body.finished_at),
        }),
      };
    case 'note':
      await ctx.ledger.note({
        ...step,
        ...(body.attempt !== undefined ? { attempt: body.attempt } : {}),
        ...(body.try !== undefined ? { try: body.try } : {}),
        ...(body.job_id !== undefined ? { jobId: body.job_id, worker } : {}),
        ...(body.error !== undefined ? { error: body.error } : {}),
        ...(body.progress !== undefined ? { progress: body.progress } : {}),
        ...(body.delay_ms !== undefined ? { delayMs: body.delay_ms } : {}),
        ...(body.started_at !== undefined ? { startedAt: new Date(body.started_at) } : {}),
        ...(body.finished_at !== undefined ? { finishedAt: new Date(body.finished_at) } : {}),
      });
      return { ok: true };
    case 'settle':
      await ctx.ledger.settle(ref);
      return { ok: true };
    case 'logs':
      await ctx.ledger.logs({
        ...step,
        attempt: body.attempt,
        ...(body.try !== undefined ? { try: body.try } : {}),
        lines: body.lines,
        dropped: body.dropped,
      });
      return { ok: true };
  }
}
