import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { uuidv7 } from '../../src/lib/uuid7.js';
import { DAY_MS, maintainPartitions, partitionDays } from '../../src/persistence/partitions.js';
import { TaskStore } from '../../src/persistence/task-store.js';
import { createHarness, type Harness } from '../helpers/harness.js';
import { storeToolTasks } from '../helpers/stored-tasks.js';

/** Days around a simulated today D, far from the real clock (whose partitions the migration made). */
const D = Date.parse('2031-03-10T15:30:00Z');
const day = (offset: number) => new Date(D + offset * DAY_MS).toISOString().slice(0, 10);
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, n) => day(from + n));
const policy = { retentionDays: 30, aheadDays: 3 };

describe('partition maintenance across a simulated clock', () => {
  let h: Harness;
  let store: TaskStore;
  beforeAll(async () => {
    h = await createHarness({ api: false, worker: false });
    store = new TaskStore(h.db.prisma, h.db.sql);
  });
  afterAll(async () => {
    await h?.close();
  });

  /** A one-step task created at `at`, holding the idempotency key `key`. */
  async function taskAt(at: Date, key: string): Promise<string> {
    const id = uuidv7(at);
    const created = await storeToolTasks(h.db.sql, h.registry, [{ id, params: { key }, idempotencyKey: key, requestHash: key }]);
    expect([...created]).toEqual([id]);
    return id;
  }
  const keys = async () =>
    (await h.db.pool.query<{ idempotency_key: string }>(`SELECT idempotency_key FROM idempotency_keys ORDER BY 1`)).rows.map((row) => row.idempotency_key);

  it('creates the days ahead, drops the days past RETENTION_DAYS with their rows and keys, and keeps the rest', async () => {
    for (const offset of range(-40, 2)) await h.db.pool.query(`SELECT create_day_partitions($1::date)`, [offset]);
    const expired = await taskAt(new Date(D - 31 * DAY_MS), 'expired'); // its whole day is past 30 days
    const kept = await taskAt(new Date(D - 30 * DAY_MS - 60_000), 'kept'); // 30 days and a minute old: its day is not over yet
    const caught = await taskAt(new Date(D - 100 * DAY_MS), 'in-default'); // no partition: the default one caught it
    expect((await h.db.pool.query(`SELECT tableoid::regclass::text AS p FROM tasks WHERE id = $1`, [caught])).rows).toEqual([{ p: 'tasks_default' }]);

    const first = await maintainPartitions(h.db.sql, new Date(D), policy, h.logger);
    expect(first).toMatchObject({ ran: true, created: [day(3)], expiredKeys: 2 });
    expect(first.dropped).toEqual(expect.arrayContaining(range(-40, -31)));
    expect(await partitionDays(h.db.sql)).toEqual(range(-30, 3));
    expect(await store.get(expired)).toBeNull();
    expect(await store.get(caught)).toBeNull();
    expect(await store.get(kept)).toMatchObject({ id: kept, steps: [{ stepId: 'echo' }] });
    expect(await keys()).toEqual(['kept']);
    const leftovers = await h.db.pool.query(`SELECT count(*)::int AS n FROM steps WHERE task_id = ANY($1::uuid[])`, [[expired, caught]]);
    expect(leftovers.rows).toEqual([{ n: 0 }]);

    // The same day again: nothing to do.
    expect(await maintainPartitions(h.db.sql, new Date(D + 60_000), policy, h.logger)).toEqual({ ran: true, created: [], dropped: [], expiredKeys: 0 });

    // A day later, the day of `kept` is past too.
    const next = await maintainPartitions(h.db.sql, new Date(D + DAY_MS), policy, h.logger);
    expect(next).toEqual({ ran: true, created: [day(4)], dropped: [day(-30)], expiredKeys: 1 });
    expect(await partitionDays(h.db.sql)).toEqual(range(-29, 4));
    expect(await store.get(kept)).toBeNull();
    expect(await keys()).toEqual([]);
    // The key of an expired task is free again.
    await taskAt(new Date(D + DAY_MS), 'kept');
  });

  it('does nothing while another process holds the maintenance lock', async () => {
    const other = new pg.Client({ connectionString: h.config.DATABASE_URL });
    await other.connect();
    try {
      await other.query('BEGIN');
      await other.query('SELECT pg_advisory_xact_lock(72707370)');
      expect(await maintainPartitions(h.db.sql, new Date(D + 10 * DAY_MS), policy, h.logger)).toEqual({ ran: false, created: [], dropped: [], expiredKeys: 0 });
      await other.query('ROLLBACK');
      expect(await maintainPartitions(h.db.sql, new Date(D + 10 * DAY_MS), policy, h.logger)).toMatchObject({ ran: true, created: range(10, 13) });
    } finally {
      await other.end();
    }
  });
});
