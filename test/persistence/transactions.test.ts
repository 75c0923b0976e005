import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inline, poolSql, type Sql } from '../../src/ledger/sql.js';
import { dropDatabase, ensureDatabase } from '../../src/persistence/database.js';
import { databaseUrl } from '../helpers/env.js';
import { uniqueName } from '../helpers/harness.js';

/**
 * The ledger's transactions (src/ledger/sql.ts) send BEGIN with their first statement and may
 * send COMMIT with their last, writing parameters into the statement's text to do so: the values
 * must arrive exactly as given, a failure must commit nothing, and nothing may run after COMMIT.
 */
describe('ledger transactions', () => {
  const url = databaseUrl(uniqueName('tx'));
  let pool: pg.Pool;
  let sql: Sql;
  /** Every query text a pooled connection sent, in order. */
  const sent: string[] = [];

  beforeAll(async () => {
    await ensureDatabase(url);
    pool = new pg.Pool({ connectionString: url, max: 2 });
    pool.on('connect', (client) => {
      const query = client.query.bind(client) as (...args: unknown[]) => unknown;
      (client as unknown as { query: (...args: unknown[]) => unknown }).query = (...args: unknown[]) => {
        if (typeof args[0] === 'string') sent.push(args[0]);
        return query(...args);
      };
    });
    sql = poolSql(pool);
    await sql.$executeRawUnsafe('CREATE TABLE t (id int PRIMARY KEY, v text)');
  });

  afterAll(async () => {
    await pool?.end();
    await dropDatabase(url).catch(() => undefined);
  });

  it('a load and an apply take two round trips: BEGIN rides with the first, COMMIT with the last', async () => {
    sent.length = 0;
    const rows = await sql.$transaction(async (tx) => {
      await tx.$queryRawUnsafe('SELECT v FROM t WHERE id = $1::int', 1);
      return tx.$queryAndCommit<{ id: number }[]>('INSERT INTO t (id, v) VALUES ($1::int, $2::text) RETURNING id', 1, 'one');
    });
    expect(rows).toEqual([{ id: 1 }]);
    expect(sent).toEqual(["BEGIN;SELECT v FROM t WHERE id = '1'::int", "INSERT INTO t (id, v) VALUES ('1'::int, 'one'::text) RETURNING id;COMMIT"]);
    expect(await sql.$queryRawUnsafe('SELECT v FROM t WHERE id = 1')).toEqual([{ v: 'one' }]);
  });

  it('means by a value written in what its parameter meant: an untyped number compared with text, a boolean', async () => {
    await sql.$executeRawUnsafe('CREATE TABLE IF NOT EXISTS named (name text, flag boolean)');
    const rows = await sql.$transaction((tx) =>
      tx.$queryAndCommit<{ name: string }[]>('INSERT INTO named (name, flag) VALUES ($1, $2) RETURNING name', 42, false),
    );
    expect(rows).toEqual([{ name: '42' }]);
    expect(await sql.$transaction((tx) => tx.$queryAndCommit('SELECT count(*)::int AS n FROM named WHERE name = $1 AND flag = $2', 42, false))).toEqual([
      { n: 1 },
    ]);
  });

  it('gives back every value exactly, whatever it holds', async () => {
    const nasty = [
      "it's",
      "''",
      '\\',
      "\\'; DROP TABLE t; --",
      "E'\\x00'",
      '$1 $2 $$ $tag$',
      '🙂 ünïcödé',
      JSON.stringify({ q: "'", b: '\\', n: '\n', u: '\u0001' }),
      ' ',
    ];
    for (const value of nasty) {
      const [row] = await sql.$transaction((tx) => tx.$queryAndCommit<{ v: string; j: unknown }[]>('SELECT $1::text AS v, to_jsonb($1::text) AS j', value));
      expect(row).toEqual({ v: value, j: value });
    }
    expect(await sql.$queryRawUnsafe('SELECT count(*)::int AS n FROM t')).toEqual([{ n: 1 }]);
  });

  it('commits nothing when the statement carrying COMMIT fails, and gives the connection back clean', async () => {
    await expect(
      sql.$transaction(async (tx) => {
        await tx.$executeRawUnsafe('INSERT INTO t (id, v) VALUES ($1::int, $2::text)', 2, 'two');
        // A duplicate key: the statement fails, so its COMMIT never runs.
        return tx.$queryAndCommit('INSERT INTO t (id, v) VALUES ($1::int, $2::text)', 1, 'again');
      }),
    ).rejects.toMatchObject({ code: '23505' });
    expect(await sql.$queryRawUnsafe('SELECT id FROM t ORDER BY id')).toEqual([{ id: 1 }]);
    // Both pooled connections are usable and outside any transaction.
    const states = await Promise.all([0, 1].map(() => sql.$transaction((tx) => tx.$queryRawUnsafe<{ s: string }[]>('SELECT 1 AS s'))));
    expect(states).toEqual([[{ s: 1 }], [{ s: 1 }]]);
  });

  it('rolls back when the work throws after its first statement, and refuses a statement after COMMIT', async () => {
    await expect(
      sql.$transaction(async (tx) => {
        await tx.$executeRawUnsafe('INSERT INTO t (id, v) VALUES ($1::int, $2::text)', 3, 'three');
        throw new Error('the engine failed');
      }),
    ).rejects.toThrow('the engine failed');
    await expect(
      sql.$transaction(async (tx) => {
        await tx.$queryAndCommit('INSERT INTO t (id, v) VALUES ($1::int, $2::text)', 4, 'four');
        await tx.$queryRawUnsafe('SELECT 1');
      }),
    ).rejects.toThrow('has committed');
    // The committed row stays; the rolled-back one is gone.
    expect(await sql.$queryRawUnsafe('SELECT id FROM t ORDER BY id')).toEqual([{ id: 1 }, { id: 4 }]);
  });

  it('keeps parameters apart when it cannot write them in: large values, dates, arrays, quoted query text', async () => {
    const big = 'x'.repeat(200_000);
    sent.length = 0;
    const [row] = await sql.$transaction((tx) => tx.$queryAndCommit<{ n: number }[]>('SELECT length($1::text) AS n', big));
    expect(row).toEqual({ n: 200_000 });
    expect(sent).toEqual(['BEGIN', 'SELECT length($1::text) AS n', 'COMMIT']);
    expect(inline('SELECT $1::timestamptz', [new Date()])).toBeUndefined();
    expect(inline('SELECT $1::int[]', [[1, 2]])).toBeUndefined();
    expect(inline("SELECT '$1', $1::text", ['a'])).toBeUndefined();
    expect(inline('SELECT $1::text -- $1', ['a'])).toBeUndefined();
    expect(inline('SELECT $1::text', ['a\0b'])).toBeUndefined();
    expect(inline('SELECT $2::text', ['a'])).toBeUndefined();
    expect(inline('SELECT $1, $10, $2', [1, 'b', 3, 4, 5, 6, 7, 8, 9, 'ten'])).toBe("SELECT '1', 'ten', 'b'");
    expect(inline('SELECT $1, $2, $3', [null, true, -1.5])).toBe("SELECT NULL, 'true', '-1.5'");
  });

  it('writes in the worst inputs in linear time', () => {
    // Every character one that needs escaping, at the size bound: escaping is one pass.
    const quotes = "'".repeat(32 * 1024 - 2);
    const started = performance.now();
    const text = inline('SELECT $1::text', [quotes]);
    expect(text).toBe(`SELECT '${"''".repeat(32 * 1024 - 2)}'::text`);
    const backslashes = '\\'.repeat(32 * 1024);
    expect(inline('SELECT $1::text', [backslashes])).toBeUndefined();
    // Many parameters: the text is walked once whatever their number.
    const many = Array.from({ length: 5000 }, (_, i) => i);
    const query = `SELECT ${many.map((i) => `$${i + 1}`).join(',')}`;
    expect(inline(query, many)).toBe(`SELECT ${many.map((i) => `'${i}'`).join(',')}`);
    // Generous on a busy machine; a quadratic pass over these sizes takes seconds.
    expect(performance.now() - started).toBeLessThan(500);
  });
});
