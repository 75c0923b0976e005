import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Shards } from '../../src/queue/shards.js';
import { observationKey, testTools } from '../fixtures/tools.js';
import { createHarness, type Harness, poll, submit } from '../helpers/harness.js';

const ITEMS = 1000;
const CONCURRENCY = 20;

/**
 * Cancelling a task whose map of 1,000 items is in flight: 20 items running (the worker's
 * concurrency), 980 jobs waiting in Redis (max_parallel 1,000). How fast it goes is the bench's
 * business (MAPSCALE); this checks that the bulk paths (one UPDATE per status for the items in
 * PostgreSQL, removals in bulk in Redis) leave nothing behind and let nothing run.
 */
describe('cancelling a task with a large map in flight', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness({ tools: testTools, env: { WORKER_CONCURRENCY: String(CONCURRENCY) } });
  });
  afterAll(async () => {
    await h.close();
  });

  it('cancels every item, leaves no job waiting and runs nothing more', async () => {
    const defined = await h.request('POST', '/workflows', {
      name: 'wide_hang',
      parameters: [
        { name: 'items', type: 'array', required: true },
        { name: 'key', type: 'string', required: true },
      ],
      steps: [{ id: 'each', tool: 'hang', for_each: '{{params.items}}', max_parallel: ITEMS, input: { key: '{{params.key}}' } }],
    });
    expect(defined.status).toBe(201);
    const key = `wide-${Date.now()}`;
    const id = await submit(h, { task_type: 'wide_hang', params: { items: Array.from({ length: ITEMS }, (_, i) => i), key } });
    const prefix = Shards.of(h.config).prefixOf(id);
    const queueKey = (list: string) => `${prefix}:tool.hang:${list}`;
    const observed = observationKey(h.config.QUEUE_PREFIX, key);
    const starts = async () => (await h.redis.lrange(observed, 0, -1)).filter((entry) => entry.startsWith('started:')).length;
    // In flight: the worker's slots all taken by items that block, the others' jobs waiting.
    await poll(async () => (await starts()) === CONCURRENCY && (await h.redis.llen(queueKey('wait'))) === ITEMS - CONCURRENCY, {
      label: `${CONCURRENCY} items running and ${ITEMS - CONCURRENCY} jobs waiting`,
    });

    const cancelled = await h.request('POST', `/tasks/${id}/cancel`);
    expect(cancelled.status).toBe(200);
    expect(cancelled.body).toMatchObject({ task_id: id, status: 'cancelled' });

    // PostgreSQL: the task cancelled, and no item left pending, queued or running (the running ones aborted and recorded).
    const items = await poll(
      async () => {
        const rows = await h.db.sql.$queryRawUnsafe<{ status: string; started: boolean }[]>(
          `SELECT i.status::text AS status, i.started_at IS NOT NULL AS started FROM step_items i
             JOIN tasks t ON t.id = i.task_id AND t.created_at = i.task_created_at
            WHERE i.task_id = $1::uuid AND t.status = 'cancelled'`,
          id,
        );
        return rows.length === ITEMS && rows.every((row) => !['pending', 'queued', 'running'].includes(row.status)) ? rows : undefined;
      },
      { label: 'every item of the cancelled map to end' },
    );
    const byStatus = Object.fromEntries(
      ['cancelled', 'completed', 'failed', 'skipped'].map((status) => [status, items.filter((row) => row.status === status).length]),
    );
    expect(byStatus).toEqual({ cancelled: ITEMS, completed: 0, failed: 0, skipped: 0 });

    // Redis: no job of the task waiting, delayed or prioritized; none active once the running ones were aborted.
    const jobsOfTask = async (list: string) => {
      const ids =
        list === 'wait' || list === 'paused' || list === 'active' ? await h.redis.lrange(queueKey(list), 0, -1) : await h.redis.zrange(queueKey(list), 0, -1);
      return ids.filter((jobId) => jobId.startsWith(`${id}.`));
    };
    const waiting = async () => (await Promise.all(['wait', 'paused', 'delayed', 'prioritized'].map(jobsOfTask))).flat();
    await poll(async () => (await waiting()).length === 0, { label: 'no job of the cancelled map left waiting' });
    await poll(async () => (await jobsOfTask('active')).length === 0, { label: 'the aborted items’ jobs to end' });

    // Nothing ran after the cancel: the only items that ever started are those that held the
    // worker's slots before it, and each start was recorded. (A slot freed by the aborts may
    // have taken a job before it was removed: its claim was refused, and the tool never ran.)
    const started = await starts();
    expect(started).toBe(CONCURRENCY);
    expect(items.filter((row) => row.started).length).toBe(CONCURRENCY);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(await starts()).toBe(started);
    for (const list of ['wait', 'delayed', 'prioritized', 'active']) expect(await jobsOfTask(list), list).toEqual([]);
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
