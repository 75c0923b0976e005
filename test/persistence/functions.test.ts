import { cp, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger, silentLogger } from '../../src/lib/logger.js';
import { PACKAGE_ROOT } from '../../src/lib/package-root.js';
import { dropDatabase, ensureDatabase } from '../../src/persistence/database.js';
import { FUNCTIONS_DIR, functionFileText, MIGRATIONS_DIR, MigrationError, migrate, readFunctions } from '../../src/persistence/migrate.js';
import { databaseUrl } from '../helpers/env.js';
import { uniqueName } from '../helpers/harness.js';

/**
 * prisma/functions holds every function of the database as it runs (src/persistence/migrate.ts
 * applies the files after the migrations), and migrations keep DDL only.
 */

/** The last migration written before functions had files: it and those before it may define functions (and stay as they are). */
const LAST_MIGRATION_WITH_FUNCTIONS = '20261127010000_schedules_per_owner';

interface Held {
  name: string;
  signature: string;
  schema: string;
  definition: string;
  version: string;
}

/** The functions of the database's schema (those of extensions left out), with their row version (`xmin`, which CREATE OR REPLACE changes). */
async function heldFunctions(url: string): Promise<Held[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const result = await client.query<Held>(
      `SELECT p.proname AS name, p.oid::regprocedure::text AS signature, quote_ident(n.nspname) AS schema,
              CASE WHEN p.prokind IN ('f', 'p') THEN pg_get_functiondef(p.oid) END AS definition, p.xmin::text AS version
         FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = current_schema()
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
        ORDER BY p.proname, p.oid`,
    );
    return result.rows;
  } finally {
    await client.end();
  }
}

async function freshDatabase(created: string[]): Promise<string> {
  const url = databaseUrl(uniqueName('orch_fn'));
  created.push(url);
  await ensureDatabase(url);
  return url;
}

