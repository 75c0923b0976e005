import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { uuidPrefixRange, uuidv7 } from '../../src/lib/uuid7.js';
import { createHarness, type Harness } from '../helpers/harness.js';

/**
 * GET /tasks?id_prefix=: the console's id search. A task id (UUIDv7) starts with its creation
 * time, so a prefix is a range of ids and of creation times: the search reads the index ranges
 * of the partitions of those times, and stays fast with many tasks stored.
 */

const TASKS = 10_000;

describe('GET /tasks?id_prefix=', () => {
  let h: Harness;
  let ids: string[];

  beforeAll(async () => {
    h = await createHarness({ worker: false });
    // 10,000 tasks over the last 10 hours (the rows alone: listing reads nothing else), in one statement.
    const now = Date.now();
    const times = Array.from({ length: TASKS }, (_, index) => new Date(now - index * 3_600));
    ids = times.map((at) => uuidv7(at));
    await h.db.pool.query(
      `INSERT INTO tasks (id, task_type, params, status, steps_total, created_at)
       SELECT id, 'echo', '{}', 'completed', 1, at FROM unnest($1::uuid[], $2::timestamptz[]) AS t(id, at)`,
      [ids, times],
    );
    await h.db.pool.query('ANALYZE tasks');
  });
  afterAll(async () => {
    await h?.close();
  });

  async function search(prefix: string, extra = ''): Promise<{ items: { task_id: string }[]; next_cursor: string | null }> {
    const response = await h.request('GET', `/tasks?id_prefix=${encodeURIComponent(prefix)}&limit=200${extra}`);
    expect(response.status, JSON.stringify(response.body)).toBe(200);
    return response.body;
  }

  it('finds a task by its whole id, by a prefix in either case, with or without its dashes where they belong', async () => {
    const id = ids[1234]!;
    expect((await search(id)).items.map((task) => task.task_id)).toEqual([id]);
    expect((await search(id.slice(0, 23).toUpperCase())).items.map((task) => task.task_id)).toEqual([id]);
    expect((await search(id.slice(0, 13))).items.map((task) => task.task_id)).toContain(id);
  });

  it('answers exactly the tasks whose id starts with the prefix, newest first, paged with the cursor', async () => {
    // 8 hex digits are 2^16 ms of creation times: about 65 s, some 18 of these tasks; 7 digits about 290.
    for (const prefix of [ids[5000]!.slice(0, 8), ids[5000]!.slice(0, 7)]) {
      const expected = ids
        .filter((id) => id.startsWith(prefix))
        .sort()
        .reverse();
      const found: string[] = [];
      let cursor = '';
      for (let page = 0; page < 10; page += 1) {
        const answer = await search(prefix, cursor ? `&cursor=${cursor}` : '');
        found.push(...answer.items.map((task) => task.task_id));
        if (!answer.next_cursor) break;
        cursor = answer.next_cursor;
      }
      expect(found).toEqual(expected);
      expect(found.length).toBeGreaterThan(1);
    }
    expect((await search('ffff')).items).toEqual([]);
  });

  it('combines with the other filters', async () => {
    const prefix = ids[42]!.slice(0, 8);
    expect((await search(prefix, '&status=failed')).items).toEqual([]);
    expect((await search(prefix, '&status=completed&task_type=echo')).items.map((task) => task.task_id)).toContain(ids[42]);
  });

  it('refuses what cannot start a task id, with the path', async () => {
    for (const bad of ['xyz', '0198c3f2-7a1b-x', '0198-c3f2', '', `${ids[0]}0`, 'abc%27%20OR%201=1']) {
      const response = await h.request('GET', `/tasks?id_prefix=${bad.includes('%') ? bad : encodeURIComponent(bad)}`);
      expect(response.status, bad).toBe(400);
      expect(response.body.error).toMatchObject({ code: 'validation_error', details: [{ path: 'id_prefix', message: expect.any(String) }] });
    }
  });

  it('reads index ranges of the partitions of the prefix, not every task (EXPLAIN of the statement the list makes)', async () => {
    const range = uuidPrefixRange(ids[5000]!.slice(0, 8));
    // The statement Prisma sends for the list (src/persistence/task-store.ts), with the prefix's two ranges.
    const { rows } = await h.db.pool.query(
      `EXPLAIN (ANALYZE, FORMAT JSON)
       SELECT id, task_type, status, created_at FROM tasks
        WHERE id >= $1::uuid AND id <= $2::uuid AND created_at >= $3 AND created_at <= $4
        ORDER BY created_at DESC, id DESC LIMIT 51`,
      [range.first, range.last, range.created!.from, range.created!.to],
    );
    const plan = JSON.stringify(rows[0]['QUERY PLAN']);
    if (process.env.SHOW_PLAN) console.log(JSON.stringify(rows[0]['QUERY PLAN'], null, 1));
    expect(plan).not.toContain('Seq Scan');
    expect(plan).toMatch(/Index (Only )?Scan/);
    // Rows read: about the ~18 matching, not the 10,000 stored.
    const read = [...plan.matchAll(/"Actual Rows":(\d+)/g)].map((match) => Number(match[1]));
    expect(Math.max(...read)).toBeLessThan(200);
  });
});
