import { PrismaPg } from '@prisma/adapter-pg';
import pg from 'pg';
import { PrismaClient } from '../generated/prisma/client.js';
import { poolSql, type Sql } from '../ledger/sql.js';
import type { Logger } from '../lib/logger.js';

export type Prisma = PrismaClient;

export interface Database {
  prisma: PrismaClient;
  /** The pool under Prisma, for the health check. */
  pool: pg.Pool;
  /** Plain SQL on that pool: the ledger's statements (src/ledger/sql.ts says why not Prisma). */
  sql: Sql;
  /** Whether new connections get through, as this process last saw it. */
  reachability: Reachability;
  close(): Promise<void>;
}

/** Connect failures that say the server cannot be reached now (as opposed to a slow connect). */
const UNREACHABLE =
  /ECONNREFUSED|ECONNRESET|ENOTFOUND|EHOSTUNREACH|ENETUNREACH|EAI_AGAIN|Connection terminated unexpectedly|the database system is (starting up|shutting down)/;

/** How often a process that could not connect to PostgreSQL tries again by itself. */
const PROBE_EVERY_MS = 250;

/**
 * Whether PostgreSQL can be reached, from this process's own attempts to open connections.
 * Once a connection is refused or reset, `reachable` is false until one gets through: callers that would
 * only wait for a connect timeout (an API request) answer at once instead, and a probe tries a
 * connection a few times a second meanwhile. A backend terminated on a live server does not
 * count: new connections still get through.
 */
export class Reachability {
  private down?: { since: number; error: string };
  private probe?: NodeJS.Timeout;
  private closed = false;

  constructor(
    private readonly tryConnect: () => Promise<void>,
    private readonly logger: Logger,
  ) {}

  get reachable(): boolean {
    return this.down === undefined;
  }

  connected(): void {
    if (!this.down) return;
    this.logger.info('PostgreSQL reachable again', { down_ms: Date.now() - this.down.since });
    this.down = undefined;
  }

  connectFailed(error: Error): void {
    // A slow connect (a busy server, a busy machine) is no outage: only a refused or reset one is.
    if (this.down || this.closed || !UNREACHABLE.test(`${(error as { code?: string }).code ?? ''} ${error.message}`)) return;
    this.down = { since: Date.now(), error: error.message };
    this.logger.warn('PostgreSQL unreachable: answering 503 until a connection gets through', { error: error.message });
    const again = () => {
      this.probe = setTimeout(() => {
        if (this.closed || !this.down) return;
        this.tryConnect().then(
          () => this.connected(),
          () => again(),
        );
      }, PROBE_EVERY_MS);
      this.probe.unref();
    };
    again();
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.probe);
  }
}

/**
 * Opens the connection pool. Connecting gives up after two seconds so that an API request
 * answers 503 promptly when PostgreSQL is down instead of hanging.
 */
export function openDatabase(url: string, poolSize: number, logger: Logger): Database {
  let reachability!: Reachability;
  // The pool's only view of connection attempts: every new connection goes through here.
  class WatchedClient extends pg.Client {}
  const connect = pg.Client.prototype.connect;
  WatchedClient.prototype.connect = function watchedConnect(this: pg.Client, callback?: (error: Error | null) => void) {
    const settle = (error?: Error | null) => (error ? reachability.connectFailed(error) : reachability.connected());
    if (callback) {
      return connect.call(this, (error: Error | null) => {
        settle(error);
        callback(error);
      });
    }
    return (connect as () => Promise<pg.Client>).call(this).then(
      (client: pg.Client) => {
        settle();
        return client;
      },
      (error: Error) => {
        settle(error);
        throw error;
      },
    );
  } as typeof connect;
  const pool = new pg.Pool({
    connectionString: url,
    max: poolSize,
    connectionTimeoutMillis: 2_000,
    idleTimeoutMillis: 30_000,
    keepAlive: true,
    Client: WatchedClient,
  });
  reachability = new Reachability(async () => {
    await pool.query('SELECT 1');
  }, logger);
  // An idle client losing its connection emits 'error' on the pool; without a listener Node exits.
  pool.on('error', (error) => logger.warn('postgres connection lost', { error: error.message }));
  // A client handed out by the pool has no listener of its own: a backend terminated between
  // two reads (pg_terminate_backend, a restart) would otherwise crash the process. The query in
  // flight still fails, and is retried by its caller.
  pool.on('connect', (client) => client.on('error', (error) => logger.warn('postgres connection lost', { error: error.message })));
  // No statementNameGenerator: named prepared statements outlive a transaction, which PgBouncer
  // in transaction mode does not allow before 1.21 (docs/operations.md "Deploying behind PgBouncer").
  const prisma = new PrismaClient({ adapter: new PrismaPg(pool) });
  return {
    prisma,
    pool,
    sql: poolSql(pool),
    reachability,
    async close() {
      reachability.close();
      await prisma.$disconnect();
      await pool.end();
    },
  };
}

/** Where a connection URL points: host and port (never the credentials), as PostgreSQL's clients default them. */
export function databaseAddress(url: string): string {
  const parsed = new URL(url);
  const host = decodeURIComponent(parsed.hostname) || parsed.searchParams.get('host') || 'localhost';
  return `${host}:${parsed.port || '5432'}`;
}

/**
 * An error of opening a connection, said with where PostgreSQL was looked for and the setting
 * that says so: "connect ECONNREFUSED 127.0.0.1:5439" alone names neither PostgreSQL nor what to
 * change. An error PostgreSQL answered (a SQLSTATE: a wrong password, a missing role) is told
 * apart from a server that was not reached.
 */
export function startupError(error: unknown, url: string, variable: string): Error {
  const message = error instanceof Error ? error.message : String(error);
  const password = decodeURIComponent(new URL(url).password);
  const said = password ? message.replaceAll(password, '***') : message;
  const answered = /^[0-9A-Z]{5}$/.test(String((error as { code?: unknown }).code ?? ''));
  const where = `PostgreSQL at ${databaseAddress(url)} (${variable})`;
  return new Error(answered ? `${where} refused: ${said}` : `cannot reach ${where}: ${said}`, { cause: error });
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
