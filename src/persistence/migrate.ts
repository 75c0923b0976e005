import { createHash, randomUUID } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import type { Logger } from '../lib/logger.js';
import { PACKAGE_ROOT } from '../lib/package-root.js';

/**
 * Brings a database to the schema and the functions of this release, in two parts, both under
 * one advisory lock:
 *
 * 1. prisma/migrations, applied the way `prisma migrate deploy` does, without Prisma's
 *    schema-engine binary (which cannot be downloaded everywhere this runs). Each migration is
 *    recorded in Prisma's own `_prisma_migrations` table with the same checksum Prisma computes
 *    (SHA-256 of migration.sql), so `prisma migrate deploy` on another machine sees the same history.
 * 2. prisma/functions: one file per SQL function (the ledger's, the day partitions'), each the
 *    function as PostgreSQL prints it (`pg_get_functiondef`, schema left out). After the
 *    migrations, every file whose function the database does not hold with exactly that text is
 *    applied, all in one transaction; so a file is the function as it runs, at every start.
 *
 * **Migrations keep DDL only.** A function is defined in its file, never in a migration: the
 * migrations up to 20261127010000_schedules_per_owner defined and redefined them, and stay as they
 * are (their checksums are recorded in every deployed database), but a new migration must not
 * (test/persistence/functions.test.ts checks both rules). A migration that changes a function's
 * arguments or result drops the old function (`DROP FUNCTION name(old arguments)`), and the file
 * creates the new one. A migration runs before the files: it sees the functions of the release
 * that ran before, so one that needs new behaviour does the work itself.
 */

export const MIGRATIONS_DIR = path.join(PACKAGE_ROOT, 'prisma', 'migrations');
export const FUNCTIONS_DIR = path.join(PACKAGE_ROOT, 'prisma', 'functions');

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

/** A file of prisma/functions: `name` is the function's (the file's name without `.sql`). */
export interface FunctionFile {
  name: string;
  sql: string;
}

export async function readFunctions(dir = FUNCTIONS_DIR): Promise<FunctionFile[]> {
  const entries = await readdir(dir, { withFileTypes: true });
  const names = entries
    .filter((entry) => entry.isFile() && entry.name.endsWith('.sql'))
    .map((entry) => entry.name)
    .sort();
  return Promise.all(names.map(async (name) => ({ name: name.slice(0, -'.sql'.length), sql: await readFile(path.join(dir, name), 'utf8') })));
}

/**
 * A function as its file holds it: `pg_get_functiondef` without the schema (the functions live
 * where the migrations put the tables, the first schema on the search path), ended by `;`.
 */
export function functionFileText(definition: string, schema: string): string {
  const create = /^CREATE OR REPLACE (?:FUNCTION|PROCEDURE) /.exec(definition)?.[0] ?? '';
  const rest = definition.slice(create.length);
  return `${`${create}${rest.startsWith(`${schema}.`) ? rest.slice(schema.length + 1) : rest}`.trimEnd()};\n`;
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

/** Where migrate() reads from; the defaults are this release's. */
export interface MigrateOptions {
  /** @defaultValue MIGRATIONS_DIR */
  migrations?: string;
  /** `null`: no functions (a database brought only part of the way, as some tests do). @defaultValue FUNCTIONS_DIR */
  functions?: string | null;
}

/**
 * Applies every migration not yet applied, in name order, each in its own transaction, then the
 * function files whose functions the database does not hold as written (applyFunctions).
 * An advisory lock serialises processes that start together (an API and several workers). It
 * is a session lock, held across the migrations' transactions, so `url` must reach PostgreSQL
 * directly (DATABASE_DIRECT_URL): through PgBouncer in transaction mode each statement may run on
 * another server connection, and the lock would stay behind on one of them.
 * Returns the names of the migrations applied by this call.
 */
export async function migrate(url: string, logger: Logger, options: MigrateOptions = {}): Promise<string[]> {
  const migrations = await readMigrations(options.migrations ?? MIGRATIONS_DIR);
  const functionsDir = options.functions === undefined ? FUNCTIONS_DIR : options.functions;
  const functions = functionsDir === null ? [] : await readFunctions(functionsDir);
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
    const known = new Set(migrations.map((migration) => migration.name));
    const newer = [...done.keys()].filter((name) => !known.has(name)).sort();
    await applyFunctions(client, functions, newer, logger);
  } finally {
    await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK_ID]).catch(() => undefined);
    await client.end();
  }
  return applied;
}

/** The files of `functions` whose function the database does not hold with exactly the file's text. */
async function changedFunctions(client: pg.Client, functions: FunctionFile[]): Promise<FunctionFile[]> {
  if (functions.length === 0) return [];
  const held = await client.query<{ name: string; schema: string; definition: string }>(
    `SELECT p.proname AS name, quote_ident(n.nspname) AS schema, pg_get_functiondef(p.oid) AS definition
       FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
      WHERE n.nspname = current_schema() AND p.prokind IN ('f', 'p') AND p.proname = ANY($1::text[])`,
    [functions.map((file) => file.name)],
  );
  return functions.filter((file) => {
    const same = held.rows.filter((row) => row.name === file.name);
    // One function per name: an overload left behind (its arguments changed, the old one not dropped) is a difference too.
    return same.length !== 1 || functionFileText(same[0]!.definition, same[0]!.schema) !== file.sql;
  });
}

/**
 * Applies, in one transaction and in name order, the function files that differ from what the
 * database holds; those it holds as written are left alone (no catalog change, no cached plan
 * dropped in every connection, no ownership needed at a start that changes nothing). Not when
 * the database knows migrations this release does not (`newer`): a newer release migrated it and
 * put its functions in, which this older process (one that restarts during a rollout) must not
 * undo. The files need no order among them (PL/pgSQL resolves what a function calls when it
 * runs); one that must exist before another is created (an SQL-language function called by
 * another) sorts first.
 */
async function applyFunctions(client: pg.Client, functions: FunctionFile[], newer: string[], logger: Logger): Promise<void> {
  const changed = await changedFunctions(client, functions);
  if (changed.length === 0) return;
  if (newer.length > 0) {
    logger.warn('the database was migrated by a newer release: its functions are left as they are', {
      functions: changed.map((file) => file.name),
      migrations: newer,
    });
    return;
  }
  await client.query('BEGIN');
  for (const file of changed) {
    try {
      await client.query(file.sql);
    } catch (error) {
      await client.query('ROLLBACK');
      throw new MigrationError(`function ${file.name} (prisma/functions/${file.name}.sql) failed: ${(error as Error).message}`);
    }
  }
  await client.query('COMMIT');
  for (const file of changed) logger.info('applied function', { function: file.name });
  for (const file of await changedFunctions(client, changed)) {
    // Applied, yet not held as written: a file not in PostgreSQL's own form, or one that defines another name.
    logger.warn('a function file differs from the function it defines as PostgreSQL prints it: it is applied at every start', {
      function: file.name,
    });
  }
}
