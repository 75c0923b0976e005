import type { TestProject } from 'vitest/node';
import { TEST_POSTGRES_URL } from '../helpers/env.js';
import { startPgBouncer } from '../helpers/pgbouncer.js';

/**
 * Starts a private PgBouncer in transaction mode in front of the test PostgreSQL and provides
 * its address as `pgbouncerUrl`: the harness then gives the service DATABASE_URL through it and
 * DATABASE_DIRECT_URL to PostgreSQL itself (test/helpers/harness.ts). Teardown stops it.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const pgbouncer = await startPgBouncer({ postgresUrl: TEST_POSTGRES_URL });
  project.provide('pgbouncerUrl', pgbouncer.through(TEST_POSTGRES_URL));
  return () => pgbouncer.close();
}
