import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeTestConnections } from '../fixtures/tools.js';
import { createHarness, type Harness, poll, waitForTask } from '../helpers/harness.js';
import { json, startServer, type TestServer } from '../helpers/http-server.js';

/**
 * Issue 28, finding 5: alice's calls that a shared service failed opened its circuit for every
 * tenant (bob's unrelated calls waited `circuit_open` for open_ms, and alice could keep it
 * open). Now each key has a circuit of its own, which holds back its own calls; the service's
 * shared circuit opens on failures of several keys, or on a failed health check.
 */

const KEYS = {
  admin: 'circuit-admin-key-0123456789',
  alice: 'circuit-alice-key-0123456789',
  bob: 'circuit-bob-key-01234567890',
  carol: 'circuit-carol-key-0123456789',
  dave: 'circuit-dave-key-01234567890',
  ops: 'circuit-read-key-01234567890',
};
const as = (key: string) => ({ authorization: `Bearer ${key}` });
const RETRY = { attempts: 1, backoff: { type: 'fixed', delay_ms: 100 } };

const document = {
  openapi: '3.0.3',
  info: { title: 'Shared', version: '1' },
  paths: {
    '/ping': {
      get: {
        operationId: 'ping',
        parameters: [{ name: 'mode', in: 'query', required: true, schema: { type: 'string', enum: ['ok', 'fail'] } }],
        responses: { '200': { description: 'pong', content: { 'application/json': { schema: { type: 'object' } } } } },
      },
    },
  },
};

