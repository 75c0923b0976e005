import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/lib/logger.js';
import { type Database, openDatabase } from '../../src/persistence/database.js';
import { isTransientDatabaseError } from '../../src/persistence/retry.js';
import { TEST_POSTGRES_URL } from '../helpers/env.js';
import { poll } from '../helpers/harness.js';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js';

/**
 * The errors a lost PostgreSQL connection really produces, through Prisma's driver adapter and
 * node-postgres, must read as transient: a write that meets one is retried or postponed, never
 * counted as the step's failure. (Prisma wraps a raw query's lost connection as P2010 "Raw query
 * failed ... Server has closed the connection", which was once taken for a permanent error.)
 */
describe('lost connections are transient database errors', () => {
  let proxy: TcpProxy;
  let db: Database;
  beforeAll(async () => {
    proxy = await startTcpProxy({ port: Number(new URL(TEST_POSTGRES_URL).port || 5432) });
    const url = new URL(TEST_POSTGRES_URL);
    url.port = String(proxy.port);
    db = openDatabase(url.toString(), 2, silentLogger());
    await db.prisma.$queryRawUnsafe('SELECT 1');
  });
  afterAll(async () => {
    proxy.resume();
    await db.close().catch(() => undefined);
    await proxy.close();
  });

  async function failure(work: () => Promise<unknown>): Promise<unknown> {
    try {
      await work();
    } catch (error) {
      return error;
    }
    throw new Error('expected the call to fail');
  }

  it('classifies what a raw query, a transaction and a pool query throw when the connection is cut or refused', async () => {
    // Cut mid-query, then every connection refused: the errors of each kind of call.
    const running = failure(() => db.prisma.$queryRawUnsafe('SELECT pg_sleep(2)'));
    await poll(() => proxy.accepted > 0, { label: 'a connection through the proxy' });
    proxy.pause();
    const errors = [
      await running,
      await failure(() => db.prisma.$queryRawUnsafe('SELECT 1')),
      await failure(() => db.prisma.$transaction(async (tx) => tx.$queryRawUnsafe('SELECT 1'))),
      await failure(() => db.prisma.$executeRawUnsafe('SELECT 1')),
      await failure(() => db.pool.query('SELECT 1')),
    ];
    for (const error of errors) expect(isTransientDatabaseError(error), (error as Error).message).toBe(true);
    // Among them the wrapper that was missed: a raw query's P2010 quoting the closed connection.
    expect(errors.some((error) => (error as { code?: string }).code === 'P2010')).toBe(true);
    proxy.resume();
  });

  it('does not take a query error for a lost connection', async () => {
    proxy.resume();
    const error = await failure(() => db.prisma.$queryRawUnsafe('SELECT * FROM no_such_table'));
    expect(isTransientDatabaseError(error)).toBe(false);
    const syntax = await failure(() => db.pool.query('SELEC 1'));
    expect(isTransientDatabaseError(syntax)).toBe(false);
  });
});
