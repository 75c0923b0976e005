import { SERVICE_LINKS } from './service-links.js';
/**
 * The examples of the API description (src/api/openapi.ts). Request examples are what Swagger
 * UI's "Try it out" pre-fills, so each must succeed as it stands on a default install (no API
 * keys, no CALLBACK_SECRET): no callback_url, no delay. test/api/openapi-examples.test.ts checks
 * that every example fits its schema and sends every request example to a running service.
 * Response examples are answers the service gave, with their ids and times kept consistent.
 */

/** An OpenAPI Example Object. */
export interface ApiExample {
  summary: string;
  description?: string;
  value: unknown;
}

/** The definition POST /workflows's example stores, and the workflow its execute example runs. */
export const EXAMPLE_WORKFLOW = 'greet_twice';
/** An example workflow every install loads on start (src/workflows/examples): reading it works at once. */
export const LOADED_WORKFLOW = 'diamond';

const TASK_ID = '4f1c2b7e-8a3d-4e5f-9b6c-0d1e2f3a4b5c';
const FAILED_TASK_ID = '9d2e4f60-1b3a-4c5d-8e7f-6a5b4c3d2e1f';
const WORKFLOW_TASK_ID = 'fcc394fe-0e21-4655-bc76-f8165ade9e81';
const DEAD_LETTER_ID = '2b7c9d1e-3f4a-4b5c-9d6e-7f8a9b0c1d2e';

// Request bodies

export const assignTaskExamples: Record<string, ApiExample> = {
  echo: { summary: 'A one-tool task: echo returns its params', value: { task_type: 'echo', params: { hello: 'world' } } },
  approve_batches: {
    summary: 'Approve batches (the example of the Celery-style contract this service replaces)',
    description: 'Batch ids may be integers or strings; the result reports them as sent.',
    value: { task_type: 'approve_batches', params: { batch_ids: [1, 2, 3], auto_approve: true } },
  },
  workflow: {
    summary: `A workflow: ${LOADED_WORKFLOW}, loaded on start`,
    value: { task_type: LOADED_WORKFLOW, params: { value: 'v' } },
  },
  idempotent: {
    summary: 'With an idempotency key and a priority',
    description: 'Sent again with the same body, it answers 200 with the first task; with another body, 409.',
    value: { task_type: 'echo', params: { order: 42 }, idempotency_key: 'order-42', priority: 1 },
  },
};

export const defineWorkflowExamples: Record<string, ApiExample> = {
  greet_twice: {
    summary: 'Two steps in parallel, then one that needs both',
    value: {
      name: EXAMPLE_WORKFLOW,
      description: 'Greets someone, then again after a pause.',
      parameters: [{ name: 'who', type: 'string', required: true }],
      steps: [
        { id: 'hello', tool: 'echo', input: { text: 'Hello, {{params.who}}' } },
        { id: 'pause', tool: 'sleep', input: { ms: 500 } },
        {
          id: 'both',
          tool: 'echo',
          depends_on: ['hello', 'pause'],
          input: { greeting: '{{steps.hello.output.text}}', slept: '{{steps.pause.output.slept_ms}}' },
        },
      ],
      output: { message: '{{steps.both.output.greeting}}!' },
    },
  },
};

/** A definition with an unknown tool and a dependency on a step that does not exist: POST /workflows/check's problems. */
const brokenDefinition = {
  name: 'broken_example',
  steps: [
    { id: 'fetch', tool: 'no_such_tool', input: {} },
    { id: 'report', tool: 'echo', depends_on: ['fetched'], input: { text: 'done' } },
  ],
};

export const checkWorkflowExamples: Record<string, ApiExample> = {
  valid: { summary: 'A definition that would be stored', value: defineWorkflowExamples.greet_twice!.value },
  problems: { summary: 'An unknown tool and a missing dependency', value: brokenDefinition },
};

// For the workflow every install loads (the path example of /workflows/{name}/execute), so that
// a collection generated from the document alone runs it successfully.
export const executeWorkflowExamples: Record<string, ApiExample> = {
  [LOADED_WORKFLOW]: {
    summary: `Run ${LOADED_WORKFLOW} (loaded on start)`,
    value: { parameters: { value: 'v' } },
  },
};

// Answers

const assigned = (id: string, type: string, replay = false) => ({
  task_id: id,
  status: 'assigned',
  message: replay ? `Task '${type}' was already assigned with this idempotency_key` : `Task '${type}' successfully assigned`,
  timestamp: '2026-11-22T18:30:01.398Z',
});

