import type pg from 'pg';

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

export interface TransactionOptions {
  /**
   * False: the commit does not wait for the disk (synchronous_commit off), for writes that a
   * server crash may lose because they are made again anyway (a step's claim). A commit that
   * waits for the disk took 2-5 ms on this project's CI machine, most of a step's latency.
   * @defaultValue true
   */
  durable?: boolean;
}

export interface Sql extends SqlRunner {
  /** Runs `fn` in one transaction on one connection: committed if it resolves, rolled back if it throws. */
  $transaction<T>(fn: (tx: SqlRunner) => Promise<T>, options?: TransactionOptions): Promise<T>;
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

export function poolSql(pool: pg.Pool): Sql {
  return {
    ...runner(pool),
    async $transaction<T>(fn: (tx: SqlRunner) => Promise<T>, options: TransactionOptions = {}): Promise<T> {
      const client = await pool.connect();
      let broken: Error | undefined;
      try {
        // One round trip either way: a query without parameters may hold several statements.
        await client.query(options.durable === false ? 'BEGIN; SET LOCAL synchronous_commit = off' : 'BEGIN');
        const result = await fn(runner(client));
        await client.query('COMMIT');
        return result;
      } catch (error) {
        // A connection that failed mid-transaction is not given back to the pool for reuse.
        await client.query('ROLLBACK').catch((rollback: Error) => (broken = rollback));
        throw error;
      } finally {
        client.release(broken);
      }
    },
  };
}
