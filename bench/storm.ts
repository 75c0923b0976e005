/**
 * W5 under a retry storm (issue 20, part 5), on `npm start`'s build: the supervisor
 * (dist/src/main.js) with its API and worker processes, a private redis-server and a scratch
 * database, two client keys.
 *
 * - max: wrk, 32 connections, closed loop: the completions per second the service reaches.
 * - W5 closed loop: wrk, 256 connections, closed loop, Retry-After ignored: completions in the
 *   window against max; every accepted task completes (nothing lost).
 * - W5 fair: the same storm from one key while another sends 50 tasks/s, open loop, never
 *   retrying: the polite key's accepted and completed share, and its latency (created to finished).
 * - refusal cost: an API process alone (no worker drains; ADMISSION_MAX_BACKLOG=1) refusing a
 *   wrk flood at its front door: its CPU time per refusal.
 *
 * npm run bench:storm -- [--seconds 30] [--connections 256] [--polite-rate 50] [--runs 1]
 * Needs wrk (apt-get install -y wrk), redis-server, PostgreSQL at postgresql://postgres@127.0.0.1:5432/.
 */
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { type Child, freePort, spawnNode, spawnRedis } from './lib/processes.js';
import { runStandalone } from './lib/standalone.js';
import { poll, REPO_ROOT, shortId, sleep } from './lib/util.js';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '30' },
    connections: { type: 'string', default: '256' },
    'max-connections': { type: 'string', default: '32' },
    'polite-rate': { type: 'string', default: '50' },
    runs: { type: 'string', default: '1' },
  },
});
const SECONDS = Number(values.seconds);
const CONNECTIONS = Number(values.connections);
const MAX_CONNECTIONS = Number(values['max-connections']);
const POLITE_RATE = Number(values['polite-rate']);
const RUNS = Number(values.runs);

const STORM_KEY = `storm-key-${shortId()}-0123456789abcdef`;
const POLITE_KEY = `polite-key-${shortId()}-0123456789abcdef`;
const ADMIN = 'postgresql://postgres@127.0.0.1:5432/postgres';
const TICKS_PER_S = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim() || 100);

/** CPU seconds a process has used (user + system), from /proc; with `children`, those of its children that ended and were waited for too (wrk). */
function cpuSeconds(pid: number | 'self', children = false): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12]) + (children ? Number(fields[13]) + Number(fields[14]) : 0)) / TICKS_PER_S;
}

function wrk(url: string, connections: number, seconds: number, key: string): Promise<{ requests: number; non2xx: number }> {
  return new Promise((resolve, reject) => {
    const proc = spawn('wrk', ['-t', '2', '-c', String(connections), '-d', `${seconds}s`, '-s', path.join(REPO_ROOT, 'bench/storm.lua'), url], {
      env: { ...process.env, STORM_KEY: key },
    });
    let out = '';
    proc.stdout.on('data', (chunk: Buffer) => (out += chunk.toString('utf8')));
    proc.stderr.on('data', (chunk: Buffer) => (out += chunk.toString('utf8')));
    proc.once('error', reject);
    proc.once('exit', (code) => {
      const match = /STORM requests=(\d+) non2xx=(\d+)/.exec(out);
      if (code !== 0 || !match) return reject(new Error(`wrk failed (${code}):\n${out}`));
      resolve({ requests: Number(match[1]), non2xx: Number(match[2]) });
    });
  });
}

