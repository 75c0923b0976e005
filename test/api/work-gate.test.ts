import { randomUUID } from 'node:crypto';
import type http from 'node:http';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { testTools } from '../fixtures/tools.js';
import { createHarness, type Harness, poll, uniqueName, waitForTask } from '../helpers/harness.js';
import { json, type RecordedRequest, startServer, type TestServer } from '../helpers/http-server.js';

/**
 * One gate for accepted work (src/tasks/work-gate.ts): every path that makes work asks the
 * policy service, saying which path it is (`kind`). A real local HTTP server is the policy; a
 * test tells it which (kind, marker) pairs to refuse, and which to leave undecided (HTTP 500,
 * with POLICY_FAIL_MODE=closed). The API and a worker run in this process, both with POLICY_URL.
 */

const ALICE = 'gate-alice-key-0123456789abcdef';
const BOB = 'gate-bob-key-0123456789abcdef';
const OPS = 'gate-ops-key-0123456789abcdef';
const as = (key: string) => ({ authorization: `Bearer ${key}` });

interface PolicyCall {
  kind: string;
  task_type: string;
  params: Record<string, unknown>;
  key_id: string | null;
  scope: string | null;
  owner: string | null;
  task_id?: string;
  schedule?: string;
  signal?: { name: string; payload: unknown; by: string };
  parent?: { task_id: string; step_id: string };
}

