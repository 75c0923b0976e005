/**
 * `npm run bench:policy`: what the policy hook (POLICY_URL) adds to a submission.
 *
 * One API (in this process, no worker: tasks are stored and enqueued, not run; admission control
 * off) against the machine's Redis and a throwaway database, measured three times: without a
 * policy; with a local policy service (a separate Node process answering `{"allow": true}`) asked
 * on every submission (POLICY_CACHE_TTL_MS=0, params differ each time); and with identical
 * submissions answered from the cache. Each phase sends POST /assign-task (echo) one at a time,
 * then from --concurrency connections at once, and reports latency percentiles and the mean
 * of orchestrator_policy_duration_seconds (the hook's own calls).
 *
 * Phases run in a rotating order for --rounds rounds (the machine may be shared and busy); each
 * figure is the median over the rounds.
 *
 * Options: --requests N per phase and mode (1000), --warmup N (200), --concurrency N (8), --rounds N (3),
 * DATABASE_URL (postgresql://postgres@127.0.0.1:5432/postgres: only the server is used),
 * REDIS_URL (redis://127.0.0.1:6379; keys under a fresh prefix, removed afterwards).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { parseArgs } from 'node:util';
import { Agent, request } from 'undici';
import { startApi } from '../src/api/server.js';
import { loadConfig } from '../src/lib/config.js';
import { silentLogger } from '../src/lib/logger.js';
import { Metrics } from '../src/observability/metrics.js';
import { dropDatabase, ensureDatabase, withDatabase } from '../src/persistence/database.js';
import { migrate } from '../src/persistence/migrate.js';
import { createRedis } from '../src/queue/redis.js';
import { createToolRegistry } from '../workers/adapters/index.js';

const { values } = parseArgs({
  options: {
    requests: { type: 'string', default: '1000' },
    warmup: { type: 'string', default: '200' },
    concurrency: { type: 'string', default: '8' },
    rounds: { type: 'string', default: '3' },
  },
});
const REQUESTS = Number(values.requests);
const WARMUP = Number(values.warmup);
const CONCURRENCY = Number(values.concurrency);
const ROUNDS = Number(values.rounds);

const server = process.env.DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/postgres';
const database = withDatabase(server, `orch_bench_policy_${randomBytes(4).toString('hex')}`);
const prefix = `{bench_policy_${randomBytes(4).toString('hex')}}`;
const log = (line: string) => process.stdout.write(`${line}\n`);

/** The policy service: allows everything, in a process of its own (not on the API's event loop). */
const POLICY_SERVER = `
const server = require('node:http').createServer((req, res) => {
  req.resume();
  req.on('end', () => { res.writeHead(200, { 'content-type': 'application/json' }); res.end('{"allow":true}'); });
});
server.keepAliveTimeout = 65000;
server.listen(0, '127.0.0.1', () => process.stdout.write(server.address().port + '\\n'));
`;

async function startPolicyServer(): Promise<{ url: string; child: ChildProcess }> {
  const child = spawn(process.execPath, ['-e', POLICY_SERVER], { stdio: ['ignore', 'pipe', 'inherit'] });
  const [chunk] = (await once(child.stdout!, 'data')) as [Buffer];
  return { url: `http://127.0.0.1:${chunk.toString().trim()}/decide`, child };
}

const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))]!;

interface Phase {
  name: string;
  env: Record<string, string>;
  /** The same params every time (cache hits) or new ones (a call each time). */
  identical: boolean;
}

/** Figures of one phase in one round: latency percentiles (ms) of both modes, the hook's mean call (ms), the concurrent rate. */
type Figures = Record<string, number>;

