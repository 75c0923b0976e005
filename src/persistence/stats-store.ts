import { UnavailableError } from '../lib/errors.js';
import type { Prisma } from './database.js';
import { sqlState } from './retry.js';

/** PostgreSQL cancelled the statistics queries at STATS_STATEMENT_TIMEOUT_MS. */
export class StatsTimeoutError extends UnavailableError {
  override name = 'StatsTimeoutError';
  constructor(timeoutMs: number) {
    super('stats_timeout', `computing the statistics took longer than ${timeoutMs} ms; ask for a shorter window`, { timeout_ms: timeoutMs });
  }
}

export interface Percentiles {
  p50: number | null;
  p90: number | null;
  p95: number | null;
  p99: number | null;
  max: number | null;
}

interface CountRow {
  key: string;
  status: string;
  count: bigint;
  /** The newest task created in the window, of this key and status. */
  last: Date;
}

/** How many points GET /stats's series has: enough for a chart, few enough to read at a glance. */
export const SERIES_POINTS = 48;
/** A series' bucket widths, in units a chart reads at a glance (`per 2 min`, not `per 1 min 15 s`). */
const ROUND_BUCKETS_MS = [
  ...[1, 2, 5, 10, 15, 30].map((s) => s * 1_000),
  ...[1, 2, 5, 10, 15, 30].map((m) => m * 60_000),
  ...[1, 2, 3, 6, 12].map((h) => h * 3_600_000),
  ...[1, 2, 7].map((d) => d * 86_400_000),
];

interface BucketRow extends Record<'p50' | 'p90' | 'p95' | 'p99' | 'max', number | null> {
  at: Date;
  created: bigint;
  completed: bigint;
  failed: bigint;
}

interface DurationRow extends Record<'p50' | 'p90' | 'p95' | 'p99' | 'max', number | null> {
  key: string;
}

function percentiles(row: Pick<DurationRow, 'p50' | 'p90' | 'p95' | 'p99' | 'max'> | undefined): Percentiles {
  const round = (value: number | null | undefined) => (value === null || value === undefined ? null : Math.round(Number(value) * 10) / 10);
  return { p50: round(row?.p50), p90: round(row?.p90), p95: round(row?.p95), p99: round(row?.p99), max: round(row?.max) };
}

function group(counts: CountRow[], durations: DurationRow[]) {
  const byKey = new Map<string, { total: number; by_status: Record<string, number>; last: Date }>();
  for (const row of counts) {
    const entry = byKey.get(row.key) ?? { total: 0, by_status: {}, last: row.last };
    entry.total += Number(row.count);
    entry.by_status[row.status] = Number(row.count);
    if (row.last > entry.last) entry.last = row.last;
    byKey.set(row.key, entry);
  }
  const duration = new Map(durations.map((row) => [row.key, row]));
  return [...byKey]
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([key, { last, ...entry }]) => ({ key, ...entry, last_created_at: last.toISOString(), duration_ms: percentiles(duration.get(key)) }));
}

/**
 * Counts and duration percentiles, computed in PostgreSQL: of the tasks created in a window
 * (by task type; duration from acceptance to end, finished tasks only) and of their steps (by
 * tool; duration of the step's last attempt, finished steps only). The queries run in one
 * transaction under a statement timeout, so a wide window cannot hold a connection for long.
 */
export class StatsStore {
  constructor(
    private readonly prisma: Prisma,
    private readonly options: { statementTimeoutMs: number },
  ) {}

  async compute(from: Date, to: Date) {
    try {
      return await this.query(from, to);
    } catch (error) {
      // 57014: query_canceled, which is what statement_timeout raises.
      if (sqlState(error) === '57014') throw new StatsTimeoutError(this.options.statementTimeoutMs);
      throw error;
    }
  }

