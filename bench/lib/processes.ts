import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, mkdirSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { poll, REPO_ROOT } from './util.js';

/** A process the bench started; its output goes to `logFile`, the last lines are kept for errors. */
export interface Child {
  name: string;
  pid: number;
  process: ChildProcess;
  logFile: string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  readonly alive: boolean;
  /** The last few kilobytes of output. */
  tail(): string;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. */
  stop(graceMs?: number): Promise<void>;
}

const running = new Set<Child>();

// Last resort when the bench itself dies: no child outlives it.
process.on('exit', () => {
  for (const child of running) if (child.alive) child.process.kill('SIGKILL');
});

const TAIL_BYTES = 6_000;

function track(name: string, child: ChildProcess, logDir: string): Child {
  if (child.pid === undefined) throw new Error(`${name} could not be started`);
  mkdirSync(logDir, { recursive: true });
  const logFile = path.join(logDir, `${name}.log`);
  const log = createWriteStream(logFile, { flags: 'a' });
  let tail = '';
  const keep = (chunk: Buffer) => {
    log.write(chunk);
    tail = (tail + chunk.toString('utf8')).slice(-TAIL_BYTES);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  let alive = true;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      alive = false;
      running.delete(handle);
      log.end();
      resolve({ code, signal });
    });
  });
  const handle: Child = {
    name,
    pid: child.pid,
    process: child,
    logFile,
    exited,
    get alive() {
      return alive;
    },
    tail: () => tail,
    async stop(graceMs = 10_000) {
      if (!alive) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
  running.add(handle);
  return handle;
}

/**
 * Runs an entry point from the repository root, with PATH and HOME plus exactly the variables
 * given (nothing else leaks in): a TypeScript one through tsx (`node --import tsx <entry>`), a
 * compiled one (`.js`, from dist/) as production does (`node --enable-source-maps <entry>`); tsx
 * turns source maps on too, so both kinds pay for them alike. With `ipc`, the child can
 * `process.send` to the bench. BENCH_NODE_FLAGS adds node flags to every child, e.g.
 * `--cpu-prof --cpu-prof-dir=/tmp/prof` to profile a workload.
 */
export function spawnNode(name: string, entry: string, env: Record<string, string>, options: { logDir: string; ipc?: boolean }): Child {
  const flags = process.env.BENCH_NODE_FLAGS?.split(' ').filter(Boolean) ?? [];
  const loader = entry.endsWith('.js') ? ['--enable-source-maps'] : ['--import', 'tsx'];
  const child = spawn(process.execPath, [...flags, ...loader, entry], {
    cwd: REPO_ROOT,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp', ...env },
    stdio: options.ipc ? ['ignore', 'pipe', 'pipe', 'ipc'] : ['ignore', 'pipe', 'pipe'],
  });
  return track(name, child, options.logDir);
}

/** A private redis-server configured like the machine's (no persistence, noeviction). */
export async function spawnRedis(port: number, logDir: string): Promise<Child> {
  const child = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--maxmemory-policy', 'noeviction', '--dir', logDir],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const handle = track('redis', child, logDir);
  await poll(
    () => {
      if (!handle.alive) throw new Error(`redis-server exited:\n${handle.tail()}`);
      return /Ready to accept connections/.test(handle.tail());
    },
    { label: `redis-server on port ${port}`, timeoutMs: 10_000, intervalMs: 50 },
  );
  return handle;
}

/** Resolves once `child` sends `{type: 'ready'}` over IPC; fails if it exits first. */
export async function waitForReadyMessage(child: Child, timeoutMs = 60_000): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${child.name} not ready after ${timeoutMs} ms:\n${child.tail()}`)), timeoutMs);
    const onMessage = (message: { type?: string }) => {
      if (message?.type !== 'ready') return;
      clearTimeout(timer);
      child.process.off('message', onMessage);
      resolve();
    };
    child.process.on('message', onMessage);
    void child.exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`${child.name} exited (${code ?? signal}) before it was ready:\n${child.tail()}`));
    });
  });
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}
