import { createHash, randomUUID } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import type { Logger } from '../lib/logger.js';
import { PACKAGE_ROOT } from '../lib/package-root.js';

/**
 * Applies prisma/migrations the way `prisma migrate deploy` does, without Prisma's schema-engine
 * binary (which cannot be downloaded everywhere this runs). Each migration is recorded in
 * Prisma's own `_prisma_migrations` table with the same checksum Prisma computes (SHA-256 of
 * migration.sql), so `prisma migrate deploy` on another machine sees the same history.
 */

export const MIGRATIONS_DIR = path.join(PACKAGE_ROOT, 'prisma', 'migrations');

// Arbitrary but fixed: every process of every version agrees on it.
const MIGRATION_LOCK_ID = 72_707_369;

export interface Migration {
  name: string;
  sql: string;
  checksum: string;
}

export async function readMigrations(dir = MIGRATIONS_DIR): Promise<Migration[]> {
  const entries = await readdir(dir, { withFileTypes: true });
  const names = entries
    .filter((entry) => entry.isDirectory())
    .map((entry) => entry.name)
    .sort();
  return Promise.all(
    names.map(async (name) => {
      const sql = await readFile(path.join(dir, name, 'migration.sql'), 'utf8');
      return { name, sql, checksum: createHash('sha256').update(sql).digest('hex') };
    }),
  );
}

const CREATE_HISTORY_TABLE = `
CREATE TABLE IF NOT EXISTS "_prisma_migrations" (
  "id" VARCHAR(36) PRIMARY KEY NOT NULL,
  "checksum" VARCHAR(64) NOT NULL,
  "finished_at" TIMESTAMPTZ,
  "migration_name" VARCHAR(255) NOT NULL,
  "logs" TEXT,
  "rolled_back_at" TIMESTAMPTZ,
  "started_at" TIMESTAMPTZ NOT NULL DEFAULT now(),
  "applied_steps_count" INTEGER NOT NULL DEFAULT 0
)`;

export class MigrationError extends Error {
  override name = 'MigrationError';
}

/**
 * Applies every migration not yet applied, in name order, each in its own transaction.
 * An advisory lock serialises processes that start together (an API and several workers). It
 * is a session lock, held across the migrations' transactions, so `url` must reach PostgreSQL
 * directly (DATABASE_DIRECT_URL): through PgBouncer in transaction mode each statement may run on
 * another server connection, and the lock would stay behind on one of them.
 * Returns the names applied by this call.
 */
export async function migrate(url: string, logger: Logger, dir = MIGRATIONS_DIR): Promise<string[]> {
  const migrations = await readMigrations(dir);
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000 });
  await client.connect();
  const applied: string[] = [];
  try {
    await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK_ID]);
    await client.query(CREATE_HISTORY_TABLE);
    const history = await client.query<{
      migration_name: string;
      checksum: string;
      finished_at: Date | null;
      rolled_back_at: Date | null;
    }>('SELECT migration_name, checksum, finished_at, rolled_back_at FROM "_prisma_migrations"');
    const unfinished = history.rows.filter((row) => !row.finished_at && !row.rolled_back_at);
    if (unfinished.length > 0) {
      // Prisma refuses to go on in this state too (P3009): a person has to look.
      throw new MigrationError(`migration ${unfinished.map((row) => row.migration_name).join(', ')} failed earlier; resolve it before starting`);
    }
    const done = new Map(history.rows.filter((row) => row.finished_at).map((row) => [row.migration_name, row.checksum]));
    for (const migration of migrations) {
      const recorded = done.get(migration.name);
      if (recorded !== undefined) {
        if (recorded !== migration.checksum) {
          logger.warn('an applied migration was edited since it was applied', { migration: migration.name });
        }
        continue;
      }
      const id = randomUUID();
      await client.query('BEGIN');
      try {
        await client.query('INSERT INTO "_prisma_migrations" (id, checksum, migration_name, started_at) VALUES ($1, $2, $3, now())', [
          id,
          migration.checksum,
          migration.name,
        ]);
        await client.query(migration.sql);
        await client.query('UPDATE "_prisma_migrations" SET finished_at = now(), applied_steps_count = 1 WHERE id = $1', [id]);
        await client.query('COMMIT');
      } catch (error) {
        await client.query('ROLLBACK');
        throw new MigrationError(`migration ${migration.name} failed: ${(error as Error).message}`);
      }
      applied.push(migration.name);
      logger.info('applied migration', { migration: migration.name });
    }
  } finally {
    await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK_ID]).catch(() => undefined);
    await client.end();
  }
  return applied;
}