describe('prisma/functions, in a database migrated by migrate()', () => {
  const created: string[] = [];
  let held: Held[];
  beforeAll(async () => {
    const url = await freshDatabase(created);
    await migrate(url, silentLogger());
    held = await heldFunctions(url);
  });
  afterAll(async () => {
    for (const url of created) await dropDatabase(url);
  });

  it("holds every file's function with exactly the file's text", async () => {
    const files = await readFunctions();
    expect(files.map((file) => file.name)).toEqual(expect.arrayContaining(['ledger_apply', 'ledger_claim', 'create_day_partitions']));
    for (const file of files) {
      const named = held.filter((row) => row.name === file.name);
      expect(
        named.map((row) => row.signature),
        `prisma/functions/${file.name}.sql: one function of that name`,
      ).toHaveLength(1);
      // On a difference, the expected value is the file as PostgreSQL prints the function: write it so.
      expect(file.sql, `prisma/functions/${file.name}.sql as PostgreSQL holds it`).toBe(functionFileText(named[0]!.definition, named[0]!.schema));
    }
  });

  it('has a file for every function, so none is defined by a migration only', async () => {
    const files = new Set((await readFunctions()).map((file) => file.name));
    expect(held.length).toBeGreaterThan(0);
    expect(held.filter((row) => !files.has(row.name)).map((row) => row.signature)).toEqual([]);
  });

  it('has a file for every function the code calls', async () => {
    const files = new Set((await readFunctions()).map((file) => file.name));
    const called = new Set<string>();
    for (const folder of ['src', 'workers']) {
      const entries = await readdir(path.join(PACKAGE_ROOT, folder), { recursive: true, withFileTypes: true });
      for (const entry of entries.filter((candidate) => candidate.isFile() && candidate.name.endsWith('.ts'))) {
        const text = await readFile(path.join(entry.parentPath, entry.name), 'utf8');
        for (const match of text.matchAll(/\b(ledger_[a-z_]+|[a-z_]+_day_partitions)\(\$1/g)) called.add(match[1]!);
      }
    }
    // The search sees both kinds of call.
    expect([...called]).toEqual(expect.arrayContaining(['ledger_apply', 'create_day_partitions']));
    expect([...called].filter((name) => !files.has(name))).toEqual([]);
  });

  it(`has no function defined by a migration after ${LAST_MIGRATION_WITH_FUNCTIONS}: migrations keep DDL only`, async () => {
    const names = (await readdir(MIGRATIONS_DIR, { withFileTypes: true })).filter((entry) => entry.isDirectory()).map((entry) => entry.name);
    expect(names).toContain(LAST_MIGRATION_WITH_FUNCTIONS);
    for (const name of names.filter((candidate) => candidate > LAST_MIGRATION_WITH_FUNCTIONS)) {
      const sql = (await readFile(path.join(MIGRATIONS_DIR, name, 'migration.sql'), 'utf8')).replace(/--[^\n]*/g, '');
      expect(sql, `${name}: a function goes in prisma/functions`).not.toMatch(/\bCREATE\s+(OR\s+REPLACE\s+)?(FUNCTION|PROCEDURE)\b/i);
    }
  });
});

describe('migrate(), with function files of its own', () => {
  const created: string[] = [];
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'orch-functions-'));
  });
  afterAll(async () => {
    for (const url of created) await dropDatabase(url);
    await rm(dir, { recursive: true, force: true });
  });

  /** A database migrated with this release's files, and a directory of copies of them to edit. */
  async function migrated(): Promise<{ url: string; functions: string }> {
    const url = await freshDatabase(created);
    const functions = await mkdtemp(path.join(dir, 'copy-'));
    await cp(FUNCTIONS_DIR, functions, { recursive: true });
    await migrate(url, silentLogger(), { functions });
    return { url, functions };
  }

  /** ledger_note's file with a line added at the top of its body: a change in text only. */
  async function editNote(functions: string): Promise<string> {
    const file = path.join(functions, 'ledger_note.sql');
    const edited = (await readFile(file, 'utf8')).replace('AS $function$\n', 'AS $function$\n-- edited\n');
    await writeFile(file, edited);
    return edited;
  }

  const byName = (rows: Held[]) => new Map(rows.map((row) => [row.name, row]));

  it('applies an edited file at the next start, with no migration to apply, and leaves the others alone', async () => {
    const { url, functions } = await migrated();
    const before = byName(await heldFunctions(url));
    const edited = await editNote(functions);

    expect(await migrate(url, silentLogger(), { functions })).toEqual([]);
    const after = byName(await heldFunctions(url));
    expect(functionFileText(after.get('ledger_note')!.definition, after.get('ledger_note')!.schema)).toBe(edited);
    for (const [name, row] of after) {
      if (name !== 'ledger_note') expect(row.version, `${name} not replaced`).toBe(before.get(name)!.version);
    }
    // Nothing left to do: ledger_note is not replaced again.
    await migrate(url, silentLogger(), { functions });
    expect((await heldFunctions(url)).find((row) => row.name === 'ledger_note')!.version).toBe(after.get('ledger_note')!.version);
  });

  it('applies the files in one transaction: a file that fails leaves every function as it was, and is named', async () => {
    const { url, functions } = await migrated();
    const before = await heldFunctions(url);
    await editNote(functions);
    await writeFile(path.join(functions, 'zz_broken.sql'), 'CREATE OR REPLACE FUNCTION zz_broken() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN; END $$;\n');

    const failed = migrate(url, silentLogger(), { functions });
    await expect(failed).rejects.toThrow(MigrationError);
    await expect(failed).rejects.toThrow(/function zz_broken \(prisma\/functions\/zz_broken\.sql\) failed/);
    expect(await heldFunctions(url)).toEqual(before);
  });

  it('leaves the functions alone when a newer release migrated the database (an older process restarting during a rollout)', async () => {
    const { url, functions } = await migrated();
    const before = await heldFunctions(url);
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    await client.query(
      `INSERT INTO "_prisma_migrations" (id, checksum, migration_name, finished_at, applied_steps_count) VALUES (gen_random_uuid(), 'x', '29991231000000_newer', now(), 1)`,
    );
    await client.end();
    await editNote(functions);

    const sink = new PassThrough();
    let logged = '';
    sink.on('data', (chunk: Buffer) => {
      logged += chunk.toString();
    });
    await migrate(url, createLogger({ LOG_LEVEL: 'info', LOG_FORMAT: 'json', LOG_FILE: undefined }, sink), { functions });
    expect(await heldFunctions(url)).toEqual(before);
    expect(logged).toContain('the database was migrated by a newer release');
    expect(logged).toContain('29991231000000_newer');
  });

  it("says so when a file is not in PostgreSQL's form, since it is then applied at every start", async () => {
    const { url, functions } = await migrated();
    await writeFile(
      path.join(functions, 'ledger_note.sql'),
      (await readFile(path.join(functions, 'ledger_note.sql'), 'utf8'))
        .replace(/\$function\$/g, () => '$$')
        .replace('\n LANGUAGE plpgsql', ' LANGUAGE plpgsql'),
    );
    const sink = new PassThrough();
    let logged = '';
    sink.on('data', (chunk: Buffer) => {
      logged += chunk.toString();
    });
    const logger = createLogger({ LOG_LEVEL: 'info', LOG_FORMAT: 'json', LOG_FILE: undefined }, sink);
    await migrate(url, logger, { functions });
    await migrate(url, logger, { functions });
    const lines = logged
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { message: string; function?: string });
    expect(lines.filter((line) => line.message === 'applied function').map((line) => line.function)).toEqual(['ledger_note', 'ledger_note']);
    expect(lines.filter((line) => line.message.startsWith('a function file differs')).map((line) => line.function)).toEqual(['ledger_note', 'ledger_note']);
  });
});