export const assignedExamples: Record<string, ApiExample> = { assigned: { summary: 'Accepted', value: assigned(TASK_ID, 'approve_batches') } };
export const replayedExamples: Record<string, ApiExample> = {
  replayed: { summary: 'The first task of this idempotency key', value: assigned(TASK_ID, 'echo', true) },
};
const executed = (replay = false) => ({ ...assigned(WORKFLOW_TASK_ID, LOADED_WORKFLOW, replay), execution_id: WORKFLOW_TASK_ID, workflow_id: LOADED_WORKFLOW });
export const executedExamples: Record<string, ApiExample> = { assigned: { summary: 'Accepted', value: executed() } };
export const reexecutedExamples: Record<string, ApiExample> = { replayed: { summary: 'The first task of this idempotency key', value: executed(true) } };

export const assignTaskInvalidExamples: Record<string, ApiExample> = {
  invalid_params: {
    summary: 'params do not fit the tool',
    value: {
      error: {
        code: 'invalid_params',
        message: "params do not fit the input schema of tool 'approve_batches'",
        details: [
          { path: 'params.batch_ids[0]', message: 'Invalid input' },
          { path: 'params.batch_ids[1]', message: 'Too small: expected string to have >=1 characters' },
        ],
      },
    },
  },
  callbacks_disabled: {
    summary: 'A callback_url on a server without CALLBACK_SECRET',
    value: {
      error: {
        code: 'callbacks_disabled',
        message: 'callbacks are not enabled on this server',
        details: [{ path: 'callback_url', message: 'set CALLBACK_SECRET to sign callbacks' }],
      },
    },
  },
};

export const unknownTaskTypeExamples: Record<string, ApiExample> = {
  unknown_task_type: {
    summary: 'No tool or workflow has that name',
    value: {
      error: {
        code: 'unknown_task_type',
        message: 'no tool or workflow is named "aprove_batches"',
        details: {
          known_task_types: ['approve_batches', 'diamond', 'document_analysis', 'echo', 'fan_out_fan_in', 'http', 'notify', 'sleep', 'text_stats'],
          tools: ['approve_batches', 'echo', 'http', 'notify', 'sleep', 'text_stats'],
          workflows: ['diamond', 'document_analysis', 'fan_out_fan_in'],
        },
      },
    },
  },
};

const completedTask = {
  task_id: TASK_ID,
  task_type: 'approve_batches',
  status: 'completed',
  result: { processed_batches: 3, approved: [1, 2, 3], rejected: [] },
  progress: { completed: 1, total: 1 },
  run: 1,
  steps: [
    {
      id: 'approve_batches',
      kind: 'tool',
      tool: 'approve_batches',
      status: 'completed',
      attempts: 1,
      depends_on: [],
      started_at: '2026-11-22T18:30:01.405Z',
      finished_at: '2026-11-22T18:30:01.409Z',
      duration_ms: 4,
      progress: { percent: 100, message: 'reviewed 3 of 3 batches' },
      input: { batch_ids: [1, 2, 3], auto_approve: true },
      output: { processed_batches: 3, approved: [1, 2, 3], rejected: [] },
    },
  ],
  created_at: '2026-11-22T18:30:01.396Z',
  started_at: '2026-11-22T18:30:01.405Z',
  finished_at: '2026-11-22T18:30:01.409Z',
  timestamp: '2026-11-22T18:30:02.010Z',
};

const timeout = { name: 'ToolTimeoutError', message: 'step timed out after 30000 ms', retryable: false };

const failedTask = {
  task_id: FAILED_TASK_ID,
  task_type: 'http',
  status: 'failed',
  error: { step: 'http', ...timeout },
  error_message: 'step http (5 attempts) failed: ToolTimeoutError: step timed out after 30000 ms',
  progress: { completed: 1, total: 1 },
  run: 1,
  steps: [
    {
      id: 'http',
      kind: 'tool',
      tool: 'http',
      status: 'failed',
      attempts: 5,
      depends_on: [],
      started_at: '2026-11-22T18:31:00.120Z',
      finished_at: '2026-11-22T18:33:37.650Z',
      duration_ms: 157_530,
      error: timeout,
    },
  ],
  created_at: '2026-11-22T18:31:00.102Z',
  started_at: '2026-11-22T18:31:00.120Z',
  finished_at: '2026-11-22T18:33:37.650Z',
  timestamp: '2026-11-22T18:33:40.001Z',
};

