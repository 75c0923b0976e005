import { readdirSync, readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import pg from 'pg';
import { PostgresCluster } from './lib/metrics.js';
import { type Child, freePort, spawnNode, spawnRedis } from './lib/processes.js';
import { runStandalone } from './lib/standalone.js';
import { poll, shortId, sleep } from './lib/util.js';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '8' },
    clients: { type: 'string', default: '1,8,32' },
    // Open loop instead (tasks/s offered, e.g. 250): each system does the same work per second.
    rates: { type: 'string' },
    runs: { type: 'string', default: '1' },
    warmup: { type: 'string', default: '2' },
    // API keys the clients are spread over (client i uses key i mod N): what several tenants at once cost.
    keys: { type: 'string', default: '1' },
    // NAME=VALUE, repeatable: a setting of the orchestrator's processes (what a feature costs: --env TASK_HISTORY=off).
    env: { type: 'string', multiple: true, default: [] },
  },
});
const SECONDS = Number(values.seconds);
const CLIENTS = values.clients.split(',').map(Number);
const RATES = values.rates?.split(',').map(Number);
const RUNS = Number(values.runs);
const WARMUP_S = Number(values.warmup);
const SETTINGS = Object.fromEntries(
  values.env.map((pair) => {
    const at = pair.indexOf('=');
    if (at < 1) throw new Error(`--env takes NAME=VALUE, not ${JSON.stringify(pair)}`);
    return [pair.slice(0, at), pair.slice(at + 1)];
  }),
);
const ADMIN = 'postgresql://postgres@127.0.0.1:5432/postgres';
if (!/^[1-9][0-9]{0,2}$/.test(values.keys)) throw new Error(`--keys takes a number of API keys from 1 to 999, not ${JSON.stringify(values.keys)}`);
const KEYS = Array.from({ length: Number(values.keys) }, (_, index) => `loop-key-${index}-${shortId()}-0123456789abcdef`);
const ENDED = new Set(['completed', 'failed', 'cancelled']);
const NAIVE_SCHEMA =
  'CREATE TABLE naive_tasks (id uuid PRIMARY KEY, params jsonb, status text NOT NULL, result jsonb, created_at timestamptz NOT NULL DEFAULT now(), finished_at timestamptz)';

export interface LoopPoint {
  /** Clients of a closed loop; 0 in an open loop (`offeredPerS`). */
  clients: number;
  /** Open loop (--rates): the tasks/s offered, each task one loop from submit to the result that shows its end. */
  offeredPerS?: number;
  seconds: number;
  completed: number;
  completedPerS: number;
  submit: { p50: number; p99: number };
  result: { p50: number; p99: number };
  /** Result requests per task that ended (1 when every long-poll answered with the end). */
  resultsPerTask: number;
  /** Result answers that came before the end, by the status they gave. */
  early: Record<string, number>;
  errors: number;
  /** The errors by request and status (`submit 503`, `result 429`, `result completed?`), with the first error message of each. */
  errorsBy: Record<string, { count: number; first: string }>;
  /** Where a task's loop spends its time, medians in ms (see stages). */
  stages?: Stages;
  /** PostgreSQL transactions (statements outside a transaction count one each) of the system's database per completed task, every process together. */
  transactionsPerTask?: number;
  /**
   * CPU time per completed task, ms (user + system, from /proc): the system's own processes (the
   * orchestrator's supervisor, API and worker; the naive API and worker), the bench's Redis, and
   * every PostgreSQL process of the machine (other databases' work included, if any runs).
   */
  cpuMsPerTask?: { system: number; redis: number; postgres: number };
  /** The system's part of cpuMsPerTask by process: its API and its workers apart (a process seen at only one end of the window is left out). */
  cpuMsPerTaskByProcess?: Record<string, number>;
  /**
   * Write system calls per completed task by process (/proc/<pid>/io syscw, every thread): on this
   * kind of machine a socket write costs its writer far more than the bytes in it (it wakes the
   * reader), so this counts the round trips each process makes per task.
   */
  writesPerTaskByProcess?: Record<string, number>;
  /** Redis commands per completed task, every client together (INFO commandstats), with the commonest. */
  redisCommandsPerTask?: { total: number; top: Record<string, number> };
}

/** One completed loop: when the client sent the submit, got its answer, and got the result that showed the end (epoch ms). */
interface Sample {
  id: string;
  sent: number;
  accepted: number;
  answered: number;
}

