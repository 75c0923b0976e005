import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHarness, type Harness, poll, uniqueName } from '../helpers/harness.js';

/**
 * Schedules within bounds (issue 28, finding 4): a limit per client key on the number of
 * schedules, ticks counted against the owner's quotas, `all_within_ms` up to the documented 30
 * days, and names scoped per owner (alice and bob may both have `nightly`; bob learns nothing of
 * alice's; admin views show the owner). The catch-up cap is pinned in schedules-timing.test.ts.
 */

const ALICE = 'bounds-alice-key-0123456789abcdef';
const BOB = 'bounds-bob-key-0123456789abcdef';
const CAROL = 'bounds-carol-key-0123456789abcdef';
const OPS = 'bounds-ops-key-0123456789abcdef';
const as = (key: string) => ({ authorization: `Bearer ${key}` });
const THIRTY_DAYS_MS = 30 * 86_400_000;

describe('schedules within bounds', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness({
      env: {
        API_KEYS: `client@alice:${ALICE},client@bob:${BOB},client@carol:${CAROL},admin@ops:${OPS}`,
        SCHEDULES_MAX_PER_KEY: '3',
        QUOTA_MAX_BACKLOG_PER_KEY: '2',
        ADMISSION_MAX_WAIT_MS: '0',
      },
    });
  });
  afterAll(async () => {
    await h?.close();
  });

  const paused = (name: string, extra: Record<string, unknown> = {}) => ({ name, every_ms: 60_000, task_type: 'echo', paused: true, ...extra });

  it('scopes names per owner: alice and bob both have nightly, bob learns nothing of alice’s, admin views show the owner', async () => {
    const alice = await h.request('POST', '/schedules', paused('nightly', { params: { who: 'alice' } }), as(ALICE));
    expect(alice.status).toBe(201);
    expect(alice.body.owner).toBe('alice');
    const bob = await h.request('POST', '/schedules', paused('nightly', { params: { who: 'bob' } }), as(BOB));
    expect(bob.status, JSON.stringify(bob.body)).toBe(201);
    expect(bob.body).toMatchObject({ name: 'nightly', owner: 'bob', params: { who: 'bob' } });
    // A name taken is one's own only.
    const again = await h.request('POST', '/schedules', paused('nightly'), as(ALICE));
    expect(again.status).toBe(409);
    expect(again.body.error.code).toBe('schedule_exists');

    expect((await h.request('GET', '/schedules', undefined, as(BOB))).body.schedules.map((s: { owner: string }) => s.owner)).toEqual(['bob']);
    expect((await h.request('GET', '/schedules/nightly', undefined, as(BOB))).body.params).toEqual({ who: 'bob' });
    // Asking for alice's by owner is the same 404 as a name nobody has.
    for (const [method, body] of [
      ['GET', undefined],
      ['PATCH', { paused: false }],
      ['DELETE', undefined],
    ] as const) {
      const response = await h.request(method, '/schedules/nightly?owner=alice', body, as(BOB));
      expect(response.status, method).toBe(404);
      expect(response.body.error.code).toBe('schedule_not_found');
    }

    const all = (await h.request('GET', '/schedules', undefined, as(OPS))).body.schedules.filter((s: { name: string }) => s.name === 'nightly');
    expect(all.map((s: { owner: string; params: unknown }) => [s.owner, s.params])).toEqual([
      ['alice', { who: 'alice' }],
      ['bob', { who: 'bob' }],
    ]);
    const ambiguous = await h.request('GET', '/schedules/nightly', undefined, as(OPS));
    expect(ambiguous.status).toBe(409);
    expect(ambiguous.body.error).toMatchObject({ code: 'schedule_ambiguous', details: { owners: ['alice', 'bob'] } });
    expect((await h.request('GET', '/schedules/nightly?owner=alice', undefined, as(OPS))).body).toMatchObject({ owner: 'alice', params: { who: 'alice' } });
    const changed = await h.request('PATCH', '/schedules/nightly?owner=bob', { params: { who: 'bob', changed: true } }, as(OPS));
    expect(changed.status).toBe(200);
    expect(changed.body).toMatchObject({ owner: 'bob', params: { who: 'bob', changed: true } });
    expect((await h.request('DELETE', '/schedules/nightly?owner=bob', undefined, as(OPS))).status).toBe(200);
    expect((await h.request('GET', '/schedules/nightly?owner=alice', undefined, as(OPS))).status).toBe(200);
    expect((await h.request('DELETE', '/schedules/nightly', undefined, as(ALICE))).status).toBe(200);
  });

  it('bounds the schedules of a client key (SCHEDULES_MAX_PER_KEY), also when created at once; an admin key is exempt', async () => {
    // Carol creates five at once with room for three: exactly three are stored.
    const names = Array.from({ length: 5 }, () => uniqueName('many'));
    const created = await Promise.all(names.map((name) => h.request('POST', '/schedules', paused(name), as(CAROL))));
    expect(created.map((response) => response.status).sort()).toEqual([201, 201, 201, 409, 409]);
    const refused = created.find((response) => response.status === 409)!;
    expect(refused.body.error).toMatchObject({ code: 'too_many_schedules', details: { max: 3, held: 3 } });
    expect(refused.body.error.message).toContain('SCHEDULES_MAX_PER_KEY');
    expect((await h.request('GET', '/schedules', undefined, as(CAROL))).body.schedules).toHaveLength(3);
    // Room again once one is deleted.
    const kept = names.filter((_, index) => created[index]!.status === 201);
    expect((await h.request('DELETE', `/schedules/${kept[0]}`, undefined, as(CAROL))).status).toBe(200);
    expect((await h.request('POST', '/schedules', paused(uniqueName('again')), as(CAROL))).status).toBe(201);

    for (let n = 0; n < 5; n += 1) expect((await h.request('POST', '/schedules', paused(uniqueName('ops')), as(OPS))).status).toBe(201);
  });

  it('takes all_within_ms up to the documented 30 days', async () => {
    const name = uniqueName('month');
    const created = await h.request('POST', '/schedules', paused(name, { catch_up: { all_within_ms: THIRTY_DAYS_MS } }), as(ALICE));
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    expect(created.body.catch_up).toEqual({ all_within_ms: THIRTY_DAYS_MS });
    expect((await h.request('GET', `/schedules/${name}`, undefined, as(ALICE))).body.catch_up).toEqual({ all_within_ms: THIRTY_DAYS_MS });
    const patched = await h.request('PATCH', `/schedules/${name}`, { catch_up: { all_within_ms: THIRTY_DAYS_MS - 1 } }, as(ALICE));
    expect(patched.body.catch_up).toEqual({ all_within_ms: THIRTY_DAYS_MS - 1 });
    const over = await h.request('PATCH', `/schedules/${name}`, { catch_up: { all_within_ms: THIRTY_DAYS_MS + 1 } }, as(ALICE));
    expect(over.status).toBe(400);
    expect(over.body.error.details[0].path).toBe('catch_up.all_within_ms');
    expect((await h.request('DELETE', `/schedules/${name}`, undefined, as(ALICE))).status).toBe(200);
  });

  it("counts ticks against the owner's quotas: past QUOTA_MAX_BACKLOG_PER_KEY a tick is denied, and makes no task", async () => {
    const name = uniqueName('busy');
    // Each task sleeps long: they stay unfinished, and the key holds its quota of two.
    const created = await h.request('POST', '/schedules', { name, every_ms: 200, overlap: 'allow', task_type: 'sleep', params: { ms: 20_000 } }, as(BOB));
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const runs = await poll(
      async () => {
        const view = (await h.request('GET', `/schedules/${name}`, undefined, as(BOB))).body;
        return view.recent_runs.some((run: { outcome: string }) => run.outcome === 'denied') ? view.recent_runs : undefined;
      },
      { label: 'a tick denied by the quota' },
    );
    expect(runs.find((run: { outcome: string }) => run.outcome === 'denied').error).toMatch(/^quota_exceeded: .*QUOTA_MAX_BACKLOG_PER_KEY/);
    expect((await h.request('PATCH', `/schedules/${name}`, { paused: true }, as(BOB))).status).toBe(200);
    const made = (await h.db.pool.query<{ n: string }>(`SELECT count(*) AS n FROM tasks WHERE owner_key = 'bob' AND task_type = 'sleep'`)).rows[0]!;
    expect(Number(made.n)).toBe(2);
    // The quota counts what bob submits himself too.
    const direct = await h.request('POST', '/assign-task', { task_type: 'echo', params: {} }, as(BOB));
    expect(direct.status).toBe(429);
    expect(direct.body.error.code).toBe('quota_exceeded');
    // Not left sleeping for the harness to drain.
    for (const task of (await h.request('GET', '/tasks?task_type=sleep', undefined, as(BOB))).body.items)
      expect((await h.request('POST', `/tasks/${task.task_id}/cancel`, undefined, as(BOB))).status).toBe(200);
  });

  it("a retried task counts against its owner's quotas again, as the gate admits it (issue 28, finding 1)", async () => {
    const submit = () => h.request('POST', '/assign-task', { task_type: 'echo', params: {}, delay_ms: 600_000 }, as(CAROL));
    const first = (await submit()).body.task_id as string;
    expect((await h.request('POST', `/tasks/${first}/cancel`, undefined, as(CAROL))).status).toBe(200);
    // Its end gave its quota back: carol fills her two again.
    const held = await poll(
      async () => {
        const response = await submit();
        return response.status === 202 ? (response.body.task_id as string) : undefined;
      },
      { label: 'the cancelled task released' },
    );
    expect((await submit()).status).toBe(202);
    const over = await h.request('POST', `/tasks/${first}/retry`, undefined, as(CAROL));
    expect(over.status).toBe(429);
    expect(over.body.error).toMatchObject({ code: 'quota_exceeded', details: { limit: 'QUOTA_MAX_BACKLOG_PER_KEY', max: 2 } });
    expect((await h.request('GET', `/tasks/${first}`, undefined, as(CAROL))).body).toMatchObject({ status: 'cancelled', run: 1 });
    expect((await h.request('POST', `/tasks/${held}/cancel`, undefined, as(CAROL))).status).toBe(200);
    await poll(async () => (await h.request('POST', `/tasks/${first}/retry`, undefined, as(CAROL))).status === 202, { label: 'the retry admitted' });
  });
});
