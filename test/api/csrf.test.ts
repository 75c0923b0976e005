import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHarness, type Harness, submit } from '../helpers/harness.js';

/**
 * What a page on another site can make a browser send: a form POST (urlencoded, multipart or
 * text/plain, or no body) or a fetch without a preflight, with the basic credentials the browser
 * keeps for this origin. Neither Content-Type: application/json nor X-Requested-With can be part
 * of it, and basic auth is taken on the browser pages only.
 */

const KEY = 'csrf-admin-key-0123456789';
const basic = (key: string) => `Basic ${Buffer.from(`anyone:${key}`).toString('base64')}`;

async function raw(h: Harness, method: string, path: string, headers: Record<string, string> = {}, body?: string) {
  const response = await fetch(`${h.url}${path}`, { method, headers, ...(body !== undefined ? { body } : {}) });
  const text = await response.text();
  let parsed: any = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // not JSON
  }
  return { status: response.status, body: parsed };
}

describe('the CSRF rule, without keys (a developer machine)', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness({ worker: false });
  });
  afterAll(async () => {
    await h?.close();
  });

  it('refuses a POST a cross-site form could send, and changes nothing', async () => {
    const id = await submit(h, { task_type: 'echo', params: { a: 1 } });
    const forms: Record<string, string>[] = [
      {},
      { 'content-type': 'application/x-www-form-urlencoded' },
      { 'content-type': 'text/plain' },
      { 'content-type': 'multipart/form-data; boundary=x' },
    ];
    for (const headers of forms) {
      const refused = await raw(h, 'POST', `/tasks/${id}/cancel`, headers);
      expect(refused.status, JSON.stringify(headers)).toBe(403);
      expect(refused.body.error).toMatchObject({ code: 'csrf_header_required' });
    }
    expect((await h.request('GET', `/result/${id}`)).body.status).toBe('queued');
    // A form's body is refused too (415, as before: not JSON), and creates nothing.
    const form = await raw(h, 'POST', '/assign-task', { 'content-type': 'text/plain' }, '{"task_type":"echo"}');
    expect(form.status).toBe(415);
    const { rows } = await h.db.pool.query('SELECT count(*)::int AS n FROM tasks');
    expect(rows[0].n).toBe(1);
  });

  it('lets through a POST with a JSON content type (even without a body) or with X-Requested-With', async () => {
    const id = await submit(h, { task_type: 'echo', params: { b: 1 } });
    expect((await raw(h, 'POST', `/tasks/${id}/cancel`, { 'content-type': 'application/json' })).status).toBe(200);
    const other = await submit(h, { task_type: 'echo', params: { c: 1 } });
    expect((await raw(h, 'POST', `/tasks/${other}/cancel`, { 'x-requested-with': 'XMLHttpRequest' })).status).toBe(200);
    expect((await raw(h, 'POST', `/tasks/${randomUUID()}/cancel`, { 'x-requested-with': 'x' })).status).toBe(404);
  });

  it('lets through a bodiless POST with a bearer header even here, since no cross-site form can set Authorization', async () => {
    const id = await submit(h, { task_type: 'echo', params: { d: 1 } });
    const cancelled = await raw(h, 'POST', `/tasks/${id}/cancel`, { authorization: 'Bearer not-checked-without-keys' });
    expect(cancelled.status).toBe(200);
    expect((await h.request('GET', `/result/${id}`)).body.status).toBe('cancelled');
    // A basic header is what a browser adds by itself: it gets no such pass.
    const other = await submit(h, { task_type: 'echo', params: { e: 1 } });
    const basicPost = await raw(h, 'POST', `/tasks/${other}/cancel`, { authorization: basic('anything') });
    expect(basicPost.status).toBe(403);
    expect(basicPost.body.error.code).toBe('csrf_header_required');
  });
});

describe('basic auth and the CSRF rule, with keys', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness({ worker: false, env: { API_KEYS: KEY } });
  });
  afterAll(async () => {
    await h?.close();
  });

  it('takes basic auth on the browser pages only', async () => {
    expect((await raw(h, 'GET', '/docs/', { authorization: basic(KEY) })).status).toBe(200);
    expect((await raw(h, 'GET', '/redoc', { authorization: basic(KEY) })).status).toBe(200);
    expect((await raw(h, 'GET', '/admin/queues', { authorization: basic(KEY) })).status).toBe(200);
    for (const path of ['/tools', '/tasks', '/openapi.json', '/']) {
      const refused = await raw(h, 'GET', path, { authorization: basic(KEY) });
      expect(refused.status, path).toBe(401);
      expect(refused.body.error.code).toBe('unauthorized');
      expect((await raw(h, 'GET', path, { authorization: `Bearer ${KEY}` })).status, path).toBe(200);
    }
    const submitted = await raw(h, 'POST', '/assign-task', { authorization: basic(KEY), 'content-type': 'application/json' }, '{"task_type":"echo"}');
    expect(submitted.status).toBe(401);
  });

  it('takes a POST without a body, content type or X-Requested-With when it carries a bearer key (curl -X POST -H "Authorization: Bearer $KEY")', async () => {
    const bearer = { authorization: `Bearer ${KEY}` };
    const assigned = await raw(h, 'POST', '/assign-task', { ...bearer, 'content-type': 'application/json' }, '{"task_type":"echo"}');
    expect(assigned.status).toBe(202);
    const id = assigned.body.task_id as string;
    const cancelled = await raw(h, 'POST', `/tasks/${id}/cancel`, bearer);
    expect(cancelled.status).toBe(200);
    expect(cancelled.body.status).toBe('cancelled');
    const retried = await raw(h, 'POST', `/tasks/${id}/retry`, bearer);
    expect(retried.body.error?.code).not.toBe('csrf_header_required');
    // The same POST on Bull Board's API: a program with its key, not a form.
    const board = await raw(h, 'POST', '/admin/queues/api/queues/unknown_queue/add', bearer);
    expect(board.status).not.toBe(403);
    expect(board.status).not.toBe(401);
    // A wrong bearer key is still refused by the key check, before the CSRF rule.
    const wrong = await raw(h, 'POST', `/tasks/${id}/cancel`, { authorization: 'Bearer wrong-key-0123456789' });
    expect(wrong.status).toBe(401);
  });

  it("refuses a bodiless POST made with the browser's basic credentials, on every browser page", async () => {
    for (const path of ['/admin/queues/api/queues/tool.echo/add', '/docs/', '/redoc']) {
      const refused = await raw(h, 'POST', path, { authorization: basic(KEY) });
      expect(refused.status, path).toBe(403);
      expect(refused.body.error.code, path).toBe('csrf_header_required');
    }
  });

  it("refuses a form POST to Bull Board's API with the browser's basic credentials, and takes the UI's own JSON one", async () => {
    const form = await raw(
      h,
      'POST',
      '/admin/queues/api/queues/tool.echo/add',
      { authorization: basic(KEY), 'content-type': 'application/x-www-form-urlencoded' },
      'name=x&data=%7B%7D',
    );
    expect(form.status).toBe(403);
    expect(form.body.error.code).toBe('csrf_header_required');
    const json = await raw(
      h,
      'POST',
      '/admin/queues/api/queues/unknown_queue/add',
      { authorization: basic(KEY), 'content-type': 'application/json' },
      '{"name":"x","data":{}}',
    );
    expect(json.status).not.toBe(403);
    expect(json.status).not.toBe(401);
  });
});
