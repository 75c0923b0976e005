import crypto from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createHarness, type Harness, poll, waitForTask } from '../helpers/harness.js';

const KEY_A = 'key-a-0123456789abcdef';
const KEY_B = 'key-b-fedcba9876543210';

describe('API keys, CORS, request ids and security headers', () => {
  let h: Harness;
  const lines: string[] = [];
  beforeAll(async () => {
    // Capture what the service logs, to check keys never appear and request ids always do.
    const logStream = new Writable({
      write(chunk: Buffer, _encoding, done) {
        lines.push(chunk.toString('utf8'));
        done();
      },
    });
    h = await createHarness({
      worker: false,
      logStream,
      env: { API_KEYS: `${KEY_A},${KEY_B}`, CORS_ORIGINS: 'https://app.example.com', LOG_LEVEL: 'http', LOG_FORMAT: 'json' },
    });
  });
  afterAll(async () => {
    await h.close();
  });

  it('answers 401 with the contract body without a key or with a wrong one', async () => {
    for (const headers of [{}, { authorization: 'Bearer wrong-key-0000000000' }, { authorization: `Token ${KEY_A}` }] as Record<string, string>[]) {
      const response = await h.request('GET', '/tools', undefined, headers);
      expect(response.status).toBe(401);
      expect(response.body.error.code).toBe('unauthorized');
      expect(response.headers.get('www-authenticate')).toMatch(/^Bearer/);
    }
  });

  it('accepts every configured key (rotation)', async () => {
    for (const key of [KEY_A, KEY_B]) {
      const response = await h.request('GET', '/tools', undefined, { authorization: `Bearer ${key}` });
      expect(response.status).toBe(200);
    }
    const submitted = await h.request('POST', '/assign-task', { task_type: 'echo', params: {} }, { authorization: `Bearer ${KEY_A}` });
    expect(submitted.status).toBe(202);
  });

  it('leaves /health, /ready and /metrics open', async () => {
    for (const path of ['/health', '/ready', '/metrics']) expect((await h.request('GET', path)).status, path).toBe(200);
  });

  it('puts Bull Board behind the keys, with a basic-auth prompt a browser can answer', async () => {
    const anonymous = await h.request('GET', '/admin/queues');
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers.get('www-authenticate')).toMatch(/^Basic realm="Orchestrator"/);
    const basic = `Basic ${Buffer.from(`admin:${KEY_B}`).toString('base64')}`;
    const page = await h.request('GET', '/admin/queues', undefined, { authorization: basic });
    expect(page.status).toBe(200);
    const api = await h.request('GET', '/admin/queues/api/queues', undefined, { authorization: basic });
    expect(api.status).toBe(200);
    expect((await h.request('GET', '/admin/queues/api/queues')).status).toBe(401);
  });

  it('compares a presented key with every configured key through timingSafeEqual, whichever matches', async () => {
    // The same work for a hit on the first key, a hit on the last and a miss: nothing returns early.
    const compare = vi.spyOn(crypto, 'timingSafeEqual');
    for (const [key, status] of [
      [KEY_A, 200],
      [KEY_B, 200],
      ['not-a-key-0123456789', 401],
    ] as const) {
      compare.mockClear();
      expect((await h.request('GET', '/tools', undefined, { authorization: `Bearer ${key}` })).status).toBe(status);
      expect(compare).toHaveBeenCalledTimes(2);
      // Digests of equal length: the comparison itself takes the same time whatever the key.
      for (const [known, presented] of compare.mock.calls) expect([(known as Buffer).length, (presented as Buffer).length]).toEqual([32, 32]);
    }
    // A submission's key is matched by the front door (its per-client checks) and by the
    // authentication: once for both.
    compare.mockClear();
    const submitted = await h.request('POST', '/assign-task', { task_type: 'echo', params: {} }, { authorization: `Bearer ${KEY_A}` });
    expect(submitted.status).toBe(202);
    expect(compare).toHaveBeenCalledTimes(2);
  });

  it('echoes X-Request-Id, generates one when missing, and logs it on every line of the request', async () => {
    const given = await h.request('GET', '/tools', undefined, { authorization: `Bearer ${KEY_A}`, 'x-request-id': 'req-12345' });
    expect(given.headers.get('x-request-id')).toBe('req-12345');
    const generated = await h.request('GET', '/tools', undefined, { authorization: `Bearer ${KEY_A}` });
    expect(generated.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
    // Only a sane id is taken over: spaces, quotes and long ids are replaced.
    for (const hostile of ['a b c', '"}{"injected":1', 'x'.repeat(200)]) {
      const response = await h.request('GET', '/tools', undefined, { authorization: `Bearer ${KEY_A}`, 'x-request-id': hostile });
      expect(response.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
    }
    const logged = lines.filter((line) => line.includes('"request_id":"req-12345"'));
    expect(logged.length).toBeGreaterThan(0);
    expect(logged.some((line) => line.includes('"message":"request"') && line.includes('"path":"/tools"'))).toBe(true);
  });

  it('never writes a key to the logs', async () => {
    await h.request('GET', '/tools', undefined, { authorization: `Bearer ${KEY_A}` });
    await h.request('GET', '/tools', undefined, { authorization: 'Bearer not-a-real-key-123456' });
    expect(lines.length).toBeGreaterThan(0);
    expect(lines.some((line) => line.includes(KEY_A) || line.includes(KEY_B) || line.includes('not-a-real-key-123456'))).toBe(false);
  });

  it('lets only real CORS preflights through without a key: any other OPTIONS needs one', async () => {
    const preflight = await fetch(`${h.url}/tasks`, {
      method: 'OPTIONS',
      headers: { origin: 'https://app.example.com', 'access-control-request-method': 'GET' },
    });
    expect(preflight.status).toBe(204);
    for (const headers of [{}, { origin: 'https://app.example.com' }, { 'access-control-request-method': 'GET' }] as Record<string, string>[]) {
      const plain = await h.request('OPTIONS', '/tasks', undefined, headers);
      expect(plain.status, JSON.stringify(headers)).toBe(401);
      expect(plain.body.error.code).toBe('unauthorized');
    }
    const keyed = await h.request('OPTIONS', '/tasks', undefined, { authorization: `Bearer ${KEY_A}` });
    expect(keyed.status).toBe(200);
    expect(keyed.headers.get('allow')).toContain('GET');
  });

  it('answers CORS preflights for the configured origin only', async () => {
    const allowed = await fetch(`${h.url}/assign-task`, {
      method: 'OPTIONS',
      headers: { origin: 'https://app.example.com', 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization,content-type' },
    });
    expect(allowed.status).toBe(204);
    expect(allowed.headers.get('access-control-allow-origin')).toBe('https://app.example.com');
    const other = await fetch(`${h.url}/assign-task`, {
      method: 'OPTIONS',
      headers: { origin: 'https://evil.example.net', 'access-control-request-method': 'POST' },
    });
    expect(other.headers.get('access-control-allow-origin')).toBeNull();
  });

  it("sends security headers: a JSON answer the OWASP REST set, a page a document's", async () => {
    for (const [method, path, body] of [
      ['GET', '/health', undefined],
      ['POST', '/assign-task', { task_type: 'echo', params: { message: 'x' } }],
      ['GET', '/no-such-path', undefined],
    ] as const) {
      const response = await h.request(method, path, body);
      expect(response.headers.get('content-type'), path).toMatch(/^application\/json/);
      expect(response.headers.get('content-security-policy'), path).toBe("default-src 'none';frame-ancestors 'none'");
      expect(response.headers.get('x-frame-options'), path).toBe('DENY');
      expect(response.headers.get('x-content-type-options'), path).toBe('nosniff');
      expect(response.headers.get('strict-transport-security'), path).toMatch(/^max-age=\d+/);
      expect(response.headers.get('cross-origin-resource-policy'), path).toBe('same-origin');
      // A document's headers are not sent with JSON.
      for (const header of ['referrer-policy', 'cross-origin-opener-policy', 'origin-agent-cluster', 'x-dns-prefetch-control', 'x-xss-protection']) {
        expect(response.headers.get(header), `${path} ${header}`).toBeNull();
      }
      expect(response.headers.get('x-powered-by')).toBeNull();
    }
    // An approval link's page (a malformed one answers its page too).
    const page = await fetch(`${h.url}/approvals/not-a-token`);
    expect(page.headers.get('content-type')).toMatch(/^text\/html/);
    expect(page.headers.get('content-security-policy')).toContain("default-src 'self'");
    expect(page.headers.get('x-frame-options')).toBe('SAMEORIGIN');
    expect(page.headers.get('referrer-policy')).toBe('no-referrer');
    expect(page.headers.get('x-content-type-options')).toBe('nosniff');
  });
});

describe('per-key rate limit', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness({ worker: false, env: { API_KEYS: `${KEY_A},${KEY_B}`, RATE_LIMIT_PER_MINUTE: '5' } });
  });
  afterAll(async () => {
    await h.close();
  });

  it('answers 429 with Retry-After past the budget, per key, and keeps health checks out of it', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 7; i += 1) statuses.push((await h.request('GET', '/tools', undefined, { authorization: `Bearer ${KEY_A}` })).status);
    expect(statuses).toEqual([200, 200, 200, 200, 200, 429, 429]);
    const limited = await h.request('GET', '/tools', undefined, { authorization: `Bearer ${KEY_A}` });
    expect(limited.body.error.code).toBe('rate_limited');
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThan(0);
    // Another key has its own budget.
    expect((await h.request('GET', '/tools', undefined, { authorization: `Bearer ${KEY_B}` })).status).toBe(200);
    expect((await h.request('GET', '/health')).status).toBe(200);
    // The budget lives in Redis, shared by every API process.
    const keys = await h.redis.keys(`${h.config.QUEUE_PREFIX}:ratelimit:*`);
    expect(keys.length).toBeGreaterThanOrEqual(2);
  });
});

