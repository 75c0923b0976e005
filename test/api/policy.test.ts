import { randomUUID } from 'node:crypto';
import type http from 'node:http';
import { Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toolQueueName } from '../../src/queue/jobs.js';
import { createHarness, type Harness } from '../helpers/harness.js';
import { json, type RecordedRequest, startServer, type TestServer } from '../helpers/http-server.js';

const CLIENT_KEY = 'policy-client-key-0123456789';
const ADMIN_KEY = 'policy-admin-key-0123456789';

/**
 * A policy service: decides on `params.message` of echo tasks. `deny` refuses, `rewrite` sets
 * `rewritten: true`, `invalid` rewrites sleep's `ms` into a string, `slow` answers after a second,
 * `broken` answers 500, `huge` answers more than POLICY_MAX_RESPONSE_BYTES; anything else is allowed.
 */
function decide(request: RecordedRequest, res: http.ServerResponse): void {
  const input = JSON.parse(request.body) as { task_type: string; params: Record<string, unknown> };
  const answers: Record<string, [number, unknown]> = {
    deny: [200, { allow: false, reason: 'echo may not say deny' }],
    rewrite: [200, { allow: true, params: { ...input.params, rewritten: true } }],
    '1': [200, { allow: true, params: { ms: 'one' } }],
    broken: [500, { oops: true }],
    huge: [200, { allow: true, padding: 'x'.repeat(4_096) }],
  };
  const [status, body] = answers[String(input.params.message ?? input.params.ms)] ?? [200, { allow: true }];
  setTimeout(() => json(res, status, body), input.params.message === 'slow' ? 1_000 : 0);
}

