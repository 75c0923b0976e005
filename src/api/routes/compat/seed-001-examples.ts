import type { ApiExample } from '../../openapi-examples.js';

/**
 * The examples of the seed 001 routes in the API description. Request examples succeed on a
 * default install, in the order of the routes (test/api/openapi-examples.test.ts sends them):
 * they use the workflows every install loads. `Simple Notification` is seed 001's own example,
 * as the issue that asked for this surface quotes it.
 */

const EXECUTION_ID = '0198c3f2-7a1b-7c3d-9e4f-5a6b7c8d9e0f';
const CREATED = '2026-11-28T09:15:02.114Z';
const STARTED = '2026-11-28T09:15:02.131Z';
const FINISHED = '2026-11-28T09:15:02.160Z';
const NOW = '2026-11-28T09:15:03.002Z';

/** Seed 001's "Simple Notification" workflow, as its documentation writes it. */
export const SIMPLE_NOTIFICATION = {
  name: 'Simple Notification',
  description: 'A simple notification workflow',
  parameters: [{ name: 'message', type: 'string', description: 'Message to display', required: true }],
  actions: [
    {
      action_id: 'notify',
      action_type: 'notification',
      name: 'Send Notification',
      description: 'Send completion notification',
      config: { message: '{{message}}', channels: ['log'] },
    },
  ],
};

export const seed001DefineExamples: Record<string, ApiExample> = {
  simple_notification: {
    summary: "Seed 001's format: its Simple Notification example",
    description:
      'Stored as simple-notification (the display name keeps the spaces); `{{message}}` becomes `{{params.message}}`, the notification a notify step.',
    value: SIMPLE_NOTIFICATION,
  },
};

const storedSimpleNotification = {
  name: 'simple-notification',
  description: 'A simple notification workflow',
  parameters: [{ name: 'message', type: 'string', required: true, description: 'Message to display' }],
  steps: [{ id: 'notify', tool: 'notify', input: { channel: 'log', message: '{{params.message}}' }, depends_on: [], on_failure: 'fail' }],
  version: 1,
  created_at: CREATED,
  archived_at: null,
  workflow_id: 'simple-notification',
  display_name: 'Simple Notification',
  tags: [],
  created_by: null,
  status: 'active',
  actions: [{ ...SIMPLE_NOTIFICATION.actions[0], depends_on: [] }],
};

export const seed001StoredExamples: Record<string, ApiExample> = {
  simple_notification: { summary: "Seed 001's Simple Notification, stored: the steps it became and its actions as posted", value: storedSimpleNotification },
};

export const updateWorkflowExamples: Record<string, ApiExample> = {
  tags: {
    summary: 'New tags and description: a new version',
    value: { description: 'A diamond: b and c both need a; d needs b and c.', tags: ['example', 'dag'] },
  },
  rename: { summary: 'A display name alone: no new version', value: { name: 'Diamond example' } },
};

const diamond = {
  name: 'diamond',
  description: 'A diamond: b and c both need a; d needs b and c.',
  parameters: [{ name: 'value', type: 'string', required: false, default: 'x' }],
  steps: [
    { id: 'a', tool: 'echo', input: { value: '{{params.value}}' }, depends_on: [], on_failure: 'fail' },
    { id: 'b', tool: 'echo', input: { path: 'b', value: '{{steps.a.output.value}}-b' }, depends_on: ['a'], on_failure: 'fail' },
    { id: 'c', tool: 'echo', input: { path: 'c', value: '{{steps.a.output.value}}-c' }, depends_on: ['a'], on_failure: 'fail' },
    { id: 'd', tool: 'echo', input: { joined: '{{steps.b.output.value}}+{{steps.c.output.value}}' }, depends_on: ['b', 'c'], on_failure: 'fail' },
  ],
  output: { joined: '{{steps.d.output.joined}}' },
  created_at: CREATED,
  archived_at: null,
  workflow_id: 'diamond',
  display_name: null,
  created_by: null,
  status: 'active',
};

export const updatedWorkflowExamples: Record<string, ApiExample> = {
  versioned: { summary: 'Stored as version 2', value: { ...diamond, version: 2, tags: ['example', 'dag'], new_version: true } },
};

const step = (id: string, output: unknown) => ({
  id,
  kind: 'tool',
  tool: 'notify',
  status: 'completed',
  attempts: 1,
  depends_on: [],
  started_at: STARTED,
  finished_at: FINISHED,
  duration_ms: 29,
  input: { channel: 'log', message: 'Deployed 1.4.2' },
  output,
});

export const executionExamples: Record<string, ApiExample> = {
  completed: {
    summary: 'A run of simple-notification, completed',
    value: {
      execution_id: EXECUTION_ID,
      task_id: EXECUTION_ID,
      workflow_id: 'simple-notification',
      workflow_version: 1,
      status: 'completed',
      result: { notify: { delivered: true, channel: 'log' } },
      progress: { completed: 1, total: 1 },
      steps: [step('notify', { delivered: true, channel: 'log' })],
      created_at: CREATED,
      started_at: STARTED,
      completed_at: FINISHED,
      timestamp: NOW,
    },
  },
};

export const executionListExamples: Record<string, ApiExample> = {
  executions: {
    summary: 'The runs of a workflow, newest first',
    value: {
      workflow_id: 'diamond',
      executions: [
        {
          execution_id: EXECUTION_ID,
          workflow_id: 'diamond',
          workflow_version: 1,
          status: 'completed',
          created_at: CREATED,
          started_at: STARTED,
          completed_at: FINISHED,
        },
      ],
      next_cursor: null,
    },
  },
};

