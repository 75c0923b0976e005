import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ScheduleQueue } from '../../src/queue/schedule-queue.js';
import { Shards } from '../../src/queue/shards.js';
import { createHarness, type Harness, poll, uniqueName } from '../helpers/harness.js';

/**
 * Schedules through the real BullMQ job schedulers, the API and the worker: every tick makes one
 * task, across a worker restart and a Redis that lost the job scheduler.
 */

interface TickRow {
  tick_at: Date;
  outcome: string;
  task_id: string | null;
}

describe('schedules end to end', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness();
  });
  afterAll(async () => {
    await h?.close();
  });

  const ticks = (name: string) =>
    h.db.sql.$queryRawUnsafe<TickRow[]>(
      `SELECT tick_at, outcome, task_id::text AS task_id FROM schedule_ticks WHERE schedule_name = $1 ORDER BY tick_at`,
      name,
    );
  const scheduleId = async (name: string) =>
    (await h.db.sql.$queryRawUnsafe<{ id: string }[]>(`SELECT id::text AS id FROM schedules WHERE name = $1`, name))[0]!.id;
  const created = async (name: string, atLeast: number, label: string) =>
    poll(
      async () => {
        const rows = (await ticks(name)).filter((row) => row.outcome === 'created');
        return rows.length >= atLeast ? rows : undefined;
      },
      { label, timeoutMs: 20_000 },
    );

  it('refuses what is not a schedule with 400 and the reason at its path, a taken name with 409, an unknown one with 404', async () => {
    const base = { name: uniqueName('s'), every_ms: 60_000, task_type: 'echo' };
    const cases: [Record<string, unknown>, string, string][] = [
      [{ ...base, every_ms: undefined, cron: '61 * * * *' }, 'invalid_schedule', 'cron'],
      [{ ...base, every_ms: undefined, cron: '* * *' }, 'invalid_schedule', 'cron'],
      [{ ...base, every_ms: undefined, cron: 'every day' }, 'invalid_schedule', 'cron'],
      [{ ...base, every_ms: undefined, cron: '0 2 * * *', timezone: 'Mars/Olympus_Mons' }, 'invalid_schedule', 'timezone'],
      [{ ...base, cron: '0 2 * * *' }, 'invalid_schedule', 'every_ms'],
      [{ ...base, every_ms: undefined }, 'invalid_schedule', 'cron'],
      [{ ...base, every_ms: 10 }, 'invalid_schedule', 'every_ms'],
      [{ ...base, name: 'has spaces' }, 'invalid_schedule', 'name'],
      [{ ...base, name: 'x'.repeat(65) }, 'invalid_schedule', 'name'],
      [{ ...base, overlap: 'queue' }, 'invalid_schedule', 'overlap'],
      [{ ...base, catch_up: { all_within_ms: -1 } }, 'invalid_schedule', 'catch_up.all_within_ms'],
      [{ ...base, params: { blob: 'x'.repeat(70_000) } }, 'invalid_schedule', 'params'],
      [{ ...base, surprise: true }, 'invalid_schedule', 'surprise'],
      [{ ...base, task_type: 'no_such_tool' }, 'unknown_task_type', 'task_type'],
      [{ ...base, task_type: 'sleep', params: { ms: 'long' } }, 'invalid_params', 'params.ms'],
    ];
    for (const [body, code, path] of cases) {
      const response = await h.request('POST', '/schedules', body);
      expect(response.status, JSON.stringify(body).slice(0, 120)).toBe(400);
      expect(response.body.error.code, JSON.stringify(response.body)).toBe(code);
      expect(response.body.error.details.map((problem: { path: string }) => problem.path)).toContain(path);
    }
    expect((await h.request('POST', '/schedules', 'not json', { 'content-type': 'application/json' })).status).toBe(400);

    const name = uniqueName('dup');
    const first = await h.request('POST', '/schedules', { name, cron: '0 2 * * *', timezone: 'Europe/Berlin', task_type: 'echo', paused: true });
    expect(first.status).toBe(201);
    expect(first.body).toMatchObject({ name, cron: '0 2 * * *', every_ms: null, timezone: 'Europe/Berlin', overlap: 'skip', catch_up: 'none', paused: true });
    expect((await h.request('POST', '/schedules', { name, every_ms: 1000, task_type: 'echo' })).body.error.code).toBe('schedule_exists');
    expect((await h.request('POST', '/schedules', { name, every_ms: 1000, task_type: 'echo' })).status).toBe(409);

    for (const [method, body] of [
      ['GET', undefined],
      ['PATCH', { paused: false }],
      ['DELETE', undefined],
    ] as const) {
      const response = await h.request(method, '/schedules/nobody-has-this', body);
      expect(response.status, method).toBe(404);
      expect(response.body.error.code).toBe('schedule_not_found');
    }
    const badPatch = await h.request('PATCH', `/schedules/${name}`, { cron: '0 25 * * *' });
    expect(badPatch.status).toBe(400);
    expect(badPatch.body.error).toMatchObject({ code: 'invalid_schedule', details: [{ path: 'cron' }] });
    // An interval schedule becomes a cron one in a time zone.
    const every = uniqueName('every');
    await h.request('POST', '/schedules', { name: every, every_ms: 60_000, task_type: 'echo', paused: true });
    const toCron = await h.request('PATCH', `/schedules/${every}`, { cron: '*/5 * * * *', timezone: 'Asia/Tokyo' });
    expect(toCron.body).toMatchObject({ cron: '*/5 * * * *', every_ms: null, timezone: 'Asia/Tokyo' });
    const badZone = await h.request('PATCH', `/schedules/${name}`, { timezone: 'Nowhere/Atall' });
    expect(badZone.status).toBe(400);
    expect(badZone.body.error.details[0].path).toBe('timezone');
    expect((await h.request('PATCH', `/schedules/${name}`, { task_type: 'no_such_tool' })).body.error.code).toBe('unknown_task_type');
  });

  it('takes the shipped nightly example, shows its next 5 fire times in its time zone, and none while paused', async () => {
    const example = JSON.parse(readFileSync(new URL('../../src/schedules/examples/nightly-report.json', import.meta.url), 'utf8'));
    const name = example.name;
    expect((await h.request('POST', '/schedules', example)).status).toBe(201);
    const { body } = await h.request('GET', `/schedules/${name}`);
    expect(body).toMatchObject({ cron: '0 2 * * *', timezone: 'Europe/Berlin', task_type: 'notify', overlap: 'skip', catch_up: 'latest' });
    expect(body.next_fire_times).toHaveLength(5);
    for (const at of body.next_fire_times as string[]) {
      // 02:00 in Berlin is 01:00 UTC in winter and 00:00 UTC in summer.
      expect(new Intl.DateTimeFormat('en-GB', { timeZone: 'Europe/Berlin', hour: '2-digit', minute: '2-digit' }).format(new Date(at))).toBe('02:00');
      expect(new Date(at).getTime()).toBeGreaterThan(Date.now());
    }
    expect(body.recent_runs).toEqual([]);
    const paused = await h.request('PATCH', `/schedules/${name}`, { paused: true });
    expect(paused.body).toMatchObject({ paused: true, next_fire_times: [] });
    const listed = await h.request('GET', '/schedules');
    expect(listed.body.schedules.map((schedule: { name: string }) => schedule.name)).toContain(name);
  });

  it('fires through the BullMQ job scheduler: one task per tick, which names its schedule and tick; pausing stops the ticks', async () => {
    const name = uniqueName('every');
    const response = await h.request('POST', '/schedules', { name, every_ms: 300, task_type: 'echo', params: { from: 'schedule' }, overlap: 'allow' });
    expect(response.status).toBe(201);
    const rows = await created(name, 3, 'three ticks with their tasks');
    for (const row of rows) expect(row.tick_at.getTime() % 300).toBe(0);
    const result = await poll(
      async () => {
        const { body } = await h.request('GET', `/result/${rows[0]!.task_id}`);
        return body.status === 'completed' ? body : undefined;
      },
      { label: 'the first task completed' },
    );
    expect(result).toMatchObject({ task_type: 'echo', result: { from: 'schedule' }, schedule: { name, tick_at: rows[0]!.tick_at.toISOString() } });
    expect((await h.request('GET', `/tasks/${rows[0]!.task_id}`)).body.schedule).toEqual({ name, tick_at: rows[0]!.tick_at.toISOString() });

    const detail = await h.request('GET', `/schedules/${name}`);
    expect(detail.body.recent_runs.length).toBeGreaterThanOrEqual(3);
    expect(detail.body.recent_runs[0]).toMatchObject({ outcome: expect.stringMatching(/created|pending/) });
    const firstRun = detail.body.recent_runs.find((run: { task_id: string }) => run.task_id === rows[0]!.task_id);
    expect(firstRun).toMatchObject({ tick_at: rows[0]!.tick_at.toISOString(), outcome: 'created', status: 'completed' });

    expect((await h.request('PATCH', `/schedules/${name}`, { paused: true })).status).toBe(200);
    const pausedAt = Date.now();
    const scheduler = new ScheduleQueue(h.redis, Shards.of(h.config).prefixes[0]!);
    try {
      expect(await scheduler.installed()).not.toContain(await scheduleId(name));
    } finally {
      await scheduler.close();
    }
    // Nothing to wait for but time: six intervals pass without a tick.
    await new Promise((resolve) => setTimeout(resolve, 1_800));
    await poll(async () => (await ticks(name)).every((row) => row.outcome === 'created'), { label: 'every task made after the pause' });
    const after = await ticks(name);
    expect(after.filter((row) => row.tick_at.getTime() > pausedAt + 300)).toEqual([]);
    // One task per tick: as many tasks of the schedule as ticks that made one, each a different task.
    const tasks = await h.db.sql.$queryRawUnsafe<{ n: number }[]>(
      `SELECT count(*)::int AS n FROM tasks WHERE idempotency_key LIKE $1`,
      `schedule:${await scheduleId(name)}:%`,
    );
    const made = after.filter((row) => row.task_id !== null);
    expect(tasks[0]!.n).toBe(made.length);
    expect(new Set(made.map((row) => row.task_id)).size).toBe(made.length);
  });

  it('keeps exactly one task per tick across a worker restart and a Redis that lost the job scheduler, and a redelivered tick makes none', async () => {
    const name = uniqueName('restart');
    await h.request('POST', '/schedules', { name, every_ms: 250, task_type: 'echo', overlap: 'allow' });
    const id = await scheduleId(name);
    await created(name, 3, 'ticks before the restart');
    await h.worker!.close();
    // Redis lost the job scheduler while no worker ran (a flush): the next worker makes it again from PostgreSQL.
    const scheduler = new ScheduleQueue(h.redis, Shards.of(h.config).prefixes[0]!);
    try {
      await scheduler.uninstall(id);
      expect(await scheduler.installed()).not.toContain(id);
      const before = (await ticks(name)).length;
      const worker = await h.startWorker();
      expect(await scheduler.installed()).toContain(id);
      await created(name, before + 4, 'ticks after the restart');
      expect((await h.request('PATCH', `/schedules/${name}`, { paused: true })).status).toBe(200);

      const rows = await ticks(name);
      // The ticks missed while no worker ran were within the misfire grace: on time, so none is missing.
      for (let index = 1; index < rows.length; index += 1) expect(rows[index]!.tick_at.getTime() - rows[index - 1]!.tick_at.getTime()).toBe(250);
      expect(rows.every((row) => row.outcome === 'created' || row.outcome === 'pending')).toBe(true);
      await poll(async () => (await ticks(name)).every((row) => row.outcome === 'created'), { label: 'every task made' });
      const made = await ticks(name);
      expect(new Set(made.map((row) => row.task_id)).size).toBe(made.length);

      // A tick job delivered again (a lost lock, a killed worker) finds its tick decided.
      const again = await worker.runtime.schedules.tick(id, made[1]!.tick_at);
      expect(again.decided).toBe(0);
      // A worker that died after making a tick's task but before recording it: the next pass records the same task.
      await h.db.sql.$executeRawUnsafe(
        `UPDATE schedule_ticks SET outcome = 'pending', task_id = NULL WHERE schedule_id = $1::uuid AND tick_at = $2`,
        id,
        made[2]!.tick_at,
      );
      await h.request('PATCH', `/schedules/${name}`, { paused: false });
      await poll(async () => (await ticks(name)).find((row) => row.tick_at.getTime() === made[2]!.tick_at.getTime())?.outcome === 'created', {
        label: 'the pending tick recorded',
      });
      await h.request('PATCH', `/schedules/${name}`, { paused: true });
      // A tick decided just before the pause may still be making its task.
      await poll(async () => (await ticks(name)).every((row) => row.outcome === 'created'), { label: 'every task made after the pause' });
      const final = await ticks(name);
      expect(final.find((row) => row.tick_at.getTime() === made[2]!.tick_at.getTime())!.task_id).toBe(made[2]!.task_id);
      const tasks = await h.db.sql.$queryRawUnsafe<{ n: number }[]>(`SELECT count(*)::int AS n FROM tasks WHERE idempotency_key LIKE $1`, `schedule:${id}:%`);
      expect(tasks[0]!.n).toBe(final.filter((row) => row.task_id !== null).length);
    } finally {
      await scheduler.close();
    }
  });

  it('DELETE removes the schedule and its job scheduler: no tick follows; its tasks keep naming it', async () => {
    const name = uniqueName('deleted');
    await h.request('POST', '/schedules', { name, every_ms: 200, task_type: 'echo', overlap: 'allow' });
    const id = await scheduleId(name);
    const [first] = await created(name, 1, 'a tick');
    const deleted = await h.request('DELETE', `/schedules/${name}`);
    expect(deleted).toMatchObject({ status: 200, body: { name, deleted: true } });
    const deletedAt = Date.now();
    expect((await h.request('GET', `/schedules/${name}`)).status).toBe(404);
    const scheduler = new ScheduleQueue(h.redis, Shards.of(h.config).prefixes[0]!);
    try {
      expect(await scheduler.installed()).not.toContain(id);
    } finally {
      await scheduler.close();
    }
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    expect((await ticks(name)).filter((row) => row.tick_at.getTime() > deletedAt + 200)).toEqual([]);
    expect((await h.request('GET', `/result/${first!.task_id}`)).body.schedule).toEqual({ name, tick_at: first!.tick_at.toISOString() });
    // The name is free again.
    expect((await h.request('POST', '/schedules', { name, every_ms: 60_000, task_type: 'echo', paused: true })).status).toBe(201);
  });
});

