import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { uuidv7 } from '../../src/lib/uuid7.js';
import { DAY_MS, maintainPartitions } from '../../src/persistence/partitions.js';
import { createHarness, type Harness } from '../helpers/harness.js';
import { storeToolTasks } from '../helpers/stored-tasks.js';

/** A simulated today, far from the real clock (whose partitions the migrations made). */
const D = Date.parse('2032-06-10T12:00:00Z');
const day = (offset: number) => new Date(D + offset * DAY_MS).toISOString().slice(0, 10);

describe("a task's history under RETENTION_DAYS", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness({ api: false, worker: false });
  });
  afterAll(async () => {
    await h?.close();
  });

  const events = async (id: string) =>
    (await h.db.pool.query<{ type: string; p: string }>(`SELECT type, tableoid::regclass::text AS p FROM task_events WHERE task_id = $1 ORDER BY seq`, [id]))
      .rows;
  const partitions = async (day: string) =>
    (await h.db.pool.query<{ relname: string }>(`SELECT relname FROM pg_class WHERE relname LIKE $1 ORDER BY 1`, [`%_p${day.replaceAll('-', '')}`])).rows.map(
      (row) => row.relname,
    );

  it("is made with its task's day of partitions, lives in it, and is dropped with it", async () => {
    for (const offset of [-31, -30]) await h.db.pool.query(`SELECT create_day_partitions($1::date)`, [day(offset)]);
    expect(await partitions(day(-31))).toContain(`task_events_p${day(-31).replaceAll('-', '')}`);

    const expired = uuidv7(new Date(D - 31 * DAY_MS + 3_600_000)); // its whole day is past 30 days
    const kept = uuidv7(new Date(D - 30 * DAY_MS + 3_600_000));
    const caught = uuidv7(new Date(D - 100 * DAY_MS)); // no partition of its day: the default ones
    await storeToolTasks(h.db.sql, h.registry, [
      { id: expired, params: { n: 1 } },
      { id: kept, params: { n: 2 } },
      { id: caught, params: { n: 3 } },
    ]);
    expect(await events(expired)).toEqual([
      { type: 'submitted', p: `task_events_p${day(-31).replaceAll('-', '')}` },
      { type: 'step_queued', p: `task_events_p${day(-31).replaceAll('-', '')}` },
    ]);
    expect((await events(caught)).map((row) => row.p)).toEqual(['task_events_default', 'task_events_default']);

    const maintained = await maintainPartitions(h.db.sql, new Date(D), { retentionDays: 30, aheadDays: 1 }, h.logger);
    expect(maintained.dropped).toContain(day(-31));
    expect(await events(expired)).toEqual([]);
    expect(await events(caught)).toEqual([]);
    expect((await events(kept)).map((row) => row.type)).toEqual(['submitted', 'step_queued']);
    // The day's history partition went with its tasks'.
    expect(await partitions(day(-31))).toEqual([]);
    expect(await partitions(day(-30))).toContain(`task_events_p${day(-30).replaceAll('-', '')}`);
    // Days made ahead have their history partitions too.
    expect(await partitions(day(1))).toContain(`task_events_p${day(1).replaceAll('-', '')}`);
  });
});
