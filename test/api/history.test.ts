import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { uuidv7 } from '../../src/lib/uuid7.js';
import { DAY_MS } from '../../src/persistence/partitions.js';
import { closeTestConnections, testTools } from '../fixtures/tools.js';
import { createHarness, type Harness, waitForTask } from '../helpers/harness.js';

const ALPHA = 'client-alpha-0123456789abcdef';
const BETA = 'client-beta-fedcba9876543210';
const READER = 'reader-00112233445566778899';
const bearer = (key: string) => ({ authorization: `Bearer ${key}` });

describe('GET /tasks/:id/history', () => {
  let h: Harness;
  let taskId: string;
  beforeAll(async () => {
    h = await createHarness({ tools: testTools, env: { API_KEYS: `client@alpha:${ALPHA},client@beta:${BETA},read:${READER}`, RETENTION_DAYS: '7' } });
  });
  afterAll(async () => {
    await h.close();
    await closeTestConnections();
  });

  async function submitAs(key: string, body: Record<string, unknown>): Promise<string> {
    const response = await h.request('POST', '/assign-task', body, bearer(key));
    expect(response.status, JSON.stringify(response.body)).toBe(202);
    return response.body.task_id;
  }
  const get = (path: string, key = ALPHA) => h.request('GET', path, undefined, bearer(key));

  it('pages through the history with `after` and `next_cursor`, and filters it by step', async () => {
    taskId = await submitAs(ALPHA, { task_type: 'flaky', params: { succeed_on: 2, key: `pages-${Date.now()}` } });
    expect(
      (await waitForTask({ ...h, request: (method, url, body, headers) => h.request(method, url, body, { ...bearer(ALPHA), ...headers }) }, taskId)).status,
    ).toBe('completed');
    const whole = await get(`/tasks/${taskId}/history`);
    expect(whole.status).toBe(200);
    expect(whole.body.task_id).toBe(taskId);
    expect(whole.body.next_cursor).toBeNull();
    const all = whole.body.events as { seq: number; type: string; step_id?: string }[];
    expect(all.map((event) => event.type)).toEqual([
      'submitted',
      'step_queued',
      'task_started',
      'step_running',
      'attempt_started',
      'attempt_ended',
      'retried',
      'attempt_started',
      'attempt_ended',
      'step_completed',
      'task_completed',
    ]);

    // Pages of 3: the same events, none twice; the last page says so.
    const paged: unknown[] = [];
    let after: string | null = null;
    let pages = 0;
    do {
      const page: { status: number; body: any } = await get(`/tasks/${taskId}/history?limit=3${after ? `&after=${after}` : ''}`);
      expect(page.status).toBe(200);
      expect(page.body.events.length).toBeLessThanOrEqual(3);
      paged.push(...page.body.events);
      after = page.body.next_cursor;
      pages += 1;
    } while (after);
    expect(paged).toEqual(all);
    expect(pages).toBe(Math.ceil(all.length / 3));

    // One step's events: the task's own are left out.
    const step = await get(`/tasks/${taskId}/history?step=flaky`);
    expect(step.body.events).toEqual(all.filter((event) => event.step_id === 'flaky'));
    expect((await get(`/tasks/${taskId}/history?step=nope`)).body.events).toEqual([]);
  });

  it('answers 400 to a bad cursor or query, 404 to an unknown task and to another owner, 410 to an expired one', async () => {
    for (const query of ['after=nonsense', 'after=ZTEyYQ', 'after=%21%21', 'limit=0', 'limit=501', 'limit=x', 'other=1']) {
      const response = await get(`/tasks/${taskId}/history?${query}`);
      expect(response.status, query).toBe(400);
      expect(response.body.error.code).toBe('validation_error');
    }
    for (const [id, key] of [
      [uuidv7(), ALPHA],
      ['not-a-uuid', ALPHA],
      [taskId, BETA],
    ] as const) {
      const response = await get(`/tasks/${id}/history`, key);
      expect(response.status, `${id} as ${key}`).toBe(404);
      expect(response.body.error.code).toBe('task_not_found');
    }
    // A read key sees every task's history.
    expect((await get(`/tasks/${taskId}/history`, READER)).status).toBe(200);
    const expired = await get(`/tasks/${uuidv7(new Date(Date.now() - 8 * DAY_MS))}/history`);
    expect(expired.status).toBe(410);
    expect(expired.body.error.code).toBe('task_expired');
  });
});

describe('who cancelled and who resumed', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness({ env: { API_KEYS: `client@alpha:${ALPHA}` } });
  });
  afterAll(async () => {
    await h.close();
  });

  it('records the key that cancelled or resumed a task', async () => {
    const submitted = await h.request('POST', '/assign-task', { task_type: 'sleep', params: { ms: 600_000 } }, bearer(ALPHA));
    expect(submitted.status).toBe(202);
    const id = submitted.body.task_id as string;
    expect((await h.request('POST', `/tasks/${id}/cancel`, undefined, bearer(ALPHA))).status).toBe(200);
    expect((await h.request('POST', `/tasks/${id}/retry`, undefined, bearer(ALPHA))).status).toBe(202);
    expect((await h.request('POST', `/tasks/${id}/cancel`, undefined, bearer(ALPHA))).status).toBe(200);
    const events = (await h.request('GET', `/tasks/${id}/history`, undefined, bearer(ALPHA))).body.events as Event[];
    expect(
      events.filter((event) => event.type === 'task_cancelled' || event.type === 'task_resumed').map((event) => [event.type, event.run, event.data?.by]),
    ).toEqual([
      ['task_cancelled', 1, 'alpha'],
      ['task_resumed', 2, 'alpha'],
      ['task_cancelled', 2, 'alpha'],
    ]);
  });
});

type Event = { type: string; run: number; data?: Record<string, unknown> };

describe('TASK_HISTORY=off', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness({ env: { TASK_HISTORY: 'off' } });
  });
  afterAll(async () => {
    await h.close();
  });

  it('writes no history, and the task runs as before', async () => {
    const response = await h.request('POST', '/assign-task', { task_type: 'echo', params: { n: 1 } });
    expect(response.status).toBe(202);
    const task = await waitForTask(h, response.body.task_id);
    expect(task.status).toBe('completed');
    expect(task.steps[0].last_attempts).toBeUndefined();
    expect((await h.request('GET', `/tasks/${response.body.task_id}/history`)).body).toEqual({ task_id: response.body.task_id, events: [], next_cursor: null });
    expect((await h.db.pool.query(`SELECT count(*)::int AS n FROM task_events`)).rows).toEqual([{ n: 0 }]);
  });
});
