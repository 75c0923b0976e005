import { Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stepJobId, toolQueueName } from '../../src/queue/jobs.js';
import { createHarness, type Harness, poll, submit, uniqueName, waitForTask } from '../helpers/harness.js';
import { json, startServer, type TestServer } from '../helpers/http-server.js';

describe('the http tool against local servers', () => {
  let h: Harness;
  let queue: Queue;
  /** The allowlisted service. */
  let api: TestServer;
  /** Allowlisted too (as 127.0.0.1:port), listening on IPv6 and IPv4: a redirect target. */
  let target: TestServer;
  /** Not on the allowlist. */
  let outsider: TestServer;

  beforeAll(async () => {
    const calls = new Map<string, number>();
    const count = (key: string) => {
      const n = (calls.get(key) ?? 0) + 1;
      calls.set(key, n);
      return n;
    };
    api = await startServer((request, res) => {
      const url = new URL(request.path, 'http://local');
      const key = url.searchParams.get('key') ?? '';
      switch (url.pathname) {
        case '/json':
          return json(res, 200, { hello: 'world', n: 1 }, { 'x-test': 'yes' });
        case '/text':
          res.writeHead(200, { 'content-type': 'text/plain' });
          return res.end('plain words');
        case '/echo':
          return json(res, 201, {
            method: request.method,
            content_type: request.headers['content-type'],
            custom: request.headers['x-custom'],
            body: JSON.parse(request.body),
          });
        case '/flaky':
          return count(`flaky:${key}`) === 1 ? json(res, 500, { error: 'try again' }) : json(res, 200, { ok: true });
        case '/rate':
          return count(`rate:${key}`) === 1 ? json(res, 429, { error: 'slow down' }, { 'retry-after': '1' }) : json(res, 200, { ok: true });
        case '/missing':
          return json(res, 404, { error: 'no such thing' });
        case '/redirect':
          res.writeHead(Number(url.searchParams.get('status') ?? 302), { location: url.searchParams.get('to')! });
          return res.end();
        default:
          return json(res, 418, { unexpected: request.path });
      }
    });
    target = await startServer((_request, res) => json(res, 200, { landed: true }), '::');
    outsider = await startServer((_request, res) => json(res, 200, { should: 'never be reached' }));
    h = await createHarness({
      env: { HTTP_TOOL_ALLOWED_HOSTS: `127.0.0.1:${api.port}, 127.0.0.1:${target.port}, 169.254.169.254` },
    });
    queue = new Queue(toolQueueName('http'), { connection: h.redis, prefix: h.config.QUEUE_PREFIX });
  });
  afterAll(async () => {
    await queue?.close();
    await h?.close();
    await Promise.all([api?.close(), target?.close(), outsider?.close()]);
  });

  const local = (path: string) => `${api.origin}${path}`;

  async function run(params: Record<string, unknown>) {
    const id = await submit(h, { task_type: 'http', params });
    return { id, result: await waitForTask(h, id) };
  }

  /** BullMQ holds the job as failed for good: no further attempt can follow. */
  async function expectNoMoreAttempts(id: string) {
    await poll(async () => (await queue.getJobState(stepJobId(id, 1, 'http'))) === 'failed', { label: `the http job of ${id} to fail for good` });
  }

  /** Failed at the first attempt, without retry, with a dead letter. */
  async function expectRefused(params: Record<string, unknown>, message: RegExp) {
    const { id, result } = await run(params);
    expect(result.status).toBe('failed');
    expect(result.steps[0]).toMatchObject({ status: 'failed', attempts: 1, error: { name: 'HostRefusedError', retryable: false } });
    expect(result.steps[0].error.message).toMatch(message);
    await expectNoMoreAttempts(id);
    expect(await h.db.prisma.deadLetter.count({ where: { taskId: id } })).toBe(1);
    return result;
  }

  it('GETs a URL and returns status, headers and the decoded JSON body', async () => {
    const { result } = await run({ url: local('/json') });
    expect(result.status).toBe('completed');
    expect(result.result).toMatchObject({ status: 200, url: local('/json'), body: { hello: 'world', n: 1 } });
    expect(result.result.headers).toMatchObject({ 'x-test': 'yes', 'content-type': 'application/json; charset=utf-8' });
    expect(api.received('/json')).toHaveLength(1);
    expect(api.received('/json')[0]!.method).toBe('GET');
  });

  it('returns a text body as a string', async () => {
    const { result } = await run({ url: local('/text') });
    expect(result.result).toMatchObject({ status: 200, body: 'plain words' });
  });

  it('POSTs a JSON body with its content type and the given headers', async () => {
    const body = { order: 42, items: ['a', 'b'], nested: { ok: true } };
    const { result } = await run({ method: 'POST', url: local('/echo'), body, headers: { 'x-custom': 'value' } });
    expect(result.status).toBe('completed');
    expect(result.result).toMatchObject({ status: 201, body: { method: 'POST', content_type: 'application/json', custom: 'value', body } });
    const [received] = api.received('/echo');
    expect(JSON.parse(received!.body)).toEqual(body);
    expect(received!.headers['content-length']).toBe(String(Buffer.byteLength(JSON.stringify(body))));
  });

  it('retries a 500 and completes on the second attempt', async () => {
    const key = uniqueName('k');
    const { result } = await run({ url: local(`/flaky?key=${key}`) });
    expect(result.status).toBe('completed');
    expect(result.steps[0]).toMatchObject({ status: 'completed', attempts: 2 });
    expect(result.result).toMatchObject({ status: 200, body: { ok: true } });
    expect(api.received(`/flaky?key=${key}`)).toHaveLength(2);
  });

  it('retries a 429 no sooner than its Retry-After', async () => {
    const key = uniqueName('k');
    const { result } = await run({ url: local(`/rate?key=${key}`) });
    expect(result.steps[0]).toMatchObject({ status: 'completed', attempts: 2 });
    const [first, second] = api.received(`/rate?key=${key}`);
    // Retry-After: 1 wins over the tool's 250-500 ms backoff.
    expect(second!.at - first!.at).toBeGreaterThanOrEqual(980);
  });

  it('fails a 404 at once, without retry, with a dead letter', async () => {
    const { id, result } = await run({ url: local('/missing') });
    expect(result.status).toBe('failed');
    expect(result.steps[0]).toMatchObject({
      status: 'failed',
      attempts: 1,
      error: { name: 'NonRetryableError', message: `HTTP 404 from 127.0.0.1:${api.port}`, details: { status: 404, body: { error: 'no such thing' } } },
    });
    await expectNoMoreAttempts(id);
    expect(api.received('/missing')).toHaveLength(1);
    const [letter] = await h.db.prisma.deadLetter.findMany({ where: { taskId: id } });
    expect(letter).toMatchObject({ tool: 'http', attempts: 1, input: { url: local('/missing'), method: 'GET' } });
  });

  it('refuses a host that is not on the allowlist without sending it anything', async () => {
    await expectRefused({ url: `${outsider.origin}/direct` }, /not on HTTP_TOOL_ALLOWED_HOSTS/);
    // Same machine and port as the allowed service, but named differently.
    await expectRefused({ url: `http://localhost:${api.port}/json?via=name` }, /host localhost is not on HTTP_TOOL_ALLOWED_HOSTS/);
    expect(outsider.requests).toHaveLength(0);
    expect(api.received('/json?via=name')).toHaveLength(0);
  });

  it('refuses the cloud metadata address even though it is on the allowlist', async () => {
    await expectRefused({ url: 'http://169.254.169.254/' }, /cloud metadata address/);
    await expectRefused({ url: 'http://[::ffff:169.254.169.254]/latest/meta-data' }, /cloud metadata address/);
  });

  it('refuses a redirect to a host that is not on the allowlist, which never sees a request', async () => {
    const to = `${outsider.origin}/after-redirect`;
    await expectRefused({ url: local(`/redirect?to=${encodeURIComponent(to)}`) }, /^redirect refused: host 127\.0\.0\.1 is not on HTTP_TOOL_ALLOWED_HOSTS/);
    expect(api.received(`/redirect?to=${encodeURIComponent(to)}`)).toHaveLength(1);
    expect(outsider.requests).toHaveLength(0);
  });

  it('refuses a redirect to the cloud metadata address', async () => {
    await expectRefused(
      { url: local(`/redirect?to=${encodeURIComponent('http://169.254.169.254/latest/meta-data')}`) },
      /^redirect refused: .*cloud metadata address/,
    );
  });

  it('refuses a redirect to [::1], loopback that is allowlisted only as 127.0.0.1', async () => {
    const to = `http://[::1]:${target.port}/v6-loopback`;
    await expectRefused({ url: local(`/redirect?to=${encodeURIComponent(to)}`) }, /^redirect refused: host ::1 is not on HTTP_TOOL_ALLOWED_HOSTS/);
    expect(target.received('/v6-loopback')).toHaveLength(0);
  });

  it('follows a redirect to another allowlisted host, dropping every caller header across origins', async () => {
    const to = `http://127.0.0.1:${target.port}/landing`;
    const { result } = await run({
      url: local(`/redirect?status=307&to=${encodeURIComponent(to)}`),
      headers: { authorization: 'Bearer secret', 'x-api-key': 'k-1' },
    });
    expect(result.status).toBe('completed');
    expect(result.result).toMatchObject({ status: 200, url: to, body: { landed: true } });
    const [landed] = target.received('/landing');
    expect(landed).toBeDefined();
    expect(landed!.headers['x-api-key']).toBeUndefined();
    expect(landed!.headers.authorization).toBeUndefined();
  });

  it('follows a relative redirect on the same host', async () => {
    const { result } = await run({ url: local(`/redirect?to=${encodeURIComponent('/json')}`) });
    expect(result.result).toMatchObject({ status: 200, url: local('/json'), body: { hello: 'world' } });
  });

  it('fails without retry when a redirect exceeds max_redirects', async () => {
    const { id, result } = await run({ url: local(`/redirect?to=${encodeURIComponent('/json?hop=limit')}`), max_redirects: 0 });
    expect(result.steps[0]).toMatchObject({ status: 'failed', attempts: 1, error: { name: 'NonRetryableError', message: 'more than 0 redirects' } });
    await expectNoMoreAttempts(id);
    expect(api.received('/json?hop=limit')).toHaveLength(0);
  });

  it('refuses framing headers and header injection at submit, with the header path', async () => {
    const before = await h.db.prisma.task.count();
    const response = await h.request('POST', '/assign-task', {
      task_type: 'http',
      params: {
        url: local('/json'),
        headers: { Host: 'internal.example.com', 'Transfer-Encoding': 'chunked', 'x-note': 'a\r\nX-Injected: 1', 'x-fine': 'ok' },
      },
    });
    expect(response.status).toBe(400);
    expect(response.body.error.code).toBe('invalid_params');
    expect(response.body.error.details.map((problem: { path: string }) => problem.path).sort()).toEqual([
      'params.headers.Host',
      'params.headers["Transfer-Encoding"]',
      'params.headers["x-note"]',
    ]);
    expect(await h.db.prisma.task.count()).toBe(before);
  });

  it('refuses a workflow whose step sends a literal framing header, and fails a templated one at run time without retry', async () => {
    const stored = await h.request('POST', '/workflows', {
      name: uniqueName('wf_framing'),
      steps: [{ id: 'call', tool: 'http', input: { url: local('/json'), headers: { 'content-length': '5' } } }],
    });
    expect(stored.status).toBe(400);
    expect(stored.body.error.details).toEqual([expect.objectContaining({ path: 'steps[0].input.headers["content-length"]' })]);

    const name = uniqueName('wf_templated_header');
    const created = await h.request('POST', '/workflows', {
      name,
      parameters: [{ name: 'note', type: 'string', required: true }],
      steps: [{ id: 'call', tool: 'http', input: { url: local('/json?templated=1'), headers: { 'x-note': '{{params.note}}' } } }],
    });
    expect(created.status).toBe(201);
    const id = await submit(h, { task_type: name, params: { note: 'a\r\nHost: internal.example.com' } });
    const result = await waitForTask(h, id);
    expect(result.status).toBe('failed');
    expect(result.steps[0]).toMatchObject({ status: 'failed', attempts: 1, error: { name: 'NonRetryableError', retryable: false } });
    expect(JSON.stringify(result.steps[0].error)).toMatch(/headers/);
    expect(api.received('/json?templated=1')).toHaveLength(0);
  });

  it('rejects params that do not fit the schema before enqueueing', async () => {
    const response = await h.request('POST', '/assign-task', { task_type: 'http', params: { url: 'ftp://127.0.0.1/file', method: 'BREW' } });
    expect(response.status).toBe(400);
    expect(response.body.error.code).toBe('invalid_params');
    expect(response.body.error.details.map((problem: { path: string }) => problem.path).sort()).toEqual(['params.method', 'params.url']);
  });
});