describe('one gate for every path that makes work', () => {
  let policy: TestServer;
  let h: Harness;
  /** `kind:marker` pairs the policy refuses, and those it cannot decide (500). */
  const deny = new Set<string>();
  const fail = new Set<string>();

  function decide(request: RecordedRequest, res: http.ServerResponse): void {
    const input = JSON.parse(request.body) as PolicyCall;
    const text = JSON.stringify([input.params, input.signal ?? null]);
    const matches = (set: Set<string>) => [...set].find((entry) => entry.startsWith(`${input.kind}:`) && text.includes(entry.slice(input.kind.length + 1)));
    const refused = text.includes('FORBIDDEN') ? 'FORBIDDEN is forbidden' : matches(deny) ? `no ${input.kind} for this marker` : undefined;
    if (refused) json(res, 200, { allow: false, reason: refused });
    else if (matches(fail)) json(res, 500, { oops: true });
    else json(res, 200, { allow: true });
  }

  /** The policy's calls whose params (or signal) carry `marker`. */
  const calls = (marker: string) =>
    policy.requests
      .map((request) => JSON.parse(request.body) as PolicyCall)
      .filter((call) => JSON.stringify([call.params, call.signal ?? null]).includes(marker));
  const tasksWith = async (marker: string) =>
    Number((await h.db.pool.query<{ n: string }>(`SELECT count(*) AS n FROM tasks WHERE params::text LIKE $1`, [`%${marker}%`])).rows[0]!.n);

  beforeAll(async () => {
    policy = await startServer(decide);
    h = await createHarness({
      tools: testTools,
      env: {
        API_KEYS: `client@alice:${ALICE},client@bob:${BOB},admin@ops:${OPS}`,
        POLICY_URL: `${policy.origin}/decide`,
        POLICY_FAIL_MODE: 'closed',
        // Every decision asked afresh: a test changes its answers as it goes.
        POLICY_CACHE_TTL_MS: '0',
        // A child held while the policy cannot decide is started by the reconciler's next pass.
        RECONCILE_INTERVAL_MS: '300',
        RECONCILE_AFTER_MS: '300',
      },
    });
    const define = async (definition: Record<string, unknown>) => expect((await h.request('POST', '/workflows', definition, as(OPS))).status).toBe(201);
    await define({
      name: 'gate_failing',
      parameters: [{ name: 'marker', type: 'string', required: true }],
      steps: [{ id: 'boom', tool: 'flaky', input: { succeed_on: 99, key: '{{params.marker}}' }, retry: { attempts: 1 } }],
    });
    await define({
      name: 'gate_child',
      parameters: [{ name: 'marker', type: 'string', required: true }],
      steps: [{ id: 'say', tool: 'echo', input: { said: '{{params.marker}}' } }],
    });
    await define({
      name: 'gate_parent',
      parameters: [{ name: 'marker', type: 'string', required: true }],
      steps: [{ id: 'sub', workflow: 'gate_child', input: { marker: '{{params.marker}}' } }],
    });
    await define({
      name: 'gate_wait',
      parameters: [{ name: 'marker', type: 'string', required: true }],
      steps: [
        { id: 'hold', wait: { signal: 'go' } },
        { id: 'after', tool: 'echo', depends_on: ['hold'], input: { marker: '{{params.marker}}' } },
      ],
    });
    await define({
      name: 'gate_approval',
      parameters: [{ name: 'marker', type: 'string', required: true }],
      steps: [{ id: 'review', wait: { approval: {} }, input: { marker: '{{params.marker}}' } }],
    });
  });
  afterAll(async () => {
    await h?.close();
    await policy?.close();
  });
  beforeEach(() => {
    deny.clear();
    fail.clear();
  });

  it('submit and execute ask as kind submit', async () => {
    const marker = randomUUID();
    expect((await h.request('POST', '/assign-task', { task_type: 'echo', params: { marker } }, as(ALICE))).status).toBe(202);
    expect((await h.request('POST', '/workflows/gate_child/execute', { parameters: { marker } }, as(ALICE))).status).toBe(202);
    expect(calls(marker).map((call) => [call.kind, call.task_type, call.key_id, call.scope, call.owner])).toEqual([
      ['submit', 'echo', 'alice', 'client', 'alice'],
      ['submit', 'gate_child', 'alice', 'client', 'alice'],
    ]);
  });

  it('a schedule is asked about when it is defined and changed, and each tick asks again: a denied tick is recorded and makes no task', async () => {
    // Finding 1: params refused at /assign-task were accepted by POST /schedules, and its ticks made tasks.
    expect((await h.request('POST', '/assign-task', { task_type: 'echo', params: { message: 'FORBIDDEN' } }, as(ALICE))).status).toBe(403);
    const forbidden = uniqueName('forbidden');
    const refused = await h.request('POST', '/schedules', { name: forbidden, every_ms: 1000, task_type: 'echo', params: { message: 'FORBIDDEN' } }, as(ALICE));
    expect(refused.status).toBe(403);
    expect(refused.body.error).toMatchObject({ code: 'policy_denied', details: { reason: 'FORBIDDEN is forbidden' } });
    expect((await h.request('GET', `/schedules/${forbidden}`, undefined, as(ALICE))).status).toBe(404);

    // Allowed when defined, refused at its ticks.
    const marker = randomUUID();
    deny.add(`tick:${marker}`);
    const name = uniqueName('ticks');
    const created = await h.request('POST', '/schedules', { name, every_ms: 200, overlap: 'allow', task_type: 'echo', params: { marker } }, as(ALICE));
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const runs = await poll(
      async () => {
        const view = (await h.request('GET', `/schedules/${name}`, undefined, as(ALICE))).body;
        return view.recent_runs.filter((run: { outcome: string }) => run.outcome === 'denied').length >= 2 ? view.recent_runs : undefined;
      },
      { label: 'two denied ticks' },
    );
    // Every tick decided was refused (the newest may still be pending, being asked about).
    for (const run of runs.filter((each: { outcome: string }) => each.outcome !== 'pending'))
      expect(run).toMatchObject({ outcome: 'denied', task_id: null, status: null, error: expect.stringContaining('no tick for this marker') });
    expect(await tasksWith(marker)).toBe(0);
    const tick = calls(marker).find((call) => call.kind === 'tick')!;
    expect(tick).toEqual({ kind: 'tick', task_type: 'echo', params: { marker }, key_id: 'alice', scope: null, owner: 'alice', schedule: name });
    expect(calls(marker).find((call) => call.kind === 'schedule')).toMatchObject({ key_id: 'alice', scope: 'client', owner: 'alice', schedule: name });

    // A change to refused params is refused and changes nothing; a pause needs no decision.
    const patched = await h.request('PATCH', `/schedules/${name}`, { params: { message: 'FORBIDDEN' } }, as(ALICE));
    expect(patched.status).toBe(403);
    expect((await h.request('GET', `/schedules/${name}`, undefined, as(ALICE))).body.params).toEqual({ marker });

    // The policy allows again: the next tick makes its task.
    deny.clear();
    await poll(async () => (await tasksWith(marker)) > 0, { label: 'a tick allowed again makes its task' });
    const paused = await h.request('PATCH', `/schedules/${name}`, { paused: true }, as(ALICE));
    expect(paused.status).toBe(200);
  });

  it('a retry and a dead-letter replay ask as kinds retry and replay, with who asks and whose task it is', async () => {
    const marker = randomUUID();
    const executed = await h.request('POST', '/workflows/gate_failing/execute', { parameters: { marker } }, as(ALICE));
    expect(executed.status).toBe(202);
    const id = executed.body.task_id as string;
    expect((await waitForTask(h, id, 20_000, as(ALICE))).status).toBe('failed');

    deny.add(`retry:${marker}`);
    const retried = await h.request('POST', `/tasks/${id}/retry`, undefined, as(ALICE));
    expect(retried.status).toBe(403);
    expect(retried.body.error).toMatchObject({ code: 'policy_denied', message: 'the policy refused this retry: no retry for this marker' });
    expect((await h.request('GET', `/tasks/${id}`, undefined, as(ALICE))).body).toMatchObject({ status: 'failed', run: 1 });

    const letters = await h.request('GET', `/dead-letters?task_id=${id}`, undefined, as(OPS));
    const letter = letters.body.items[0].id as string;
    deny.add(`replay:${marker}`);
    const replayed = await h.request('POST', `/dead-letters/${letter}/replay`, undefined, as(OPS));
    expect(replayed.status).toBe(403);
    expect(replayed.body.error.code).toBe('policy_denied');
    expect((await h.request('GET', `/tasks/${id}`, undefined, as(OPS))).body).toMatchObject({ status: 'failed', run: 1 });

    const asked = calls(marker);
    expect(asked.find((call) => call.kind === 'retry')).toEqual({
      kind: 'retry',
      task_type: 'gate_failing',
      params: { marker },
      key_id: 'alice',
      scope: 'client',
      owner: 'alice',
      task_id: id,
    });
    expect(asked.find((call) => call.kind === 'replay')).toMatchObject({ key_id: 'ops', scope: 'admin', owner: 'alice', task_id: id });

    deny.clear();
    const allowed = await h.request('POST', `/dead-letters/${letter}/replay`, undefined, as(OPS));
    expect(allowed.status).toBe(202);
    expect(allowed.body.run).toBe(2);
  });

  it('a sub-workflow child is asked about as kind child: refused, its parent step fails; undecided, it is held and started once the policy answers', async () => {
    const marker = randomUUID();
    deny.add(`child:${marker}`);
    const executed = await h.request('POST', '/workflows/gate_parent/execute', { parameters: { marker } }, as(ALICE));
    expect(executed.status).toBe(202);
    const parent = await waitForTask(h, executed.body.task_id, 20_000, as(ALICE));
    expect(parent.status).toBe('failed');
    const sub = parent.steps.find((step: { id: string }) => step.id === 'sub');
    expect(sub.error).toMatchObject({
      name: 'SubWorkflowFailed',
      details: { error: { name: 'PolicyDenied', message: 'the policy refused this sub-workflow: no child for this marker' } },
    });
    // Only the parent was made.
    expect(await tasksWith(marker)).toBe(1);
    expect(calls(marker).find((call) => call.kind === 'child')).toMatchObject({
      task_type: 'gate_child',
      params: { marker },
      key_id: 'alice',
      scope: null,
      owner: 'alice',
      parent: { task_id: executed.body.task_id, step_id: 'sub' },
    });

    // The policy cannot decide (closed): no child yet, the parent's step keeps running.
    const held = randomUUID();
    fail.add(`child:${held}`);
    const waiting = await h.request('POST', '/workflows/gate_parent/execute', { parameters: { marker: held } }, as(ALICE));
    const id = waiting.body.task_id as string;
    await poll(() => calls(held).filter((call) => call.kind === 'child').length >= 2, { label: 'the child asked about again' });
    expect(await tasksWith(held)).toBe(1);
    expect((await h.request('GET', `/tasks/${id}`, undefined, as(ALICE))).body.steps[0]).toMatchObject({ id: 'sub', status: 'running' });
    fail.clear();
    const done = await waitForTask(h, id, 20_000, as(ALICE));
    expect(done.status).toBe('completed');
    expect(JSON.stringify(done.result)).toContain(held);
  });

  it('a signal asks as kind signal, with its name, payload and sender; refused, the step still waits', async () => {
    const marker = randomUUID();
    const executed = await h.request('POST', '/workflows/gate_wait/execute', { parameters: { marker } }, as(ALICE));
    const id = executed.body.task_id as string;
    await poll(async () => (await h.request('GET', `/tasks/${id}`, undefined, as(ALICE))).body.steps[0].status === 'waiting', { label: 'waiting' });
    deny.add(`signal:${marker}`);
    const refused = await h.request('POST', `/tasks/${id}/signals/go`, { ok: true }, as(ALICE));
    expect(refused.status).toBe(403);
    expect(refused.body.error).toMatchObject({ code: 'policy_denied', message: 'the policy refused this signal: no signal for this marker' });
    expect((await h.request('GET', `/tasks/${id}`, undefined, as(ALICE))).body.steps[0]).toMatchObject({ status: 'waiting' });
    expect(calls(marker).find((call) => call.kind === 'signal')).toEqual({
      kind: 'signal',
      task_type: 'gate_wait',
      params: { marker },
      key_id: 'alice',
      scope: 'client',
      owner: 'alice',
      task_id: id,
      signal: { name: 'go', payload: { ok: true }, by: 'alice' },
    });
    // Bob is not asked about: alice's task is not found for him.
    expect((await h.request('POST', `/tasks/${id}/signals/go`, { ok: true }, as(BOB))).status).toBe(404);
    deny.clear();
    expect((await h.request('POST', `/tasks/${id}/signals/go`, { ok: true }, as(ALICE))).status).toBe(200);
    expect((await waitForTask(h, id, 20_000, as(ALICE))).status).toBe('completed');
  });

  it('a decision through an approval link asks as kind signal too; refused, its page says so and the step still waits', async () => {
    const marker = randomUUID();
    const executed = await h.request('POST', '/workflows/gate_approval/execute', { parameters: { marker } }, as(ALICE));
    const id = executed.body.task_id as string;
    const link = await poll(
      async () => (await h.request('GET', `/tasks/${id}`, undefined, as(OPS))).body.steps[0].waiting_for?.approval?.links?.[0]?.url as string | undefined,
      { label: 'the approval link' },
    );
    const decide = () =>
      fetch(`${h.url}${new URL(link).pathname}`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: 'decision=approved&name=Dana',
      });
    deny.add(`signal:${marker}`);
    const refused = await decide();
    expect(refused.status).toBe(403);
    expect(await refused.text()).toContain('This decision was refused');
    expect((await h.request('GET', `/tasks/${id}`, undefined, as(OPS))).body.steps[0].status).toBe('waiting');
    expect(calls(marker).find((call) => call.kind === 'signal')).toMatchObject({
      key_id: null,
      scope: null,
      owner: 'alice',
      task_id: id,
      signal: { name: 'review', payload: { decision: 'approved' }, by: 'link:Dana' },
    });
    deny.clear();
    expect((await decide()).status).toBe(200);
  });
});
