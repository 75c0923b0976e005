/** Where the tests find Redis and PostgreSQL: the machine's own, as in the brief. */
export const TEST_REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
export const TEST_POSTGRES_URL = process.env.TEST_DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/postgres';

export function databaseUrl(name: string): string {
  const url = new URL(TEST_POSTGRES_URL);
  url.pathname = `/${name}`;
  return url.toString();
}

declare module 'vitest' {
  export interface ProvidedContext {
    /** The migrated database every test file clones; one per vitest run. */
    templateDatabase: string;
    /** `host:port,...` of the private Redis Cluster (cluster project only; see test/cluster/global-setup.ts). */
    redisClusterNodes?: string;
    /** PgBouncer in front of TEST_POSTGRES_URL, same user and path (pgbouncer projects only; see test/pgbouncer/global-setup.ts). */
    pgbouncerUrl?: string;
  }
}
