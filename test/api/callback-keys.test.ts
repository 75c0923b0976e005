import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient, verifyCallback } from '../../client/index.js';
import { createHarness, type Harness, poll, waitForTask } from '../helpers/harness.js';
import { type RecordedRequest, startServer, type TestServer } from '../helpers/http-server.js';

/**
 * Callbacks signed per client: each key's callbacks carry a signature made with a secret derived
 * for that key, over a body that names the owner and the URL. Key B pointing its callback_url at
 * A's receiver gets there with B's signature, which A's secret refuses: B cannot forge A's.
 */

const ROOT = 'callback-root-secret-0123456789';
const A = 'client@alpha:alpha-key-0123456789abcdef';
const B = 'client@beta:beta-key-0123456789abcdef';
const C = 'client@gamma:gamma-key-0123456789abcdef';
const ADMIN = 'admin-key-0123456789abcdef';
const keyOf = (entry: string) => entry.slice(entry.indexOf(':') + 1);

describe('callbacks signed per API key', () => {
  let h: Harness;
  let receiver: TestServer;
  let gammaReceiver: TestServer;
  beforeAll(async () => {
    receiver = await startServer((_request, res) => res.writeHead(204).end());
    gammaReceiver = await startServer((_request, res) => res.writeHead(204).end());
    h = await createHarness({
      env: {
        API_KEYS: [A, B, C, ADMIN].join(','),
        CALLBACK_SECRET: ROOT,
        HTTP_TOOL_ALLOWED_HOSTS: `127.0.0.1:${receiver.port}`,
        CALLBACK_ALLOWED_HOSTS_BY_KEY: JSON.stringify({ gamma: [`127.0.0.1:${gammaReceiver.port}`] }),
      },
    });
  });
  afterAll(async () => {
    await h?.close();
    await receiver?.close();
    await gammaReceiver?.close();
  });

  const client = (entry: string) => createClient({ baseUrl: h.url, apiKey: keyOf(entry) });

  async function delivered(server: TestServer, path: string): Promise<RecordedRequest> {
    return poll(() => server.received(path)[0], { label: `a callback at ${path}`, timeoutMs: 20_000 });
  }

  it('gives each key its own secret, and a read key none', async () => {
    const alpha = await client(A).callbackSecret();
    const beta = await client(B).callbackSecret();
    expect(alpha).toMatchObject({ owner: 'alpha', algorithm: 'HMAC-SHA256' });
    expect(beta.owner).toBe('beta');
    expect(alpha.secret).toMatch(/^[0-9a-f]{64}$/);
    expect(alpha.secret).not.toBe(beta.secret);
    expect(alpha.secret).not.toContain(ROOT);
    // The same key asking again gets the same secret (it is derived, not stored).
    expect((await client(A).callbackSecret()).secret).toBe(alpha.secret);
  });

  it("signs a key's callback so that its own secret verifies it, and another key's does not", async () => {
    const url = `${receiver.origin}/alpha-hook`;
    const { task_id } = await client(A).submit('echo', { n: 1 }, { callback_url: url });
    const request = await delivered(receiver, '/alpha-hook');
    const alpha = (await client(A).callbackSecret()).secret;
    const beta = (await client(B).callbackSecret()).secret;
    const verified = await verifyCallback({ secret: alpha, body: request.body, headers: request.headers, url });
    expect(verified.ok).toBe(true);
    if (!verified.ok) return;
    expect(verified.payload).toMatchObject({ owner: 'alpha', callback_url: url, event: 'task.completed', task: { task_id } });
    expect(request.headers['x-orchestrator-owner']).toBe('alpha');
    expect(await verifyCallback({ secret: beta, body: request.body, headers: request.headers })).toEqual({ ok: false, reason: 'the signature does not match' });
  });

  it("refuses what key B sends to A's receiver: signed with B's secret, naming B", async () => {
    const url = `${receiver.origin}/alpha-only`;
    await client(B).submit('echo', { n: 2 }, { callback_url: url });
    const request = await delivered(receiver, '/alpha-only');
    const alpha = (await client(A).callbackSecret()).secret;
    expect(await verifyCallback({ secret: alpha, body: request.body, headers: request.headers, url })).toEqual({
      ok: false,
      reason: 'the signature does not match',
    });
    // Changing the owner in the body breaks B's own signature too.
    const beta = (await client(B).callbackSecret()).secret;
    const relabelled = request.body.replace('"owner":"beta"', '"owner":"alpha"');
    expect(relabelled).not.toBe(request.body);
    expect((await verifyCallback({ secret: beta, body: relabelled, headers: request.headers })).ok).toBe(false);
    expect((await verifyCallback({ secret: beta, body: request.body, headers: request.headers, url })).ok).toBe(true);
  });

  it('refuses a missing header, an old timestamp and a callback signed for another URL', async () => {
    const url = `${receiver.origin}/checks`;
    await client(A).submit('echo', { n: 3 }, { callback_url: url });
    const request = await delivered(receiver, '/checks');
    const secret = (await client(A).callbackSecret()).secret;
    const { 'x-orchestrator-signature': _signature, ...unsigned } = request.headers;
    expect(await verifyCallback({ secret, body: request.body, headers: unsigned })).toEqual({
      ok: false,
      reason: 'the signature or timestamp header is missing',
    });
    const sentAt = Number(request.headers['x-orchestrator-timestamp']) * 1000;
    expect(await verifyCallback({ secret, body: request.body, headers: request.headers, now: sentAt + 301_000 })).toEqual({
      ok: false,
      reason: 'the timestamp is outside the replay window',
    });
    expect((await verifyCallback({ secret, body: request.body, headers: request.headers, now: sentAt + 299_000 })).ok).toBe(true);
    expect(await verifyCallback({ secret, body: request.body, headers: request.headers, url: `${receiver.origin}/elsewhere` })).toEqual({
      ok: false,
      reason: 'the callback was signed for another URL',
    });
    const shortened = { ...request.headers, 'x-orchestrator-signature': String(request.headers['x-orchestrator-signature']).slice(0, -2) };
    expect((await verifyCallback({ secret, body: request.body, headers: shortened })).ok).toBe(false);
  });

  it('holds a key with its own callback hosts to them, and only that key', async () => {
    const refused = await h.request(
      'POST',
      '/assign-task',
      { task_type: 'echo', params: {}, callback_url: `${receiver.origin}/not-gamma` },
      { authorization: `Bearer ${keyOf(C)}` },
    );
    expect(refused.status).toBe(400);
    expect(refused.body.error.code).toBe('callback_url_not_allowed');
    const url = `${gammaReceiver.origin}/gamma`;
    const { task_id } = await client(C).submit('echo', { n: 4 }, { callback_url: url });
    await waitForTask(h, task_id).catch(() => undefined);
    const request = await delivered(gammaReceiver, '/gamma');
    const secret = (await client(C).callbackSecret()).secret;
    expect((await verifyCallback({ secret, body: request.body, headers: request.headers, url })).ok).toBe(true);
    // Other keys may not reach gamma's host: it is not on HTTP_TOOL_ALLOWED_HOSTS.
    const other = await h.request('POST', '/assign-task', { task_type: 'echo', params: {}, callback_url: url }, { authorization: `Bearer ${keyOf(A)}` });
    expect(other.body.error?.code).toBe('callback_url_not_allowed');
  });
});

describe('GET /callback-secret without CALLBACK_SECRET', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness({ worker: false, env: { API_KEYS: `read:read-key-0123456789abcdef,${A}` } });
  });
  afterAll(async () => {
    await h?.close();
  });

  it('answers 404 callbacks_disabled, and 403 to a read key', async () => {
    const none = await h.request('GET', '/callback-secret', undefined, { authorization: `Bearer ${keyOf(A)}` });
    expect(none.status).toBe(404);
    expect(none.body.error.code).toBe('callbacks_disabled');
    const read = await h.request('GET', '/callback-secret', undefined, { authorization: 'Bearer read-key-0123456789abcdef' });
    expect(read.status).toBe(403);
  });
});