export const executionCancelledExamples: Record<string, ApiExample> = {
  cancelled: {
    summary: 'Cancelled',
    value: {
      execution_id: EXECUTION_ID,
      task_id: EXECUTION_ID,
      status: 'cancelled',
      message: 'Execution cancelled; running steps are being stopped',
      timestamp: NOW,
    },
  },
};

export const fromTemplateExamples: Record<string, ApiExample> = {
  diamond: {
    summary: 'A workflow of its own from the diamond template, with another default',
    value: {
      template_name: 'diamond',
      customizations: { name: 'My Diamond', description: 'The diamond, starting from y.', tags: ['example'], parameters: { value: 'y' } },
    },
  },
};

export const fromTemplateStoredExamples: Record<string, ApiExample> = {
  stored: {
    summary: 'Stored as my-diamond, version 1',
    value: {
      ...diamond,
      name: 'my-diamond',
      description: 'The diamond, starting from y.',
      parameters: [{ name: 'value', type: 'string', required: false, default: 'y' }],
      version: 1,
      workflow_id: 'my-diamond',
      display_name: 'My Diamond',
      tags: ['example'],
      template_name: 'diamond',
    },
  },
};

export const templateListExamples: Record<string, ApiExample> = {
  templates: {
    summary: 'The shipped examples',
    value: {
      templates: [
        {
          template_name: 'diamond',
          description: 'A diamond: b and c both need a; d needs b and c. Each step runs exactly once.',
          parameters: [{ name: 'value', type: 'string', required: false, default: 'x' }],
          steps: 4,
        },
      ],
    },
  },
};

const summary = {
  name: 'simple-notification',
  version: 1,
  description: 'A simple notification workflow',
  parameters: [{ name: 'message', type: 'string', required: true, description: 'Message to display' }],
  steps: 1,
  created_at: CREATED,
  workflow_id: 'simple-notification',
  display_name: 'Simple Notification',
  tags: ['notifications'],
  created_by: null,
  status: 'active',
};

export const searchExamples: Record<string, ApiExample> = {
  found: { summary: 'Workflows whose name, description or tags hold "notif"', value: { query: 'notif', results: [summary], total: 1 } },
};

export const statisticsExamples: Record<string, ApiExample> = {
  statistics: {
    summary: 'Runs of each active workflow in the window',
    value: {
      window: { from: '2026-10-29T09:15:03.002Z', to: NOW },
      workflows: [
        {
          workflow_id: 'diamond',
          display_name: null,
          runs: { total: 12, by_status: { completed: 11, failed: 1 } },
          duration_ms: { p50: 41.5, p95: 88.2 },
          last_run_at: CREATED,
        },
        {
          workflow_id: 'simple-notification',
          display_name: 'Simple Notification',
          runs: { total: 0, by_status: {} },
          duration_ms: { p50: null, p95: null },
          last_run_at: null,
        },
      ],
      timestamp: NOW,
    },
  },
};

const checks = { redis: 'up', database: 'up' };

export const workflowHealthExamples: Record<string, ApiExample> = {
  healthy: { summary: 'Redis and PostgreSQL answer', value: { status: 'healthy', checks, workflows: { active: 9 }, timestamp: NOW } },
};

export const systemHealthExamples: Record<string, ApiExample> = {
  ok: { summary: 'Alive, dependencies up', value: { status: 'ok', uptime_s: 3600, checks, timestamp: NOW, name: 'orchestrator', version: '0.1.0' } },
};

export const effectiveConfigExamples: Record<string, ApiExample> = {
  settings: {
    summary: 'A few of the settings (all of them are listed)',
    value: {
      settings: {
        API_KEYS: 'set',
        CALLBACK_SECRET: 'not set',
        DATABASE_URL: 'postgresql://postgres:***@127.0.0.1:5432/orchestrator',
        POLICY_URL: 'http://policy.internal:8181/v1/evaluate',
        WORKER_CONCURRENCY: 5,
      },
      timestamp: NOW,
    },
  },
};

export const registerExamples: Record<string, ApiExample> = {
  crm: {
    summary: 'A service registered by its legacy route (the body of POST /services)',
    value: { name: 'crm', base_url: 'https://crm.example.com/api', timeout_ms: 10000 },
  },
};

export const deadLetterStatsExamples: Record<string, ApiExample> = {
  stats: {
    summary: 'Dead letters of two tools',
    value: {
      total: 3,
      open: 2,
      by_tool: [
        { tool: 'http', total: 2, open: 1, oldest_at: '2026-11-27T08:00:12.500Z', newest_at: '2026-11-28T07:41:09.020Z' },
        { tool: 'source_agent.fetch', total: 1, open: 1, oldest_at: '2026-11-28T09:01:44.310Z', newest_at: '2026-11-28T09:01:44.310Z' },
      ],
      timestamp: NOW,
    },
  },
};

export const deadLetterRetryExamples: Record<string, ApiExample> = {
  ids: { summary: 'Given dead letters', value: { ids: ['2b7c9d1e-3f4a-4b5c-9d6e-7f8a9b0c1d2e'] } },
  all_for_tool: { summary: "A tool's dead letters not replayed yet", value: { all_for_tool: 'http' } },
};

export const deadLetterRetriedExamples: Record<string, ApiExample> = {
  outcome: {
    summary: 'One resumed, one whose task had moved on',
    value: {
      retried: [{ id: '2b7c9d1e-3f4a-4b5c-9d6e-7f8a9b0c1d2e', task_id: '9d2e4f60-1b3a-4c5d-8e7f-6a5b4c3d2e1f', run: 2 }],
      failed: [
        {
          id: '5e1a7c3b-2d4f-4a6b-8c9d-0e1f2a3b4c5d',
          error: { code: 'task_not_retryable', message: 'only a failed or cancelled task can be retried; this one is queued' },
        },
      ],
      more: false,
      timestamp: NOW,
    },
  },
};