/**
 * Medians, in ms, of the stages of a loop, from the client's clock and the task row's timestamps
 * (one machine, one clock): sent → created (the system's receipt: the orchestrator takes created_at
 * from its id, made after auth and the body are read; the naive one at its insert), created → the
 * submit's answer, created → started (queue, fetch, claim) and started → finished (the tool and its
 * commit; the orchestrator only), created → finished, and finished → the result's answer
 * (notification or polling, the read, the answer).
 */
export interface Stages {
  sentToCreated: number;
  createdToAccepted: number;
  createdToStarted?: number;
  startedToFinished?: number;
  createdToFinished: number;
  finishedToAnswered: number;
}

const epochNow = () => performance.timeOrigin + performance.now();

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

/** What the loops of one point saw: latencies, ends and errors. */
function tally() {
  const submit: number[] = [];
  const result: number[] = [];
  let completed = 0;
  let ended = 0;
  let errors = 0;
  const early: Record<string, number> = {};
  const errorsBy: Record<string, { count: number; first: string }> = {};
  const failed = (what: string, body: unknown) => {
    errors += 1;
    errorsBy[what] ??= { count: 0, first: JSON.stringify(body).slice(0, 300) };
    errorsBy[what].count += 1;
  };

  /** One loop: submit an echo task, long-poll its result until it ends; counted when it ends by `countUntil` (performance.now()). */
  async function loopOnce(url: string, headers: Record<string, string>, message: string, countUntil: number, samples?: Sample[]): Promise<void> {
    const t0 = performance.now();
    const sent = epochNow();
    const submitted = await fetch(`${url}/assign-task`, {
      method: 'POST',
      headers: { ...headers, 'content-type': 'application/json' },
      body: JSON.stringify({ task_type: 'echo', params: { message } }),
    });
    const body = (await submitted.json()) as { task_id?: string };
    submit.push(performance.now() - t0);
    const accepted = epochNow();
    if (submitted.status !== 202 || !body.task_id) {
      failed(`submit ${submitted.status}`, body);
      return;
    }
    for (;;) {
      const q0 = performance.now();
      const answer = await fetch(`${url}/result/${body.task_id}?wait=30`, { headers });
      const view = (await answer.json()) as { status?: string };
      result.push(performance.now() - q0);
      if (answer.status !== 200) {
        failed(`result ${answer.status}`, view);
        return;
      }
      if (!ENDED.has(view.status ?? '')) early[view.status ?? '?'] = (early[view.status ?? '?'] ?? 0) + 1;
      else {
        ended += 1;
        if (view.status !== 'completed') failed(`result ${view.status}`, view);
        else if (performance.now() <= countUntil) {
          completed += 1;
          samples?.push({ id: body.task_id, sent, accepted, answered: epochNow() });
        }
        return;
      }
    }
  }

  function point(clients: number, seconds: number): LoopPoint {
    submit.sort((a, b) => a - b);
    result.sort((a, b) => a - b);
    const round = (ms: number) => Math.round(ms * 10) / 10;
    return {
      clients,
      seconds,
      completed,
      completedPerS: completed / seconds,
      submit: { p50: round(percentile(submit, 50)), p99: round(percentile(submit, 99)) },
      result: { p50: round(percentile(result, 50)), p99: round(percentile(result, 99)) },
      resultsPerTask: ended > 0 ? Math.round((result.length / ended) * 100) / 100 : Number.NaN,
      early,
      errors,
      errorsBy,
    };
  }

  return { loopOnce, point };
}

/** The headers of loop `index` (its client's, or the open loop's n-th task's). */
type HeadersOf = (index: number) => Record<string, string>;

/** C clients in a closed loop for `seconds`; what ends after the window is waited for, not counted. */
async function closedLoop(url: string, headers: HeadersOf, clients: number, seconds: number, samples?: Sample[]): Promise<LoopPoint> {
  const seen = tally();
  const deadline = performance.now() + seconds * 1000;
  const client = async (index: number) => {
    for (let n = 0; performance.now() < deadline; n += 1) await seen.loopOnce(url, headers(index), `c${index}-${n}`, deadline, samples);
  };
  await Promise.all(Array.from({ length: clients }, (_, index) => client(index)));
  return seen.point(clients, seconds);
}

