import { Queue } from 'bullmq';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { SCHEDULES_QUEUE, type ScheduleJobData, tickTime } from '../../src/queue/schedule-queue.js';
import { Shards } from '../../src/queue/shards.js';
import { type NodeProcess, runEntry } from '../helpers/child-process.js';
import { createHarness, type Harness, poll, uniqueName } from '../helpers/harness.js';

const WORKER_ENTRY = 'test/fixtures/worker-entry.ts';

/**
 * A worker process SIGKILLed in the middle of a tick: the tick job is active, its worker blocked
 * on the schedule's row lock (which the test holds). Another worker starts; the stalled tick job
 * comes back when its lock expires and runs again. Every tick still has exactly one task.
 */
describe('a worker killed during a tick', { timeout: 120_000 }, () => {
  let h: Harness;
  let queue: Queue<ScheduleJobData>;
  const processes: NodeProcess[] = [];
  beforeAll(async () => {
    // Short job locks: the killed worker's tick job is found stalled two seconds after the kill.
    h = await createHarness({ worker: false, env: { WORKER_LOCK_DURATION_MS: '2000' } });
    queue = new Queue<ScheduleJobData>(SCHEDULES_QUEUE, { connection: h.redis, prefix: Shards.of(h.config).prefixes[0]! });
  });
  afterEach(async () => {
    await Promise.all(processes.splice(0).map((child) => child.kill()));
  });
  afterAll(async () => {
    await queue?.close();
    await h?.close();
  });

  async function worker(): Promise<NodeProcess> {
    const child = runEntry(WORKER_ENTRY, h.env);
    processes.push(child);
    await child.waitForOutput(/^ready$/m, 60_000);
    return child;
  }

  const ticks = (id: string) =>
    h.db.sql.$queryRawUnsafe<{ tick_at: Date; outcome: string; task_id: string | null }[]>(
      `SELECT tick_at, outcome, task_id::text AS task_id FROM schedule_ticks WHERE schedule_id = $1::uuid ORDER BY tick_at`,
      id,
    );

  it('makes exactly one task per tick, the interrupted one included', async () => {
    const name = uniqueName('crash');
    expect((await h.request('POST', '/schedules', { name, every_ms: 300, task_type: 'echo', overlap: 'allow' })).status).toBe(201);
    const { id } = (await h.db.sql.$queryRawUnsafe<{ id: string }[]>(`SELECT id::text AS id FROM schedules WHERE name = $1`, name))[0]!;
    const first = await worker();
    await poll(async () => (await ticks(id)).filter((row) => row.outcome === 'created').length >= 3, { label: 'ticks before the kill', timeoutMs: 30_000 });

    // Hold the schedule's row: the next tick job blocks inside its decision, active in BullMQ.
    const lock = await h.db.pool.connect();
    let stuck: { id: string; tickAt: number };
    try {
      await lock.query('BEGIN');
      await lock.query('SELECT 1 FROM schedules WHERE id = $1::uuid FOR UPDATE', [id]);
      const { rows } = await lock.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
      // Once a tick waits on this lock, the newest active tick job is blocked: an older one may
      // be the tick that held the row before this test took it, active until its job finishes.
      // Asked on another connection: inside the lock's transaction PostgreSQL reads the list of
      // backends once, and a tick on a connection the worker's pool opened later would never show.
      stuck = await poll(
        async () => {
          const waiting = await h.db.pool.query('SELECT 1 FROM pg_stat_activity WHERE $1::int = ANY(pg_blocking_pids(pid))', [rows[0]!.pid]);
          if (waiting.rowCount === 0) return undefined;
          const ticking = (await queue.getActive()).filter((job) => job.name === 'tick').map((job) => ({ id: job.id!, tickAt: tickTime(job.id)!.getTime() }));
          return ticking.sort((a, b) => b.tickAt - a.tickAt)[0];
        },
        { label: 'a tick job blocked on the row lock' },
      );
      await first.kill();
      expect((await queue.getJob(stuck.id))?.finishedOn).toBeUndefined();
    } finally {
      await lock.query('COMMIT');
      lock.release();
    }

    const before = (await ticks(id)).length;
    await worker();
    // The interrupted job runs again once its lock has expired; later ticks go on.
    await poll(async () => (await queue.getJob(stuck.id))?.finishedOn !== undefined, { label: 'the stalled tick job run again', timeoutMs: 30_000 });
    await poll(async () => (await ticks(id)).filter((row) => row.outcome === 'created').length >= before + 4, {
      label: 'ticks after the restart',
      timeoutMs: 30_000,
    });
    expect((await h.request('PATCH', `/schedules/${name}`, { paused: true })).status).toBe(200);
    await poll(async () => (await ticks(id)).every((row) => row.outcome === 'created'), { label: 'every task made' });

    const rows = await ticks(id);
    expect(rows.filter((row) => row.tick_at.getTime() === stuck.tickAt)).toHaveLength(1);
    // No tick missing (the stop was within the misfire grace) and none twice: consecutive ticks, one task each.
    for (let index = 1; index < rows.length; index += 1) expect(rows[index]!.tick_at.getTime() - rows[index - 1]!.tick_at.getTime()).toBe(300);
    expect(new Set(rows.map((row) => row.task_id)).size).toBe(rows.length);
    const { n } = (
      await h.db.sql.$queryRawUnsafe<{ n: number }[]>(`SELECT count(*)::int AS n FROM tasks WHERE idempotency_key LIKE $1`, `schedule:${id}:%`)
    )[0]!;
    expect(n).toBe(rows.length);
  });
});
