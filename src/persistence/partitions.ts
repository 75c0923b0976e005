import type { Sql } from '../ledger/sql.js';
import type { Logger } from '../lib/logger.js';

/**
 * Retention by partition. Tasks and what belongs to them (steps, dead letters, callback
 * deliveries, history) live in one partition per UTC day of the task's creation
 * (prisma/functions/create_day_partitions.sql and drop_day_partitions.sql).
 * Keeping RETENTION_DAYS means dropping whole days: no row is read or deleted, so a day of
 * a million tasks goes in milliseconds (npm run bench:retention). A task is kept at least
 * RETENTION_DAYS, and at most one day more (until its whole day is past).
 */

export const DAY_MS = 86_400_000;

// Arbitrary but fixed, apart from the migration lock: every process of every version agrees on it.
const MAINTENANCE_LOCK_ID = 72_707_370;

export interface RetentionPolicy {
  /** Tasks older than this many days expire. */
  retentionDays: number;
  /** Days after today whose partitions exist ahead of their first task. */
  aheadDays: number;
}

export interface Maintenance {
  /** False: another process held the lock, and this one did nothing. */
  ran: boolean;
  /** Days (YYYY-MM-DD) whose partitions were created, and dropped. */
  created: string[];
  dropped: string[];
  /** Idempotency keys of expired tasks deleted. */
  expiredKeys: number;
}

/** Tasks created before this have expired (or will at the next maintenance): `now` less the retention period. */
export function retentionCutoff(now: Date, retentionDays: number): Date {
  return new Date(now.getTime() - retentionDays * DAY_MS);
}

function utcDay(at: Date): Date {
  return new Date(Math.floor(at.getTime() / DAY_MS) * DAY_MS);
}

const isoDay = (day: Date) => day.toISOString().slice(0, 10);

/** The days that have partitions, oldest first (YYYY-MM-DD). */
export async function partitionDays(sql: Pick<Sql, '$queryRawUnsafe'>): Promise<string[]> {
  const rows = await sql.$queryRawUnsafe<{ day: string }[]>(
    `SELECT to_char(to_date(substring(c.relname FROM '^tasks_p(\\d{8})$'), 'YYYYMMDD'), 'YYYY-MM-DD') AS day
       FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
      WHERE i.inhparent = 'tasks'::regclass AND c.relname ~ '^tasks_p\\d{8}$' ORDER BY 1`,
  );
  return rows.map((row) => row.day);
}

/**
 * One maintenance pass as of `now`: creates the partitions of today and the next `aheadDays`
 * days, deletes the idempotency keys of expired tasks, and drops the days that are wholly past
 * the retention period (plus the expired rows a default partition caught). Exactly one process
 * does it at a time: a transaction-level advisory lock, which works through PgBouncer in
 * transaction mode too; the others return `ran: false`.
 */
export async function maintainPartitions(sql: Sql, now: Date, policy: RetentionPolicy, logger: Logger): Promise<Maintenance> {
  // Days before this one are wholly past the retention period.
  const keepFrom = utcDay(retentionCutoff(now, policy.retentionDays));
  const today = utcDay(now);
  const wanted = Array.from({ length: policy.aheadDays + 1 }, (_, n) => isoDay(new Date(today.getTime() + n * DAY_MS)));
  const outcome = await sql.$transaction(async (tx) => {
    const [lock] = await tx.$queryRawUnsafe<{ taken: boolean }[]>(`SELECT pg_try_advisory_xact_lock($1) AS taken`, MAINTENANCE_LOCK_ID);
    if (!lock?.taken) return undefined;
    // Creating and dropping a partition lock its parent table: rather than wait behind a long
    // query (and make every insert queue up behind this), give up and try at the next pass.
    await tx.$executeRawUnsafe(`SET LOCAL lock_timeout = '2s'`);
    const existing = new Set(await partitionDays(tx));
    const created: string[] = [];
    for (const day of wanted.filter((candidate) => !existing.has(candidate))) {
      // A default partition that already holds rows of the day refuses the new partition: those
      // rows stay where they are (and expire from there), and the other days are still created.
      await tx.$executeRawUnsafe(`SAVEPOINT create_day`);
      try {
        await tx.$executeRawUnsafe(`SELECT create_day_partitions($1::date)`, day);
        created.push(day);
      } catch (error) {
        await tx.$executeRawUnsafe(`ROLLBACK TO SAVEPOINT create_day`);
        logger.warn('could not create a day of partitions; its rows go to the default partitions', { day, error: (error as Error).message });
      }
    }
    // Keys first: once its task is gone, a key would answer a replay with an expired task.
    const expiredKeys = await tx.$executeRawUnsafe(`DELETE FROM idempotency_keys WHERE task_created_at < $1`, keepFrom);
    // A schedule's ticks expire with the tasks they made (not partitioned: deleted row by row, by recorded_at).
    await tx.$executeRawUnsafe(`DELETE FROM schedule_ticks WHERE recorded_at < $1`, keepFrom);
    const dropped = [...existing].filter((day) => new Date(day) < keepFrom);
    for (const day of dropped) await tx.$executeRawUnsafe(`SELECT drop_day_partitions($1::date)`, day);
    await tx.$executeRawUnsafe(
      `WITH t AS (DELETE FROM tasks_default WHERE created_at < $1),
            s AS (DELETE FROM steps_default WHERE task_created_at < $1),
            d AS (DELETE FROM dead_letters_default WHERE task_created_at < $1),
            e AS (DELETE FROM task_events_default WHERE task_created_at < $1)
       DELETE FROM callback_deliveries_default WHERE task_created_at < $1`,
      keepFrom,
    );
    return { created, dropped, expiredKeys };
  });
  if (!outcome) return { ran: false, created: [], dropped: [], expiredKeys: 0 };
  if (outcome.created.length > 0 || outcome.dropped.length > 0) logger.info('partitions maintained', outcome);
  return { ran: true, ...outcome };
}
