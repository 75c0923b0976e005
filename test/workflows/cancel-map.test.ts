import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testTools } from '../fixtures/tools.js';
import { createHarness, type Harness } from '../helpers/harness.js';

const ITEMS = 1000;

/**
 * Cancelling a task whose map of 1,000 items is in flight. How fast it goes is the bench's
 * business (MAPSCALE); this checks the ledger's sweep of the items: plain UPDATEs, whatever the
 * planner thinks of their number.
 */
describe('cancelling a task with a large map in flight', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness({ tools: testTools, worker: false, api: false });
  });
  afterAll(async () => {
    await h.close();
  });

  it('sweeps a map’s items with plain UPDATEs, no join of the items to themselves', async () => {
    // A map of 1,000 items, all pending, swept the way a retry does (every status back to
    // pending): the function's own statements are explained (auto_explain), in a transaction
    // that is rolled back.
    const client = new pg.Client({ connectionString: h.config.DATABASE_DIRECT_URL });
    await client.connect();
    const plans: string[] = [];
    client.on('notice', (notice) => {
      if (notice.message?.includes('Query Text')) plans.push(notice.message);
    });
    try {
      const createdAt = '2026-11-25T12:00:00.000Z';
      const taskId = '00000000-0000-4000-8000-000000000c01';
      await client.query('BEGIN');
      await client.query(`SELECT create_day_partitions('2026-11-25'::date)`);
      await client.query(
        `INSERT INTO step_items (task_id, task_created_at, step_id, item, status)
         SELECT $1::uuid, $2::timestamptz, 'each', i, (CASE WHEN i < 20 THEN 'running' WHEN i < 500 THEN 'queued' ELSE 'cancelled' END)::"StepStatus"
           FROM generate_series(0, ${ITEMS - 1}) i`,
        [taskId, createdAt],
      );
      await client.query(`LOAD 'auto_explain'`);
      await client.query(`SET LOCAL auto_explain.log_min_duration = 0`);
      await client.query(`SET LOCAL auto_explain.log_nested_statements = on`);
      await client.query(`SET LOCAL client_min_messages = log`);
      const sweep = (from: string[], to: string, extra = {}) =>
        client.query<{ applied: { moved: { item: number; from: string }[] } }>('SELECT ledger_apply($1::jsonb) AS applied', [
          JSON.stringify({ sweeps: [{ task_id: taskId, created_at: createdAt, step_id: 'each', from, to, run: null, reset: false, ...extra }] }),
        ]);
      // A cancel: pending and queued items end; running ones are left to their workers.
      const cancelled = (await sweep(['pending', 'queued'], 'cancelled')).rows[0]!.applied.moved;
      expect(cancelled.length).toBe(480);
      expect(new Set(cancelled.map((item) => item.from))).toEqual(new Set(['queued']));
      // A retry: everything back to pending, each row once, with the status it had.
      const resumed = (await sweep(['pending', 'queued', 'running', 'failed', 'skipped', 'cancelled'], 'pending', { run: 2, reset: true })).rows[0]!.applied
        .moved;
      expect(resumed.length).toBe(ITEMS);
      expect(new Set(resumed.map((item) => item.item)).size).toBe(ITEMS);
      expect(resumed.filter((item) => item.from === 'running').length).toBe(20);
      expect(resumed.filter((item) => item.from === 'cancelled').length).toBe(ITEMS - 20);
      await client.query('ROLLBACK');
    } finally {
      await client.end();
    }
    const sweeps = plans.filter((plan) => /UPDATE step_items i SET status = \(sweep->>'to'\)/.test(plan));
    expect(sweeps.length).toBeGreaterThan(0);
    for (const plan of sweeps) {
      expect(plan).not.toMatch(/Nested Loop|Hash Join|Merge Join/);
      expect(plan).toMatch(/Index Scan using step_items_\w+_pkey/);
    }
  });
});