describe('without CORS configured', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness({ worker: false, env: { API_KEYS: KEY_A } });
  });
  afterAll(async () => {
    await h.close();
  });

  it('treats a preflight like any other OPTIONS: it needs a key', async () => {
    const response = await h.request('OPTIONS', '/tasks', undefined, { origin: 'https://app.example.com', 'access-control-request-method': 'GET' });
    expect(response.status).toBe(401);
    expect(response.headers.get('access-control-allow-origin')).toBeNull();
  });
});

const ADMIN = 'admin-key-0123456789abcdef';
const CLIENT_A = 'client-a-key-0123456789ab';
const CLIENT_A_NEXT = 'client-a-next-key-0123456';
const CLIENT_B = 'client-b-key-0123456789ab';
const READER = 'reader-key-0123456789abcd';
const bearer = (key: string) => ({ authorization: `Bearer ${key}` });

describe('scoped keys and task ownership', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness({
      // CLIENT_A and CLIENT_A_NEXT share the owner name "alpha", as during a rotation.
      env: { API_KEYS: `${ADMIN},client@alpha:${CLIENT_A},client@alpha:${CLIENT_A_NEXT},client:${CLIENT_B},read:${READER}` },
    });
  });
  afterAll(async () => {
    await h.close();
  });

  async function submitAs(key: string, body: Record<string, unknown>): Promise<string> {
    const response = await h.request('POST', '/assign-task', body, bearer(key));
    expect(response.status, JSON.stringify(response.body)).toBe(202);
    return response.body.task_id;
  }

  it('gives each scope its class of endpoints and answers 403 forbidden outside it', async () => {
    const taskId = await submitAs(ADMIN, { task_type: 'echo', params: { n: 1 } });
    await waitForTask({ ...h, request: (method, url, body, headers) => h.request(method, url, body, { ...bearer(ADMIN), ...headers }) }, taskId);
    const classes: { name: string; method: string; path: string; body?: unknown; allowed: string[] }[] = [
      { name: 'submit', method: 'POST', path: '/assign-task', body: { task_type: 'echo', params: {} }, allowed: ['admin', 'client'] },
      { name: 'execute a workflow', method: 'POST', path: '/workflows/diamond/execute', body: { parameters: { value: 'x' } }, allowed: ['admin', 'client'] },
      { name: 'list tasks', method: 'GET', path: '/tasks', allowed: ['admin', 'client', 'read'] },
      { name: 'cancel', method: 'POST', path: `/tasks/${taskId}/cancel`, allowed: ['admin', 'client'] },
      { name: 'retry', method: 'POST', path: `/tasks/${taskId}/retry`, allowed: ['admin', 'client'] },
      { name: 'tools', method: 'GET', path: '/tools', allowed: ['admin', 'client', 'read'] },
      { name: 'workflow definitions', method: 'GET', path: '/workflows/diamond', allowed: ['admin', 'client', 'read'] },
      { name: 'API description', method: 'GET', path: '/openapi.json', allowed: ['admin', 'client', 'read'] },
      { name: 'stats', method: 'GET', path: '/stats', allowed: ['admin', 'read'] },
      { name: 'dead letters', method: 'GET', path: '/dead-letters', allowed: ['admin', 'read'] },
      { name: 'Bull Board', method: 'GET', path: '/admin/queues', allowed: ['admin', 'read'] },
      { name: 'define a workflow', method: 'POST', path: '/workflows', body: { name: 'scoped_flow', steps: [{ id: 'a', tool: 'echo' }] }, allowed: ['admin'] },
      { name: 'archive a workflow', method: 'DELETE', path: '/workflows/scoped_flow', allowed: ['admin'] },
      { name: 'replay a dead letter', method: 'POST', path: '/dead-letters/00000000-0000-4000-8000-000000000000/replay', allowed: ['admin'] },
    ];
    const keys = { read: READER, client: CLIENT_B, admin: ADMIN };
    for (const endpoint of classes) {
      for (const [scope, key] of Object.entries(keys)) {
        const response = await h.request(endpoint.method, endpoint.path, endpoint.body, bearer(key));
        const where = `${endpoint.name} (${endpoint.method} ${endpoint.path}) with a ${scope} key: ${JSON.stringify(response.body).slice(0, 200)}`;
        if (endpoint.allowed.includes(scope)) {
          expect(response.status, where).not.toBe(403);
          expect(response.status, where).toBeLessThan(500);
        } else {
          expect(response.status, where).toBe(403);
          expect(response.body.error).toMatchObject({ code: 'forbidden', details: { scope, required: endpoint.allowed } });
        }
      }
    }
  });

  it('records the submitting key on the task: its name, or a hash prefix, never the key', async () => {
    const named = await submitAs(CLIENT_A, { task_type: 'echo', params: {} });
    const unnamed = await submitAs(CLIENT_B, { task_type: 'echo', params: {} });
    const owners = await h.db.prisma.task.findMany({ where: { id: { in: [named, unnamed] } }, select: { id: true, ownerKey: true } });
    const ownerOf = new Map(owners.map((row) => [row.id, row.ownerKey]));
    expect(ownerOf.get(named)).toBe('alpha');
    expect(ownerOf.get(unnamed)).toBe(`key:${crypto.createHash('sha256').update(CLIENT_B).digest('hex').slice(0, 16)}`);
  });

  it("answers 404 to a client key for another key's task, everywhere, and lists only its own tasks", async () => {
    const theirs = await submitAs(CLIENT_A, { task_type: 'sleep', params: { ms: 60_000 } });
    const mine = await submitAs(CLIENT_B, { task_type: 'echo', params: { mine: true } });
    const hidden = [
      ['GET', `/result/${theirs}`],
      ['GET', `/result/${theirs}?wait=20`],
      ['GET', `/tasks/${theirs}`],
      ['GET', `/tasks/${theirs}/events`],
      ['POST', `/tasks/${theirs}/cancel`],
      ['POST', `/tasks/${theirs}/retry`],
    ] as const;
    for (const [method, url] of hidden) {
      const started = Date.now();
      const response = await h.request(method, url, undefined, bearer(CLIENT_B));
      expect(response.status, `${method} ${url}`).toBe(404);
      expect(response.body.error.code).toBe('task_not_found');
      // Not held for the wait: that would tell the task exists.
      expect(Date.now() - started, `${method} ${url}`).toBeLessThan(10_000);
    }
    const listed = await h.request('GET', '/tasks?limit=200', undefined, bearer(CLIENT_B));
    const ids = listed.body.items.map((item: { task_id: string }) => item.task_id);
    expect(ids).toContain(mine);
    expect(ids).not.toContain(theirs);
    // The owner, another key of the same name, read and admin keys all see it.
    for (const key of [CLIENT_A, CLIENT_A_NEXT, READER, ADMIN]) {
      expect((await h.request('GET', `/tasks/${theirs}`, undefined, bearer(key))).status).toBe(200);
      const all = await h.request('GET', '/tasks?limit=200', undefined, bearer(key));
      expect(all.body.items.map((item: { task_id: string }) => item.task_id)).toContain(theirs);
    }
    const ownList = await h.request('GET', '/tasks?limit=200', undefined, bearer(CLIENT_A));
    expect(ownList.body.items.map((item: { task_id: string }) => item.task_id)).not.toContain(mine);
    // The owner may cancel it (and the other client still may not have).
    const cancelled = await h.request('POST', `/tasks/${theirs}/cancel`, undefined, bearer(CLIENT_A_NEXT));
    expect(cancelled.status).toBe(200);
    expect((await h.request('POST', `/tasks/${theirs}/retry`, undefined, bearer(CLIENT_B))).status).toBe(404);
    expect((await h.request('POST', `/tasks/${theirs}/retry`, undefined, bearer(CLIENT_A))).status).toBe(202);
    await h.request('POST', `/tasks/${theirs}/cancel`, undefined, bearer(ADMIN));
  });

  it('keeps idempotency keys per API key: the same key under two API keys makes two tasks', async () => {
    const body = { task_type: 'echo', params: { order: 7 }, idempotency_key: 'order-7' };
    const first = await h.request('POST', '/assign-task', body, bearer(CLIENT_A));
    const other = await h.request('POST', '/assign-task', body, bearer(CLIENT_B));
    expect([first.status, other.status]).toEqual([202, 202]);
    expect(other.body.task_id).not.toBe(first.body.task_id);
    // Within one owner it still deduplicates, across its keys too, and refuses a different body.
    const again = await h.request('POST', '/assign-task', body, bearer(CLIENT_A_NEXT));
    expect(again.status).toBe(200);
    expect(again.body.task_id).toBe(first.body.task_id);
    const changed = await h.request('POST', '/assign-task', { ...body, params: { order: 8 } }, bearer(CLIENT_B));
    expect(changed.status).toBe(409);
    expect(changed.body.error.details.task_id).toBe(other.body.task_id);
    expect(await h.db.prisma.task.count({ where: { idempotencyKey: 'order-7' } })).toBe(2);
  });

  it('serves Bull Board read-only to a read key: its write API refuses, and the board says read-only', async () => {
    const asReader = await h.request('GET', '/admin/queues/api/queues', undefined, bearer(READER));
    expect(asReader.status).toBe(200);
    const queues = asReader.body.queues as { name: string; readOnlyMode: boolean }[];
    expect(queues.length).toBeGreaterThan(0);
    expect(queues.every((queue) => queue.readOnlyMode)).toBe(true);
    const name = encodeURIComponent(queues[0]!.name);
    for (const [method, url] of [
      ['PUT', `/admin/queues/api/queues/${name}/pause`],
      ['PUT', '/admin/queues/api/queues/pause'],
      ['PUT', `/admin/queues/api/queues/${name}/empty`],
    ] as const) {
      const refused = await h.request(method, url, undefined, bearer(READER));
      expect(refused.status, url).toBe(403);
      expect(refused.body.error.code).toBe('forbidden');
    }
    const asAdmin = await h.request('GET', '/admin/queues/api/queues', undefined, bearer(ADMIN));
    const adminView = asAdmin.body.queues as { readOnlyMode: boolean; isPaused: boolean }[];
    expect(adminView.some((queue) => queue.readOnlyMode)).toBe(false);
    expect(adminView.some((queue) => queue.isPaused)).toBe(false);
    // An admin may act (resuming a running queue changes nothing).
    expect((await h.request('PUT', `/admin/queues/api/queues/${name}/resume`, undefined, bearer(ADMIN))).status).toBeLessThan(300);
    // A client key may not open the board at all: it shows every task's data.
    expect((await h.request('GET', '/admin/queues', undefined, bearer(CLIENT_A))).status).toBe(403);
  });
});