/** Sends `rate` tasks a second for `seconds`, open loop, each answer awaited apart; never retries. */
async function polite(
  url: string,
  rate: number,
  seconds: number,
): Promise<{ sent: number; accepted: string[]; statuses: Record<string, number>; why: Record<string, string> }> {
  const accepted: string[] = [];
  const statuses: Record<string, number> = {};
  const why: Record<string, string> = {};
  const inFlight: Promise<void>[] = [];
  const start = performance.now();
  const total = Math.round(rate * seconds);
  for (let i = 0; i < total; i += 1) {
    const due = start + (i * 1000) / rate;
    const wait = due - performance.now();
    if (wait > 0) await sleep(wait);
    inFlight.push(
      fetch(`${url}/assign-task`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${POLITE_KEY}` },
        body: JSON.stringify({ task_type: 'echo', params: { polite: i } }),
      }).then(
        async (response) => {
          statuses[response.status] = (statuses[response.status] ?? 0) + 1;
          const body = (await response.json()) as { task_id?: string; error?: { message: string } };
          if (response.status === 202 && body.task_id) accepted.push(body.task_id);
          // The first refusal of each status says which check refused the polite key.
          else if (body.error) why[response.status] ??= body.error.message;
        },
        () => {
          statuses.error = (statuses.error ?? 0) + 1;
        },
      ),
    );
  }
  await Promise.all(inFlight);
  return { sent: total, accepted, statuses, why };
}

async function completedBetween(db: pg.Pool, from: number, to: number): Promise<number> {
  const { rows } = await db.query<{ n: string }>(
    `SELECT count(*) AS n FROM tasks WHERE status = 'completed' AND finished_at >= to_timestamp($1) AND finished_at < to_timestamp($2)`,
    [from / 1000, to / 1000],
  );
  return Number(rows[0]!.n);
}

/** Waits until no task is queued or running; the tasks not completed then (lost or failed). */
async function settle(db: pg.Pool, timeoutMs = 300_000): Promise<{ notCompleted: number; total: number }> {
  await poll(
    async () => {
      const { rows } = await db.query<{ n: string }>(`SELECT count(*) AS n FROM tasks WHERE status IN ('queued', 'running')`);
      return Number(rows[0]!.n) === 0;
    },
    { label: 'every accepted task to end', timeoutMs, intervalMs: 500 },
  );
  const { rows } = await db.query<{ not_completed: string; total: string }>(
    `SELECT count(*) FILTER (WHERE status <> 'completed') AS not_completed, count(*) AS total FROM tasks`,
  );
  return { notCompleted: Number(rows[0]!.not_completed), total: Number(rows[0]!.total) };
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

async function oneRun(run: number, logDir: string) {
  const admin = new pg.Pool({ connectionString: ADMIN, max: 1 });
  const name = `orch_storm_${shortId()}`;
  const databaseUrl = `postgresql://postgres@127.0.0.1:5432/${name}`;
  const redisPort = await freePort();
  const redis = await spawnRedis(redisPort, logDir);
  const children: Child[] = [redis];
  let db: pg.Pool | undefined;
  try {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const env = {
      DATABASE_URL: databaseUrl,
      REDIS_URL: `redis://127.0.0.1:${redisPort}`,
      PORT: String(port),
      HOST: '127.0.0.1',
      LOG_LEVEL: 'info',
      LOG_FORMAT: 'json',
      API_KEYS: `client@storm:${STORM_KEY},client@polite:${POLITE_KEY}`,
    };
    const start = spawnNode('npm-start', 'dist/src/main.js', env, { logDir });
    children.push(start);
    await poll(async () => (await fetch(`${url}/ready`).catch(() => undefined))?.status === 200, {
      label: 'npm start ready',
      timeoutMs: 120_000,
      intervalMs: 250,
    });
    const pids = await poll(
      () => {
        const lines = start
          .tail()
          .split('\n')
          .filter((line) => line.includes('"process started"'));
        const named = Object.fromEntries(lines.map((line) => JSON.parse(line) as { name: string; pid: number }).map((entry) => [entry.name, entry.pid]));
        return named.api && named.worker ? (named as { api: number; worker: number }) : undefined;
      },
      { label: 'the API and worker pids', timeoutMs: 10_000 },
    );
    db = new pg.Pool({ connectionString: databaseUrl, max: 2 });

    /**
     * The window is the load's own (from the first request to the load generators' end), the same
     * for every phase; `after` reads what it needs of the phase's tasks once they have all ended.
     */
    const phase = async <T, A = undefined>(label: string, body: () => Promise<T>, after?: (load: T) => Promise<A>) => {
      // The load generators' share of the machine: this process (the polite key's client) and wrk.
      const cpu0 = { api: cpuSeconds(pids.api), worker: cpuSeconds(pids.worker), generators: cpuSeconds('self', true) };
      const t0 = Date.now();
      const load = await body();
      const t1 = Date.now();
      const cpu = {
        api: cpuSeconds(pids.api) - cpu0.api,
        worker: cpuSeconds(pids.worker) - cpu0.worker,
        generators: cpuSeconds('self', true) - cpu0.generators,
      };
      const completed = await completedBetween(db!, t0, t1);
      const settled = await settle(db!);
      const extra = after ? await after(load) : load;
      const result = { label, seconds: (t1 - t0) / 1000, completedPerS: completed / ((t1 - t0) / 1000), cpu, ...settled, extra };
      console.log(JSON.stringify(result));
      await db!.query('TRUNCATE tasks CASCADE').catch(() => undefined);
      return result;
    };

    const max = await phase('max (32 connections)', () => wrk(url, MAX_CONNECTIONS, SECONDS, STORM_KEY));
    const storm = await phase(`W5 closed loop (${CONNECTIONS} connections)`, () => wrk(url, CONNECTIONS, SECONDS, STORM_KEY));
    // The polite key's tasks are read once every task has ended: waiting for them inside the
    // window (as until 2026-11-28) counted the drain's idle end as time the storm had (31.6 s for
    // 30 s of load) and took about 5 % off this phase's completions per second.
    const fair = await phase(
      `W5 fair (${CONNECTIONS} connections + ${POLITE_RATE}/s polite)`,
      () => Promise.all([wrk(url, CONNECTIONS, SECONDS, STORM_KEY), polite(url, POLITE_RATE, SECONDS)]),
      async ([stormed, politeResult]) => {
        // The polite key's tasks: completed, and created-to-finished latency.
        const { rows } = await db!.query<{ status: string; ms: number }>(
          `SELECT status, extract(epoch from finished_at - created_at) * 1000 AS ms FROM tasks WHERE id = ANY($1::uuid[])`,
          [politeResult.accepted],
        );
        const latencies = rows
          .filter((row) => row.status === 'completed')
          .map((row) => Number(row.ms))
          .sort((a, b) => a - b);
        return {
          storm: stormed,
          polite: {
            sent: politeResult.sent,
            statuses: politeResult.statuses,
            why: politeResult.why,
            acceptedShare: politeResult.accepted.length / politeResult.sent,
            completedShare: latencies.length / politeResult.sent,
            p50Ms: percentile(latencies, 50),
            p99Ms: percentile(latencies, 99),
          },
        };
      },
    );

    // Refusal cost: the supervisor stops; an API process alone, whose backlog limit is 1.
    await start.stop(30_000);
    // Answered at once (no ADMISSION_REFUSAL_DELAY_MS): the cost of each refusal, not of holding it.
    const apiEnv = { ...env, ADMISSION_MAX_BACKLOG: '1', ADMISSION_MIN_BACKLOG: '0', ADMISSION_REFUSAL_DELAY_MS: '0', LOG_LEVEL: 'warn' };
    const api = spawnNode('api-refusing', 'dist/src/api/main.js', apiEnv, { logDir });
    children.push(api);
    await poll(async () => (await fetch(`${url}/ready`).catch(() => undefined))?.status === 200, { label: 'API ready', timeoutMs: 60_000, intervalMs: 250 });
    await poll(
      async () => {
        const response = await fetch(`${url}/assign-task`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${STORM_KEY}` },
          body: '{"task_type":"echo"}',
        });
        return response.status === 503;
      },
      { label: 'the API refusing', timeoutMs: 30_000 },
    );
    // What the process uses doing nothing (its backlog readings, timers), over as long, is taken off.
    const refusalSeconds = Math.min(SECONDS, 10);
    const idle0 = cpuSeconds(api.pid);
    await sleep(refusalSeconds * 1000);
    const idleMs = (cpuSeconds(api.pid) - idle0) * 1000;
    const before = cpuSeconds(api.pid);
    const refusing = await wrk(url, 64, refusalSeconds, STORM_KEY);
    const cpuMs = (cpuSeconds(api.pid) - before) * 1000;
    const refusal = {
      requests: refusing.requests,
      refused: refusing.non2xx,
      cpuMs,
      idleCpuMs: idleMs,
      cpuMsPerRefusal: (cpuMs - idleMs) / Math.max(1, refusing.non2xx),
    };
    console.log(JSON.stringify({ label: 'refusal cost', ...refusal }));
    await api.stop();
    // The maximum measured in this run: 32 closed-loop connections are bounded by their latency,
    // and a phase under the storm may complete more.
    const most = Math.max(max.completedPerS, storm.completedPerS, fair.completedPerS);
    return { run, max, storm, fair, refusal, maxPerS: most, stormOverMax: storm.completedPerS / most, fairOverMax: fair.completedPerS / most };
  } finally {
    await db?.end();
    for (const child of children.reverse()) await child.stop().catch(() => undefined);
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch(() => undefined);
    await admin.end();
  }
}

const { results, out } = await runStandalone('storm', RUNS, oneRun);
for (const result of results) {
  console.log(
    `run ${result.run}: 32 connections ${result.max.completedPerS.toFixed(1)}/s, max of the run ${result.maxPerS.toFixed(1)}/s; W5 closed loop ${result.storm.completedPerS.toFixed(1)}/s = ${(result.stormOverMax * 100).toFixed(0)} % of max, ` +
      `not completed ${result.storm.notCompleted}/${result.storm.total}; W5 fair ${result.fair.completedPerS.toFixed(1)}/s = ${(result.fairOverMax * 100).toFixed(0)} %, ` +
      `polite accepted ${((result.fair.extra as any).polite.acceptedShare * 100).toFixed(1)} % completed ${((result.fair.extra as any).polite.completedShare * 100).toFixed(1)} % ` +
      `p50 ${(result.fair.extra as any).polite.p50Ms.toFixed(0)} ms p99 ${(result.fair.extra as any).polite.p99Ms.toFixed(0)} ms; ` +
      `refusal ${result.refusal.cpuMsPerRefusal.toFixed(4)} CPU-ms (${result.refusal.refused} refusals)`,
  );
}
console.log(`wrote ${out}`);
process.exit(0);
