import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase } from '../../src/persistence/database.js';
import { StatsStore, StatsTimeoutError } from '../../src/persistence/stats-store.js';
import { testTools } from '../fixtures/tools.js';
import { createHarness, type Harness, poll, submit, waitForTask } from '../helpers/harness.js';

describe('GET /stats', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness({ tools: testTools });
    const ids = await Promise.all([
      ...Array.from({ length: 5 }, () => submit(h, { task_type: 'sleep', params: { ms: 40 } })),
      ...Array.from({ length: 3 }, () => submit(h, { task_type: 'echo', params: {} })),
      submit(h, { task_type: 'broken', params: {} }),
    ]);
    await Promise.all(ids.map((id) => waitForTask(h, id)));
  });
  afterAll(async () => {
    await h.close();
  });

  it('counts tasks by status and type, with duration percentiles computed in PostgreSQL', async () => {
    const { status, body } = await h.request('GET', '/stats?window=1h');
    expect(status).toBe(200);
    expect(body.tasks.total).toBe(9);
    expect(body.tasks.by_status).toEqual({ completed: 8, failed: 1 });
    const sleep = body.tasks.by_type.find((entry: { task_type: string }) => entry.task_type === 'sleep');
    expect(sleep).toMatchObject({ total: 5, by_status: { completed: 5 } });
    expect(sleep.duration_ms.p50).toBeGreaterThanOrEqual(40);
    expect(sleep.duration_ms.p50).toBeLessThanOrEqual(sleep.duration_ms.p90);
    expect(sleep.duration_ms.p90).toBeLessThanOrEqual(sleep.duration_ms.p95);
    expect(sleep.duration_ms.p95).toBeLessThanOrEqual(sleep.duration_ms.p99);
    expect(sleep.duration_ms.p99).toBeLessThanOrEqual(sleep.duration_ms.max);
    // Per tool: the step's own run time, which for sleep is at least what it slept.
    const sleepTool = body.steps.by_tool.find((entry: { tool: string }) => entry.tool === 'sleep');
    expect(sleepTool.total).toBe(5);
    expect(sleepTool.duration_ms.p50).toBeGreaterThanOrEqual(40);
    expect(body.steps.by_tool.find((entry: { tool: string }) => entry.tool === 'broken').by_status).toEqual({ failed: 1 });
    expect(Date.parse(body.window.to) - Date.parse(body.window.from)).toBe(3_600_000);
    // When the newest task of each type was created.
    const newest = await h.db.prisma.task.findFirst({ where: { taskType: 'sleep' }, orderBy: { createdAt: 'desc' }, select: { createdAt: true } });
    expect(sleep.last_created_at).toBe(newest!.createdAt.toISOString());
  });

  it('has a series of round buckets over the window for charts: tasks created in each, how they ended, their percentiles', async () => {
    const { body } = await h.request('GET', '/stats?window=1h');
    // An hour over at most 48 buckets: 75 s, rounded up to 2 min, on the clock's 2-minute boundaries.
    expect(body.series.bucket_ms).toBe(120_000);
    const starts = body.series.points.map((point: { at: string }) => Date.parse(point.at));
    expect(starts.every((at: number) => at % 120_000 === 0)).toBe(true);
    expect(starts[0]).toBeLessThanOrEqual(Date.parse(body.window.from));
    expect(starts[0] + 120_000).toBeGreaterThan(Date.parse(body.window.from));
    expect(starts.at(-1) + 120_000).toBeGreaterThanOrEqual(Date.parse(body.window.to));
    expect(body.series.points.length).toBeLessThanOrEqual(31);
    const sum = (field: 'created' | 'completed' | 'failed') =>
      body.series.points.reduce((total: number, point: Record<string, number>) => total + point[field]!, 0);
    expect([sum('created'), sum('completed'), sum('failed')]).toEqual([9, 8, 1]);
    const busy = body.series.points.filter((point: { created: number }) => point.created > 0);
    expect(busy.length).toBeGreaterThan(0);
    for (const point of busy) expect(point.duration_ms.p50).toBeGreaterThan(0);
    const empty = body.series.points.find((point: { created: number }) => point.created === 0);
    expect(empty.duration_ms).toEqual({ p50: null, p90: null, p95: null, p99: null, max: null });
  });

  it('GET /stats/queues counts the jobs of every queue by state, from Redis', async () => {
    const delayed = await submit(h, { task_type: 'echo', params: {}, delay_ms: 600_000 });
    const answer = await poll(
      async () => {
        const response = await h.request('GET', '/stats/queues');
        expect(response.status).toBe(200);
        const echo = response.body.queues.find((queue: { name: string }) => queue.name === 'tool.echo');
        return echo?.counts.delayed === 1 ? response.body : undefined;
      },
      { label: 'the delayed echo job counted', timeoutMs: 10_000 },
    );
    const names = answer.queues.map((queue: { name: string }) => queue.name);
    expect(names).toEqual(expect.arrayContaining(['tool.echo', 'tool.sleep', 'timers', 'callbacks', 'services']));
    expect(names).toEqual([...names].sort());
    expect(answer.queues.find((queue: { name: string }) => queue.name === 'tool.sleep').counts.completed).toBe(5);
    expect((await h.request('POST', `/tasks/${delayed}/cancel`)).status).toBe(200);
  });

  it('honours an explicit window', async () => {
    const future = new Date(Date.now() + 3_600_000).toISOString();
    const later = new Date(Date.now() + 7_200_000).toISOString();
    const { body } = await h.request('GET', `/stats?since=${encodeURIComponent(future)}&until=${encodeURIComponent(later)}`);
    expect(body.tasks).toEqual({ total: 0, by_status: {}, by_type: [] });
    expect(body.series.points.every((point: { created: number }) => point.created === 0)).toBe(true);
  });

  it('computes at most STATS_MAX_CONCURRENT (2) at once per process: more get 503 stats_busy with Retry-After', async () => {
    // The statistics' queries wait on this lock: two requests stay in flight until it goes.
    const holder = await h.db.pool.connect();
    const held: Promise<{ status: number }>[] = [];
    try {
      await holder.query('BEGIN');
      await holder.query('LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE');
      held.push(h.request('GET', '/stats?window=1h'), h.request('GET', '/stats?window=1h'));
      const busy = await poll(
        async () => {
          const answer = await h.request('GET', '/stats?window=1h');
          return answer.status === 503 ? answer : undefined;
        },
        { label: 'a third /stats refused while two are held', timeoutMs: 10_000 },
      );
      expect(busy.body.error).toMatchObject({ code: 'stats_busy', details: { max_concurrent: 2 } });
      expect(busy.headers.get('retry-after')).toBe('1');
    } finally {
      await holder.query('ROLLBACK');
      holder.release();
    }
    expect((await Promise.all(held)).map((answer) => answer.status)).toEqual([200, 200]);
    expect((await h.request('GET', '/stats?window=1h')).status).toBe(200);
  });

  it('answers 400 for a malformed or empty window', async () => {
    for (const query of [
      'window=forever',
      'window=10',
      `since=${encodeURIComponent(new Date().toISOString())}&until=${encodeURIComponent(new Date(Date.now() - 1000).toISOString())}`,
      'bogus=1',
    ]) {
      const response = await h.request('GET', `/stats?${query}`);
      expect(response.status, query).toBe(400);
      expect(response.body.error.code).toBe('validation_error');
    }
  });

  it('refuses a window wider than STATS_MAX_WINDOW_DAYS, with the path of what set it', async () => {
    const long = await h.request('GET', '/stats?window=32d');
    expect(long.status).toBe(400);
    expect(long.body.error).toMatchObject({ code: 'validation_error', details: [{ path: 'window', message: 'the window may span at most 31 days' }] });
    const since = new Date(Date.now() - 40 * 86_400_000).toISOString();
    const explicit = await h.request('GET', `/stats?since=${encodeURIComponent(since)}`);
    expect(explicit.status).toBe(400);
    expect(explicit.body.error.details).toEqual([expect.objectContaining({ path: 'since' })]);
    expect((await h.request('GET', '/stats?window=31d')).status).toBe(200);
  });
});

