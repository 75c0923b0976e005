import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { MachineInfo } from './metrics.js';
import type { BenchOptions } from './options.js';
import type { RunResult, WorkloadResult } from './runner.js';
import { median } from './stats.js';

/** One workload's headline figures: the median over the runs of each metric on its own. */
export interface Summary {
  id: string;
  title: string;
  runs: number;
  errors: string[];
  maxTasksPerS?: number;
  maxStepsPerS?: number;
  /** No stage failed in some run: the maximum there is only a lower bound. */
  lowerBound: boolean;
  ratioToW0?: number;
  p50Ms?: number;
  p90Ms?: number;
  p99Ms?: number;
  maxMs?: number;
  luaPerStep?: number;
  redisCommandsPerStep?: number;
  pgTransactionsPerStep?: number;
  cpuApi?: number;
  cpuWorkers?: number;
  cpuRedis?: number;
  cpuPostgres?: number;
}

export interface Report {
  date: string;
  machine: MachineInfo & { loadAverageEnd: number[] };
  versions: Record<string, string>;
  revision: string;
  settings: Pick<BenchOptions, 'quick' | 'workloads' | 'runs' | 'workers' | 'concurrency' | 'poolSize' | 'connections' | 'tolerance' | 'timing'> & { redis: string };
  method: string;
  notes: string[];
  summary: Summary[];
  runs: RunResult[];
  elapsedS: number;
}

function ratio(result: WorkloadResult, run: RunResult): number | undefined {
  const baseline = run.workloads.find((entry) => entry.id === 'W0')?.maxTasksPerS;
  return baseline && result.maxTasksPerS ? result.maxTasksPerS / baseline : undefined;
}

export function summarize(runs: RunResult[]): Summary[] {
  const ids = [...new Set(runs.flatMap((run) => run.workloads.map((result) => result.id)))];
  return ids.map((id) => {
    const entries = runs.flatMap((run) => run.workloads.filter((result) => result.id === id).map((result) => ({ run, result })));
    const valid = entries.filter(({ result }) => result.maxTasksPerS > 0);
    const m = (pick: (result: WorkloadResult, run: RunResult) => number | undefined) => median(valid.map(({ result, run }) => pick(result, run)));
    return {
      id,
      title: entries[0]?.result.title ?? id,
      runs: entries.length,
      errors: entries.flatMap(({ run, result }) => (result.error ? [`run ${run.index}: ${result.error}`] : [])),
      maxTasksPerS: m((result) => result.maxTasksPerS),
      lowerBound: valid.some(({ result }) => result.capacity?.lowestFailingRate === undefined),
      maxStepsPerS: m((result) => result.maxStepsPerS),
      ratioToW0: m((result, run) => ratio(result, run)),
      p50Ms: m((result) => result.latency?.latencyMs.p50),
      p90Ms: m((result) => result.latency?.latencyMs.p90),
      p99Ms: m((result) => result.latency?.latencyMs.p99),
      maxMs: m((result) => result.latency?.latencyMs.max),
      luaPerStep: m((result) => result.costs?.luaPerStep),
      redisCommandsPerStep: m((result) => result.costs?.redisCommandsPerStep),
      pgTransactionsPerStep: m((result) => result.costs?.pgTransactionsPerStep),
      cpuApi: m((result) => result.costs?.cpuPer1000.api),
      cpuWorkers: m((result) => result.costs?.cpuPer1000.workers),
      cpuRedis: m((result) => result.costs?.cpuPer1000.redis),
      cpuPostgres: m((result) => result.costs?.cpuPer1000.postgres),
    };
  });
}

function fmt(value: number | undefined, digits = 0): string {
  if (value === undefined || !Number.isFinite(value)) return '–';
  if (digits === 0) return Math.round(value).toLocaleString('en-US');
  return value.toFixed(digits);
}