const runningWorkflow = {
  task_id: WORKFLOW_TASK_ID,
  task_type: 'fetch_pages',
  workflow: { name: 'fetch_pages', version: 2 },
  status: 'running',
  progress: { completed: 2, total: 4 },
  run: 1,
  steps: [
    {
      id: 'list',
      kind: 'tool',
      tool: 'echo',
      status: 'completed',
      attempts: 1,
      depends_on: [],
      started_at: '2026-11-22T18:30:01.405Z',
      finished_at: '2026-11-22T18:30:01.406Z',
      duration_ms: 1,
      input: { urls: ['https://example.com/a', 'https://example.com/b', 'https://example.com/c'] },
      output: { urls: ['https://example.com/a', 'https://example.com/b', 'https://example.com/c'] },
    },
    {
      id: 'announce',
      kind: 'tool',
      tool: 'notify',
      status: 'skipped',
      reason: 'condition',
      attempts: 0,
      depends_on: ['list'],
      started_at: null,
      finished_at: '2026-11-22T18:30:01.410Z',
      duration_ms: null,
    },
    {
      id: 'fetch_each',
      kind: 'tool',
      tool: 'http',
      status: 'running',
      attempts: 0,
      depends_on: ['list'],
      started_at: '2026-11-22T18:30:01.410Z',
      finished_at: null,
      duration_ms: null,
      items: { total: 3, done: 1, failed: 0, running: 2 },
    },
    {
      id: 'cool_off',
      kind: 'sleep',
      tool: null,
      status: 'pending',
      attempts: 0,
      depends_on: ['fetch_each'],
      started_at: null,
      finished_at: null,
      duration_ms: null,
    },
  ],
  created_at: '2026-11-22T18:30:01.396Z',
  started_at: '2026-11-22T18:30:01.405Z',
  finished_at: null,
  timestamp: '2026-11-22T18:30:01.800Z',
};

export const stepLogsExamples: Record<string, ApiExample> = {
  retried: {
    summary: 'A step that failed once, then completed',
    value: {
      task_id: '0193a0c2-7b1e-7c3a-9d4f-2a1b3c4d5e6f',
      step_id: 'fetch',
      attempts: [
        {
          run: 1,
          attempt: 1,
          try: 1,
          at: '2026-11-25T09:12:05.120Z',
          lines: [{ at: '2026-11-25T09:12:05.100Z', level: 'warn', message: 'upstream answered 503', fields: { status: 503 } }],
          dropped: 0,
        },
        {
          run: 1,
          attempt: 2,
          try: 2,
          at: '2026-11-25T09:12:06.300Z',
          lines: [{ at: '2026-11-25T09:12:06.290Z', level: 'info', message: 'fetched 12 rows' }],
          dropped: 0,
        },
      ],
    },
  },
};

export const taskHistoryExamples: Record<string, ApiExample> = {
  retried: {
    summary: 'A one-tool task whose first attempt failed and was retried',
    value: {
      task_id: TASK_ID,
      events: [
        { seq: 101, type: 'submitted', at: '2026-11-22T18:30:00.000Z', run: 1, data: { task_type: 'http' } },
        { seq: 102, type: 'step_queued', at: '2026-11-22T18:30:00.000Z', run: 1, step_id: 'http', data: { from: 'pending', to: 'queued' } },
        { seq: 107, type: 'task_started', at: '2026-11-22T18:30:00.012Z', run: 1, data: { from: 'queued', to: 'running' } },
        { seq: 108, type: 'step_running', at: '2026-11-22T18:30:00.012Z', run: 1, step_id: 'http', data: { from: 'queued', to: 'running' } },
        {
          seq: 109,
          type: 'attempt_started',
          at: '2026-11-22T18:30:00.012Z',
          run: 1,
          step_id: 'http',
          attempt: 1,
          data: { try: 1, delivery: 1, worker: 'worker-7f9c/41', job_id: '4f1c2b7e-8a3d-4e5f-9b6c-0d1e2f3a4b5c.1.http' },
        },
        {
          seq: 131,
          type: 'attempt_ended',
          at: '2026-11-22T18:30:00.530Z',
          run: 1,
          step_id: 'http',
          attempt: 1,
          data: {
            status: 'failed',
            try: 1,
            error: { name: 'HttpError', message: 'upstream answered 503', retryable: true },
            will_retry: true,
            duration_ms: 518,
          },
        },
        { seq: 132, type: 'retried', at: '2026-11-22T18:30:00.530Z', run: 1, step_id: 'http', attempt: 1, data: { delay_ms: 740, next_try: 2 } },
      ],
      next_cursor: 'ZTEzMg',
    },
  },
};

