import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { uuidv7 } from '../../src/lib/uuid7.js';
import { createHarness, type Harness } from '../helpers/harness.js';
import { storeToolTasks } from '../helpers/stored-tasks.js';

/*
 * A batch names its tasks by key, and its statements are bounded by its oldest and newest
 * created_at (which prunes the day partitions). A generic plan that joined the batch to that
 * range scanned every task created in between: a long-poll of a task an hour old, read beside a
 * new one, or the end of a retried task finishing beside a new task's, read an hour of tasks.
 * These count the rows each function reads (pg_stat_xact_user_tables, before and after the call
 * in one transaction), with many tasks created between the two it is given.
 */

const BETWEEN = 400;
/** A day far from the real clock, with a partition of its own. */
const DAY = Date.parse('2031-06-10T08:00:00Z');

describe('batch lookups read the rows of their batch, not the tasks created in between', () => {
  let h: Harness;
  let oldest: { id: string; createdAt: Date };
  let newest: { id: string; createdAt: Date };

  beforeAll(async () => {
    h = await createHarness({ api: false, worker: false });
    await h.db.pool.query(`SELECT create_day_partitions($1::date)`, [new Date(DAY).toISOString().slice(0, 10)]);
    const at = (offsetMs: number) => new Date(DAY + offsetMs);
    const entries = Array.from({ length: BETWEEN + 2 }, (_, n) => ({ id: uuidv7(at(n * 1_000)), params: { message: `m${n}` } }));
    expect((await storeToolTasks(h.db.sql, h.registry, entries)).size).toBe(BETWEEN + 2);
    // Those in between: half ended, half still queued (the tasks update looks among active ones).
    const middle = entries.slice(1, -1).map((entry) => entry.id);
    await h.db.pool.query(`UPDATE tasks SET status = 'completed', finished_at = now() WHERE id = ANY($1::uuid[])`, [middle.filter((_, n) => n % 2 === 0)]);
    await h.db.pool.query(`ANALYZE tasks, steps`);
    oldest = { id: entries[0]!.id, createdAt: at(0) };
    newest = { id: entries.at(-1)!.id, createdAt: at((BETWEEN + 1) * 1_000) };
  });
  afterAll(async () => {
    await h?.close();
  });

  /**
   * Runs `statement` in a transaction that is rolled back: its answer, and the tuples it read from
   * `tasks` and `steps`. The counts are this backend's not yet flushed (earlier transactions'
   * included), so they are taken before and after.
   */
  async function reading<T>(
    statement: string,
    params: unknown[],
    /** Read after the counts, in the same transaction: what the statement changed. */
    after?: { sql: string; params: unknown[] },
  ): Promise<{ answer: T; tasksRead: number; stepsRead: number; changed?: unknown[] }> {
    const client: pg.PoolClient = await h.db.pool.connect();
    const counts = async () =>
      (
        await client.query<{ tasks: number; steps: number }>(
          `SELECT COALESCE(sum(seq_tup_read + COALESCE(idx_tup_fetch, 0)) FILTER (WHERE relname LIKE 'tasks%'), 0)::int AS tasks,
                  COALESCE(sum(seq_tup_read + COALESCE(idx_tup_fetch, 0)) FILTER (WHERE relname LIKE 'steps%'), 0)::int AS steps
             FROM pg_stat_xact_user_tables`,
        )
      ).rows[0]!;
    try {
      await client.query('BEGIN');
      const before = await counts();
      const answer = (await client.query<{ answer: T }>(statement, params)).rows[0]!.answer;
      const read = await counts();
      const changed = after ? (await client.query(after.sql, after.params)).rows : undefined;
      return { answer, tasksRead: read.tasks - before.tasks, stepsRead: read.steps - before.steps, ...(changed ? { changed } : {}) };
    } finally {
      await client.query('ROLLBACK');
      client.release();
    }
  }

  it('task_views: the two tasks asked for, two task rows read', async () => {
    const batch = { tasks: [oldest, newest].map((task) => ({ id: task.id, created_at: task.createdAt.toISOString() })), events: 5 };
    const { answer, tasksRead } = await reading<[{ id: string }][]>(`SELECT task_views($1::jsonb) AS answer`, [JSON.stringify(batch)]);
    expect(answer.map(([task]) => task.id).sort()).toEqual([oldest.id, newest.id].sort());
    expect(tasksRead).toBeLessThanOrEqual(2);
  });

  it('ledger_finish_singles: both tasks ended, their rows read and no others', async () => {
    const finishedAt = new Date(DAY + (BETWEEN + 2) * 1_000).toISOString();
    const results = [oldest, newest].map((task) => ({
      task_id: task.id,
      created_at: task.createdAt.toISOString(),
      run: 1,
      step_id: 'echo',
      tool: 'echo',
      attempt: 1,
      status: 'completed',
      output: { message: 'done' },
      task_status: 'completed',
      task_result: { message: 'done' },
      started_at: finishedAt,
      finished_at: finishedAt,
      history: true,
    }));
    const { answer, tasksRead, stepsRead } = await reading<{ ended: { id: string }[]; before: string[] }>(`SELECT ledger_finish_singles($1::jsonb) AS answer`, [
      JSON.stringify(results),
    ]);
    expect(answer.ended.map((task) => task.id).sort()).toEqual([oldest.id, newest.id].sort());
    expect(answer.before).toEqual([]);
    // A few reads per task (its update's lookup, `before`'s): against the 400 created between
    // them that the joins read before.
    expect(tasksRead).toBeLessThanOrEqual(2 * 4);
    expect(stepsRead).toBeLessThanOrEqual(2 * 4);
  });
  it('ledger_load: both tasks and their steps, their rows read and no others', async () => {
    const batch = { tasks: [oldest, newest].map((task) => ({ id: task.id, created_at: task.createdAt.toISOString() })), known: [], inputs: true };
    const { answer, tasksRead } = await reading<{ tasks: { id: string }[]; steps: { task_id: string }[] }>(`SELECT ledger_load($1::jsonb) AS answer`, [
      JSON.stringify(batch),
    ]);
    expect(answer.tasks.map((task) => task.id).sort()).toEqual([oldest.id, newest.id].sort());
    expect(answer.steps.map((step) => step.task_id).sort()).toEqual([oldest.id, newest.id].sort());
    // Each task's row read under its lock, then for the answer.
    expect(tasksRead).toBeLessThanOrEqual(2 * 4);
  });

  it('ledger_claim: both steps claimed, their tasks begun, their rows read and no others', async () => {
    const at = new Date(DAY + (BETWEEN + 2) * 1_000).toISOString();
    const claims = [oldest, newest].map((task, index) => ({
      task_id: task.id,
      created_at: task.createdAt.toISOString(),
      run: 1,
      step_id: 'echo',
      item: null,
      attempt: 1,
      at,
      ...(index === 0 ? { history: true } : {}),
      try: 1,
      worker: 'test',
      job_id: `${task.id}.1.echo`,
    }));
    const { answer, tasksRead, stepsRead } = await reading<{ task_id: string; task_began: boolean }[]>(`SELECT ledger_claim($1::jsonb) AS answer`, [
      JSON.stringify(claims),
    ]);
    expect(answer.map((claim) => [claim.task_id, claim.task_began]).sort()).toEqual(
      [
        [oldest.id, true],
        [newest.id, true],
      ].sort(),
    );
    expect(tasksRead).toBeLessThanOrEqual(2 * 4);
    expect(stepsRead).toBeLessThanOrEqual(2 * 4);
  });
  it('ledger_apply: both tasks changed, their rows read and no others', async () => {
    const decision = {
      tasks: [oldest, newest].map((task) => ({ task_id: task.id, created_at: task.createdAt.toISOString(), set: { status: 'running' } })),
      steps: [],
      new_items: [],
      items: [],
      sweeps: [],
      dead_letters: [],
      events: [],
    };
    const ids = [oldest.id, newest.id];
    const { tasksRead, changed } = await reading<unknown>(`SELECT ledger_apply($1::jsonb) AS answer`, [JSON.stringify(decision)], {
      sql: `SELECT id, status FROM tasks WHERE id = ANY($1::uuid[]) ORDER BY id`,
      params: [ids],
    });
    expect(changed).toEqual(ids.sort().map((id) => ({ id, status: 'running' })));
    expect(tasksRead).toBeLessThanOrEqual(2 * 4);
  });
});
