import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHarness, type Harness } from '../helpers/harness.js';
import { apiKeyAuth } from '../../src/api/middleware.js';

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

  it('compares keys against every configured key, whatever matches', () => {
    // The comparison does the same work for a near miss, a far miss and a hit: every key is
    // hashed and compared with timingSafeEqual; nothing returns early.
    const source = apiKeyAuth.toString();
    expect(source).toMatch(/timingSafeEqual/);
    expect(source).toMatch(/digests\.forEach/);
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

  it('sends security headers', async () => {
    const response = await h.request('GET', '/health');
    expect(response.headers.get('x-content-type-options')).toBe('nosniff');
    expect(response.headers.get('x-frame-options')).toBe('SAMEORIGIN');
    expect(response.headers.get('content-security-policy')).toContain("default-src 'self'");
    expect(response.headers.get('x-powered-by')).toBeNull();
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
