import http from 'node:http';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROUTES } from '../../src/api/routes/index.js';
import { closeTestConnections, testTools } from '../fixtures/tools.js';
import { createHarness, type Harness, poll, submit, waitForTask } from '../helpers/harness.js';
import { json, startServer, type TestServer } from '../helpers/http-server.js';

/**
 * Security, beyond what test/api/security.test.ts (401s on /tools, Bull Board, key rotation,
 * access-log lines without keys, the constant-time comparison), test/adapters/http.test.ts
 * (allowlist, metadata address, redirects to [::1], metadata and other hosts) and
 * test/api/callbacks.test.ts (callback hosts) already prove:
 * - every operation of ROUTES but the open ones, in every method it answers, and Bull
 *   Board's own API and assets, require a key; paths that look like an open one do not slip by;
 * - the http tool, webhooks and callbacks refuse private, loopback and link-local addresses in
 *   every notation unless allowlisted, directly and behind a redirect, without sending a byte;
 * - no secret reaches the logs at LOG_LEVEL=debug: API keys, the callback signing secret, params
 *   under secret-looking keys, tokens in URLs and headers of the http tool.
 */

const KEY = 'sec-key-0123456789abcdef';
const PASSWORD = 'hunter2-5b1f0c';
const API_KEY_VALUE = 'AKIAFUZZSECRET000123';
const TOKEN = 'tok_live_9f8e7d6c5b4a';
const CALLBACK_SECRET = 'callback-secret-6a5b4c3d2e1f';
const SECRETS = [KEY, PASSWORD, API_KEY_VALUE, TOKEN, CALLBACK_SECRET];

function capture(lines: string[]): Writable {
  return new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(chunk.toString('utf8'));
      done();
    },
  });
}

/** A request with full control over the path (no normalisation of dot segments or encodings). */
function raw(url: string, method: string, path: string, headers: Record<string, string> = {}): Promise<{ status: number; text: string }> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: hostname, port, method, path, headers, agent: false, timeout: 5_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode!, text: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('timeout', () => req.destroy(new Error('no answer')));
    req.on('error', reject);
    req.end();
  });
}

