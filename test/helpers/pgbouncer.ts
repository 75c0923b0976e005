import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { freePort } from './ports.js';

/**
 * Server connections per database and user: fewer than a test's API and workers open as clients
 * (each process batches its statements, so it rarely holds more than one or two), so their
 * transactions take turns on shared server connections, which is what breaks session state.
 */
export const PGBOUNCER_POOL_SIZE = 2;
/** How long a query waits for a server connection before PgBouncer fails it (README's value). */
export const PGBOUNCER_QUERY_WAIT_TIMEOUT_S = 2;

/**
 * A private PgBouncer (Debian's `pgbouncer`) in transaction pooling mode, on a free port of
 * 127.0.0.1, in front of a PostgreSQL; its files in a temporary directory. Every database name
 * routes to the same name on that PostgreSQL (`* =`), so each test file's own database works.
 */
export interface PgBouncer {
  port: number;
  /** `url` with PgBouncer's host and port instead of PostgreSQL's. */
  through(url: string): string;
  close(): Promise<void>;
}

/**
 * A command on the admin console of the PgBouncer that `url` (any database) names: `SHOW STATS`,
 * `SHOW POOLS`... The console speaks the simple query protocol only: no parameters.
 */
export async function pgbouncerAdmin<T extends pg.QueryResultRow = Record<string, unknown>>(url: string, command: string): Promise<T[]> {
  const admin = new URL(url);
  admin.pathname = '/pgbouncer';
  const client = new pg.Client({ connectionString: admin.toString(), connectionTimeoutMillis: 2_000 });
  await client.connect();
  try {
    return (await client.query<T>(command)).rows;
  } finally {
    await client.end();
  }
}

export interface PgBouncerOptions {
  /** PostgreSQL, as a URL whose user PgBouncer lets in (trust: no password is checked). */
  postgresUrl: string;
  /** Where PgBouncer connects instead of the URL's port (a proxy in front of PostgreSQL). */
  serverPort?: number;
}

export async function startPgBouncer(options: PgBouncerOptions): Promise<PgBouncer> {
  const postgres = new URL(options.postgresUrl);
  const user = decodeURIComponent(postgres.username || 'postgres');
  const port = await freePort();
  const dir = await mkdtemp(path.join(tmpdir(), 'orchestrator-pgbouncer-'));
  const settings: Record<string, string | number> = {
    listen_addr: '127.0.0.1',
    listen_port: port,
    // TCP only: no socket file in a directory the unprivileged user below could not write.
    unix_socket_dir: '',
    pool_mode: 'transaction',
    default_pool_size: PGBOUNCER_POOL_SIZE,
    max_client_conn: 1_000,
    // PostgreSQL runs with trust here; PgBouncer still wants the user listed in auth_file.
    auth_type: 'trust',
    auth_file: path.join(dir, 'userlist.txt'),
    admin_users: user,
    // docs/operations.md "Deploying behind PgBouncer" recommends these: with the defaults (120 s, 15 s) a query
    // waits two minutes for a PostgreSQL that cannot be reached, then every query fails for 15 s
    // after it is back.
    query_wait_timeout: PGBOUNCER_QUERY_WAIT_TIMEOUT_S,
    server_login_retry: 1,
    log_connections: 0,
    log_disconnections: 0,
  };
  const ini = [
    '[databases]',
    `* = host=${postgres.hostname} port=${options.serverPort ?? (postgres.port || 5432)}`,
    '[pgbouncer]',
    ...Object.entries(settings).map(([key, value]) => `${key} = ${value}`),
    '',
  ].join('\n');
  await writeFile(path.join(dir, 'userlist.txt'), `"${user}" ""\n`);
  await writeFile(path.join(dir, 'pgbouncer.ini'), ini);

  // PgBouncer refuses to run as root; -u makes it drop to another user once its files are read
  // (it logs to stderr, which this process holds, so it needs to write nothing in the directory).
  const asRoot = process.getuid?.() === 0 ? ['-u', 'nobody'] : [];
  const child = spawn('pgbouncer', [...asRoot, path.join(dir, 'pgbouncer.ini')], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const collect = (chunk: Buffer) => (output = (output + chunk.toString()).slice(-20_000));
  child.stdout.on('data', collect);
  child.stderr.on('data', collect);
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  let spawnError: Error | undefined;
  child.once('error', (error) => (spawnError = error));
  // If vitest dies without running teardown, do not leave PgBouncer running.
  const kill = () => child.kill('SIGKILL');
  process.once('exit', kill);

  const through = (url: string) => {
    const next = new URL(url);
    next.hostname = '127.0.0.1';
    next.port = String(port);
    return next.toString();
  };
  const close = async () => {
    process.off('exit', kill);
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await exited;
    await rm(dir, { recursive: true, force: true });
  };

  // Not harness.poll: the global setup that calls this should not load the whole service.
  for (const deadline = Date.now() + 10_000; ; ) {
    try {
      await pgbouncerAdmin(through(options.postgresUrl), 'SHOW VERSION');
      break;
    } catch (error) {
      const died = spawnError || child.exitCode !== null;
      if (died || Date.now() > deadline) {
        await close();
        const why = died
          ? `it did not start (${spawnError?.message ?? `exit ${child.exitCode}`}); is Debian's pgbouncer installed (apt-get install pgbouncer) and /usr/sbin on PATH?`
          : (error as Error).message;
        throw new Error(`pgbouncer on port ${port}: ${why}\n${output}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  return {
    port,
    through,
    close,
  };
}