describe('API_KEYS_FILE', () => {
  let h: Harness;
  let dir: string;
  let file: string;
  const lines: string[] = [];
  const OLD = 'rotated-old-key-0123456789';
  const NEW = 'rotated-new-key-0123456789';

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'orch-keys-'));
    file = path.join(dir, 'keys');
    await writeFile(file, `# keys of the test\nclient:${OLD}\n\nread:${READER}\n`);
    const logStream = new Writable({
      write(chunk: Buffer, _encoding, done) {
        lines.push(chunk.toString('utf8'));
        done();
      },
    });
    h = await createHarness({
      worker: false,
      logStream,
      env: { API_KEYS: ADMIN, API_KEYS_FILE: file, API_KEYS_FILE_POLL_MS: '100', LOG_LEVEL: 'info', LOG_FORMAT: 'json' },
    });
  });
  afterAll(async () => {
    await h.close();
    await rm(dir, { recursive: true, force: true });
  });

  const statusWith = async (key: string) => (await h.request('GET', '/tools', undefined, bearer(key))).status;

  it('is re-read when it changes: the old key is refused and the new one accepted, without a restart', async () => {
    expect(await statusWith(OLD)).toBe(200);
    expect(await statusWith(NEW)).toBe(401);
    // The new key's scope comes from the file too.
    await writeFile(file, `client:${NEW}\nread:${READER}\n`);
    await poll(async () => (await statusWith(NEW)) === 200, { label: 'the new key to be accepted', timeoutMs: 10_000 });
    expect(await statusWith(OLD)).toBe(401);
    expect((await h.request('GET', '/stats', undefined, bearer(NEW))).status).toBe(403);
    // API_KEYS still apply beside the file.
    expect(await statusWith(ADMIN)).toBe(200);
    expect(lines.some((line) => line.includes('API keys reloaded'))).toBe(true);
    expect(lines.some((line) => line.includes(NEW) || line.includes(OLD))).toBe(false);
  });

  it('keeps the keys it has when the file turns bad, and refuses everyone (not opens up) when it is emptied', async () => {
    await writeFile(file, `client:${NEW}\nnot-a-scope:${OLD}\n`);
    await poll(() => lines.some((line) => line.includes('API_KEYS_FILE not applied')), { label: 'the bad file to be reported', timeoutMs: 10_000 });
    expect(lines.find((line) => line.includes('API_KEYS_FILE not applied'))).toMatch(/line 2/);
    expect(await statusWith(NEW)).toBe(200);
    expect(lines.some((line) => line.includes(OLD))).toBe(false);

    await writeFile(file, '# no keys for now\n');
    await poll(async () => (await statusWith(NEW)) === 401, { label: 'the emptied file to take the key away', timeoutMs: 10_000 });
    expect((await h.request('GET', '/tools')).status).toBe(401);
    expect(await statusWith(ADMIN)).toBe(200);
  });
});