  private async query(from: Date, to: Date) {
    const percentilesOf = (expression: string, only = '') => {
      const filter = only ? ` FILTER (WHERE ${only})` : '';
      return `percentile_cont(0.5) WITHIN GROUP (ORDER BY ${expression})${filter} AS p50,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY ${expression})${filter} AS p90,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY ${expression})${filter} AS p95,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY ${expression})${filter} AS p99,
       max(${expression})${filter} AS max`;
    };
    const taskMs = 'extract(epoch FROM t.finished_at - t.created_at) * 1000';
    const stepMs = 'extract(epoch FROM s.finished_at - s.started_at) * 1000';
    // The window in at most SERIES_POINTS buckets of the smallest round width that fits, on the
    // clock's boundaries of that width (the first bucket starts at or before `from`; only tasks
    // of the window count in it).
    const span = to.getTime() - from.getTime();
    const bucketMs = ROUND_BUCKETS_MS.find((width) => width * SERIES_POINTS >= span) ?? Math.ceil(span / SERIES_POINTS);
    const start = Math.floor(from.getTime() / bucketMs) * bucketMs;
    const [, taskCounts, taskDurations, stepCounts, stepDurations, buckets] = await this.prisma.$transaction([
      // SET LOCAL, with a bound value: the timeout ends with this transaction.
      this.prisma.$queryRawUnsafe(`SELECT set_config('statement_timeout', $1, true)`, String(this.options.statementTimeoutMs)),
      this.prisma.$queryRawUnsafe<CountRow[]>(
        // A task waiting for someone (a step waiting for a signal or an approval) counts as waiting, as the lists show it.
        `SELECT t.task_type AS key,
                CASE WHEN t.status IN ('queued', 'running') AND EXISTS (
                       SELECT 1 FROM steps s WHERE s.task_id = t.id AND s.task_created_at = t.created_at
                          AND s.status = 'waiting' AND s.reason IN ('signal', 'approval'))
                     THEN 'waiting' ELSE t.status::text END AS status,
                count(*) AS count, max(t.created_at) AS last
           FROM tasks t WHERE t.created_at >= $1 AND t.created_at < $2 GROUP BY 1, 2`,
        from,
        to,
      ),
      this.prisma.$queryRawUnsafe<DurationRow[]>(
        `SELECT t.task_type AS key, ${percentilesOf(taskMs)}
           FROM tasks t WHERE t.created_at >= $1 AND t.created_at < $2 AND t.finished_at IS NOT NULL GROUP BY 1`,
        from,
        to,
      ),
      this.prisma.$queryRawUnsafe<CountRow[]>(
        `SELECT s.tool AS key, s.status::text AS status, count(*) AS count, max(t.created_at) AS last
           FROM tasks t JOIN steps s ON s.task_id = t.id AND s.task_created_at = t.created_at
          WHERE t.created_at >= $1 AND t.created_at < $2 AND s.task_created_at >= $1 AND s.task_created_at < $2 AND s.tool IS NOT NULL GROUP BY 1, 2`,
        from,
        to,
      ),
      this.prisma.$queryRawUnsafe<DurationRow[]>(
        `SELECT s.tool AS key, ${percentilesOf(stepMs)}
           FROM tasks t JOIN steps s ON s.task_id = t.id AND s.task_created_at = t.created_at
          WHERE t.created_at >= $1 AND t.created_at < $2 AND s.task_created_at >= $1 AND s.task_created_at < $2 AND s.finished_at IS NOT NULL AND s.started_at IS NOT NULL AND s.tool IS NOT NULL GROUP BY 1`,
        from,
        to,
      ),
      this.prisma.$queryRawUnsafe<BucketRow[]>(
        `SELECT date_bin($3::interval, t.created_at, $4) AS at, count(*) AS created,
                count(*) FILTER (WHERE t.status = 'completed') AS completed, count(*) FILTER (WHERE t.status = 'failed') AS failed,
                ${percentilesOf(taskMs, 't.finished_at IS NOT NULL')}
           FROM tasks t WHERE t.created_at >= $1 AND t.created_at < $2 GROUP BY 1`,
        from,
        to,
        `${bucketMs} milliseconds`,
        new Date(start),
      ),
    ]);
    const types = group(taskCounts, taskDurations);
    const byBucket = new Map(buckets.map((row) => [row.at.getTime(), row]));
    const points = Array.from({ length: Math.ceil((to.getTime() - start) / bucketMs) }, (_, index) => {
      const at = start + index * bucketMs;
      const row = byBucket.get(at);
      return {
        at: new Date(at).toISOString(),
        created: Number(row?.created ?? 0),
        completed: Number(row?.completed ?? 0),
        failed: Number(row?.failed ?? 0),
        duration_ms: percentiles(row),
      };
    });
    const byStatus: Record<string, number> = {};
    for (const row of taskCounts) byStatus[row.status] = (byStatus[row.status] ?? 0) + Number(row.count);
    return {
      tasks: {
        total: types.reduce((sum, entry) => sum + entry.total, 0),
        by_status: byStatus,
        by_type: types.map(({ key, ...entry }) => ({ task_type: key, ...entry })),
      },
      steps: { by_tool: group(stepCounts, stepDurations).map(({ key, ...entry }) => ({ tool: key, ...entry })) },
      series: { bucket_ms: bucketMs, points },
    };
  }
}
