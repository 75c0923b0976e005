import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { poll } from './harness.js';
import { freePort } from './ports.js';

const run = promisify(execFile);
const HOST = '127.0.0.1';

/**
 * The command line of a private redis-server in the foreground on 127.0.0.1: its files in `dir`,
 * no RDB snapshots, and noeviction as BullMQ needs; `extra` adds persistence or cluster flags.
 */
export function redisServerArgs(port: number, dir: string, logfile: string, extra: string[]): string[] {
  return [
    '--port',
    String(port),
    '--bind',
    HOST,
    ...extra,
    '--dir',
    dir,
    '--logfile',
    logfile,
    '--save',
    '',
    '--maxmemory-policy',
    'noeviction',
    '--daemonize',
    'no',
  ];
}

/**
 * A private redis-server for one test file, on a free port of 127.0.0.1, with its data in a
 * temporary directory: AOF on and fsynced on every write, no RDB snapshots, so a restart
 * (stop, then start on the same directory) keeps every acknowledged write.
 */
export interface RedisServer {
  port: number;
  url: string;
  dir: string;
  /** Whether the server process is running. */
  readonly running: boolean;
  /** Times the server was started. */
  readonly starts: number;
  /** Starts the server (again) on the same port and directory; resolves once it answers PING. */
  start(): Promise<void>;
  /** `SHUTDOWN NOSAVE` (the AOF is already on disk), or a signal; resolves once the process exited. */
  stop(how?: 'shutdown' | NodeJS.Signals): Promise<void>;
  /** Stops the server if it runs and removes its directory; safe to call twice. */
  close(): Promise<void>;
}

export async function startRedisServer(): Promise<RedisServer> {
  const port = await freePort();
  const dir = await mkdtemp(path.join(tmpdir(), 'orchestrator-redis-'));
  const logfile = path.join(dir, 'redis.log');
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  let starts = 0;
  // If the test process dies without its afterAll, do not leave the server running.
  const killOnExit = () => child?.kill('SIGKILL');
  process.once('exit', killOnExit);

  const alive = () => child !== undefined && child.exitCode === null && child.signalCode === null;
  const cli = async (...args: string[]) => (await run('redis-cli', ['-h', HOST, '-p', String(port), ...args], { timeout: 5_000 })).stdout.trim();

  const server: RedisServer = {
    port,
    url: `redis://${HOST}:${port}`,
    dir,
    get running() {
      return alive();
    },
    get starts() {
      return starts;
    },
    async start() {
      if (alive()) return;
      // "--save ''": no RDB snapshots; the AOF alone carries the data across a restart.
      const spawned = spawn('redis-server', redisServerArgs(port, dir, logfile, ['--appendonly', 'yes', '--appendfsync', 'always']), { stdio: 'ignore' });
      child = spawned;
      exited = new Promise<void>((resolve) => spawned.once('exit', () => resolve()));
      starts += 1;
      await poll(
        async () => {
          if (spawned.exitCode !== null) {
            throw new Error(`redis-server on port ${port} exited (${spawned.exitCode}):\n${await readFile(logfile, 'utf8').catch(() => '')}`);
          }
          // Loading the AOF answers -LOADING until done.
          return (await cli('PING')) === 'PONG';
        },
        { label: `the private redis-server on port ${port} to answer PING`, timeoutMs: 20_000, intervalMs: 50 },
      );
    },
    async stop(how = 'shutdown') {
      if (!alive()) return;
      if (how === 'shutdown') await cli('SHUTDOWN', 'NOSAVE').catch(() => child?.kill('SIGTERM'));
      else child!.kill(how);
      await exited;
    },
    async close() {
      process.off('exit', killOnExit);
      if (alive()) {
        child!.kill('SIGKILL');
        await exited;
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
  await server.start();
  return server;
}