describe('failed authentications', () => {
  let h: Harness;
  beforeAll(async () => {
    // TRUST_PROXY lets the test speak from several addresses through X-Forwarded-For.
    h = await createHarness({ worker: false, env: { API_KEYS: ADMIN, AUTH_FAILURES_PER_MINUTE: '3', TRUST_PROXY: '1' } });
  });
  afterAll(async () => {
    await h.close();
  });

  const from = (address: string, headers: Record<string, string> = {}) => ({ 'x-forwarded-for': address, ...headers });

  it('are limited per client address: past the limit even the right key gets 429 with Retry-After', async () => {
    for (let i = 0; i < 3; i += 1) {
      expect((await h.request('GET', '/tools', undefined, from('203.0.113.7', bearer(`wrong-key-${i}-0123456789`)))).status).toBe(401);
    }
    const blocked = await h.request('GET', '/tools', undefined, from('203.0.113.7', bearer(ADMIN)));
    expect(blocked.status).toBe(429);
    expect(blocked.body.error.code).toBe('rate_limited');
    const retryAfter = Number(blocked.headers.get('retry-after'));
    expect(retryAfter).toBeGreaterThan(0);
    expect(retryAfter).toBeLessThanOrEqual(60);
    // Another address is not affected, and open endpoints stay open.
    expect((await h.request('GET', '/tools', undefined, from('203.0.113.8', bearer(ADMIN)))).status).toBe(200);
    expect((await h.request('GET', '/health', undefined, from('203.0.113.7'))).status).toBe(200);
    // Counted in Redis, so every API process sees the same failures.
    expect(await h.redis.keys(`${h.config.QUEUE_PREFIX}:authfail:*`)).toHaveLength(1);
  });

  it('asks Redis at most once a second for an address with no failures, and at once after a wrong key here', async () => {
    const address = '203.0.113.20';
    expect((await h.request('GET', '/tools', undefined, from(address, bearer(ADMIN)))).status).toBe(200);
    // Another API process counts the address past the limit: this one learns of it within the second it remembers the address as clean.
    await h.redis.set(`${h.config.QUEUE_PREFIX}:authfail:${address}`, '3', 'PX', 60_000);
    const since = Date.now();
    await poll(async () => (await h.request('GET', '/tools', undefined, from(address, bearer(ADMIN)))).status === 429, {
      label: 'the right key refused once the failures counted elsewhere are seen',
      timeoutMs: 5_000,
      intervalMs: 50,
    });
    expect(Date.now() - since).toBeLessThan(2_000);

    // A wrong key on this process forgets the address's clean mark at once: the next request asks Redis.
    const other = '203.0.113.21';
    expect((await h.request('GET', '/tools', undefined, from(other, bearer(ADMIN)))).status).toBe(200);
    await h.redis.set(`${h.config.QUEUE_PREFIX}:authfail:${other}`, '2', 'PX', 60_000);
    expect((await h.request('GET', '/tools', undefined, from(other, bearer('wrong-key-x-0123456789')))).status).toBe(401);
    expect((await h.request('GET', '/tools', undefined, from(other, bearer(ADMIN)))).status).toBe(429);
  });

  it('counts only wrong keys, not requests that carry none', async () => {
    for (let i = 0; i < 5; i += 1) expect((await h.request('GET', '/tools', undefined, from('203.0.113.9'))).status).toBe(401);
    expect((await h.request('GET', '/tools', undefined, from('203.0.113.9', bearer(ADMIN)))).status).toBe(200);
  });
});