export function markdown(report: Report): string {
  const { machine, settings } = report;
  const medianNote = settings.runs > 1 ? `median of ${settings.runs} runs, each metric on its own` : 'one run';
  const lines = [
    `# Orchestrator benchmark, ${report.date}`,
    '',
    `- Machine: ${machine.cpu}, ${machine.cores} cores, ${machine.memoryGiB} GiB, Linux ${machine.kernel}; load average ${machine.loadAverage.join(' / ')} at the start, ${machine.loadAverageEnd.join(' / ')} at the end (the machine is shared: compare ratios, not absolute figures)`,
    `- Versions: node ${report.versions.node}, Redis ${report.versions.redis} (${settings.redis}), PostgreSQL ${report.versions.postgres}, bullmq ${report.versions.bullmq}, pg-boss ${report.versions['pg-boss']}, graphile-worker ${report.versions['graphile-worker']}; orchestrator at ${report.revision}`,
    `- Settings: ${settings.workers} worker processes x concurrency ${settings.concurrency} for every system, ${settings.poolSize} PostgreSQL connections per process, ${settings.connections} HTTP connections; ${settings.quick ? 'quick mode' : 'full mode'} (stages of ${settings.timing.stageMs / 1000} s, latency phase ${settings.timing.latencyMs / 1000} s), tolerance ${settings.tolerance}; ${medianNote}; ${report.elapsedS} s in all`,
    `- Reproduce: \`npm run bench\`${settings.quick ? ' -- --quick' : ''}`,
    '',
    '| Workload | Max tasks/s | Steps/s | x W0 | p50 ms | p90 ms | p99 ms | max ms | Lua calls/step | Other Redis cmds/step | PG xacts/step | CPU s/1k tasks: API | workers | Redis | PostgreSQL |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...report.summary.map((row) =>
      [
        `${row.id} ${row.title}${row.errors.length > 0 ? ' (!)' : ''}`,
        `${row.lowerBound ? '>= ' : ''}${fmt(row.maxTasksPerS)}`,
        fmt(row.maxStepsPerS),
        row.id === 'W0' ? '1' : fmt(row.ratioToW0, 3),
        fmt(row.p50Ms),
        fmt(row.p90Ms),
        fmt(row.p99Ms),
        fmt(row.maxMs),
        fmt(row.luaPerStep, 2),
        fmt(row.redisCommandsPerStep, 1),
        fmt(row.pgTransactionsPerStep, 2),
        fmt(row.cpuApi, 2),
        fmt(row.cpuWorkers, 2),
        fmt(row.cpuRedis, 2),
        fmt(row.cpuPostgres, 2),
      ].join(' | ').replace(/^/, '| ').replace(/$/, ' |'),
    ),
    '',
    `Method. ${report.method}`,
    '',
    ...report.notes.map((note) => `- ${note}`),
  ];
  const oneLine = (text: string) => {
    const flat = text.replace(/\s*\n\s*/g, ' / ').trim();
    return flat.length > 400 ? `${flat.slice(0, 400)}...` : flat;
  };
  const errors = report.summary.flatMap((row) => row.errors.map((error) => `- ${row.id}: ${oneLine(error)}`));
  if (errors.length > 0) lines.push('', '(!) Problems:', ...errors);
  return `${lines.join('\n')}\n`;
}

export const NOTES = [
  'Latency: W1-W4 from tasks.created_at (the API\'s receipt) to tasks.finished_at (commit of the final result); peers from bench_results.received_at to finished_at; W0 from the job\'s timestamp (queue.add) to its finishedOn. PostgreSQL keeps milliseconds.',
  'Lua calls/step: EVALSHA + EVAL from INFO commandstats over the latency phase, divided by the steps run. Other Redis commands include those that the scripts themselves run (INFO commandstats counts both).',
  'PG xacts/step: xact_commit + xact_rollback of the system\'s own database (pg_stat_database), less the bench\'s own queries and one start-up transaction per new connection.',
  'CPU: utime + stime from /proc/<pid>/stat. W0\'s producer is the bench process itself (no API column); PostgreSQL is the backends serving the system\'s database.',
  'x W0 is tasks/s divided by W0\'s jobs/s in the same run; for workflows, Steps/s shows the work done. ">=" marks a maximum where no stage failed (a lower bound).',
  'pg-boss 10 workers poll (at least every 0.5 s) and take one job per fetch here, for the same jobs in flight per process: its throughput is bounded by workers x concurrency / 0.5 s by design.',
];

/** Writes <date>.json, latest.json and latest.md under `outDir`; returns the markdown. */
export function writeReport(report: Report, outDir: string): { markdown: string; files: string[] } {
  mkdirSync(outDir, { recursive: true });
  const stamp = report.date.replace(/:/g, '-').replace(/\.\d+Z$/, 'Z');
  const json = `${JSON.stringify(report, null, 2)}\n`;
  const text = markdown(report);
  const files = [path.join(outDir, `${stamp}.json`), path.join(outDir, 'latest.json'), path.join(outDir, 'latest.md')];
  writeFileSync(files[0]!, json);
  writeFileSync(files[1]!, json);
  writeFileSync(files[2]!, text);
  return { markdown: text, files };
}