describe('every endpoint requires an API key when keys are set', () => {
  let h: Harness;
  const lines: string[] = [];
  beforeAll(async () => {
    h = await createHarness({ worker: false, logStream: capture(lines), env: { API_KEYS: KEY, LOG_LEVEL: 'debug', LOG_FORMAT: 'json' } });
  });
  afterAll(async () => {
    await h.close();
  });

  /** The operation's path with its parameters filled in. */
  const concrete = (path: string) =>
    path.replace('{task_id}', '00000000-0000-4000-8000-000000000000').replace('{id}', '00000000-0000-4000-8000-000000000000').replace('{name}', 'diamond');
  const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

  it.each(ROUTES.map((operation) => [`${operation.method.toUpperCase()} ${operation.path}`, operation] as const))('%s', async (_name, operation) => {
    const path = concrete(operation.path);
    const methods = operation.method === 'get' ? ['GET', 'HEAD'] : [operation.method.toUpperCase()];
    for (const method of methods) {
      const asked = await Promise.all(
        (
          [
            {},
            { authorization: 'Bearer not-the-key-000000000' },
            { authorization: `Bearer ${KEY}x` },
            { authorization: basic('admin', 'wrong-password-000') },
            { authorization: KEY },
            { 'x-api-key': KEY },
          ] as Record<string, string>[]
        ).map((headers) => raw(h.url, method, `${path}${path.includes('?') ? '&' : '?'}api_key=${KEY}`, headers)),
      );
      for (const answer of asked) {
        if (operation.open) {
          expect(answer.status, `${method} ${path} is open`).not.toBe(401);
          continue;
        }
        expect(answer.status, `${method} ${path} without a valid key`).toBe(401);
        if (method !== 'HEAD') expect(JSON.parse(answer.text).error.code).toBe('unauthorized');
      }
      // With the key (bearer; basic for browser pages) the answer is anything but 401.
      const withKey = await raw(h.url, method, path, { authorization: operation.browser ? basic('anyone', KEY) : `Bearer ${KEY}` });
      expect(withKey.status, `${method} ${path} with the key`).not.toBe(401);
    }
  });

  it("puts Bull Board's API and assets behind the key too", async () => {
    for (const path of [
      '/admin/queues/api/queues',
      '/admin/queues/api/queues?activeQueue=tasks&status=latest',
      '/admin/queues/static/js/main.js',
      '/admin/queues/queue/tasks',
    ]) {
      expect((await raw(h.url, 'GET', path)).status, path).toBe(401);
    }
    for (const [method, path] of [
      ['PUT', '/admin/queues/api/queues/tasks/retry/failed'],
      ['PUT', '/admin/queues/api/queues/tasks/clean/completed'],
      ['PUT', '/admin/queues/api/queues/tasks/pause'],
    ]) {
      expect((await raw(h.url, method!, path!)).status, `${method} ${path}`).toBe(401);
    }
  });

  it('lets no path that merely resembles an open endpoint through', async () => {
    for (const path of [
      '/health/../tools',
      '/metrics/../tools',
      '/ready/%2e%2e/tools',
      '//tools',
      '/tools/',
      '/TOOLS',
      '/Tools',
      '/tools;health',
      '/tools?/health',
      '/%74ools',
      '/health%2F..%2Ftools',
      '/tasks?x=/health',
    ]) {
      const answer = await raw(h.url, 'GET', path);
      expect(answer.status, path).toBe(answer.status === 404 ? 404 : 401);
      expect(answer.text, path).not.toMatch(/"input_schema"|"items"/);
    }
  });

  it('answers a CORS-less OPTIONS without the protected data', async () => {
    for (const path of ['/tools', '/tasks', '/workflows', '/admin/queues/api/queues']) {
      const answer = await raw(h.url, 'OPTIONS', path);
      expect(answer.text, path).not.toMatch(/"input_schema"|"items"|"workflows"|"queues"/);
    }
  });

  it('never writes a key to the logs, at debug level, whatever way it was sent', () => {
    expect(lines.length).toBeGreaterThan(0);
    const leaked = lines.filter((line) => line.includes(KEY));
    expect(leaked).toEqual([]);
  });
});

