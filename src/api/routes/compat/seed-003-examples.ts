import type { ApiExample } from '../../openapi-examples.js';

/**
 * The examples of the seed 003 routes in the API description. The request example succeeds on
 * a default install: it runs a workflow every install loads.
 */

const TASK_ID = '0198c3f9-1c2d-7e3f-8a4b-5c6d7e8f9a0b';
const CREATED = '2026-11-28T10:02:11.201Z';
const NOW = '2026-11-28T10:02:11.230Z';

export const startSessionExamples: Record<string, ApiExample> = {
  workflow: { summary: 'Run the diamond workflow as a session', value: { workflow: 'diamond', parameters: { value: 'v' } } },
  chosen_id: {
    summary: 'With a session id of your choosing (its idempotency key)',
    value: { task_type: 'echo', params: { order: 7 }, session_id: 'order-7-review' },
  },
};

export const sessionStartedExamples: Record<string, ApiExample> = {
  started: { summary: 'Started', value: { session_id: TASK_ID, task_id: TASK_ID, task_type: 'diamond', status: 'pending', timestamp: NOW } },
};

export const sessionReplayedExamples: Record<string, ApiExample> = {
  again: {
    summary: 'The same session_id and body again',
    value: { session_id: 'order-7-review', task_id: TASK_ID, task_type: 'echo', status: 'completed', timestamp: NOW },
  },
};

export const sessionExamples: Record<string, ApiExample> = {
  waiting: {
    summary: 'Waiting for its approval action',
    value: {
      session_id: 'order-7-review',
      task_id: TASK_ID,
      task_type: 'order_review',
      status: 'waiting',
      task_status: 'running',
      awaiting: [{ action: 'approval', step_id: 'approval', timeout_at: '2026-11-29T10:02:11.240Z' }],
      actions: ['cancel', 'approval'],
      progress: { completed: 1, total: 3 },
      created_at: CREATED,
      started_at: CREATED,
      finished_at: null,
      timestamp: NOW,
    },
  },
};

export const sessionActionExamples: Record<string, ApiExample> = {
  signal: { summary: 'A signal: the body is its payload', value: { decision: 'approved', comment: 'ok' } },
  cancel: { summary: 'cancel or retry: no body needed', value: {} },
};

export const sessionActedExamples: Record<string, ApiExample> = {
  recorded: {
    summary: 'A signal recorded',
    value: { session_id: 'order-7-review', task_id: TASK_ID, action: 'approval', status: 'recorded', step_id: 'approval', timestamp: NOW },
  },
  cancelled: { summary: 'Cancelled', value: { session_id: 'order-7-review', task_id: TASK_ID, action: 'cancel', status: 'cancelled', timestamp: NOW } },
};

export const sessionRetriedExamples: Record<string, ApiExample> = {
  retried: { summary: 'Retried', value: { session_id: 'order-7-review', task_id: TASK_ID, action: 'retry', status: 'pending', run: 2, timestamp: NOW } },
};