export const stepItemListExamples: Record<string, ApiExample> = {
  page: {
    summary: "A for_each step's items",
    value: {
      task_id: WORKFLOW_TASK_ID,
      step_id: 'fetch_each',
      items: [
        {
          item: 0,
          status: 'completed',
          attempts: 1,
          run: 1,
          input: { url: 'https://example.com/a' },
          output: { status: 200, headers: { 'content-type': 'text/html' }, body: '<!doctype html>' },
          started_at: '2026-11-22T18:30:01.412Z',
          finished_at: '2026-11-22T18:30:01.520Z',
          duration_ms: 108,
        },
        {
          item: 1,
          status: 'running',
          attempts: 1,
          run: 1,
          input: { url: 'https://example.com/b' },
          started_at: '2026-11-22T18:30:01.413Z',
          finished_at: null,
          duration_ms: null,
        },
      ],
      next_cursor: '1',
    },
  },
};

export const taskViewExamples: Record<string, ApiExample> = {
  completed: { summary: 'A completed task (the approve_batches example)', value: completedTask },
  workflow: {
    summary: 'A workflow as it runs: a step skipped by its condition, a map with items done out of total, a sleep still to come',
    value: runningWorkflow,
  },
  failed: {
    summary: 'A failed task: its error, and the same as one line in error_message',
    value: failedTask,
  },
};

export const taskListExamples: Record<string, ApiExample> = {
  page: {
    summary: 'A page of tasks',
    value: {
      items: [
        {
          task_id: WORKFLOW_TASK_ID,
          task_type: EXAMPLE_WORKFLOW,
          workflow: { name: EXAMPLE_WORKFLOW, version: 1 },
          status: 'completed',
          steps_total: 3,
          created_at: '2026-11-22T18:30:01.358Z',
          started_at: '2026-11-22T18:30:01.412Z',
          finished_at: '2026-11-22T18:30:01.968Z',
        },
      ],
      next_cursor: 'MjAyNi0xMS0yMlQxODozMDowMS4zNThafGZjYzM5NGZlLTBlMjEtNDY1NS1iYzc2LWY4MTY1YWRlOWU4MQ',
    },
  },
};

export const taskEventExamples: Record<string, ApiExample> = {
  step: {
    summary: 'One event: a step finished',
    description: 'On the wire: `id: 1795372201963-0`, `event: step` and `data: {"type":"step",…}` lines, then a blank line.',
    value: {
      id: '1795372201963-0',
      event: 'step',
      data: { type: 'step', task_id: WORKFLOW_TASK_ID, step_id: 'both', status: 'completed', at: '2026-11-22T18:30:01.963Z' },
    },
  },
};

export const taskCancelledExamples: Record<string, ApiExample> = {
  cancelled: {
    summary: 'Cancelled',
    value: { task_id: TASK_ID, status: 'cancelled', message: 'Task cancelled; running steps are being stopped', timestamp: '2026-11-22T18:30:01.500Z' },
  },
};

export const signalExamples: Record<string, ApiExample> = {
  approval: {
    summary: "An approval's decision, sent with a key",
    value: { decision: 'approved', comment: 'Checked the totals', fields: {} },
  },
  payload: { summary: "A signal's payload (checked against the step's wait.schema)", value: { approved: true, approver: 'ops@example.com' } },
};
export const signalRecordedExamples: Record<string, ApiExample> = {
  recorded: {
    summary: 'Recorded',
    value: { task_id: TASK_ID, step_id: 'approval', signal: 'approval', status: 'recorded', timestamp: '2026-11-22T18:31:00.000Z' },
  },
};

const resumed = { task_id: FAILED_TASK_ID, status: 'queued', run: 2, message: 'Task resumed from its unfinished steps', timestamp: '2026-11-22T18:40:00.000Z' };
export const taskResumedExamples: Record<string, ApiExample> = { resumed: { summary: 'Resumed as run 2', value: resumed } };
export const deadLetterReplayedExamples: Record<string, ApiExample> = {
  replayed: { summary: 'The task resumed as run 2', value: { ...resumed, dead_letter_id: DEAD_LETTER_ID } },
};