/**
 * Open loop: a new loop starts every 1/`rate` s for `seconds`, whatever the answers' pace, and
 * each is waited for to its end and counted; so two systems that keep up do the same work per
 * second, and their CPU per task compares at one rate (it falls as the rate rises).
 */
async function openLoop(url: string, headers: HeadersOf, rate: number, seconds: number, samples?: Sample[]): Promise<LoopPoint> {
  const seen = tally();
  const start = performance.now();
  const loops: Promise<void>[] = [];
  for (let n = 0; n < rate * seconds; n += 1) {
    const wait = start + (n * 1000) / rate - performance.now();
    if (wait > 0) await sleep(wait);
    loops.push(seen.loopOnce(url, headers(n), `o-${n}`, Number.POSITIVE_INFINITY, samples));
  }
  await Promise.all(loops);
  return { ...seen.point(0, seconds), offeredPerS: rate };
}

/** Every process's parent and CPU ticks (user + system) so far, from /proc; empty where /proc is not there. */
function processTable(): Map<number, { ppid: number; ticks: number; comm: string }> {
  const table = new Map<number, { ppid: number; ticks: number; comm: string }>();
  let entries: string[] = [];
  try {
    entries = readdirSync('/proc').filter((name) => /^\d+$/.test(name));
  } catch {
    return table;
  }
  for (const name of entries) {
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const close = stat.lastIndexOf(')');
      const comm = stat.slice(stat.indexOf('(') + 1, close);
      const fields = stat.slice(close + 2).split(' ');
      table.set(Number(name), { ppid: Number(fields[1]), ticks: Number(fields[11]) + Number(fields[12]), comm });
    } catch {
      // Gone meanwhile.
    }
  }
  return table;
}

/** A process's write system calls so far (/proc/<pid>/io syscw); 0 where it cannot be read. */
function writeCalls(pid: number): number {
  try {
    return Number(/^syscw: (\d+)$/m.exec(readFileSync(`/proc/${pid}/io`, 'utf8'))?.[1] ?? 0);
  } catch {
    return 0;
  }
}

/** What a process of the tree is called: its root's name, and below it the script it runs (`npm-start › api/main.js`). */
function processLabel(pid: number, root: string | undefined, rootOf: string): string {
  if (root !== undefined) return root;
  let script = '?';
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    script =
      argv
        .findLast((arg) => /\.(m?js|ts)$/.test(arg))
        ?.split('/')
        .slice(-2)
        .join('/') ??
      argv[0] ??
      '?';
  } catch {
    // Gone meanwhile.
  }
  return `${rootOf} › ${script}`;
}

/**
 * CPU ms so far of the processes under `roots` (themselves included), in all and by process (the
 * API and the worker apart), of `redis`, and of the PostgreSQL server: its postmaster, live children
 * and reaped children (PostgresCluster), so that a backend or autovacuum worker that exits between
 * two readings is counted, not taken away (summing the live processes alone gave -1.46 ms per task).
 */
function cpuNow(roots: readonly { pid: number; name: string }[], redis: number) {
  const table = processTable();
  // Each root's name; rootOf grows to every process below it, with its root's name.
  const names = new Map(roots.map(({ pid, name }) => [pid, name]));
  const rootOf = new Map(names);
  for (let grew = true; grew; ) {
    grew = false;
    for (const [pid, entry] of table) {
      const parent = rootOf.get(entry.ppid);
      if (!rootOf.has(pid) && parent !== undefined) {
        rootOf.set(pid, parent);
        grew = true;
      }
    }
  }
  const ms = (ticks: number) => ticks * 10;
  let system = 0;
  let postmaster: number | undefined;
  const byProcess: Record<string, number> = {};
  const writesByProcess: Record<string, number> = {};
  for (const [pid, entry] of table) {
    const root = rootOf.get(pid);
    if (root !== undefined) {
      system += entry.ticks;
      const label = processLabel(pid, names.get(pid), root);
      byProcess[label] = (byProcess[label] ?? 0) + ms(entry.ticks);
      writesByProcess[label] = (writesByProcess[label] ?? 0) + writeCalls(pid);
    }
    if (entry.comm.startsWith('postgres') && !table.get(entry.ppid)?.comm.startsWith('postgres')) postmaster = pid;
  }
  const postgres = postmaster === undefined ? Number.NaN : new PostgresCluster(postmaster).cpu().total * 1000;
  return { system: ms(system), byProcess, writesByProcess, redis: ms(table.get(redis)?.ticks ?? 0), postgres };
}

