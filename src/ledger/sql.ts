/**
 * The ledger: the hot path's PostgreSQL operations, one module each, each one statement over a
 * whole batch (one round trip, one commit). They run through Prisma's raw queries, so that
 * Prisma's error codes (and the transient-error classifier that reads them) stay the same.
 */
export interface SqlRunner {
  $queryRawUnsafe<T = unknown>(query: string, ...values: unknown[]): Promise<T>;
}