export const toolListExamples: Record<string, ApiExample> = {
  tools: {
    summary: 'One tool of the list',
    value: {
      tools: [
        {
          name: 'echo',
          description: 'Returns its input unchanged. Useful to test a setup and to shape data between workflow steps.',
          input_schema: {
            $schema: 'https://json-schema.org/draft/2020-12/schema',
            type: 'object',
            propertyNames: { type: 'string' },
            additionalProperties: {},
          },
          output_schema: {
            $schema: 'https://json-schema.org/draft/2020-12/schema',
            type: 'object',
            propertyNames: { type: 'string' },
            additionalProperties: {},
          },
          retry: { attempts: 1, backoff: { type: 'fixed', delay_ms: 0 } },
          timeout_ms: 5000,
          rate_limit: null,
          concurrency: null,
        },
      ],
    },
  },
};

const storedGreetTwice = {
  name: EXAMPLE_WORKFLOW,
  description: 'Greets someone, then again after a pause.',
  parameters: [{ name: 'who', type: 'string', required: true }],
  steps: [
    { id: 'hello', tool: 'echo', input: { text: 'Hello, {{params.who}}' }, depends_on: [], on_failure: 'fail' },
    { id: 'pause', tool: 'sleep', input: { ms: 500 }, depends_on: [], on_failure: 'fail' },
    {
      id: 'both',
      tool: 'echo',
      input: { greeting: '{{steps.hello.output.text}}', slept: '{{steps.pause.output.slept_ms}}' },
      depends_on: ['hello', 'pause'],
      on_failure: 'fail',
    },
  ],
  output: { message: '{{steps.both.output.greeting}}!' },
  version: 1,
  created_at: '2026-11-22T18:30:01.310Z',
  archived_at: null,
  workflow_id: EXAMPLE_WORKFLOW,
  display_name: null,
  tags: [],
  created_by: null,
  status: 'active',
};

export const storedWorkflowExamples: Record<string, ApiExample> = {
  stored: { summary: 'Stored as version 1, defaults filled in', value: storedGreetTwice },
};

export const workflowCheckExamples: Record<string, ApiExample> = {
  valid: { summary: 'No problems: POST /workflows would store it', value: { valid: true, problems: [] } },
  problems: {
    summary: 'Each problem at its path',
    value: {
      valid: false,
      problems: [
        { path: 'steps[0].tool', message: 'unknown tool no_such_tool (known: echo, http, notify, sleep, text_stats)' },
        { path: 'steps[1].depends_on[0]', message: 'no step is named fetched' },
      ],
    },
  },
};

export const workflowListExamples: Record<string, ApiExample> = {
  workflows: {
    summary: 'The active workflows',
    value: {
      workflows: [
        {
          name: 'diamond',
          version: 1,
          description: 'A diamond: b and c both need a; d needs b and c. Each step runs exactly once.',
          parameters: [{ name: 'value', type: 'string', default: 'x', required: false }],
          steps: 4,
          created_at: '2026-11-22T18:27:50.812Z',
          workflow_id: 'diamond',
          display_name: null,
          tags: [],
          created_by: null,
          status: 'active',
        },
        {
          name: EXAMPLE_WORKFLOW,
          version: 1,
          description: 'Greets someone, then again after a pause.',
          parameters: [{ name: 'who', type: 'string', required: true }],
          steps: 3,
          created_at: '2026-11-22T18:30:01.310Z',
          workflow_id: EXAMPLE_WORKFLOW,
          display_name: null,
          tags: [],
          created_by: null,
          status: 'active',
        },
      ],
    },
  },
};

export const workflowVersionsExamples: Record<string, ApiExample> = {
  versions: {
    summary: 'Two versions, the first archived with the name and revived by the second',
    value: {
      name: EXAMPLE_WORKFLOW,
      versions: [
        {
          version: 1,
          description: 'Greets someone, then again after a pause.',
          created_at: '2026-11-22T18:30:01.310Z',
          archived_at: '2026-11-22T18:35:00.000Z',
        },
        { version: 2, description: 'Greets someone twice.', created_at: '2026-11-22T18:36:00.000Z', archived_at: null },
      ],
    },
  },
};

export const workflowArchivedExamples: Record<string, ApiExample> = {
  archived: {
    summary: 'Archived',
    value: { name: EXAMPLE_WORKFLOW, archived: true, versions: 1, message: 'Workflow archived; its versions and tasks are kept' },
  },
};

export const deadLetterListExamples: Record<string, ApiExample> = {
  page: {
    summary: 'A page of dead letters',
    value: {
      items: [
        {
          id: DEAD_LETTER_ID,
          task_id: FAILED_TASK_ID,
          step_id: 'http',
          run: 1,
          tool: 'http',
          input: { method: 'GET', url: 'https://esc.example.com/batches' },
          error: timeout,
          attempts: 5,
          created_at: '2026-11-22T18:33:37.650Z',
          replayed_at: null,
        },
      ],
      next_cursor: null,
    },
  },
};