describe('GET /stats under a statement timeout', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness({ worker: false, env: { STATS_STATEMENT_TIMEOUT_MS: '1' } });
    // Enough finished tasks that the percentiles take longer than a millisecond.
    await h.db.prisma.$executeRawUnsafe(
      `INSERT INTO tasks (id, task_type, params, status, steps_total, finished_at)
       SELECT gen_random_uuid(), 'bulk_' || (n % 50), '{}', 'completed', 1, now() + n * interval '1 ms' FROM generate_series(1, 200000) AS n`,
    );
  });
  afterAll(async () => {
    await h.close();
  });

  it('answers 503 stats_timeout when PostgreSQL cancels the queries', async () => {
    const response = await h.request('GET', '/stats?window=1h');
    expect(response.status).toBe(503);
    expect(response.body.error).toMatchObject({ code: 'stats_timeout', details: { timeout_ms: 1 } });
  });

  it("sets the timeout for the statistics' transaction only, not for the connection", async () => {
    // One connection: the query after the failed statistics runs on the same one.
    const db = openDatabase(h.config.DATABASE_URL, 1, h.logger);
    try {
      const before = await db.prisma.$queryRawUnsafe('SHOW statement_timeout');
      const window = [new Date(Date.now() - 3_600_000), new Date()] as const;
      await expect(new StatsStore(db.prisma, { statementTimeoutMs: 1 }).compute(...window)).rejects.toBeInstanceOf(StatsTimeoutError);
      expect(await db.prisma.$queryRawUnsafe('SHOW statement_timeout')).toEqual(before);
      // A committed transaction keeps a plain SET; SET LOCAL ends with it.
      expect((await new StatsStore(db.prisma, { statementTimeoutMs: 123_456 }).compute(...window)).tasks.total).toBe(200_000);
      expect(await db.prisma.$queryRawUnsafe('SHOW statement_timeout')).toEqual(before);
    } finally {
      await db.close();
    }
  });
});
