/**
 * `npm run bench`: the orchestrator against raw BullMQ and two peer queues, in one run, on this
 * machine. See bench/README.md for what is measured and how.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { METHOD } from './lib/capacity.js';
import { gitRevision, machineInfo, PgAdmin, packageVersion } from './lib/metrics.js';
import { type BenchOptions, parseOptions, USAGE, type WorkloadId } from './lib/options.js';
import { Releasers } from './lib/releasers.js';
import { NOTES, type Report, summarize, summarizeFloors, targets, writeReport } from './lib/report.js';
import { type RunResult, runOnce } from './lib/runner.js';
import { coerceError, epochNow, REPO_ROOT } from './lib/util.js';

const started = epochNow();
const log = (line: string) => process.stderr.write(`[${((epochNow() - started) / 1000).toFixed(1).padStart(6)} s] ${line}\n`);

let options: BenchOptions | undefined;
try {
  options = parseOptions(process.argv.slice(2));
} catch (error) {
  process.stderr.write(`${coerceError(error).message}\n\n${USAGE}`);
  process.exit(2);
}
if (!options) process.exit(0);

const releasers = new Releasers();
let interrupted = false;
const onSignal = (signal: NodeJS.Signals) => {
  if (interrupted) {
    // Second Ctrl-C: leave now; the exit hook kills whatever still runs.
    process.exit(130);
  }
  interrupted = true;
  log(`${signal}: stopping and cleaning up (Ctrl-C again to exit at once)`);
  void releasers.releaseAll().finally(() => process.exit(130));
};
process.on('SIGINT', onSignal);
process.on('SIGTERM', onSignal);

const outDir = path.resolve(REPO_ROOT, options.outDir);
const date = new Date().toISOString();
const logDir = path.join(outDir, 'logs', date.replace(/:/g, '-').replace(/\.\d+Z$/, 'Z'));
const machine = machineInfo();
log(`${options.quick ? 'quick' : 'full'} bench: ${options.workloads.join(', ')}; ${options.runs} run(s); logs in ${path.relative(REPO_ROOT, logDir)}`);

const runs: RunResult[] = [];
let postgresVersion = 'unknown';
try {
  const admin = new PgAdmin(options.postgresUrl);
  postgresVersion = await admin.version();
  await admin.close();
  for (let index = 1; index <= options.runs; index += 1) {
    log(`run ${index} of ${options.runs}`);
    runs.push(await runOnce(options, index, releasers, path.join(logDir, `run-${index}`), log));
  }
} catch (error) {
  log(`bench failed: ${coerceError(error).stack ?? coerceError(error).message}`);
  await releasers.releaseAll();
  process.exit(1);
}
await releasers.releaseAll();

/**
 * STORM (bench/storm.ts) and LOOP (bench/loop.ts) run on npm start's build with their own Redis
 * and databases, after the rest: each writes its JSON and says where.
 */
function runScript(id: WorkloadId, script: string, what: string, runs: number, workloads: readonly WorkloadId[]): unknown {
  if (!workloads.includes(id)) return undefined;
  log(`${id}: ${what} (${script})`);
  const child = spawnSync(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, script), '--runs', String(runs)], {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'inherit'],
    encoding: 'utf8',
  });
  process.stderr.write(child.stdout);
  const written = /wrote (\S+\.json)/.exec(child.stdout)?.[1];
  if (child.status !== 0 || !written) {
    log(`${id} failed (exit ${child.status})`);
    process.exit(1);
  }
  return JSON.parse(readFileSync(written, 'utf8'));
}
const storm = runScript('STORM', 'bench/storm.ts', 'W5 closed loop, W5 fair and the cost of a refusal', options.runs, options.workloads);
const loop = runScript('LOOP', 'bench/loop.ts', 'the closed loop at 1, 8 and 32 clients against the naive baseline', options.runs, options.workloads);

let redisVersion = runs[0]?.redis.version ?? 'unknown';
if (redisVersion === 'unknown') {
  try {
    redisVersion = execFileSync('redis-server', ['--version'], { encoding: 'utf8' }).trim();
  } catch {
    // Only for the report.
  }
}
const report: Report = {
  date,
  machine: { ...machine, loadAverageEnd: machineInfo().loadAverage },
  versions: {
    node: process.version,
    redis: redisVersion,
    postgres: postgresVersion,
    bullmq: packageVersion('bullmq', REPO_ROOT),
    'pg-boss': packageVersion('pg-boss', REPO_ROOT),
    'graphile-worker': packageVersion('graphile-worker', REPO_ROOT),
  },
  revision: gitRevision(REPO_ROOT),
  settings: {
    quick: options.quick,
    workloads: options.workloads,
    runs: options.runs,
    workers: options.workers,
    apis: options.apis,
    ...(options.latencyRate ? { latencyRate: options.latencyRate } : {}),
    unitRate: options.unitRate,
    drainConnections: options.drainConnections,
    concurrency: options.concurrency,
    poolSize: options.poolSize,
    connections: options.connections,
    tolerance: options.tolerance,
    timing: options.timing,
    redis: options.redisUrl ? `shared instance ${options.redisUrl}: its counters include other clients` : 'private redis-server started by the bench',
  },
  method: METHOD,
  notes: NOTES,
  summary: summarize(runs),
  floors: summarizeFloors(runs),
  targets: targets(runs),
  runs,
  ...(storm !== undefined ? { storm } : {}),
  ...(loop !== undefined ? { loop } : {}),
  elapsedS: Math.round((epochNow() - started) / 1000),
};
const { markdown, files } = writeReport(report, outDir);
process.stdout.write(`\n${markdown}\n`);
log(`wrote ${files.map((file) => path.relative(REPO_ROOT, file)).join(', ')}`);
process.exit(report.summary.some((row) => row.errors.length > 0) ? 1 : 0);