const median = (values: number[]) => {
  const sorted = values.filter((value) => Number.isFinite(value)).sort((a, b) => a - b);
  return sorted.length === 0 ? Number.NaN : Math.round(sorted[Math.floor((sorted.length - 1) / 2)]! * 10) / 10;
};

/** The stages of the loops measured, from the rows of `table` (tasks, or the naive baseline's naive_tasks). */
async function stages(databaseUrl: string, table: string, samples: Sample[]): Promise<Stages> {
  const db = new pg.Client({ connectionString: databaseUrl });
  await db.connect();
  try {
    const started = table === 'tasks' ? 'extract(epoch from started_at) * 1000' : 'NULL';
    const { rows } = await db.query<{ id: string; created: number; started: number | null; finished: number }>(
      `SELECT id, extract(epoch from created_at) * 1000 AS created, ${started} AS started, extract(epoch from finished_at) * 1000 AS finished FROM ${table} WHERE id = ANY($1::uuid[])`,
      [samples.map((sample) => sample.id)],
    );
    const byId = new Map(
      rows.map((row) => [
        row.id,
        { created: Number(row.created), started: row.started === null ? Number.NaN : Number(row.started), finished: Number(row.finished) },
      ]),
    );
    const pairs = samples.flatMap((sample) => (byId.has(sample.id) ? [{ sample, row: byId.get(sample.id)! }] : []));
    const of = (pick: (pair: (typeof pairs)[number]) => number) => median(pairs.map(pick));
    const createdToStarted = of(({ row }) => row.started - row.created);
    return {
      sentToCreated: of(({ sample, row }) => row.created - sample.sent),
      createdToAccepted: of(({ sample, row }) => sample.accepted - row.created),
      ...(Number.isNaN(createdToStarted) ? {} : { createdToStarted, startedToFinished: of(({ row }) => row.finished - row.started) }),
      createdToFinished: of(({ row }) => row.finished - row.created),
      finishedToAnswered: of(({ sample, row }) => sample.answered - row.finished),
    };
  } finally {
    await db.end();
  }
}

/** Calls so far of each Redis command (INFO commandstats; EVALSHA counts once per script run). */
async function redisCalls(redisUrl: string): Promise<Map<string, number>> {
  const redis = new Redis(redisUrl, { lazyConnect: true });
  try {
    await redis.connect();
    const info = await redis.info('commandstats');
    return new Map([...info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)].map((match) => [match[1]!, Number(match[2])]));
  } finally {
    redis.disconnect();
  }
}

/** Transactions committed or rolled back in the database so far (pg_stat_database), the bench's own two reads included. */
async function transactions(databaseUrl: string): Promise<number> {
  const db = new pg.Client({ connectionString: databaseUrl });
  await db.connect();
  try {
    const { rows } = await db.query<{ n: string }>('SELECT xact_commit + xact_rollback AS n FROM pg_stat_database WHERE datname = current_database()');
    return Number(rows[0]!.n);
  } finally {
    await db.end();
  }
}

/** One system as the bench drives it: where it answers, whose processes it is, where it stores its tasks. */
interface System {
  name: 'orchestrator' | 'naive';
  url: string;
  headers: HeadersOf;
  databaseUrl: string;
  table: string;
  pids: { roots: { pid: number; name: string }[]; redis: number };
  redisUrl: string;
}

type Load = { clients: number } | { rate: number };

