import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import type { Redis } from 'ioredis';
import pg from 'pg';
import { poll } from './util.js';

/** Clock ticks per second of /proc/<pid>/stat's utime and stime. */
const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** utime + stime of a process (all its threads), in seconds; undefined once it is gone. */
export function cpuSeconds(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name may hold spaces and parentheses: fields are counted after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // Fields 14 and 15 of the line are utime and stime; the slice starts at field 3.
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
  } catch {
    return undefined;
  }
}

/** Calls per command since the server started (`INFO commandstats`), e.g. evalsha → 12345. */
export async function redisCommandCalls(redis: Redis): Promise<Map<string, number>> {
  const text = await redis.info('commandstats');
  const calls = new Map<string, number>();
  for (const line of text.split('\n')) {
    const match = /^cmdstat_([^:]+):calls=(\d+)/.exec(line.trim());
    if (match) calls.set(match[1]!, Number(match[2]));
  }
  return calls;
}

export async function redisServerInfo(redis: Redis): Promise<{ pid: number; version: string }> {
  const text = await redis.info('server');
  const field = (name: string) => new RegExp(`^${name}:(.*)$`, 'm').exec(text)?.[1]?.trim() ?? '';
  return { pid: Number(field('process_id')), version: field('redis_version') };
}

/** Redis commands that run Lua scripts (BullMQ's work happens in them). */
export const LUA_COMMANDS = ['evalsha', 'eval', 'evalsha_ro', 'eval_ro', 'fcall', 'fcall_ro'];

/**
 * Statistics of one PostgreSQL database, read from the maintenance database so that reading
 * them adds no transaction to the database measured.
 *
 * PostgreSQL 15 publishes a backend's counters to pg_stat_database late: a busy backend flushes
 * them at most once a second, and on this server an idle one may not flush them at all until it
 * exits (seen here: counts stuck for 30 s). `flush` therefore ends the database's idle client
 * connections (their pools reconnect on the next query; each new connection costs one
 * transaction, which `newConnectionsSince` lets the caller subtract). LISTEN connections are
 * left alone: a queue that relies on LISTEN/NOTIFY would otherwise fall back to polling.
 */
export class PgAdmin {
  private readonly client: pg.Client;
  private connected?: Promise<void>;

  constructor(serverUrl: string) {
    const url = new URL(serverUrl);
    url.pathname = '/postgres';
    this.client = new pg.Client({ connectionString: url.toString() });
    this.client.on('error', () => undefined);
  }

  async query<T extends pg.QueryResultRow>(text: string, values: unknown[] = []): Promise<T[]> {
    this.connected ??= this.client.connect().then(() => undefined);
    await this.connected;
    return (await this.client.query<T>(text, values)).rows;
  }

  async version(): Promise<string> {
    const [row] = await this.query<{ server_version: string }>('SHOW server_version');
    return row?.server_version ?? 'unknown';
  }

  async createDatabase(name: string): Promise<void> {
    await this.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}`);
  }

  async dropDatabase(name: string): Promise<void> {
    await this.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(name)} WITH (FORCE)`);
  }

  /** PostgreSQL's clock, for comparing with backend_start. */
  async now(): Promise<Date> {
    const [row] = await this.query<{ now: Date }>('SELECT clock_timestamp() AS now');
    return row!.now;
  }

  async flush(database: string): Promise<void> {
    const idle = `datname = $1 AND backend_type = 'client backend' AND state = 'idle' AND query NOT ILIKE 'listen%'`;
    const rows = await this.query<{ pid: number }>(`SELECT pid FROM pg_stat_activity WHERE ${idle}`, [database]);
    if (rows.length === 0) return;
    const pids = rows.map((row) => row.pid);
    await this.query('SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid', [pids]);
    await poll(
      async () => {
        const [left] = await this.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = ANY($1::int[])', [pids]);
        return left?.n === 0;
      },
      { label: `connections of ${database} to close`, timeoutMs: 10_000, intervalMs: 20 },
    );
  }

  /** Committed plus rolled-back transactions of the database, as published so far. */
  async transactions(database: string): Promise<number> {
    const [row] = await this.query<{ n: string }>('SELECT (xact_commit + xact_rollback)::text AS n FROM pg_stat_database WHERE datname = $1', [database]);
    return Number(row?.n ?? 0);
  }

  /** Client connections to the database opened after `since` and still open. */
  async newConnectionsSince(database: string, since: Date): Promise<number> {
    const [row] = await this.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend' AND backend_start > $2`,
      [database, since],
    );
    return row?.n ?? 0;
  }

  /** Process ids of the database's client backends (for their CPU time). */
  async backendPids(database: string): Promise<number[]> {
    const rows = await this.query<{ pid: number }>(`SELECT pid FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend'`, [database]);
    return rows.map((row) => row.pid);
  }

  async close(): Promise<void> {
    if (this.connected !== undefined) await this.client.end().catch(() => undefined);
  }
}

/**
 * A connection of the bench itself to a measured database. It counts the transactions it causes
 * (one per connection, one per statement) so they can be taken out of the workload's count, and
 * it is closed before the counters are read, so that its own counters are published.
 */
export class CountingClient {
  private client?: pg.Client;
  private connecting?: Promise<pg.Client>;
  /** Transactions this client caused so far. */
  transactions = 0;

  constructor(private readonly url: string) {}

  async query<T extends pg.QueryResultRow>(text: string, values: unknown[] = []): Promise<T[]> {
    this.connecting ??= (async () => {
      const client = new pg.Client({ connectionString: this.url });
      client.on('error', () => undefined);
      await client.connect();
      this.transactions += 1;
      this.client = client;
      return client;
    })();
    const client = await this.connecting;
    this.transactions += 1;
    return (await client.query<T>(text, values)).rows;
  }

  async close(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    this.connecting = undefined;
    if (client) await client.end().catch(() => undefined);
  }
}

export interface MachineInfo {
  cpu: string;
  cores: number;
  memoryGiB: number;
  kernel: string;
  loadAverage: number[];
}

export function machineInfo(): MachineInfo {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  const meminfo = readFileSync('/proc/meminfo', 'utf8');
  const memKb = Number(/^MemTotal:\s+(\d+)/m.exec(meminfo)?.[1] ?? 0);
  return {
    cpu: /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1]?.trim() ?? os.cpus()[0]?.model ?? 'unknown',
    cores: (cpuinfo.match(/^processor\s*:/gm) ?? []).length || os.cpus().length,
    memoryGiB: Math.round((memKb / 1024 / 1024) * 10) / 10,
    kernel: os.release(),
    loadAverage: os.loadavg().map((value) => Math.round(value * 100) / 100),
  };
}

/** The repository's commit, with "+dirty" when the work tree has changes (others may be editing). */
export function gitRevision(cwd: string): string {
  try {
    const commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd, encoding: 'utf8' }).trim() !== '';
    return dirty ? `${commit}+dirty` : commit;
  } catch {
    return 'unknown';
  }
}

/** Version of an installed package, from its package.json. */
export function packageVersion(name: string, cwd: string): string {
  try {
    return (JSON.parse(readFileSync(`${cwd}/node_modules/${name}/package.json`, 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}