describe('schedules and API keys', () => {
  const ADMIN = 'schedules-admin-key-0123456789';
  const CLIENT_A = 'schedules-client-a-0123456789';
  const CLIENT_B = 'schedules-client-b-0123456789';
  const READER = 'schedules-reader-key-012345678';
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness({ worker: false, env: { API_KEYS: `${ADMIN},client@alpha:${CLIENT_A},client@beta:${CLIENT_B},read:${READER}` } });
  });
  afterAll(async () => {
    await h?.close();
  });
  const as = (key: string) => ({ authorization: `Bearer ${key}` });

  it('a client key sees and changes only its own schedules; admin and read keys see every one; a read key changes none', async () => {
    const name = uniqueName('owned');
    expect((await h.request('POST', '/schedules', { name, cron: '0 2 * * *', task_type: 'echo', paused: true }, as(CLIENT_A))).status).toBe(201);
    expect((await h.request('GET', `/schedules/${name}`, undefined, as(CLIENT_A))).status).toBe(200);
    expect((await h.request('GET', `/schedules/${name}`, undefined, as(CLIENT_B))).status).toBe(404);
    expect((await h.request('PATCH', `/schedules/${name}`, { paused: false }, as(CLIENT_B))).status).toBe(404);
    expect((await h.request('DELETE', `/schedules/${name}`, undefined, as(CLIENT_B))).status).toBe(404);
    expect((await h.request('GET', '/schedules', undefined, as(CLIENT_B))).body.schedules).toEqual([]);
    expect((await h.request('GET', `/schedules/${name}`, undefined, as(ADMIN))).status).toBe(200);
    expect((await h.request('GET', '/schedules', undefined, as(READER))).body.schedules.map((s: { name: string }) => s.name)).toContain(name);
    expect((await h.request('POST', '/schedules', { name: uniqueName('r'), cron: '0 2 * * *', task_type: 'echo' }, as(READER))).status).toBe(403);
    expect((await h.request('PATCH', `/schedules/${name}`, { paused: false }, as(READER))).status).toBe(403);
    expect((await h.request('GET', '/schedules')).status).toBe(401);
    const owner = await h.db.sql.$queryRawUnsafe<{ owner_key: string }[]>(`SELECT owner_key FROM schedules WHERE name = $1`, name);
    expect(owner[0]!.owner_key).toBe('alpha');
  });
});
