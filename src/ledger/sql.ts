import pg from 'pg';

/**
 * The ledger: the hot path's PostgreSQL operations, one module each, each one statement over a
 * whole batch (one round trip, one commit), most of them a call of one of the functions in
 * prisma/functions (one file each, the function as it runs).
 *
 * They run on the pg pool under Prisma rather than through Prisma's raw queries: a profile of a
 * workflow's worker put 38 % of its CPU in Prisma's client and driver adapter, which wrap every
 * statement of a transaction in several layers of promises and copies. The method names are
 * Prisma's, so a Prisma client or interactive transaction serves as a runner too (recovery
 * code that is off the hot path keeps using Prisma's transactions).
 *
 * Errors are pg's own (SQLSTATE in `code`), which the transient-error classifier in
 * src/persistence/retry.ts reads as it reads Prisma's.
 */
export interface SqlRunner {
  $queryRawUnsafe<T = unknown>(query: string, ...values: unknown[]): Promise<T>;
  $executeRawUnsafe(query: string, ...values: unknown[]): Promise<number>;
}

/**
 * A transaction's runner that can also commit with its last statement: the statement and
 * COMMIT go in one round trip. Nothing may run on the runner after it.
 */
export interface TransactionRunner extends SqlRunner {
  $queryAndCommit<T = unknown>(query: string, ...values: unknown[]): Promise<T>;
}

export interface Sql extends SqlRunner {
  /** Runs `fn` in one transaction on one connection: committed if it resolves, rolled back if it throws. */
  $transaction<T>(fn: (tx: TransactionRunner) => Promise<T>): Promise<T>;
}

function runner(client: pg.Pool | pg.PoolClient): SqlRunner {
  return {
    async $queryRawUnsafe<T>(query: string, ...values: unknown[]): Promise<T> {
      return (await client.query(query, values)).rows as T;
    },
    async $executeRawUnsafe(query: string, ...values: unknown[]): Promise<number> {
      return (await client.query(query, values)).rowCount ?? 0;
    },
  };
}

/**
 * Parameters longer than this are not written into the query's text: escaping is a pass over
 * every character, and the statement then travels as text twice its size in the server's log of
 * slow statements. Such a statement takes BEGIN or COMMIT as a round trip of its own instead.
 */
const INLINE_MAX_CHARS = 64 * 1024;

/**
 * `query` with its `$n` parameters written in as literals, so that it can share one simple-protocol
 * round trip with BEGIN or COMMIT (a query with parameters is one statement per round trip).
 * Undefined when that is not safe or not cheap: a query text holding quotes, dollar quotes or
 * comments (a `$1` inside them would be taken for a parameter), a parameter that is not a string,
 * number, boolean or null, or parameters over INLINE_MAX_CHARS. Strings go through pg's own
 * escapeLiteral and are cast by the query as before (`$1::jsonb` becomes `'…'::jsonb`).
 */
export function inline(query: string, values: readonly unknown[]): string | undefined {
  if (/['"]|\$\$|--|\/\*/.test(query)) return undefined;
  let size = 0;
  const literals: string[] = [];
  for (const value of values) {
    let literal: string;
    if (value === null || value === undefined) literal = 'NULL';
    // Quoted as pg sends them (as text): an untyped literal takes its type from where it stands,
    // as an untyped parameter does, so `WHERE name = $1` with a number means what it meant.
    else if (typeof value === 'number' && Number.isFinite(value)) literal = `'${value}'`;
    else if (typeof value === 'boolean') literal = `'${value}'`;
    // A NUL would end the simple protocol's query text early; PostgreSQL's text holds none anyway.
    else if (typeof value === 'string' && !value.includes('\0')) literal = pg.escapeLiteral(value);
    else return undefined;
    size += literal.length;
    if (size > INLINE_MAX_CHARS) return undefined;
    literals.push(literal);
  }
  let complete = true;
  // \b keeps $1 from matching the start of $10.
  const text = query.replace(/\$(\d+)\b/g, (_match, digits: string) => {
    const literal = literals[Number(digits) - 1];
    if (literal === undefined) complete = false;
    return literal ?? '';
  });
  return complete ? text : undefined;
}

/**
 * A transaction on one pooled connection whose BEGIN travels with its first statement and whose
 * COMMIT may travel with its last (`$queryAndCommit`): a step's level of a workflow is a load
 * and an apply, so this takes it from four round trips to two. Measured on this project's CI
 * machine, the separate BEGIN cost 0.7 ms of a level's 6-7 ms and COMMIT's own round trip
 * about 0.5 ms more.
 */
class PooledTransaction implements TransactionRunner {
  private begun = false;
  committed = false;

  constructor(private readonly client: pg.PoolClient) {}

  get started(): boolean {
    return this.begun;
  }

  async $queryRawUnsafe<T>(query: string, ...values: unknown[]): Promise<T> {
    return (await this.run(query, values, false)).rows as T;
  }

  async $executeRawUnsafe(query: string, ...values: unknown[]): Promise<number> {
    return (await this.run(query, values, false)).rowCount ?? 0;
  }

  async $queryAndCommit<T>(query: string, ...values: unknown[]): Promise<T> {
    const result = (await this.run(query, values, true)).rows as T;
    this.committed = true;
    return result;
  }

  /** Commits unless `$queryAndCommit` did; a transaction that ran nothing has nothing to commit. */
  async commit(): Promise<void> {
    if (this.begun && !this.committed) await this.client.query('COMMIT');
    this.committed = true;
  }

  private async run(query: string, values: unknown[], commit: boolean): Promise<pg.QueryResult> {
    if (this.committed) throw new Error('this transaction has committed: nothing may run on it after');
    const begin = !this.begun;
    this.begun = true;
    if (!begin && !commit) return this.client.query(query, values);
    const text = inline(query, values);
    if (text === undefined) {
      if (begin) await this.client.query('BEGIN');
      const result = await this.client.query(query, values);
      if (commit) await this.client.query('COMMIT');
      return result;
    }
    // One simple-protocol round trip: pg answers an array, one result per statement; the first
    // error stops the rest, so a failed statement never commits.
    const results = (await this.client.query(`${begin ? 'BEGIN;' : ''}${text}${commit ? ';COMMIT' : ''}`)) as unknown as pg.QueryResult[];
    return results[begin ? 1 : 0]!;
  }
}

export function poolSql(pool: pg.Pool): Sql {
  return {
    ...runner(pool),
    async $transaction<T>(fn: (tx: TransactionRunner) => Promise<T>): Promise<T> {
      const client = await pool.connect();
      const tx = new PooledTransaction(client);
      let broken: Error | undefined;
      try {
        const result = await fn(tx);
        await tx.commit();
        return result;
      } catch (error) {
        // A connection that failed mid-transaction is not given back to the pool for reuse.
        if (tx.started) await client.query('ROLLBACK').catch((rollback: Error) => (broken = rollback));
        throw error;
      } finally {
        client.release(broken);
      }
    },
  };
}
