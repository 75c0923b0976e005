import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/lib/logger.js';
import { dropDatabase, ensureDatabase, openDatabase } from '../../src/persistence/database.js';
import { migrate, readMigrations } from '../../src/persistence/migrate.js';
import { databaseUrl, TEST_POSTGRES_URL } from '../helpers/env.js';
import { uniqueName } from '../helpers/harness.js';

/**
 * deploy/postgres-init/10-orchestrator-role.sql, run the way the postgres image runs its init
 * scripts (psql as the superuser, connected to POSTGRES_DB), against this machine's PostgreSQL:
 * the service must then work as that role, which is no superuser and cannot create databases.
 */

const SCRIPT = fileURLToPath(new URL('../../deploy/postgres-init/10-orchestrator-role.sql', import.meta.url));
const psqlMissing = spawnSync('psql', ['--version']).error ? 'no psql on PATH' : '';

async function asSuperuser(sql: string): Promise<pg.QueryResult> {
  const client = new pg.Client({ connectionString: TEST_POSTGRES_URL });
  await client.connect();
  try {
    return await client.query(sql);
  } finally {
    await client.end();
  }
}

describe.skipIf(psqlMissing !== '')(`the compose database role${psqlMissing ? ` (skipped: ${psqlMissing})` : ''}`, () => {
  const role = uniqueName('orch_role');
  const database = uniqueName('orch_roledb');
  const admin = new URL(databaseUrl(database));
  const asRole = new URL(admin);
  asRole.username = role;
  asRole.password = 'role-password-0123';

  afterAll(async () => {
    await dropDatabase(admin.toString());
    await asSuperuser(`DROP ROLE IF EXISTS ${pg.escapeIdentifier(role)}`);
  });

  it('owns the database, is no superuser, and is all the service needs to create its schema and run', async () => {
    // What the image does first: POSTGRES_DB exists, then the init scripts run.
    expect(await ensureDatabase(admin.toString())).toBe(true);
    const run = spawnSync(
      'psql',
      [
        '-v',
        'ON_ERROR_STOP=1',
        '--no-psqlrc',
        '--host',
        admin.hostname,
        '--port',
        admin.port || '5432',
        '--username',
        decodeURIComponent(admin.username),
        '--dbname',
        database,
        '-f',
        SCRIPT,
      ],
      {
        encoding: 'utf8',
        env: { ...process.env, ORCHESTRATOR_DB_USER: role, ORCHESTRATOR_DB_PASSWORD: 'role-password-0123', POSTGRES_DB: database },
      },
    );
    expect(run.status, run.stderr).toBe(0);

    const [found] = (
      await asSuperuser(
        `SELECT r.rolsuper, r.rolcreatedb, r.rolcreaterole, pg_get_userbyid(d.datdba) AS owner
           FROM pg_roles r, pg_database d WHERE r.rolname = '${role}' AND d.datname = '${database}'`,
      )
    ).rows;
    expect(found).toEqual({ rolsuper: false, rolcreatedb: false, rolcreaterole: false, owner: role });

    // The start-up path of every process, as that role: the database exists, so nothing is created.
    expect(await ensureDatabase(asRole.toString())).toBe(false);
    expect(await migrate(asRole.toString(), silentLogger())).toEqual((await readMigrations()).map((migration) => migration.name));
    const db = openDatabase(asRole.toString(), 1, silentLogger());
    try {
      expect(await db.prisma.task.count()).toBe(0);
      const [owner] = await db.prisma.$queryRawUnsafe<{ owner: string }[]>(`SELECT tableowner AS owner FROM pg_tables WHERE tablename = 'tasks'`);
      expect(owner?.owner).toBe(role);
    } finally {
      await db.close();
    }
    // And it could not have created a database had it been missing.
    const elsewhere = new URL(asRole);
    elsewhere.pathname = `/${uniqueName('orch_never')}`;
    await expect(ensureDatabase(elsewhere.toString())).rejects.toThrow(/permission denied to create database/);
  });
});