const percentiles = (p50: number | null, p90: number | null, p99: number | null, max: number | null, p95 = p99 === null ? null : (p90! + p99) / 2) => ({
  p50,
  p90,
  p95,
  p99,
  max,
});

export const statsExamples: Record<string, ApiExample> = {
  hour: {
    summary: 'The last hour',
    value: {
      window: { from: '2026-11-22T17:30:02.116Z', to: '2026-11-22T18:30:02.116Z' },
      tasks: {
        total: 1,
        by_status: { completed: 1 },
        by_type: [
          {
            task_type: EXAMPLE_WORKFLOW,
            total: 1,
            by_status: { completed: 1 },
            last_created_at: '2026-11-22T18:29:30.004Z',
            duration_ms: percentiles(610, 610, 610, 610),
          },
        ],
      },
      steps: {
        by_tool: [
          {
            tool: 'echo',
            total: 2,
            by_status: { completed: 2 },
            last_created_at: '2026-11-22T18:29:30.004Z',
            duration_ms: percentiles(18, 22.8, 23.9, 24, 23.4),
          },
          { tool: 'sleep', total: 1, by_status: { completed: 1 }, last_created_at: '2026-11-22T18:29:30.004Z', duration_ms: percentiles(524, 524, 524, 524) },
        ],
      },
      // 31 buckets of 2 min; here the last two (the others are empty alike).
      series: {
        bucket_ms: 120_000,
        points: [
          { at: '2026-11-22T18:26:00.000Z', created: 0, completed: 0, failed: 0, duration_ms: percentiles(null, null, null, null) },
          { at: '2026-11-22T18:28:00.000Z', created: 1, completed: 1, failed: 0, duration_ms: percentiles(610, 610, 610, 610) },
        ],
      },
      timestamp: '2026-11-22T18:30:02.122Z',
    },
  },
};

const depths = (wait: number, active: number, completed: number) => ({
  wait,
  prioritized: 0,
  active,
  delayed: 0,
  'waiting-children': 0,
  failed: 0,
  completed,
});

export const queueDepthsExamples: Record<string, ApiExample> = {
  queues: {
    summary: 'A backlog in the echo queue',
    value: {
      queues: [
        { name: 'tool.echo', counts: depths(120, 8, 100) },
        { name: 'tool.sleep', counts: depths(0, 1, 14) },
        { name: 'timers', counts: { ...depths(0, 0, 3), delayed: 2 } },
        { name: 'callbacks', counts: depths(0, 0, 0) },
      ],
      timestamp: '2026-11-22T18:30:02.122Z',
    },
  },
};

export const serviceInfoExamples: Record<string, ApiExample> = {
  info: {
    summary: 'About this service',
    value: {
      name: 'orchestrator',
      version: '0.1.0',
      uptime_s: 131,
      links: SERVICE_LINKS,
    },
  },
};

const allUp = { redis: 'up', database: 'up' };
export const healthExamples: Record<string, ApiExample> = {
  ok: { summary: 'Redis and PostgreSQL answer', value: { status: 'ok', uptime_s: 134, checks: allUp, timestamp: '2026-11-22T18:30:04.537Z' } },
  degraded: {
    summary: 'Redis does not answer; the process is alive',
    value: { status: 'degraded', uptime_s: 200, checks: { redis: 'down', database: 'up' }, timestamp: '2026-11-22T18:31:10.000Z' },
  },
};
export const readyExamples: Record<string, ApiExample> = {
  ready: {
    summary: 'Ready (one registered service is down: information only)',
    value: { ready: true, checks: allUp, services: { billing: 'up', shipping: 'down' } },
  },
};
export const notReadyExamples: Record<string, ApiExample> = {
  not_ready: {
    summary: 'PostgreSQL does not answer',
    value: { error: { code: 'not_ready', message: 'Redis or PostgreSQL does not answer', details: { checks: { redis: 'up', database: 'down' } } } },
  },
};

export const metricsExamples: Record<string, ApiExample> = {
  excerpt: {
    summary: 'An excerpt',
    value: [
      '# HELP orchestrator_tasks_submitted_total Tasks accepted by the API, by task type.',
      '# TYPE orchestrator_tasks_submitted_total counter',
      'orchestrator_tasks_submitted_total{task_type="approve_batches"} 1',
      '',
    ].join('\n'),
  },
};

