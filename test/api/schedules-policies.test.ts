import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DAY_MS, maintainPartitions } from '../../src/persistence/partitions.js';
import { ScheduleStore } from '../../src/persistence/schedule-store.js';
import { ScheduleQueue } from '../../src/queue/schedule-queue.js';
import { Shards } from '../../src/queue/shards.js';
import { ScheduleService } from '../../src/schedules/schedule-service.js';
import { createHarness, type Harness, uniqueName } from '../helpers/harness.js';

/**
 * Overlap and catch-up, driven with explicit tick times and a clock of the test's own: no worker
 * runs (the API's job schedulers fire into a queue nobody takes), the test decides each tick as a
 * tick job would, and tasks stay queued until the test cancels them.
 */

const HOUR = 3_600_000;
const GRACE = 60_000;

describe('schedule policies', () => {
  let h: Harness;
  let queue: ScheduleQueue;
  let clock: Date;
  let service: ScheduleService;
  beforeAll(async () => {
    h = await createHarness({ worker: false });
    queue = new ScheduleQueue(h.redis, Shards.of(h.config).prefixes[0]!);
    const tasks = h.api!.tasks;
    service = new ScheduleService({
      store: new ScheduleStore(h.db.sql),
      queue,
      logger: h.logger,
      checkTask: (request, options) => tasks.check(request, options),
      submit: (request, options) => tasks.submit(request, options),
      now: () => clock,
      graceMs: GRACE,
    });
  });
  afterAll(async () => {
    await queue?.close();
    await h?.close();
  });

  /** An hourly schedule, and the first whole hour after it was made: its first tick. */
  async function hourly(body: Record<string, unknown>): Promise<{ name: string; id: string; first: number }> {
    const name = uniqueName('policy');
    const response = await h.request('POST', '/schedules', { name, every_ms: HOUR, task_type: 'echo', ...body });
    expect(response.status, JSON.stringify(response.body)).toBe(201);
    const [row] = await h.db.sql.$queryRawUnsafe<{ id: string; decided_until: Date }[]>(
      `SELECT id::text AS id, decided_until FROM schedules WHERE name = $1`,
      name,
    );
    return { name, id: row!.id, first: Math.ceil((row!.decided_until.getTime() + 1) / HOUR) * HOUR };
  }

  /** A tick job for `at`, processed `lateMs` after it. */
  function tick(id: string, at: number, lateMs = 10) {
    clock = new Date(at + lateMs);
    return service.tick(id, new Date(at));
  }

  async function runs(name: string): Promise<{ tick_at: string; outcome: string; task_id: string | null; status: string | null }[]> {
    const { body } = await h.request('GET', `/schedules/${name}`);
    return [...body.recent_runs].reverse();
  }

  const at = (time: number) => new Date(time).toISOString();
  const cancel = async (taskId: string) => expect((await h.request('POST', `/tasks/${taskId}/cancel`)).status).toBe(200);

  it('skip: a tick while the previous task is queued or running makes no task and is recorded as skipped', async () => {
    const { name, id, first } = await hourly({ overlap: 'skip' });
    await tick(id, first);
    await tick(id, first + HOUR);
    let recorded = await runs(name);
    expect(recorded.map((run) => [run.tick_at, run.outcome, run.status])).toEqual([
      [at(first), 'created', 'queued'],
      [at(first + HOUR), 'skipped', null],
    ]);
    await cancel(recorded[0]!.task_id!);
    await tick(id, first + 2 * HOUR);
    recorded = await runs(name);
    expect(recorded.map((run) => run.outcome)).toEqual(['created', 'skipped', 'created']);
    expect(recorded[2]!.task_id).not.toBe(recorded[0]!.task_id);
  });

  it('allow: every tick makes a task, whatever still runs', async () => {
    const { name, id, first } = await hourly({ overlap: 'allow' });
    await tick(id, first);
    await tick(id, first + HOUR);
    const recorded = await runs(name);
    expect(recorded.map((run) => [run.tick_at, run.outcome, run.status])).toEqual([
      [at(first), 'created', 'queued'],
      [at(first + HOUR), 'created', 'queued'],
    ]);
  });

  it('buffer_one: one tick waits and starts when the running task ends; further ticks are skipped', async () => {
    const { name, id, first } = await hourly({ overlap: 'buffer_one' });
    await tick(id, first);
    await tick(id, first + HOUR);
    await tick(id, first + 2 * HOUR);
    let recorded = await runs(name);
    expect(recorded.map((run) => run.outcome)).toEqual(['created', 'buffered', 'skipped']);
    expect(await service.drain(id, { later: false })).toBe('waiting');
    await cancel(recorded[0]!.task_id!);
    expect(await service.drain(id, { later: false })).toBe('started');
    recorded = await runs(name);
    expect(recorded.map((run) => [run.tick_at, run.outcome, run.status])).toEqual([
      [at(first), 'created', 'cancelled'],
      [at(first + HOUR), 'created', 'queued'],
      [at(first + 2 * HOUR), 'skipped', null],
    ]);
    // The buffered tick's task names the tick it waited for.
    expect((await h.request('GET', `/result/${recorded[1]!.task_id}`)).body.schedule).toEqual({ name, tick_at: at(first + HOUR) });
    expect(await service.drain(id, { later: false })).toBe('none');
  });

  it('catch-up none: ticks missed while no worker ran make no task; the next on-time one does', async () => {
    const { name, id, first } = await hourly({ overlap: 'allow', catch_up: 'none' });
    // A worker comes back half an hour after the fifth tick: every tick so far is past the grace.
    clock = new Date(first + 4 * HOUR + HOUR / 2);
    await service.tick(id);
    expect(await runs(name)).toEqual([]);
    await tick(id, first + 5 * HOUR);
    expect((await runs(name)).map((run) => [run.tick_at, run.outcome])).toEqual([[at(first + 5 * HOUR), 'created']]);
  });

  it('catch-up latest: one task, for the most recent missed tick', async () => {
    const { name, id, first } = await hourly({ overlap: 'allow', catch_up: 'latest' });
    clock = new Date(first + 4 * HOUR + HOUR / 2);
    await service.tick(id);
    expect((await runs(name)).map((run) => [run.tick_at, run.outcome])).toEqual([[at(first + 4 * HOUR), 'created']]);
    // A stale tick job of a missed tick arriving afterwards finds it decided.
    await service.tick(id, new Date(first + 2 * HOUR));
    expect(await runs(name)).toHaveLength(1);
  });

  it('catch-up all_within_ms: every missed tick within the window, oldest first', async () => {
    const { name, id, first } = await hourly({ overlap: 'allow', catch_up: { all_within_ms: 2.5 * HOUR } });
    clock = new Date(first + 4 * HOUR + HOUR / 2);
    await service.tick(id);
    expect((await runs(name)).map((run) => [run.tick_at, run.outcome])).toEqual([
      [at(first + 2 * HOUR), 'created'],
      [at(first + 3 * HOUR), 'created'],
      [at(first + 4 * HOUR), 'created'],
    ]);
  });

  it('catch-up goes through the overlap policy: under skip, the first caught-up tick runs and the others are skipped', async () => {
    const { name, id, first } = await hourly({ overlap: 'skip', catch_up: { all_within_ms: 2.5 * HOUR } });
    clock = new Date(first + 4 * HOUR + HOUR / 2);
    await service.tick(id);
    expect((await runs(name)).map((run) => run.outcome)).toEqual(['created', 'skipped', 'skipped']);
  });

  it('after a pause, even the ticks within the grace are missed ones: resume runs only what catch_up says', async () => {
    const { name, id, first } = await hourly({ overlap: 'allow', catch_up: 'latest' });
    await tick(id, first);
    clock = new Date(first + 60_000);
    await service.update(name, { paused: true });
    // Paused: a tick job still in flight makes nothing.
    await tick(id, first + HOUR);
    expect(await runs(name)).toHaveLength(1);
    // Resumed five seconds after a tick, which would be on time had the schedule not been paused.
    clock = new Date(first + 2 * HOUR + 5_000);
    await service.update(name, { paused: false });
    await service.tick(id);
    expect((await runs(name)).map((run) => [run.tick_at, run.outcome])).toEqual([
      [at(first), 'created'],
      [at(first + 2 * HOUR), 'created'],
    ]);
    await tick(id, first + 3 * HOUR);
    expect(await runs(name)).toHaveLength(3);
  });

  it('exactly one task per tick however many processes decide it at once, and however often', async () => {
    const { name, id, first } = await hourly({ overlap: 'allow' });
    const other = new ScheduleService({
      store: new ScheduleStore(h.db.sql),
      queue,
      logger: h.logger,
      checkTask: (request, options) => h.api!.tasks.check(request, options),
      submit: (request, options) => h.api!.tasks.submit(request, options),
      now: () => clock,
      graceMs: GRACE,
    });
    clock = new Date(first + 10);
    const decided = await Promise.all([0, 1, 2, 3, 4, 5].map((n) => (n % 2 === 0 ? service : other).tick(id, new Date(first))));
    expect(decided.map((outcome) => outcome.decided).sort()).toEqual([0, 0, 0, 0, 0, 1]);
    await tick(id, first);
    const recorded = await runs(name);
    expect(recorded).toHaveLength(1);
    const tasks = await h.db.sql.$queryRawUnsafe<{ id: string }[]>(`SELECT id::text AS id FROM tasks WHERE idempotency_key LIKE $1`, `schedule:${id}:%`);
    expect(tasks.map((task) => task.id)).toEqual([recorded[0]!.task_id]);
  });

  it('a tick whose task cannot be made (its params no longer fit) is recorded as failed, and the schedule goes on', async () => {
    const { name, id, first } = await hourly({ overlap: 'allow', task_type: 'sleep', params: { ms: 1 } });
    await h.db.sql.$executeRawUnsafe(`UPDATE schedules SET params = '{"ms": "soon"}' WHERE id = $1::uuid`, id);
    await tick(id, first);
    const [run] = await runs(name);
    expect(run).toMatchObject({ outcome: 'failed', task_id: null, error: expect.stringContaining('invalid_params') });
    await h.request('PATCH', `/schedules/${name}`, { params: { ms: 1 } });
    await tick(id, first + HOUR);
    expect((await runs(name)).map((recorded) => recorded.outcome)).toEqual(['failed', 'created']);
  });

  it('ticks expire with RETENTION_DAYS, as the tasks they made', async () => {
    const { id, first } = await hourly({ overlap: 'allow' });
    await tick(id, first);
    await h.db.sql.$executeRawUnsafe(
      `INSERT INTO schedule_ticks (schedule_id, tick_at, schedule_name, outcome, recorded_at) VALUES ($1::uuid, $2, 'old', 'skipped', $2)`,
      id,
      new Date(Date.now() - 40 * DAY_MS),
    );
    await maintainPartitions(h.db.sql, new Date(), { retentionDays: 30, aheadDays: 1 }, h.logger);
    const left = await h.db.sql.$queryRawUnsafe<{ outcome: string }[]>(`SELECT outcome FROM schedule_ticks WHERE schedule_id = $1::uuid`, id);
    expect(left.map((row) => row.outcome)).toEqual(['created']);
  });
});