/** One point of one system: its warm-up, then the measured window, with what it cost. */
async function measure(system: System, load: Load): Promise<LoopPoint> {
  const { url, headers, databaseUrl, table, pids, redisUrl } = system;
  const run = (seconds: number, samples?: Sample[]) =>
    'rate' in load ? openLoop(url, headers, load.rate, seconds, samples) : closedLoop(url, headers, load.clients, seconds, samples);
  await run(WARMUP_S);
  const samples: Sample[] = [];
  const before = await transactions(databaseUrl);
  const callsBefore = await redisCalls(redisUrl);
  const cpuBefore = cpuNow(pids.roots, pids.redis);
  const point = await run(SECONDS, samples);
  const cpuAfter = cpuNow(pids.roots, pids.redis);
  const perTask = (ms: number) => Math.round((ms / Math.max(1, point.completed)) * 100) / 100;
  point.cpuMsPerTask = {
    system: perTask(cpuAfter.system - cpuBefore.system),
    redis: perTask(cpuAfter.redis - cpuBefore.redis),
    postgres: perTask(cpuAfter.postgres - cpuBefore.postgres),
  };
  // Per process, over the window: a process seen at only one end of it is left out.
  const perProcess = (after: Record<string, number>, before: Record<string, number>) =>
    Object.fromEntries(
      Object.entries(after)
        .filter(([label]) => label in before)
        .map(([label, value]) => [label, perTask(value - before[label]!)]),
    );
  point.cpuMsPerTaskByProcess = perProcess(cpuAfter.byProcess, cpuBefore.byProcess);
  point.writesPerTaskByProcess = perProcess(cpuAfter.writesByProcess, cpuBefore.writesByProcess);
  const calls = [...(await redisCalls(redisUrl))].map(([name, n]) => [name, n - (callsBefore.get(name) ?? 0)] as const);
  const commonest = calls.filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1]);
  point.redisCommandsPerTask = {
    total: perTask(commonest.reduce((sum, [, n]) => sum + n, 0)),
    top: Object.fromEntries(commonest.slice(0, 12).map(([name, n]) => [name, perTask(n)])),
  };
  // PostgreSQL flushes a backend's counters within a second of its last transaction.
  await sleep(1_500);
  point.transactionsPerTask = Math.round((((await transactions(databaseUrl)) - before) / Math.max(1, point.completed)) * 10) / 10;
  point.stages = await stages(databaseUrl, table, samples);
  console.log(JSON.stringify({ system: system.name, ...point }));
  return point;
}

async function withDatabase<T>(admin: pg.Pool, prefix: string, body: (url: string) => Promise<T>): Promise<T> {
  const name = `${prefix}_${shortId()}`;
  await admin.query(`CREATE DATABASE ${name}`);
  try {
    return await body(`postgresql://postgres@127.0.0.1:5432/${name}`);
  } finally {
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch(() => undefined);
  }
}

async function ready(url: string, label: string): Promise<void> {
  await poll(async () => (await fetch(`${url}/ready`).catch(() => undefined))?.status === 200, { label, timeoutMs: 120_000, intervalMs: 250 });
}

