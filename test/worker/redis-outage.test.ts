import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type NodeProcess, runEntry } from '../helpers/child-process.js';
import { createHarness, type Harness, poll } from '../helpers/harness.js';
import { type RedisServer, startRedisServer } from '../helpers/redis-server.js';

/**
 * Redis going away under running processes, on a private redis-server the test stops: each
 * process (`npm start`'s API and worker) says so once and once when it is back, not at every
 * reconnect attempt of every queue (660 lines a minute before); and a worker told to stop exits
 * within WORKER_SHUTDOWN_TIMEOUT_MS whatever Redis does (it ran on for ten minutes before).
 */

interface Line {
  level: string;
  message: string;
  pid: number;
  process: string;
  timestamp: string;
  down_ms?: number;
  drained?: boolean;
}

/** Long enough for several reconnect attempts on each connection (one every 2 s at most; the old code logged each, once a second). */
const WINDOW_MS = 8_000;
const SHUTDOWN_TIMEOUT_MS = 4_000;

const parse = (output: string): Line[] =>
  output
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as Line);

describe('a Redis outage under running processes', () => {
  let h: Harness;
  let redis: RedisServer;
  const children: NodeProcess[] = [];

  beforeAll(async () => {
    // The database and prefix only: the processes under test are children.
    h = await createHarness({ api: false, worker: false });
    redis = await startRedisServer();
  });
  afterEach(async () => {
    for (const child of children.splice(0)) await child.kill();
    await redis.start();
  });
  afterAll(async () => {
    await h?.close();
    await redis?.close();
  });

  function start(entry: string, env: Record<string, string> = {}): NodeProcess {
    // No partition maintenance: a worker's first pass, just after it starts, says "partitions
    // maintained" when it makes a day the database lacks (a run across midnight UTC: the cloned
    // template's days end a day early), a line of its own in the window these tests read whole.
    const quiet = { RETENTION_INTERVAL_MS: '0' };
    const child = runEntry(entry, { ...h.env, REDIS_URL: redis.url, LOG_FORMAT: 'json', LOG_LEVEL: 'info', ...quiet, ...env });
    children.push(child);
    return child;
  }

  /** Waits out the window after the outage was noticed, then returns the lines logged since `from` (an output length). */
  async function linesOver(child: NodeProcess, from: number, windowMs: number): Promise<Line[]> {
    const since = Date.now();
    await poll(() => Date.now() - since >= windowMs, { label: 'the window to pass', timeoutMs: windowMs + 5_000, intervalMs: 250 });
    return parse(child.output.slice(from));
  }

  it('npm start: the API and the worker each say it once, nothing else meanwhile, and once when Redis is back', async () => {
    const started = start('src/main.ts', { PORT: '0' });
    await started.waitForOutput(/"message":"API listening"/, 120_000);
    await started.waitForOutput(/"message":"worker started"/, 120_000);
    const pids = (name: string) =>
      new Set(
        parse(started.output)
          .filter((line) => line.process === name)
          .map((line) => line.pid),
      );
    const [api] = [...pids('api')];
    const [worker] = [...pids('worker')];
    expect(api).toBeDefined();
    expect(worker).toBeDefined();
    const before = started.output.length;

    await redis.stop();
    const during = await linesOver(started, before, WINDOW_MS);
    expect(during.map((line) => `${line.process} ${line.level} ${line.message}`).sort()).toEqual([
      'api warn Redis unreachable: retrying; said again once a minute while it lasts',
      'worker warn Redis unreachable: retrying; said again once a minute while it lasts',
    ]);
    expect(new Set(during.map((line) => line.pid))).toEqual(new Set([api, worker]));

    const outageEnded = started.output.length;
    await redis.start();
    const back = () => parse(started.output.slice(outageEnded)).filter((line) => line.message === 'Redis reachable again');
    await poll(() => back().length === 2, { label: 'both processes to say Redis is back', timeoutMs: 30_000 });
    expect(
      back()
        .map((line) => line.process)
        .sort(),
    ).toEqual(['api', 'worker']);
    for (const line of back()) expect(line.down_ms).toBeGreaterThanOrEqual(WINDOW_MS);
    expect(parse(started.output.slice(outageEnded)).filter((line) => line.level === 'warn' || line.level === 'error')).toEqual([]);

    expect((await started.signal('SIGTERM')).code).toBe(0);
  }, 240_000);

  it(`a worker told to stop while Redis is away exits within WORKER_SHUTDOWN_TIMEOUT_MS (${SHUTDOWN_TIMEOUT_MS} ms)`, async () => {
    // The reconciler's pass every half second: one is waiting on Redis when the signal comes.
    const worker = start('workers/main.ts', { WORKER_SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS), RECONCILE_INTERVAL_MS: '500' });
    await worker.waitForOutput(/"message":"worker started"/, 120_000);
    const before = worker.output.length;
    await redis.stop();
    const during = await linesOver(worker, before, WINDOW_MS);

    const signalled = Date.now();
    worker.child.kill('SIGTERM');
    const exit = await worker.waitForExit(60_000);
    const lines = parse(worker.output.slice(before));
    const at = (message: string) => Date.parse(lines.find((line) => line.message === message)!.timestamp);
    expect(exit.code).toBe(0);
    expect(lines.find((line) => line.message === 'worker stopped')).toMatchObject({ drained: false });
    // Measured in the process (its own log lines), and from here (spawning and exiting a process take a while on a busy machine).
    expect(at('worker stopped') - at('shutting down')).toBeLessThan(SHUTDOWN_TIMEOUT_MS + 1_000);
    expect(exit.at - signalled).toBeLessThan(SHUTDOWN_TIMEOUT_MS + 4_000);
    // And the outage was said once.
    expect(during.map((line) => line.message)).toEqual(['Redis unreachable: retrying; said again once a minute while it lasts']);
  }, 240_000);

  it('a worker that started while Redis was away exits on SIGTERM once the bound and its grace have passed', async () => {
    await redis.stop();
    const worker = start('workers/main.ts', { WORKER_SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS) });
    // Start-up is waiting for Redis (and has said so).
    await worker.waitForOutput(/"message":"Redis unreachable|ECONNREFUSED/, 120_000);
    const signalled = Date.now();
    worker.child.kill('SIGTERM');
    const exit = await worker.waitForExit(60_000);
    expect(exit.code).toBe(1);
    expect(worker.output).toMatch(/shutdown did not end within 9000 ms: exiting now/);
    expect(exit.at - signalled).toBeLessThan(SHUTDOWN_TIMEOUT_MS + 5_000 + 4_000);
    // Said once, however long it waited.
    expect(worker.output.match(/Redis unreachable/g)).toHaveLength(1);
  }, 240_000);
});