export const openApiExamples: Record<string, ApiExample> = {
  excerpt: { summary: 'Its beginning', value: { openapi: '3.1.0', info: { title: 'Orchestrator API', version: '0.1.0' }, paths: {} } },
};

const page = (title: string) => ({
  page: { summary: 'The page', value: `<!doctype html><html lang="en"><head><title>${title}</title>…</head><body>…</body></html>` },
});
export const swaggerPageExamples: Record<string, ApiExample> = page('Orchestrator API');
export const redocPageExamples: Record<string, ApiExample> = page('Orchestrator API');
export const boardPageExamples: Record<string, ApiExample> = page('Bull Dashboard');
export const approvalPageExamples: Record<string, ApiExample> = page('Approval: review');
export const approvalDecidedExamples: Record<string, ApiExample> = page('Decision recorded');
export const consolePageExamples: Record<string, ApiExample> = page('Orchestrator console');

export const callbackSecretExamples: Record<string, ApiExample> = {
  secret: {
    summary: "A client key's callback secret",
    value: {
      owner: 'shop',
      secret: '3f0c8e2a9b7d4c1e6a5f0b9d8c7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e',
      algorithm: 'HMAC-SHA256',
      signature_header: 'x-orchestrator-signature',
      timestamp_header: 'x-orchestrator-timestamp',
      signed_content: '<timestamp header>.<raw body>',
    },
  },
};

// Schedules

/** The schedule POST /schedules's example stores; the other schedule operations' examples use it, deleting it last. */
export const EXAMPLE_SCHEDULE = 'nightly-report';

export const createScheduleExamples: Record<string, ApiExample> = {
  nightly: {
    summary: 'Every night at 02:00 Berlin time (the example of docs/workflows.md "Schedules")',
    value: {
      name: EXAMPLE_SCHEDULE,
      cron: '0 2 * * *',
      timezone: 'Europe/Berlin',
      task_type: 'echo',
      params: { report: 'daily-sales' },
      overlap: 'skip',
      catch_up: 'latest',
    },
  },
};

export const updateScheduleExamples: Record<string, ApiExample> = {
  pause: { summary: 'Pause it', value: { paused: true } },
  resume: { summary: 'Resume it: missed ticks run as catch_up says', value: { paused: false } },
  retime: { summary: 'Move it to 03:30 and run every missed tick of the last 6 hours', value: { cron: '30 3 * * *', catch_up: { all_within_ms: 21_600_000 } } },
};

const nightly = {
  name: EXAMPLE_SCHEDULE,
  owner: 'reports-team',
  cron: '0 2 * * *',
  every_ms: null,
  timezone: 'Europe/Berlin',
  task_type: 'echo',
  params: { report: 'daily-sales' },
  overlap: 'skip',
  catch_up: 'latest',
  paused: false,
  next_fire_times: ['2026-11-24T01:00:00.000Z', '2026-11-25T01:00:00.000Z', '2026-11-26T01:00:00.000Z', '2026-11-27T01:00:00.000Z', '2026-11-28T01:00:00.000Z'],
  created_at: '2026-11-22T09:12:44.120Z',
  updated_at: '2026-11-22T09:12:44.120Z',
};

export const scheduleExamples: Record<string, ApiExample> = { nightly: { summary: 'A nightly schedule', value: nightly } };

export const scheduleListExamples: Record<string, ApiExample> = { schedules: { summary: 'The schedules this key sees', value: { schedules: [nightly] } } };

export const scheduleDetailExamples: Record<string, ApiExample> = {
  nightly: {
    summary: 'Its next ticks, and its latest runs: one task per tick',
    value: {
      ...nightly,
      recent_runs: [
        { tick_at: '2026-11-23T01:00:00.000Z', outcome: 'created', task_id: '019ab0c3-8e40-7c21-9f3e-2d4b6a8c0e11', status: 'completed' },
        {
          tick_at: '2026-11-22T01:00:00.000Z',
          outcome: 'denied',
          task_id: null,
          status: null,
          error: 'policy_denied: the policy refused this scheduled task: reports are paused during the migration',
        },
        { tick_at: '2026-11-21T01:00:00.000Z', outcome: 'created', task_id: '019aab9d-3240-7a55-8b1c-5e7f9a1b3c22', status: 'completed' },
      ],
    },
  },
};

export const scheduleDeletedExamples: Record<string, ApiExample> = {
  deleted: { summary: 'Deleted', value: { name: EXAMPLE_SCHEDULE, deleted: true, message: 'Schedule deleted; the tasks it made are kept' } },
};