describe('outbound requests refuse private and link-local addresses unless allowlisted', () => {
  let h: Harness;
  /** Allowlisted, as 127.0.0.1:<port>. */
  let api: TestServer;
  /** Not allowlisted: same address, another port. */
  let outsider: TestServer;
  /** Allowlisted callback receiver that redirects. */
  let receiver: TestServer;

  beforeAll(async () => {
    api = await startServer((request, res) => {
      const url = new URL(request.path, 'http://local');
      if (url.pathname === '/redirect') {
        res.writeHead(302, { location: url.searchParams.get('to')! });
        return res.end();
      }
      return json(res, 200, { ok: true });
    });
    outsider = await startServer((_request, res) => json(res, 200, { should: 'never be reached' }));
    receiver = await startServer((_request, res) => {
      res.writeHead(302, { location: `${outsider.origin}/callback-stolen` });
      res.end();
    });
    h = await createHarness({
      tools: testTools,
      env: {
        HTTP_TOOL_ALLOWED_HOSTS: `127.0.0.1:${api.port}, 127.0.0.1:${receiver.port}, *.example.com, api.example.org`,
        CALLBACK_SECRET,
        CALLBACK_MAX_ATTEMPTS: '1',
      },
    });
  });
  afterAll(async () => {
    await h?.close();
    await Promise.all([api?.close(), outsider?.close(), receiver?.close()]);
  });

  /** Private, loopback, link-local and unspecified addresses, in the notations URLs allow. */
  const privateUrls = () => [
    'http://10.0.0.1/',
    'http://172.16.5.4/',
    'http://192.168.1.1/',
    'http://100.64.0.1/',
    'http://169.254.10.10/',
    'http://[fe80::1]/',
    'http://[fc00::1]/',
    'http://[::ffff:10.0.0.1]/',
    `http://[::1]:${outsider.port}/`,
    `http://0.0.0.0:${outsider.port}/`,
    `http://127.0.0.2:${outsider.port}/`,
    `http://2130706433:${outsider.port}/`,
    `http://0x7f000001:${outsider.port}/`,
    `http://0177.0.0.1:${outsider.port}/`,
    `http://127.1:${outsider.port}/`,
    `http://[::ffff:7f00:1]:${outsider.port}/`,
    `http://localhost:${outsider.port}/`,
  ];

  async function expectRefused(params: Record<string, unknown>, message: RegExp) {
    const id = await submit(h, { task_type: 'http', params });
    const result = await waitForTask(h, id, 30_000);
    expect(result.status, JSON.stringify(params)).toBe('failed');
    expect(result.steps[0], JSON.stringify(params)).toMatchObject({ status: 'failed', attempts: 1, error: { name: 'HostRefusedError', retryable: false } });
    expect(result.steps[0].error.message, JSON.stringify(params)).toMatch(message);
  }

  it('the http tool refuses them all, at the first attempt, sending nothing', async () => {
    await Promise.all(privateUrls().map((url) => expectRefused({ url }, /not on HTTP_TOOL_ALLOWED_HOSTS|private|link-local|metadata/)));
    expect(outsider.requests).toHaveLength(0);
  });

  it('the http tool refuses redirects to them, sending nothing there', async () => {
    await Promise.all(privateUrls().map((to) => expectRefused({ url: `${api.origin}/redirect?to=${encodeURIComponent(to)}` }, /^redirect refused: /)));
    expect(outsider.requests).toHaveLength(0);
  });

  it('but reaches an allowlisted private address, in any notation of it', async () => {
    for (const url of [`${api.origin}/direct`, `http://2130706433:${api.port}/decimal`, `http://0x7f.0.0.1:${api.port}/hex`]) {
      const id = await submit(h, { task_type: 'http', params: { url } });
      const result = await waitForTask(h, id);
      expect(result.status, url).toBe('completed');
      expect(result.result.status, url).toBe(200);
    }
  });

  it('webhooks (notify) refuse them too', async () => {
    for (const url of privateUrls().slice(0, 6)) {
      const id = await submit(h, { task_type: 'notify', params: { channel: 'webhook', url, message: 'hello' } });
      const result = await waitForTask(h, id, 30_000);
      expect(result.status, url).toBe('failed');
      expect(result.steps[0].error.name, url).toBe('HostRefusedError');
      expect(result.steps[0].attempts, url).toBe(1);
    }
    expect(outsider.requests).toHaveLength(0);
  });

  it('callbacks refuse them when the task is submitted, storing nothing', async () => {
    const before = await h.db.prisma.task.count();
    for (const url of privateUrls()) {
      const response = await h.request('POST', '/assign-task', { task_type: 'echo', params: {}, callback_url: url });
      expect(response.status, url).toBe(400);
      expect(response.body.error.code, url).toBe('callback_url_not_allowed');
    }
    expect(await h.db.prisma.task.count()).toBe(before);
  });

  it('callbacks do not follow a redirect, even from an allowlisted receiver', async () => {
    const id = await submit(h, { task_type: 'echo', params: { n: 1 }, callback_url: `${receiver.origin}/hook` });
    await poll(async () => (await h.request('GET', `/result/${id}`)).body.callback?.deliveries.length > 0, { label: 'the callback attempt to be recorded' });
    const { body } = await h.request('GET', `/result/${id}`);
    expect(body.callback.deliveries).toHaveLength(1);
    expect(body.callback.deliveries[0]).toMatchObject({ delivered: false });
    expect(body.callback.deliveries[0].error).toMatch(/redirect/);
    expect(receiver.requests).toHaveLength(1);
    expect(outsider.requests).toHaveLength(0);
  });
});

