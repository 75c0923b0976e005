import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WAIT_REASONS } from '../../src/engine/status.js';
import { uuidv7 } from '../../src/lib/uuid7.js';
import { createHarness, type Harness } from '../helpers/harness.js';
import { storeToolTasks } from '../helpers/stored-tasks.js';

/**
 * GET /tasks?status=waiting&waiting_reason=: the console's Waiting page lists the tasks waiting
 * on someone, on a limit per key or on an open circuit in one list. The rows are stored as the
 * engine leaves them (a step `waiting` with its reason): how each wait comes about is tested
 * with the engine (test/workflows/waits.test.ts, test/worker/, test/services/).
 */

describe('GET /tasks?status=waiting&waiting_reason=', () => {
  let h: Harness;
  const byReason = new Map<string, string>();

  beforeAll(async () => {
    h = await createHarness({ worker: false });
    const stored = WAIT_REASONS.map((reason) => ({ reason, id: uuidv7() }));
    await storeToolTasks(
      h.db.sql,
      h.registry,
      stored.map(({ id }) => ({ id, params: {} })),
    );
    for (const { reason, id } of stored) {
      byReason.set(reason, id);
      await h.db.pool.query(`UPDATE steps SET status = 'waiting', reason = $2, wake_at = $3 WHERE task_id = $1`, [
        id,
        reason,
        reason === 'signal' ? new Date(Date.now() + 60_000) : null,
      ]);
    }
  });
  afterAll(async () => {
    await h?.close();
  });

  const listed = async (query: string) => {
    const response = await h.request('GET', `/tasks?${query}`);
    expect(response.status, JSON.stringify(response.body)).toBe(200);
    return response.body.items as { task_id: string; waiting_for: { step_id: string; reason: string; timeout_at?: string }[] }[];
  };

  it('shows a task waiting for someone as waiting in any list, and counts it as waiting in the statistics', async () => {
    const items = await listed('limit=100');
    const waiting = items.filter((task) => task.waiting_for !== undefined).map((task) => task.task_id);
    expect(waiting.sort()).toEqual([byReason.get('signal'), byReason.get('approval')].sort());
    const stats = await h.request('GET', '/stats');
    expect(stats.status).toBe(200);
    expect(stats.body.tasks.by_status).toMatchObject({ waiting: 2, queued: WAIT_REASONS.length - 2 });
  });

  it('lists only the waits for someone by default, as before', async () => {
    const items = await listed('status=waiting');
    expect(items.map((task) => task.task_id).sort()).toEqual([byReason.get('signal'), byReason.get('approval')].sort());
    expect(items.find((task) => task.task_id === byReason.get('signal'))!.waiting_for).toEqual([
      { step_id: 'echo', reason: 'signal', timeout_at: expect.any(String) },
    ]);
  });

  it('lists the waits of the reasons asked for, each task with its waiting steps and their reason', async () => {
    const items = await listed('status=waiting&waiting_reason=signal,approval,concurrency,rate_limit,circuit_open');
    expect(items).toHaveLength(5);
    for (const task of items) {
      const reason = [...byReason].find(([, id]) => id === task.task_id)![0];
      expect(task.waiting_for).toMatchObject([{ step_id: 'echo', reason }]);
    }
    const limits = await listed('status=waiting&waiting_reason=concurrency,rate_limit');
    expect(limits.map((task) => task.task_id).sort()).toEqual([byReason.get('concurrency'), byReason.get('rate_limit')].sort());
  });

  it('refuses an unknown reason, and a reason without status=waiting, at the path waiting_reason', async () => {
    for (const query of [
      'status=waiting&waiting_reason=bored',
      'status=waiting&waiting_reason=',
      'waiting_reason=signal',
      'status=running&waiting_reason=signal',
    ]) {
      const response = await h.request('GET', `/tasks?${query}`);
      expect(response.status, query).toBe(400);
      expect(response.body.error.code, query).toBe('validation_error');
      expect(response.body.error.details[0].path, query).toMatch(/^waiting_reason/);
    }
  });
});