async function oneRun(run: number, logDir: string) {
  const admin = new pg.Pool({ connectionString: ADMIN, max: 1 });
  const redisPort = await freePort();
  const redis = await spawnRedis(redisPort, logDir);
  const redisUrl = `redis://127.0.0.1:${redisPort}`;
  const children: Child[] = [];
  const stopAll = async () => {
    for (const child of children.splice(0).reverse()) await child.stop(30_000).catch(() => undefined);
  };
  try {
    // Both systems are up for the whole run and each load is measured on one, then at once on the
    // other, the order alternating from run to run: on a shared machine whose speed drifts over
    // tens of seconds, the two points of a ratio are seconds apart rather than a minute, and a
    // drift within a load favours neither system over the runs. The idle one costs next to
    // nothing meanwhile (its blocking reads and timers), counted in the other's Redis and
    // PostgreSQL figures.
    const { orchestrator, naive } = await withDatabase(admin, 'orch_loop', (orchestratorDb) =>
      withDatabase(admin, 'naive_loop', async (naiveDb) => {
        const orchestratorPort = await freePort();
        const orchestratorUrl = `http://127.0.0.1:${orchestratorPort}`;
        const orchestratorChildren = [
          spawnNode(
            'npm-start',
            'dist/src/main.js',
            {
              DATABASE_URL: orchestratorDb,
              REDIS_URL: redisUrl,
              PORT: String(orchestratorPort),
              HOST: '127.0.0.1',
              LOG_LEVEL: 'warn',
              LOG_FORMAT: 'json',
              API_KEYS: KEYS.map((key, index) => `client@loop${index}:${key}`).join(','),
              ...SETTINGS,
            },
            { logDir },
          ),
        ];
        children.push(...orchestratorChildren);
        const db = new pg.Client({ connectionString: naiveDb });
        await db.connect();
        await db.query(NAIVE_SCHEMA);
        await db.end();
        const naivePort = await freePort();
        const naiveUrl = `http://127.0.0.1:${naivePort}`;
        const env = { DATABASE_URL: naiveDb, REDIS_URL: redisUrl, PORT: String(naivePort) };
        const naiveChildren = [
          spawnNode('naive-api', 'bench/naive/server.ts', { ...env, NAIVE_ROLE: 'api' }, { logDir }),
          spawnNode('naive-worker', 'bench/naive/server.ts', { ...env, NAIVE_ROLE: 'worker' }, { logDir }),
        ];
        children.push(...naiveChildren);
        await ready(orchestratorUrl, 'npm start ready');
        await ready(naiveUrl, 'the naive baseline ready');
        const systems: System[] = [
          {
            name: 'orchestrator',
            url: orchestratorUrl,
            headers: (index) => ({ authorization: `Bearer ${KEYS[index % KEYS.length]}` }),
            databaseUrl: orchestratorDb,
            table: 'tasks',
            pids: { roots: orchestratorChildren.map(({ pid, name }) => ({ pid, name })), redis: redis.pid },
            redisUrl,
          },
          {
            name: 'naive',
            url: naiveUrl,
            headers: () => ({}),
            databaseUrl: naiveDb,
            table: 'naive_tasks',
            pids: { roots: naiveChildren.map(({ pid, name }) => ({ pid, name })), redis: redis.pid },
            redisUrl,
          },
        ];
        const points: Record<System['name'], LoopPoint[]> = { orchestrator: [], naive: [] };
        const loads: Load[] = RATES ? RATES.map((rate) => ({ rate })) : CLIENTS.map((clients) => ({ clients }));
        try {
          for (const load of loads) {
            for (const system of run % 2 === 1 ? systems : [...systems].reverse()) points[system.name].push(await measure(system, load));
          }
        } finally {
          await stopAll();
        }
        return points;
      }),
    );
    return {
      run,
      orchestrator,
      naive,
      ratio: orchestrator.map((point, index) => ({
        ...(point.offeredPerS === undefined ? { clients: point.clients } : { offeredPerS: point.offeredPerS }),
        ofNaive: point.completedPerS / naive[index]!.completedPerS,
        // At one offered rate the work per second is the same: CPU per task compares (all of it: the system's processes, Redis, PostgreSQL).
        ...(point.offeredPerS === undefined ? {} : { cpuOfNaive: cpuTotal(point) / cpuTotal(naive[index]!) }),
      })),
    };
  } finally {
    await stopAll();
    await redis.stop();
    await admin.end();
  }
}

const cpuTotal = (point: LoopPoint) => (point.cpuMsPerTask ? point.cpuMsPerTask.system + point.cpuMsPerTask.redis + point.cpuMsPerTask.postgres : Number.NaN);
const cpuText = (point: LoopPoint) =>
  point.cpuMsPerTask ? `${point.cpuMsPerTask.system} + redis ${point.cpuMsPerTask.redis} + pg ${point.cpuMsPerTask.postgres}` : 'n/a';

const { results, out } = await runStandalone('loop', RUNS, oneRun, 1_000);
for (const result of results) {
  for (const [index, point] of result.orchestrator.entries()) {
    const naive = result.naive[index]!;
    const { ofNaive, cpuOfNaive } = result.ratio[index]!;
    console.log(
      `run ${result.run} ${point.offeredPerS === undefined ? `C=${point.clients}` : `R=${point.offeredPerS}/s`}: orchestrator ${point.completedPerS.toFixed(1)}/s (submit p50/p99 ${point.submit.p50}/${point.submit.p99} ms, result ${point.result.p50}/${point.result.p99} ms, ${point.resultsPerTask} results/task, ${point.errors} errors${point.errors > 0 ? ` ${JSON.stringify(point.errorsBy)}` : ''}, CPU ms/task ${cpuText(point)}); ` +
        `naive ${naive.completedPerS.toFixed(1)}/s (submit ${naive.submit.p50}/${naive.submit.p99} ms, result ${naive.result.p50}/${naive.result.p99} ms, CPU ms/task ${cpuText(naive)}); ratio ${ofNaive.toFixed(2)}` +
        (cpuOfNaive === undefined ? '' : `, CPU per task ÷ naive ${cpuOfNaive.toFixed(2)}`),
    );
  }
}
console.log(`wrote ${out}`);
process.exit(0);
