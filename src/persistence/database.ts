import { PrismaPg } from '@prisma/adapter-pg';
import pg from 'pg';
import { PrismaClient } from '../generated/prisma/client.js';
import type { Logger } from '../logger.js';

export type Prisma = PrismaClient;

export interface Database {
  prisma: PrismaClient;
  /** The pool under Prisma, for the health check. */
  pool: pg.Pool;
  close(): Promise<void>;
}

/**
 * Opens the connection pool. Connecting gives up after two seconds so that an API request
 * answers 503 promptly when PostgreSQL is down instead of hanging.
 */
export function openDatabase(url: string, poolSize: number, logger: Logger): Database {
  const pool = new pg.Pool({
    connectionString: url,
    max: poolSize,
    connectionTimeoutMillis: 2_000,
    idleTimeoutMillis: 30_000,
    keepAlive: true,
  });
  // An idle client losing its connection emits 'error' on the pool; without a listener Node exits.
  pool.on('error', (error) => logger.warn('postgres connection lost', { error: error.message }));
  // A client handed out by the pool has no listener of its own: a backend terminated between
  // two reads (pg_terminate_backend, a restart) would otherwise crash the process. The query in
  // flight still fails, and is retried by its caller.
  pool.on('connect', (client) => client.on('error', (error) => logger.warn('postgres connection lost', { error: error.message })));
  const prisma = new PrismaClient({ adapter: new PrismaPg(pool) });
  return {
    prisma,
    pool,
    async close() {
      await prisma.$disconnect();
      await pool.end();
    },
  };
}

/** Name of the database in a connection URL. */
export function databaseName(url: string): string {
  const name = decodeURIComponent(new URL(url).pathname.replace(/^\//, ''));
  if (!name) throw new Error('DATABASE_URL names no database');
  return name;
}

/** The same server, another database (the maintenance database `postgres` by default). */
export function withDatabase(url: string, name = 'postgres'): string {
  const next = new URL(url);
  next.pathname = `/${encodeURIComponent(name)}`;
  return next.toString();
}

/** Creates the database named in `url` when it does not exist yet. Safe to race. */
export async function ensureDatabase(url: string, template?: string): Promise<boolean> {
  const name = databaseName(url);
  const client = new pg.Client({ connectionString: withDatabase(url), connectionTimeoutMillis: 5_000 });
  await client.connect();
  try {
    const found = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    if (found.rowCount) return false;
    const from = template ? ` TEMPLATE ${pg.escapeIdentifier(template)}` : '';
    await client.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}${from}`);
    return true;
  } catch (error) {
    // Another process created it between our check and our CREATE: PostgreSQL answers either
    // "database exists" or a unique violation on pg_database, depending on timing.
    const code = (error as { code?: string }).code;
    if (code === '42P04' || code === '23505') return false;
    throw error;
  } finally {
    await client.end();
  }
}

export async function dropDatabase(url: string): Promise<void> {
  const client = new pg.Client({ connectionString: withDatabase(url) });
  await client.connect();
  try {
    await client.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(databaseName(url))} WITH (FORCE)`);
  } finally {
    await client.end();
  }
}