// Services

/** The service the examples register (without a document: a default install allows no host to fetch one from). */
export const EXAMPLE_SERVICE = 'billing';

export const registerServiceExamples: Record<string, ApiExample> = {
  billing: {
    summary: 'A service with a bearer token from SERVICE_SECRET_BILLING_TOKEN',
    value: {
      name: EXAMPLE_SERVICE,
      base_url: 'https://billing.example.com/v1',
      auth: { type: 'bearer', secret_ref: 'billing_token' },
      health_path: '/health',
      timeout_ms: 10000,
      circuit: { failure_threshold: 5, open_ms: 30000 },
      concurrency: 10,
    },
  },
};

export const patchServiceExamples: Record<string, ApiExample> = {
  slower: { summary: 'A longer timeout and a rate limit', value: { timeout_ms: 20000, rate_limit: { per_second: 5 } } },
};

const exampleServiceView = {
  name: EXAMPLE_SERVICE,
  base_url: 'https://billing.example.com/v1',
  openapi_url: 'https://billing.example.com/v1/openapi.json',
  headers: {},
  auth: { type: 'bearer', secret_ref: 'billing_token', secret_set: true },
  health_path: '/health',
  timeout_ms: 10000,
  circuit: { failure_threshold: 5, failure_ratio: 0.5, window_ms: 60000, min_calls: 10, open_ms: 30000, half_open_probes: 1, keys_to_open: 3 },
  concurrency: 10,
  rate_limit: null,
  document_version: 1,
  operations: [{ tool: 'billing.getInvoice', method: 'GET', path: '/invoices/{id}', summary: 'An invoice' }],
  health: { status: 'up', checked_at: '2026-11-26T10:00:00.000Z', http_status: 200 },
  error: null,
  circuit_state: {
    state: 'closed',
    since: '2026-11-26T09:58:00.000Z',
    open_until: null,
    failures_in_a_row: 0,
    window: { calls: 12, failures: 1 },
    transitions: [
      { from: 'half_open', to: 'closed', at: '2026-11-26T09:58:00.000Z' },
      { from: 'open', to: 'half_open', at: '2026-11-26T09:57:59.000Z' },
    ],
    keys: [
      {
        key: 'alice',
        state: 'open',
        since: '2026-11-26T09:59:30.000Z',
        open_until: '2026-11-26T10:00:00.000Z',
        failures_in_a_row: 0,
        window: { calls: 0, failures: 0 },
      },
    ],
  },
  created_at: '2026-11-26T09:00:00.000Z',
  updated_at: '2026-11-26T09:00:00.000Z',
};

export const serviceExamples: Record<string, ApiExample> = { billing: { summary: 'A service with one operation', value: exampleServiceView } };
export const serviceListExamples: Record<string, ApiExample> = { services: { summary: 'The registered services', value: { services: [exampleServiceView] } } };
export const registeredServiceExamples: Record<string, ApiExample> = {
  registered: {
    summary: 'Registered, its document imported',
    value: {
      service: exampleServiceView,
      imported: { version: 1, tools: ['billing.getInvoice'], skipped: [{ where: 'GET /internal', reason: 'no operationId' }] },
    },
  },
};
export const serviceRefreshExamples: Record<string, ApiExample> = {
  breaking: {
    summary: 'An operation renamed: a workflow that calls it is named',
    value: {
      name: EXAMPLE_SERVICE,
      version: 2,
      changed: true,
      operations: { added: ['billing.fetchInvoice'], removed: ['billing.getInvoice'], changed: [] },
      affected_workflows: [{ name: 'monthly_close', version: 3, problems: [{ path: 'steps[1].tool', message: 'unknown tool billing.getInvoice (known: …)' }] }],
    },
  },
};
export const serviceDeletedExamples: Record<string, ApiExample> = {
  deleted: { summary: 'Deleted; no workflow called it', value: { deleted: EXAMPLE_SERVICE, affected_workflows: [], failed_tasks: [] } },
};

export const whoamiExamples: Record<string, ApiExample> = {
  read: { summary: 'A read key', value: { key_id: 'dashboard', scope: 'read', access: ['tasks', 'catalog', 'monitor'] } },
  admin: {
    summary: 'An admin key',
    value: { key_id: 'ops', scope: 'admin', access: ['submit', 'tasks', 'manageTasks', 'catalog', 'monitor', 'admin'] },
  },
};