describe('the policy hook (POLICY_URL)', () => {
  let policy: TestServer;
  /** POLICY_FAIL_MODE=closed, keys of two scopes, a cache of a few seconds. */
  let closed: Harness;
  /** POLICY_FAIL_MODE=open, no cache, no keys. */
  let open: Harness;
  let queues: Queue[];

  const calls = (marker: string) => policy.requests.filter((request) => request.body.includes(marker));

  beforeAll(async () => {
    policy = await startServer(decide);
    const common = { POLICY_URL: `${policy.origin}/decide`, POLICY_TIMEOUT_MS: '300', POLICY_MAX_RESPONSE_BYTES: '1024' };
    [closed, open] = await Promise.all([
      createHarness({
        worker: false,
        env: { ...common, POLICY_FAIL_MODE: 'closed', POLICY_CACHE_TTL_MS: '5000', API_KEYS: `client@shop:${CLIENT_KEY},${ADMIN_KEY}` },
      }),
      createHarness({ worker: false, env: { ...common, POLICY_FAIL_MODE: 'open', POLICY_CACHE_TTL_MS: '0' } }),
    ]);
    queues = ['echo', 'sleep'].map((tool) => new Queue(toolQueueName(tool), { connection: closed.redis, prefix: closed.config.QUEUE_PREFIX }));
  });
  afterAll(async () => {
    await Promise.all(queues.map((queue) => queue.close()));
    await Promise.all([closed?.close(), open?.close()]);
    await policy?.close();
  });

  const asClient = { authorization: `Bearer ${CLIENT_KEY}` };

  /** Tasks in PostgreSQL and jobs in BullMQ: what a refused submission must leave as it was. */
  async function stored(): Promise<{ tasks: number; jobs: number }> {
    const counts = await Promise.all(queues.map((queue) => queue.getJobCounts('waiting', 'active', 'delayed', 'prioritized', 'waiting-children')));
    return { tasks: await closed.db.prisma.task.count(), jobs: counts.flatMap((byState) => Object.values(byState)).reduce((a, b) => a + b, 0) };
  }

  it('asks with the path (kind), the task type, the validated params, the key id, its scope and the owner, and accepts what it allows', async () => {
    const marker = randomUUID();
    const response = await closed.request('POST', '/assign-task', { task_type: 'echo', params: { message: 'hello', marker } }, asClient);
    expect(response.status).toBe(202);
    const [call] = calls(marker);
    expect(call?.method).toBe('POST');
    expect(call?.path).toBe('/decide');
    expect(call?.headers['content-type']).toBe('application/json');
    expect(JSON.parse(call!.body)).toEqual({
      kind: 'submit',
      task_type: 'echo',
      params: { message: 'hello', marker },
      key_id: 'shop',
      scope: 'client',
      owner: 'shop',
    });
    const task = await closed.db.prisma.task.findFirstOrThrow({ where: { id: response.body.task_id } });
    expect(task.params).toEqual({ message: 'hello', marker });
  });

  it('answers 403 policy_denied with the reason, and stores and enqueues nothing', async () => {
    const before = await stored();
    const response = await closed.request('POST', '/assign-task', { task_type: 'echo', params: { message: 'deny' } }, asClient);
    expect(response.status).toBe(403);
    expect(response.body.error).toEqual({
      code: 'policy_denied',
      message: 'the policy refused this task: echo may not say deny',
      details: { reason: 'echo may not say deny' },
    });
    expect(await stored()).toEqual(before);
  });

  it('asks before a workflow runs too (POST /workflows/{name}/execute)', async () => {
    const name = `policy_${randomUUID().slice(0, 8)}`;
    const defined = await closed.request(
      'POST',
      '/workflows',
      {
        name,
        parameters: [{ name: 'message', type: 'string', required: true }],
        steps: [{ id: 'say', tool: 'echo', input: { message: '{{params.message}}' } }],
      },
      { authorization: `Bearer ${ADMIN_KEY}` },
    );
    expect(defined.status).toBe(201);
    const before = await stored();
    const denied = await closed.request('POST', `/workflows/${name}/execute`, { parameters: { message: 'deny' } }, asClient);
    expect(denied.status).toBe(403);
    expect(denied.body.error.code).toBe('policy_denied');
    expect(await stored()).toEqual(before);
    const allowed = await closed.request('POST', `/workflows/${name}/execute`, { parameters: { message: 'fine' } }, asClient);
    expect(allowed.status).toBe(202);
    expect(JSON.parse(policy.requests.at(-1)!.body)).toEqual({
      kind: 'submit',
      task_type: name,
      params: { message: 'fine' },
      key_id: 'shop',
      scope: 'client',
      owner: 'shop',
    });
  });

  it('stores the params a policy rewrote, validated again; a rewrite that does not fit is 400 and stores nothing', async () => {
    const marker = randomUUID();
    const response = await closed.request('POST', '/assign-task', { task_type: 'echo', params: { message: 'rewrite', marker } }, asClient);
    expect(response.status).toBe(202);
    const task = await closed.db.prisma.task.findFirstOrThrow({ where: { id: response.body.task_id } });
    expect(task.params).toEqual({ message: 'rewrite', marker, rewritten: true });

    const before = await stored();
    const invalid = await closed.request('POST', '/assign-task', { task_type: 'sleep', params: { ms: 1 } }, asClient);
    expect(invalid.status).toBe(400);
    expect(invalid.body.error.code).toBe('invalid_params');
    expect(invalid.body.error.message).toMatch(/^the params as the policy rewrote them do not fit/);
    expect(invalid.body.error.details).toEqual([{ path: 'params.ms', message: expect.any(String) }]);
    expect(await stored()).toEqual(before);
  });

  it('asks the policy once for identical input within POLICY_CACHE_TTL_MS; another key, scope or params is asked again', async () => {
    const marker = randomUUID();
    const body = { task_type: 'echo', params: { message: 'cached', marker } };
    for (let i = 0; i < 3; i += 1) expect((await closed.request('POST', '/assign-task', body, asClient)).status).toBe(202);
    expect(calls(marker)).toHaveLength(1);
    // Identical questions at the same moment share one call too.
    const together = await Promise.all([1, 2, 3].map(() => closed.request('POST', '/assign-task', { ...body, params: { ...body.params, n: 1 } }, asClient)));
    expect(together.map((answer) => answer.status)).toEqual([202, 202, 202]);
    expect(calls(marker)).toHaveLength(2);
    expect((await closed.request('POST', '/assign-task', body, { authorization: `Bearer ${ADMIN_KEY}` })).status).toBe(202);
    expect(calls(marker)).toHaveLength(3);
    // Without a cache (the open harness) every submission asks.
    for (let i = 0; i < 2; i += 1) expect((await open.request('POST', '/assign-task', body)).status).toBe(202);
    expect(calls(marker)).toHaveLength(5);
    expect(JSON.parse(calls(marker).at(-1)!.body)).toMatchObject({ key_id: null, scope: null });
    // A denial is cached as well.
    const denied = { task_type: 'echo', params: { message: 'deny', marker } };
    for (let i = 0; i < 2; i += 1) expect((await closed.request('POST', '/assign-task', denied, asClient)).status).toBe(403);
    expect(calls(marker)).toHaveLength(6);
  });

  it('under POLICY_FAIL_MODE=closed a timeout, an error or an oversized answer is 503 policy_unavailable, storing nothing; under open the task is accepted', async () => {
    for (const message of ['slow', 'broken', 'huge']) {
      const before = await stored();
      const started = Date.now();
      const refused = await closed.request('POST', '/assign-task', { task_type: 'echo', params: { message } }, asClient);
      expect(refused.status, message).toBe(503);
      expect(refused.body.error.code).toBe('policy_unavailable');
      expect(refused.headers.get('retry-after')).toBe('1');
      if (message === 'slow') {
        expect(refused.body.error.details.reason).toMatch(/POLICY_TIMEOUT_MS \(300 ms\)/);
        expect(Date.now() - started).toBeLessThan(1_000);
      }
      if (message === 'huge') expect(refused.body.error.details.reason).toMatch(/POLICY_MAX_RESPONSE_BYTES/);
      expect(await stored()).toEqual(before);

      const accepted = await open.request('POST', '/assign-task', { task_type: 'echo', params: { message } });
      expect(accepted.status, message).toBe(202);
    }
    // Failures are not cached: the same submission asks again.
    const marker = randomUUID();
    for (let i = 0; i < 2; i += 1) await closed.request('POST', '/assign-task', { task_type: 'echo', params: { message: 'broken', marker } }, asClient);
    expect(calls(marker)).toHaveLength(2);
  });

  it('a policy service that cannot be reached follows the fail mode too', async () => {
    const gone = await startServer(() => undefined);
    const url = `${gone.origin}/decide`;
    await gone.close();
    const h = await createHarness({ worker: false, api: true, env: { POLICY_URL: url, POLICY_FAIL_MODE: 'closed' } });
    try {
      const response = await h.request('POST', '/assign-task', { task_type: 'echo', params: {} });
      expect(response.status).toBe(503);
      expect(response.body.error.code).toBe('policy_unavailable');
      expect(response.body.error.details.reason).toMatch(/^the call failed/);
    } finally {
      await h.close();
    }
  });

  it('reports each call in orchestrator_policy_duration_seconds, by outcome, and cache hits', async () => {
    const metrics = await (await fetch(`${closed.url}/metrics`)).text();
    for (const outcome of ['allow', 'deny', 'error']) {
      expect(metrics).toMatch(new RegExp(`orchestrator_policy_duration_seconds_count\\{outcome="${outcome}"\\} [1-9]`));
    }
    expect(metrics).toMatch(/orchestrator_policy_cache_hits_total [1-9]/);
  });
});