describe('secrets stay out of the logs at LOG_LEVEL=debug', () => {
  let h: Harness;
  let service: TestServer;
  const lines: string[] = [];

  beforeAll(async () => {
    service = await startServer((request, res) => {
      const url = new URL(request.path, 'http://local');
      if (url.pathname === '/fail') return json(res, 500, { error: 'try again' });
      if (url.pathname === '/hook') {
        res.writeHead(204);
        return res.end();
      }
      return json(res, 200, { ok: true });
    });
    h = await createHarness({
      tools: testTools,
      logStream: capture(lines),
      env: {
        LOG_LEVEL: 'debug',
        LOG_FORMAT: 'json',
        API_KEYS: KEY,
        CALLBACK_SECRET,
        HTTP_TOOL_ALLOWED_HOSTS: `127.0.0.1:${service.port}`,
      },
    });
  });
  afterAll(async () => {
    await h?.close();
    await service?.close();
    await closeTestConnections();
  });

  const authorized = { authorization: `Bearer ${KEY}` };
  async function run(body: Record<string, unknown>): Promise<any> {
    const response = await h.request('POST', '/assign-task', body, authorized);
    expect(response.status, JSON.stringify(response.body)).toBe(202);
    const deadline = Date.now() + 30_000;
    for (;;) {
      const { body: task } = await h.request('GET', `/result/${response.body.task_id}?wait=5`, undefined, authorized);
      if (['completed', 'failed', 'cancelled'].includes(task.status)) return task;
      if (Date.now() > deadline) throw new Error(`task ${response.body.task_id} did not end`);
    }
  }

  function leaks(): string[] {
    return lines.filter((line) => SECRETS.some((secret) => line.includes(secret))).map((line) => line.slice(0, 400));
  }

  it('never logs secrets under secret-looking keys, API keys, the callback secret, or tokens in URLs and headers', async () => {
    // Params under the names secrets go by, nested too.
    const echoed = await run({
      task_type: 'echo',
      params: {
        password: PASSWORD,
        api_key: API_KEY_VALUE,
        token: TOKEN,
        nested: { client_secret: PASSWORD, authorization: `Bearer ${TOKEN}` },
        list: [{ password: PASSWORD }],
      },
    });
    expect(echoed.status).toBe('completed');
    // The http tool with a token in its URL and headers: a success, a retried 500, a refused host.
    const called = await run({
      task_type: 'http',
      params: { url: `${service.origin}/ok?token=${TOKEN}`, headers: { authorization: `Bearer ${TOKEN}`, 'x-api-key': API_KEY_VALUE } },
    });
    expect(called.status).toBe('completed');
    const failing = await run({
      task_type: 'http',
      params: { url: `${service.origin}/fail?token=${TOKEN}`, headers: { authorization: `Bearer ${TOKEN}` } },
      retry: { attempts: 2, backoff: { type: 'fixed', delay_ms: 10 } },
    });
    expect(failing.status).toBe('failed');
    const refused = await run({ task_type: 'http', params: { url: `http://10.0.0.1/?token=${TOKEN}`, headers: { authorization: `Bearer ${TOKEN}` } } });
    expect(refused.status).toBe('failed');
    // A workflow carrying the secrets from params into step inputs through templates.
    const defined = await h.request(
      'POST',
      '/workflows',
      {
        name: 'secret_flow',
        parameters: [
          { name: 'password', type: 'string', required: true },
          { name: 'token', type: 'string', required: true },
        ],
        steps: [
          { id: 'login', tool: 'echo', input: { user: 'ada', password: '{{params.password}}' } },
          {
            id: 'call',
            tool: 'http',
            depends_on: ['login'],
            input: { url: `${service.origin}/ok?token={{params.token}}`, headers: { authorization: 'Bearer {{params.token}}' } },
          },
          {
            id: 'note',
            tool: 'notify',
            depends_on: ['call'],
            input: { channel: 'log', message: 'signed in', level: 'info', data: { password: '{{params.password}}', token: '{{params.token}}' } },
          },
        ],
      },
      authorized,
    );
    expect(defined.status).toBe(201);
    expect((await run({ task_type: 'secret_flow', params: { password: PASSWORD, token: TOKEN } })).status).toBe('completed');
    // A callback whose URL carries a token; it is signed with CALLBACK_SECRET.
    const withCallback = await run({ task_type: 'echo', params: { n: 1 }, callback_url: `${service.origin}/hook?token=${TOKEN}` });
    await poll(async () => service.received('/hook').length > 0, { label: 'the callback' });
    expect(withCallback.status).toBe('completed');
    // Refused requests carrying secrets: a 400 and a 401.
    expect((await h.request('POST', '/assign-task', { task_type: 'record', params: { key: 5, password: PASSWORD } }, authorized)).status).toBe(400);
    expect((await h.request('GET', `/tools?api_key=${KEY}`, undefined, { authorization: `Bearer ${KEY}-wrong` })).status).toBe(401);
    await h.worker!.runtime.runs.idle();

    expect(lines.length).toBeGreaterThan(20);
    expect(leaks()).toEqual([]);
  });

  it('never logs secret values that a failing step repeats in its error message', async () => {
    const defined = await h.request(
      'POST',
      '/workflows',
      {
        name: 'leaky_login',
        parameters: [
          { name: 'password', type: 'string', required: true },
          { name: 'api_key', type: 'string', required: true },
        ],
        steps: [
          {
            id: 'login',
            tool: 'broken',
            input: { retryable: true, message: 'login refused for password {{params.password}} and key {{params.api_key}}' },
            retry: { attempts: 2, backoff: { type: 'fixed', delay_ms: 10 } },
          },
        ],
      },
      authorized,
    );
    expect(defined.status).toBe(201);
    const before = lines.length;
    const task = await run({ task_type: 'leaky_login', params: { password: PASSWORD, api_key: API_KEY_VALUE } });
    expect(task.status).toBe('failed');
    await h.worker!.runtime.runs.idle();
    expect(lines.length).toBeGreaterThan(before);
    expect(
      lines
        .slice(before)
        .filter((line) => line.includes(PASSWORD) || line.includes(API_KEY_VALUE))
        .map((line) => line.slice(0, 300)),
    ).toEqual([]);
  });

  it('keeps no list of secret values in job data: the worker finds them in PostgreSQL when it logs a failure', async () => {
    const defined = await h.request(
      'POST',
      '/workflows',
      {
        name: 'secret_jobs',
        parameters: [
          { name: 'password', type: 'string', required: true },
          { name: 'api_key', type: 'string', required: true },
        ],
        steps: [
          { id: 'prepare', tool: 'echo', input: { user: 'ada' } },
          {
            id: 'login',
            tool: 'broken',
            depends_on: ['prepare'],
            input: { retryable: true, message: 'login refused for password {{params.password}}' },
            retry: { attempts: 2, backoff: { type: 'fixed', delay_ms: 10 } },
          },
        ],
      },
      authorized,
    );
    expect(defined.status).toBe(201);
    const before = lines.length;
    const task = await run({ task_type: 'secret_jobs', params: { password: PASSWORD, api_key: API_KEY_VALUE } });
    expect(task.status).toBe('failed');
    await h.worker!.runtime.runs.idle();

    const jobData = async (tool: string, step: string) =>
      JSON.parse((await h.redis.hget(`${h.config.QUEUE_PREFIX}:tool.${tool}:${task.task_id}.1.${step}`, 'data'))!);
    // A step that was given no secret carries none.
    const prepare = await jobData('echo', 'prepare');
    expect(JSON.stringify(prepare)).not.toContain(PASSWORD);
    expect(JSON.stringify(prepare)).not.toContain(API_KEY_VALUE);
    // The failing step carries only what its input asked for, and no list of secrets.
    const login = await jobData('broken', 'login');
    expect(login).not.toHaveProperty('secrets');
    expect(JSON.stringify({ ...login, input: undefined })).not.toContain(PASSWORD);
    expect(JSON.stringify(login)).not.toContain(API_KEY_VALUE);
    // Its failures were logged, with the secret taken out (the last one after its result was committed).
    const logged = await poll(
      () => {
        const found = lines.slice(before).filter((line) => line.includes('login refused for password'));
        return found.length >= 2 ? found : undefined;
      },
      { label: 'both failed attempts to be logged' },
    );
    for (const line of logged) {
      expect(line).toContain('login refused for password [redacted]');
      expect(line).not.toContain(PASSWORD);
    }
  });
});
