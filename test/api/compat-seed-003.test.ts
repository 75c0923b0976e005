import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROUTES } from '../../src/api/routes/index.js';
import { closeTestConnections, testTools } from '../fixtures/tools.js';
import { createHarness, type Harness, poll, waitForTask } from '../helpers/harness.js';
import { json, startServer, type TestServer } from '../helpers/http-server.js';

/**
 * Seed 003's sessions (src/api/routes/compat/seed-003.ts): a session is a task. Its flow as the
 * seed describes it — start, read, act with a signal, read the outcome — with the policy service
 * configured as the seed configures it (POLICY_ENGINE_URL: the service appends /v1/evaluate),
 * and the rules of the native routes kept: owners, scopes, schemas, 409s, idempotency.
 */

const OPS = 'session-ops-key-0123456789abcdef';
const READ = 'session-read-key-0123456789abcdef';
const ALICE = 'session-alice-key-0123456789abcdef';
const BOB = 'session-bob-key-0123456789abcdef';
const as = (key: string) => ({ authorization: `Bearer ${key}` });

describe('seed 003 sessions', () => {
  let policy: TestServer;
  let h: Harness;
  const call = (method: string, path: string, body?: unknown, key = ALICE) => h.request(method, path, body, as(key));
  /** What the policy was asked, of one kind. */
  const asked = (kind: string) => policy.requests.map((request) => JSON.parse(request.body)).filter((input) => input.kind === kind);

  beforeAll(async () => {
    policy = await startServer((request, res) => {
      if (request.path !== '/engine/v1/evaluate') return json(res, 404, { error: 'not the policy route' });
      json(res, 200, request.body.includes('FORBIDDEN') ? { allow: false, reason: 'FORBIDDEN is forbidden' } : { allow: true });
    });
    h = await createHarness({
      tools: testTools,
      env: {
        API_KEYS: `admin@ops:${OPS},read:${READ},client@alice:${ALICE},client@bob:${BOB}`,
        POLICY_ENGINE_URL: `${policy.origin}/engine`,
        POLICY_FAIL_MODE: 'closed',
        POLICY_CACHE_TTL_MS: '0',
      },
    });
    const stored = await call(
      'POST',
      '/workflows',
      {
        name: 'order_review',
        parameters: [{ name: 'order', type: 'integer', required: true }],
        steps: [
          {
            id: 'review',
            wait: { signal: 'approve', schema: { type: 'object', properties: { approved: { type: 'boolean' } }, required: ['approved'] } },
          },
          { id: 'ship', tool: 'echo', depends_on: ['review'], input: { order: '{{params.order}}', approved: '{{steps.review.output.approved}}' } },
        ],
        output: { order: '{{steps.ship.output.order}}', approved: '{{steps.ship.output.approved}}' },
      },
      OPS,
    );
    expect(stored.status, JSON.stringify(stored.body)).toBe(201);
  });
  afterAll(async () => {
    await h?.close();
    await policy?.close();
    await closeTestConnections();
  });

  it('runs the session flow: start with a chosen id, wait for an action, act with a signal, read the outcome', async () => {
    const body = { workflow: 'order_review', parameters: { order: 7 }, session_id: 'order-7' };
    const started = await call('POST', '/v1/sessions', body);
    expect(started.status, JSON.stringify(started.body)).toBe(202);
    expect(started.body).toMatchObject({ session_id: 'order-7', task_type: 'order_review', status: 'pending', task_id: expect.any(String) });
    // The same session id and body: the same session. Another body: 409, as an idempotency key.
    const again = await call('POST', '/v1/sessions', body);
    expect(again.status).toBe(200);
    expect(again.body.task_id).toBe(started.body.task_id);
    expect((await call('POST', '/v1/sessions', { ...body, parameters: { order: 8 } })).body.error.code).toBe('idempotency_conflict');

    const waiting = await poll(
      async () => {
        const session = (await call('GET', '/v1/sessions/order-7')).body;
        return session.status === 'waiting' ? session : undefined;
      },
      { label: 'the session to wait for its action' },
    );
    expect(waiting).toMatchObject({
      session_id: 'order-7',
      task_id: started.body.task_id,
      task_status: 'running',
      awaiting: [{ action: 'approve', step_id: 'review' }],
      actions: ['cancel', 'approve'],
      progress: { completed: 0, total: 2 },
    });
    // The task id finds it too.
    expect((await call('GET', `/v1/sessions/${started.body.task_id}`)).body.session_id).toBe(started.body.task_id);

    // An action that is a signal: the body is its payload, checked against the step's schema.
    const invalid = await call('POST', '/v1/sessions/order-7/actions/approve', { approved: 'yes' });
    expect(invalid.status).toBe(400);
    expect(invalid.body.error.code).toBe('invalid_payload');
    expect((await call('POST', '/v1/sessions/order-7/actions/escalate', {})).body.error.code).toBe('signal_not_found');
    const acted = await call('POST', '/v1/sessions/order-7/actions/approve', { approved: true });
    expect(acted.status).toBe(200);
    expect(acted.body).toMatchObject({ session_id: 'order-7', task_id: started.body.task_id, action: 'approve', status: 'recorded', step_id: 'review' });
    expect((await call('POST', '/v1/sessions/order-7/actions/approve', { approved: false })).status).toBe(409);

    await waitForTask(h, started.body.task_id, 20_000, as(ALICE));
    const done = (await call('GET', '/v1/sessions/order-7')).body;
    expect(done).toMatchObject({ status: 'completed', task_status: 'completed', result: { order: 7, approved: true }, awaiting: [], actions: [] });
    expect(done.finished_at).toEqual(expect.any(String));

    // The policy service was asked at POLICY_ENGINE_URL + /v1/evaluate: the start and the signal.
    expect(policy.requests.every((request) => request.path === '/engine/v1/evaluate')).toBe(true);
    expect(asked('submit').find((input) => input.task_type === 'order_review')).toMatchObject({ params: { order: 7 }, key_id: 'alice', owner: 'alice' });
    expect(asked('signal').find((input) => input.task_id === started.body.task_id)).toMatchObject({
      signal: { name: 'approve', payload: { approved: true } },
      key_id: 'alice',
    });
  });

  it('cancels and retries through actions, and starts tools, workflows by display name and sessions without an id', async () => {
    // A tool, without a session id: the session id is the task id.
    const hanging = await call('POST', '/v1/sessions', { task_type: 'hang', params: { key: `session-${randomUUID()}` } });
    expect(hanging.status).toBe(202);
    expect(hanging.body.session_id).toBe(hanging.body.task_id);
    await poll(async () => (await call('GET', `/v1/sessions/${hanging.body.session_id}`)).body.status === 'running', { label: 'the hang step to run' });
    const cancelled = await call('POST', `/v1/sessions/${hanging.body.session_id}/actions/cancel`);
    expect(cancelled.body).toMatchObject({ action: 'cancel', status: 'cancelled' });
    expect((await call('POST', `/v1/sessions/${hanging.body.session_id}/actions/cancel`)).body.error.code).toBe('task_finished');
    const view = (await call('GET', `/v1/sessions/${hanging.body.session_id}`)).body;
    expect(view).toMatchObject({ status: 'cancelled', actions: ['retry'] });

    // A failed session is retried: the policy is asked (kind retry), and it runs again.
    const broken = await call('POST', '/v1/sessions', { task_type: 'broken', parameters: { message: 'not yet' }, session_id: 'broken-1' });
    expect((await waitForTask(h, broken.body.task_id, 20_000, as(ALICE))).status).toBe('failed');
    expect((await call('GET', '/v1/sessions/broken-1')).body).toMatchObject({ status: 'failed', actions: ['retry'], error: { message: 'not yet' } });
    const retried = await call('POST', '/v1/sessions/broken-1/actions/retry');
    expect(retried.status).toBe(202);
    expect(retried.body).toMatchObject({ action: 'retry', status: 'pending', run: 2 });
    expect(asked('retry').map((input) => input.task_id)).toContain(broken.body.task_id);
    await poll(async () => (await call('GET', '/v1/sessions/broken-1')).body.status === 'failed', { label: 'the retried session to fail again' });
    expect((await call('POST', `/v1/sessions/${hanging.body.session_id}/actions/retry`)).status).toBe(202);
    await call('POST', `/v1/sessions/${hanging.body.session_id}/actions/cancel`);

    // A workflow posted in seed 001's format, started by its display name.
    const notice = await call(
      'POST',
      '/workflows',
      {
        name: 'Order Notice',
        parameters: [{ name: 'text', type: 'string', required: true }],
        actions: [{ action_id: 'say', action_type: 'notification', config: { message: '{{text}}' } }],
      },
      OPS,
    );
    expect(notice.status).toBe(201);
    const noticed = await call('POST', '/v1/sessions', { workflow: 'Order Notice', params: { text: 'shipped' } });
    expect(noticed.body.task_type).toBe('order-notice');
    expect((await waitForTask(h, noticed.body.task_id, 20_000, as(ALICE))).result).toEqual({ say: { delivered: true, channel: 'log' } });

    // What the body must hold, each at its path.
    expect((await call('POST', '/v1/sessions', { parameters: {} })).body.error.details).toEqual([
      { path: 'workflow', message: 'give workflow or task_type, one of them' },
    ]);
    expect((await call('POST', '/v1/sessions', { task_type: 'echo', params: {}, parameters: {} })).body.error.details).toEqual([
      { path: 'params', message: 'give parameters or params, not both' },
    ]);
    expect((await call('POST', '/v1/sessions', { workflow: 'echo' })).body.error.code).toBe('workflow_not_found');
    expect((await call('POST', '/v1/sessions', { task_type: 'order_review', parameters: { order: 'seven' } })).body.error).toMatchObject({
      code: 'invalid_params',
      details: [{ path: 'parameters.order', message: expect.any(String) }],
    });
    expect((await call('GET', '/v1/sessions/no-such-session')).body.error.code).toBe('session_not_found');
    // An id PostgreSQL could not store is no session's: 404, not a database error.
    expect((await call('GET', '/v1/sessions/a%00b')).body.error.code).toBe('session_not_found');
    expect((await call('POST', '/v1/sessions/order-7/actions/not a name', {})).status).toBe(400);
  });

  it('keeps owners and scopes: another client finds nothing of alice’s, a read key reads but may not act', async () => {
    const started = await call('POST', '/v1/sessions', { workflow: 'order_review', parameters: { order: 9 }, session_id: 'order-9' });
    expect(started.status).toBe(202);
    // Bob's own session id space: "order-9" is nothing of his, nor is alice's task.
    expect((await call('GET', '/v1/sessions/order-9', undefined, BOB)).body.error.code).toBe('session_not_found');
    expect((await call('GET', `/v1/sessions/${started.body.task_id}`, undefined, BOB)).body.error.code).toBe('task_not_found');
    expect((await call('POST', `/v1/sessions/${started.body.task_id}/actions/approve`, { approved: true }, BOB)).status).toBe(404);
    expect((await call('POST', `/v1/sessions/${started.body.task_id}/actions/cancel`, undefined, BOB)).status).toBe(404);
    // Bob may use the same session id for a session of his own.
    const bobs = await call('POST', '/v1/sessions', { task_type: 'echo', params: { mine: true }, session_id: 'order-9' }, BOB);
    expect(bobs.status).toBe(202);
    expect(bobs.body.task_id).not.toBe(started.body.task_id);
    expect((await call('GET', '/v1/sessions/order-9', undefined, BOB)).body.task_id).toBe(bobs.body.task_id);

    const read = await call('GET', `/v1/sessions/${started.body.task_id}`, undefined, READ);
    expect(read.status).toBe(200);
    for (const [method, path, body] of [
      ['POST', '/v1/sessions', { task_type: 'echo' }],
      ['POST', `/v1/sessions/${started.body.task_id}/actions/approve`, { approved: true }],
      ['POST', `/v1/sessions/${started.body.task_id}/actions/cancel`, {}],
    ] as const) {
      const refused = await call(method, path, body, READ);
      expect(refused.status, `${method} ${path}`).toBe(403);
      expect(refused.body.error.code).toBe('forbidden');
    }
    expect((await call('POST', '/v1/sessions/order-9/actions/cancel')).status).toBe(200);
  });

  it('puts starts and signals to the policy: refused, they are 403 policy_denied and change nothing', async () => {
    const denied = await call('POST', '/v1/sessions', { task_type: 'echo', params: { note: 'FORBIDDEN' }, session_id: 'denied-1' });
    expect(denied.status).toBe(403);
    expect(denied.body.error).toMatchObject({ code: 'policy_denied', details: { reason: 'FORBIDDEN is forbidden' } });
    expect((await call('GET', '/v1/sessions/denied-1')).status).toBe(404);

    const started = await call('POST', '/v1/sessions', { workflow: 'order_review', parameters: { order: 10 }, session_id: 'order-10' });
    await poll(async () => (await call('GET', '/v1/sessions/order-10')).body.status === 'waiting', { label: 'the session to wait' });
    const refused = await call('POST', '/v1/sessions/order-10/actions/approve', { approved: true, note: 'FORBIDDEN' });
    expect(refused.status).toBe(403);
    expect(refused.body.error.code).toBe('policy_denied');
    expect((await call('GET', '/v1/sessions/order-10')).body).toMatchObject({ status: 'waiting', actions: ['cancel', 'approve'] });
    expect((await call('POST', '/v1/sessions/order-10/actions/cancel')).status).toBe(200);
    expect(started.status).toBe(202);
    // Starting a session is a submission: admission control applies to it as to POST /assign-task.
    expect(ROUTES.find((route) => route.path === '/v1/sessions' && route.method === 'post')?.admission).toBe(true);
  });

  it('answers 410 with the routes to use for the rest of /v1, never 404', async () => {
    for (const [method, path] of [
      ['GET', '/v1/sessions'],
      ['DELETE', '/v1/sessions/order-7'],
      ['POST', '/v1/evaluate'],
      ['GET', '/v1/sessions/order-7/actions'],
    ] as const) {
      const answer = await call(method, path, method === 'POST' ? {} : undefined);
      expect(answer.status, `${method} ${path}`).toBe(410);
      expect(answer.body.error).toMatchObject({ code: 'gone', details: { use: expect.arrayContaining(['GET /v1/sessions/{session_id}']) } });
    }
  });
});