async function measure(phase: Phase): Promise<Figures> {
  const env = {
    NODE_ENV: 'test',
    PORT: '0',
    HOST: '127.0.0.1',
    DATABASE_URL: database,
    QUEUE_PREFIX: prefix,
    ADMISSION_MAX_WAIT_MS: '0',
    ADMISSION_MAX_IN_FLIGHT: '0',
    LOG_LEVEL: 'error',
    ...(process.env.REDIS_URL ? { REDIS_URL: process.env.REDIS_URL } : {}),
    ...phase.env,
  };
  const metrics = new Metrics();
  const api = await startApi(loadConfig(env), silentLogger(), createToolRegistry(), metrics);
  const agent = new Agent({ connections: CONCURRENCY * 2 });
  let n = 0;
  const submit = async () => {
    n += 1;
    const body = JSON.stringify({ task_type: 'echo', params: phase.identical ? { bench: 'policy' } : { bench: 'policy', n } });
    const started = performance.now();
    const answer = await request(`${api.url}/assign-task`, { method: 'POST', headers: { 'content-type': 'application/json' }, body, dispatcher: agent });
    await answer.body.dump();
    if (answer.statusCode !== 202) throw new Error(`${phase.name}: POST /assign-task answered ${answer.statusCode}`);
    return performance.now() - started;
  };
  const figures: Figures = {};
  try {
    for (let i = 0; i < WARMUP; i += 1) await submit();
    const policyBefore = await policyCalls(metrics);
    const sequential: number[] = [];
    for (let i = 0; i < REQUESTS; i += 1) sequential.push(await submit());
    const policy = await policyMean(metrics, policyBefore);
    if (policy !== undefined) figures.hook = policy;
    const concurrent: number[] = [];
    const startedAll = performance.now();
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (concurrent.length < REQUESTS) concurrent.push(await submit());
      }),
    );
    figures.rate = (concurrent.length * 1000) / (performance.now() - startedAll);
    for (const [mode, list] of [
      ['seq', sequential],
      ['conc', concurrent],
    ] as const) {
      const sorted = [...list].sort((a, b) => a - b);
      for (const p of [50, 90, 99]) figures[`${mode}${p}`] = percentile(sorted, p);
    }
  } finally {
    await agent.close();
    await api.close();
  }
  return figures;
}

/** Count and sum of the hook's calls so far (orchestrator_policy_duration_seconds). */
async function policyCalls(metrics: Metrics): Promise<{ count: number; sum: number }> {
  const data = await metrics.policyDuration.get();
  const pick = (suffix: string) =>
    data.values.filter((value) => value.metricName === `orchestrator_policy_duration_seconds_${suffix}`).reduce((total, value) => total + value.value, 0);
  return { count: pick('count'), sum: pick('sum') };
}

/** Mean of the hook's calls since `since`, in ms; undefined when none was made. */
async function policyMean(metrics: Metrics, since: { count: number; sum: number }): Promise<number | undefined> {
  const now = await policyCalls(metrics);
  return now.count > since.count ? ((now.sum - since.sum) / (now.count - since.count)) * 1000 : undefined;
}

await ensureDatabase(database);
let policy: { url: string; child: ChildProcess } | undefined;
try {
  await migrate(database, silentLogger());
  policy = await startPolicyServer();
  const phases: Phase[] = [
    { name: 'no policy', env: {}, identical: false },
    { name: 'policy, a call each', env: { POLICY_URL: policy.url, POLICY_CACHE_TTL_MS: '0' }, identical: false },
    { name: 'policy, cached', env: { POLICY_URL: policy.url, POLICY_CACHE_TTL_MS: '600000' }, identical: true },
  ];
  const results = new Map<string, Figures[]>(phases.map((phase) => [phase.name, []]));
  for (let round = 0; round < ROUNDS; round += 1) {
    for (let i = 0; i < phases.length; i += 1) {
      const phase = phases[(i + round) % phases.length]!;
      results.get(phase.name)!.push(await measure(phase));
    }
  }
  const median = (name: string, key: string) => {
    const list = results
      .get(name)!
      .map((figures) => figures[key])
      .filter((value): value is number => value !== undefined)
      .sort((a, b) => a - b);
    return list.length > 0 ? list[Math.floor(list.length / 2)]! : undefined;
  };
  const ms = (value: number | undefined) => (value === undefined ? '–' : value.toFixed(2));
  log(`POST /assign-task (echo), ${REQUESTS} requests per mode after ${WARMUP} of warm-up, median of ${ROUNDS} rounds; latency in ms`);
  log('');
  log(`| phase | p50 | p90 | p99 | hook's own call (mean) | ${CONCURRENCY} at once: p50 | p99 | tasks/s |`);
  log('|---|---:|---:|---:|---:|---:|---:|---:|');
  for (const { name } of phases) {
    log(
      `| ${name} | ${ms(median(name, 'seq50'))} | ${ms(median(name, 'seq90'))} | ${ms(median(name, 'seq99'))} | ${ms(median(name, 'hook'))} | ${ms(median(name, 'conc50'))} | ${ms(median(name, 'conc99'))} | ${Math.round(median(name, 'rate')!)} |`,
    );
  }
} finally {
  policy?.child.kill();
  const redis = createRedis(loadConfig({ QUEUE_PREFIX: prefix, ...(process.env.REDIS_URL ? { REDIS_URL: process.env.REDIS_URL } : {}) }), 'worker', 'bench');
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    if (keys.length > 0) await redis.unlink(...keys);
    cursor = next;
  } while (cursor !== '0');
  redis.disconnect();
  await dropDatabase(database);
}