describe("circuits one tenant cannot trip for all (each key's own, and the service's shared one)", () => {
  let h: Harness;
  let service: TestServer;
  let sick: TestServer;

  beforeAll(async () => {
    service = await startServer((request, res) => {
      const url = new URL(request.path, 'http://x');
      if (url.pathname === '/openapi.json') return json(res, 200, document);
      return url.searchParams.get('mode') === 'fail' ? json(res, 500, { error: 'failed' }) : json(res, 200, { ok: true });
    });
    sick = await startServer((request, res) => {
      if (request.path === '/openapi.json') return json(res, 200, document);
      if (request.path === '/health') return json(res, 503, { healthy: false });
      return json(res, 200, { ok: true });
    });
    h = await createHarness({
      env: {
        API_KEYS: [
          KEYS.admin,
          `client@alice:${KEYS.alice}`,
          `client@bob:${KEYS.bob}`,
          `client@carol:${KEYS.carol}`,
          `client@dave:${KEYS.dave}`,
          `read@ops:${KEYS.ops}`,
        ].join(','),
        HTTP_TOOL_ALLOWED_HOSTS: `127.0.0.1:${service.port},127.0.0.1:${sick.port}`,
        SERVICE_HEALTH_INTERVAL_MS: '200',
      },
    });
    const circuit = { failure_threshold: 3, failure_ratio: 0, open_ms: 120_000, keys_to_open: 3 };
    const registered = await h.request(
      'POST',
      '/services',
      { name: 'shared', base_url: service.origin, openapi_url: `${service.origin}/openapi.json`, circuit },
      as(KEYS.admin),
    );
    expect(registered.status, JSON.stringify(registered.body)).toBe(201);
  });
  afterAll(async () => {
    await h?.close();
    await Promise.all([service?.close(), sick?.close()]);
    await closeTestConnections();
  });

  async function call(key: string, mode: 'ok' | 'fail'): Promise<string> {
    const response = await h.request('POST', '/assign-task', { task_type: 'shared.ping', params: { query: { mode } }, retry: RETRY }, as(key));
    expect(response.status, JSON.stringify(response.body)).toBe(202);
    return response.body.task_id;
  }
  const finished = (key: string, id: string) => waitForTask(h, id, 20_000, as(key));
  async function waitsForCircuit(key: string, id: string): Promise<void> {
    await poll(async () => (await h.request('GET', `/result/${id}`, undefined, as(key))).body.steps[0].reason === 'circuit_open', {
      label: 'the step waiting for a circuit',
      timeoutMs: 15_000,
    });
  }
  const view = async (key: string) => (await h.request('GET', '/services/shared', undefined, as(key))).body;

  it("opens a failing key's own circuit, for its own calls only: another key's calls go on", async () => {
    for (let n = 0; n < 3; n += 1) expect((await finished(KEYS.alice, await call(KEYS.alice, 'fail'))).status).toBe('failed');
    // Alice's fourth call waits for her circuit, and reaches nothing.
    const before = service.received('/ping?mode=fail').length;
    const held = await call(KEYS.alice, 'fail');
    await waitsForCircuit(KEYS.alice, held);
    expect(service.received('/ping?mode=fail')).toHaveLength(before);
    // Bob's calls are not hers: they complete at once.
    for (let n = 0; n < 2; n += 1) expect((await finished(KEYS.bob, await call(KEYS.bob, 'ok'))).status).toBe('completed');

    const admin = await view(KEYS.admin);
    expect(admin.circuit_state.state).toBe('closed');
    const alice = admin.circuit_state.keys.find((key: { key: string }) => key.key === 'alice');
    expect(alice).toMatchObject({ state: 'open', open_until: expect.any(String) });
    expect(admin.circuit_state.keys.find((key: { key: string }) => key.key === 'bob')).toMatchObject({ state: 'closed', window: { calls: 2, failures: 0 } });
    // A read key sees the shared circuit, not who calls the service.
    const reader = await view(KEYS.ops);
    expect(reader.circuit_state.state).toBe('closed');
    expect(reader.circuit_state).not.toHaveProperty('keys');
    expect((await h.request('POST', `/tasks/${held}/cancel`, undefined, as(KEYS.alice))).status).toBe(200);
  });

  it('opens the shared circuit once calls of several keys fail: then every key waits', async () => {
    // Alice failed already; carol and dave fail too: three keys, three failures in a row.
    expect((await finished(KEYS.carol, await call(KEYS.carol, 'fail'))).status).toBe('failed');
    expect((await view(KEYS.admin)).circuit_state.state).toBe('closed');
    expect((await finished(KEYS.dave, await call(KEYS.dave, 'fail'))).status).toBe('failed');
    expect((await finished(KEYS.carol, await call(KEYS.carol, 'fail'))).status).toBe('failed');
    const admin = await view(KEYS.admin);
    expect(admin.circuit_state.state).toBe('open');
    expect(admin.circuit_state.transitions[0]).toMatchObject({ from: 'closed', to: 'open' });
    // Carol's and dave's own circuits stayed closed (fewer than three failures each).
    for (const name of ['carol', 'dave']) expect(admin.circuit_state.keys.find((key: { key: string }) => key.key === name).state).toBe('closed');
    const calls = service.requests.length;
    const bobs = await call(KEYS.bob, 'ok');
    await waitsForCircuit(KEYS.bob, bobs);
    expect(service.requests.length).toBe(calls);
    expect((await h.request('POST', `/tasks/${bobs}/cancel`, undefined, as(KEYS.bob))).status).toBe(200);
  });

  it('opens the shared circuit when the health check fails, without any call', async () => {
    const registered = await h.request(
      'POST',
      '/services',
      { name: 'sick', base_url: sick.origin, openapi_url: `${sick.origin}/openapi.json`, health_path: '/health', circuit: { open_ms: 60_000 } },
      as(KEYS.admin),
    );
    expect(registered.status, JSON.stringify(registered.body)).toBe(201);
    await poll(async () => (await h.request('GET', '/services/sick', undefined, as(KEYS.admin))).body.circuit_state.state === 'open', {
      label: 'the circuit of a service whose health check fails',
      timeoutMs: 15_000,
    });
    const { body } = await h.request('GET', '/services/sick', undefined, as(KEYS.admin));
    expect(body.health.status).toBe('down');
    expect(body.circuit_state.transitions.at(-1)).toMatchObject({ from: 'closed', to: 'open' });
    expect(sick.received('/ping')).toEqual([]);
  });
});
