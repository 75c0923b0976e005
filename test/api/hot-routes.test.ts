import { request as httpRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ApiServer, startApi } from '../../src/api/server.js';
import { loadConfig } from '../../src/lib/config.js';
import { createHarness, type Harness, waitForTask } from '../helpers/harness.js';

const ADMIN = 'admin-key-0123456789abcdef';
const READER = 'read-key-0123456789abcdef';
const ALICE = 'alice-key-0123456789abcdef';
const BOB = 'bob-key-0123456789abcdef0';

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** One request as a client sends it, with its headers and body exactly as given (no fetch defaults). */
function send(url: string, method: string, path: string, headers: Record<string, string>, body?: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      `${url}${path}`,
      { method, headers: { ...headers, ...(body !== undefined ? { 'content-length': String(Buffer.byteLength(body)) } : {}) } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** What may differ between two answers to the same request: the date, a generated request id, a new task's id and the times in a body. */
function comparable(answer: Answer) {
  const { date, 'content-length': length, ...headers } = answer.headers;
  if (headers['x-request-id'] !== undefined) headers['x-request-id'] = '<request id>';
  const body = answer.body
    .replace(/[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}/g, '<uuid7>')
    .replace(/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z/g, '<time>');
  return { status: answer.status, headers, body };
}

describe('hot routes (POST /assign-task, GET /result/{task_id}) answer as Express does', () => {
  let h: Harness;
  let express: ApiServer;
  beforeAll(async () => {
    h = await createHarness({
      env: { API_KEYS: [ADMIN, `read@reader:${READER}`, `client@alice:${ALICE}`, `client@bob:${BOB}`].join(','), BODY_LIMIT: '2kb' },
    });
    express = await startApi(loadConfig({ ...h.env, HTTP_HOT_ROUTES: 'off' }), h.logger, h.registry);
  });
  afterAll(async () => {
    await express?.close();
    await h?.close();
  });

  /** Requests the hot routes of a server served (orchestrator_http_hot_requests_total), so that a comparison knows it compared a hot route with Express. */
  async function hotServed(url: string): Promise<number> {
    const text = await (await fetch(`${url}/metrics`)).text();
    return [...text.matchAll(/^orchestrator_http_hot_requests_total\{[^}]*\} (\d+)$/gm)].reduce((sum, match) => sum + Number(match[1]), 0);
  }

  /** Sends the request to both servers and compares the answers; `hot`: whether the hot route is to serve it. */
  async function same(method: string, path: string, headers: Record<string, string>, body?: string, hot = true): Promise<Answer> {
    const before = await hotServed(h.url);
    const fast = await send(h.url, method, path, headers, body);
    expect((await hotServed(h.url)) - before, `${method} ${path} served by the hot route`).toBe(hot ? 1 : 0);
    const slow = await send(express.url, method, path, headers, body);
    expect(await hotServed(express.url), 'the Express server serves no hot route').toBe(0);
    expect(comparable(fast), `${method} ${path} ${body ?? ''}`).toEqual(comparable(slow));
    return fast;
  }

  const json = (key: string) => ({ authorization: `Bearer ${key}`, 'content-type': 'application/json' });

  it('answers submissions alike: accepted, replayed, and every refusal a client can cause', async () => {
    const accepted = await same('POST', '/assign-task', json(ALICE), JSON.stringify({ task_type: 'echo', params: { message: 'hi' } }));
    expect(accepted.status).toBe(202);
    const keyed = JSON.stringify({ task_type: 'echo', params: { message: 'once' }, idempotency_key: `hot-${Date.now()}` });
    await send(h.url, 'POST', '/assign-task', json(ALICE), keyed);
    expect((await same('POST', '/assign-task', json(ALICE), keyed)).status).toBe(200);
    const refusals: [Record<string, string>, string, number][] = [
      [json(ALICE), JSON.stringify({ params: {} }), 400],
      [json(ALICE), JSON.stringify({ task_type: 'no_such_tool', params: {} }), 404],
      [json(ALICE), JSON.stringify({ task_type: 'sleep', params: { ms: 'soon' } }), 400],
      [json(ALICE), '{"task_type": "echo", ', 400],
      [json(ALICE), `${'['.repeat(70)}${']'.repeat(70)}`, 400],
      [json(ALICE), JSON.stringify({ task_type: 'echo', params: { message: 'x'.repeat(4000) } }), 413],
      [{ ...json(ALICE), 'content-type': 'text/plain' }, 'hello', 415],
      [json(READER), JSON.stringify({ task_type: 'echo', params: {} }), 403],
    ];
    for (const [headers, body, status] of refusals) expect((await same('POST', '/assign-task', headers, body)).status, body.slice(0, 40)).toBe(status);
  });

  it('answers reads alike: a finished task, waiting on it, params, another client, unknown and invalid ids and queries', async () => {
    const submitted = await h.request('POST', '/assign-task', { task_type: 'echo', params: { message: 'read me' } }, { authorization: `Bearer ${ALICE}` });
    const id = submitted.body.task_id as string;
    await waitForTask(h, id, 20_000, { authorization: `Bearer ${ALICE}` });
    const auth = (key: string) => ({ authorization: `Bearer ${key}` });
    const finished = await same('GET', `/result/${id}`, auth(ALICE));
    expect(JSON.parse(finished.body).status).toBe('completed');
    expect((await same('GET', `/result/${id}?wait=5`, auth(ALICE))).status).toBe(200);
    expect(JSON.parse((await same('GET', `/result/${id}?include=params`, auth(ADMIN))).body).params).toEqual({ message: 'read me' });
    for (const [path, key, status] of [
      [`/result/${id}`, BOB, 404],
      [`/result/${id}`, READER, 200],
      ['/result/01a22000-0000-7000-8000-000000000000', ALICE, 404],
      ['/result/not-a-task-id', ALICE, 404],
      [`/result/${id}?wait=soon`, ALICE, 400],
      [`/result/${id}?wait=5&wait=6`, ALICE, 400],
    ] as const) {
      expect((await same('GET', path, auth(key))).status, `${path} as ${key.slice(0, 5)}`).toBe(status);
    }
  });

  it('leaves to Express what is not plain: no key, a wrong one, an encoded id, a query on the submission', async () => {
    const body = JSON.stringify({ task_type: 'echo', params: {} });
    expect((await same('POST', '/assign-task', { 'content-type': 'application/json' }, body, false)).status).toBe(401);
    expect((await same('POST', '/assign-task', json('wrong-key-0123456789abcdef'), body, false)).status).toBe(401);
    expect((await same('POST', '/assign-task?x=1', json(ALICE), body, false)).status).toBe(202);
    expect((await same('GET', '/result/%30%31', { authorization: `Bearer ${ALICE}` }, undefined, false)).status).toBe(404);
    expect((await same('GET', '/result/', { authorization: `Bearer ${ALICE}` }, undefined, false)).status).toBe(404);
    // The id's pattern is bounded: the longest plain id is still hot, one character more (or a
    // long run that fails only at its end) is Express's, which answers it the same way.
    expect((await same('GET', `/result/${'a'.repeat(100)}`, { authorization: `Bearer ${ALICE}` })).status).toBe(404);
    expect((await same('GET', `/result/${'a'.repeat(101)}`, { authorization: `Bearer ${ALICE}` }, undefined, false)).status).toBe(404);
    expect((await same('GET', `/result/${'a-'.repeat(2000)}!`, { authorization: `Bearer ${ALICE}` }, undefined, false)).status).toBe(404);
  });
});
