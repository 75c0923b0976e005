import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
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

/** What /proc/<pid>/stat says about a process's parent and CPU time, in seconds. */
interface ProcStat {
  ppid: number;
  /** utime + stime: the process itself, all its threads. */
  cpu: number;
  /** cutime + cstime: the children it has waited for (reaped), whole lifetimes. */
  reapedChildrenCpu: number;
}

function procStat(pid: number): ProcStat | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name may hold spaces and parentheses: fields are counted after the last ')'.
    // The slice starts at field 3 (state): ppid is field 4, utime..cstime are fields 14-17.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return {
      ppid: Number(fields[1]),
      cpu: (Number(fields[11]) + Number(fields[12])) / CLK_TCK,
      reapedChildrenCpu: (Number(fields[13]) + Number(fields[14])) / CLK_TCK,
    };
  } catch {
    return undefined;
  }
}

/** utime + stime of a process (all its threads), in seconds; undefined once it is gone. */
export function cpuSeconds(pid: number): number | undefined {
  return procStat(pid)?.cpu;
}

/** The parent of a process, from /proc (undefined once it is gone). */
export function parentPid(pid: number): number | undefined {
  return procStat(pid)?.ppid;
}

/** CPU of a PostgreSQL server, every process of it, at one moment. */
export interface ClusterCpu {
  /** Everything: the postmaster, its live children, and the children it has reaped. */
  total: number;
  /** Live processes read (the postmaster included). */
  processes: number;
}

/**
 * Every process of a PostgreSQL server: the postmaster and all its children (client backends of
 * every database, checkpointer, background writer, WAL writer, autovacuum launcher and workers,
 * parallel workers, the logical replication launcher; PostgreSQL 15 has no stats collector
 * process any more). A child that exits is reaped by the postmaster, and the kernel adds its whole
 * CPU time to the postmaster's cutime + cstime: so the postmaster's own time + its children's +
 * its reaped children's only grows, and its difference between two readings counts backends that
 * came and went in between, whole. A child reaped while the children are being read could be
 * counted twice or not at all: the postmaster is read before and after, and the reading is
 * repeated when its reaped time moved.
 */
export class PostgresCluster {
  constructor(readonly postmasterPid: number) {}

  /**
   * The postmaster is the parent of any backend: that of the bench's admin connection. Undefined
   * when PostgreSQL runs where this machine's /proc cannot see it (another host, a container).
   */
  static async find(admin: PgAdmin): Promise<PostgresCluster | undefined> {
    const backend = await admin.backendPid();
    const postmaster = parentPid(backend);
    if (postmaster === undefined || postmaster <= 1) return undefined;
    let name = '';
    try {
      name = readFileSync(`/proc/${postmaster}/comm`, 'utf8').trim();
    } catch {
      return undefined;
    }
    return /postgres|postmaster/.test(name) ? new PostgresCluster(postmaster) : undefined;
  }

  cpu(): ClusterCpu {
    for (let attempt = 0; ; attempt += 1) {
      const before = procStat(this.postmasterPid);
      if (!before) throw new Error(`the PostgreSQL postmaster (pid ${this.postmasterPid}) is gone`);
      let children = 0;
      let processes = 1;
      for (const entry of readdirSync('/proc')) {
        if (!/^\d+$/.test(entry)) continue;
        const stat = procStat(Number(entry));
        if (stat?.ppid !== this.postmasterPid) continue;
        children += stat.cpu;
        processes += 1;
      }
      const after = procStat(this.postmasterPid);
      if (!after) throw new Error(`the PostgreSQL postmaster (pid ${this.postmasterPid}) is gone`);
      if (after.reapedChildrenCpu === before.reapedChildrenCpu || attempt >= 4) {
        return { total: after.cpu + children + after.reapedChildrenCpu, processes };
      }
    }
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

/**
 * Reads Redis has processed since it started (`INFO stats` total_reads_processed, Redis 7+): one
 * per request or pipeline a client sends, so the round trips clients make, idle or not.
 */
export async function redisReads(redis: Redis): Promise<number> {
  return Number(/^total_reads_processed:(\d+)/m.exec(await redis.info('stats'))?.[1] ?? 0);
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
  private pid?: number;

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

  /** The server process of this admin connection. */
  async backendPid(): Promise<number> {
    this.pid ??= (await this.query<{ pid: number }>('SELECT pg_backend_pid() AS pid'))[0]!.pid;
    return this.pid;
  }

  /** CPU seconds its backend has spent so far (the bench's own queries, taken out of PostgreSQL's CPU). */
  async ownCpuSeconds(): Promise<number> {
    return cpuSeconds(await this.backendPid()) ?? 0;
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
  private backend?: number;
  /** Transactions this client caused so far. */
  transactions = 0;
  /**
   * CPU seconds its closed connections' backends spent (read just before each close): the bench's
   * own queries, which are taken out of PostgreSQL's CPU. It is closed before costs are read.
   */
  closedBackendCpuS = 0;

  constructor(private readonly url: string) {}

  async query<T extends pg.QueryResultRow>(text: string, values: unknown[] = []): Promise<T[]> {
    this.connecting ??= (async () => {
      const client = new pg.Client({ connectionString: this.url });
      client.on('error', () => undefined);
      await client.connect();
      // The connection's start-up, and the statement that asks for its server process.
      this.transactions += 2;
      this.backend = (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
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
    if (this.backend !== undefined) this.closedBackendCpuS += cpuSeconds(this.backend) ?? 0;
    this.backend = undefined;
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
