import { uuidv7Time } from '../lib/uuid7.js';
import type { SqlRunner } from './sql.js';

/*
 * Tasks, steps, dead letters and callback deliveries are partitioned by the task's creation time
 * (one partition per day), and a task's id (UUIDv7) holds that time: a task's created_at is
 * exactly its id's time (createTasks stores it so). A statement that finds rows by task id also
 * says which creation times those tasks have, so that PostgreSQL plans it over those days'
 * partitions only, instead of probing the index of every partition kept.
 */

/** A task's creation time, which its id holds. Throws for an id that is not a UUIDv7. */
export function createdAtOf(id: string): Date {
  const at = uuidv7Time(id);
  if (!at) throw new Error(`task id ${id} is not a UUIDv7 (src/lib/uuid7.ts)`);
  return at;
}

/**
 * The creation times of these tasks, as the parameter `createdIn` reads; null when one of them
 * has an id older than UUIDv7 task ids (migrated tasks): then every day is searched.
 */
export function createdTimes(ids: Iterable<string>): string[] | null {
  const times = new Set<string>();
  for (const id of ids) {
    const at = uuidv7Time(id);
    if (!at) return null;
    times.add(at.toISOString());
  }
  return [...times];
}

/**
 * SQL: `column` is one of the times in the parameter `param` (from createdTimes), or anything
 * when it is null. PostgreSQL plans each statement with its parameters' values (pg and Prisma
 * send unnamed statements), so the null test folds away and the partitions are pruned at plan time.
 */
export function createdIn(column: string, param: string): string {
  return `(${param}::timestamptz[] IS NULL OR ${column} = ANY(${param}::timestamptz[]))`;
}

/** Prisma's form of the same: a where clause for one task by id, with its creation time when its id holds it. */
export function taskById(id: string): { id: string; createdAt?: Date } {
  const at = uuidv7Time(id);
  return at ? { id, createdAt: at } : { id };
}

/**
 * The creation time of each task, for the ledger's functions, which name every task with it:
 * from its id, or (a task from before UUIDv7 ids) read from the database. A task not found is
 * left out.
 */
export async function creationTimes(db: SqlRunner, ids: Iterable<string>): Promise<Map<string, Date>> {
  const times = new Map<string, Date>();
  const old: string[] = [];
  for (const id of ids) {
    const at = uuidv7Time(id);
    if (at) times.set(id, at);
    else old.push(id);
  }
  if (old.length > 0) {
    const rows = await db.$queryRawUnsafe<{ id: string; created_at: Date }[]>(
      `SELECT id::text AS id, created_at FROM tasks WHERE id = ANY($1::uuid[])`,
      old.filter((id) => /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(id)),
    );
    for (const row of rows) times.set(row.id, row.created_at);
  }
  return times;
}
