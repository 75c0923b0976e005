import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { MachineInfo } from './metrics.js';
import type { BenchOptions } from './options.js';
import type { RunResult, WorkloadResult } from './runner.js';
import { median } from './stats.js';

/** One workload's headline figures: the median over the runs of each metric on its own. */
/** One IDLE case: medians over the runs. */
export interface IdleSummary {
  name: string;
  p50Ms?: number;
  p90Ms?: number;
  maxMs?: number;
  stepP50Ms?: number;
  stepP90Ms?: number;
  stepMaxMs?: number;
  targetMedianMs: number;
  /** Runs whose median met the target, of `runs`. */
  metRuns: number;
  runs: number;
}

/** W5: medians over the runs (the report's table shows each run, with its completions over time). */
export interface OverloadSummary {
  offeredPerS?: number;
  acceptedShare?: number;
  refusalP50Ms?: number;
  refusalP99Ms?: number;
  minShareOfMax?: number;
  metRuns: number;
  runs: number;
}

export interface Summary {
  id: string;
  title: string;
  measure: WorkloadResult['measure'];
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
  /** The bench process: the load generator (W0: the producer). */
  cpuGenerator?: number;
  /** W1: Redis used_memory per finished task right after the latency phase, and after the events window. */
  redisBytesPerTaskFinished?: number;
  redisBytesPerTaskAfterWindow?: number;
  redisKeysPerTaskAfterWindow?: number;
  redisMemoryMetRuns?: number;
  idle?: IdleSummary[];
  overload?: OverloadSummary;
}

export interface Report {
  date: string;
  machine: MachineInfo & { loadAverageEnd: number[] };
  versions: Record<string, string>;
  revision: string;
  settings: Pick<
    BenchOptions,
    'quick' | 'workloads' | 'runs' | 'workers' | 'apis' | 'latencyRate' | 'concurrency' | 'poolSize' | 'connections' | 'tolerance' | 'timing'
  > & { redis: string };
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

function summarizeIdle(results: WorkloadResult[]): IdleSummary[] {
  const cases = results.flatMap((result) => result.idle?.cases ?? []);
  const names = [...new Set(cases.map((entry) => entry.name))];
  return names.map((name) => {
    const runs = cases.filter((entry) => entry.name === name);
    const m = (pick: (entry: (typeof runs)[number]) => number | undefined) => median(runs.map(pick));
    return {
      name,
      p50Ms: m((entry) => entry.latencyMs.p50),
      p90Ms: m((entry) => entry.latencyMs.p90),
      maxMs: m((entry) => entry.latencyMs.max),
      stepP50Ms: m((entry) => entry.stepMs?.p50),
      stepP90Ms: m((entry) => entry.stepMs?.p90),
      stepMaxMs: m((entry) => entry.stepMs?.max),
      targetMedianMs: runs[0]!.targetMedianMs,
      metRuns: runs.filter((entry) => entry.met).length,
      runs: runs.length,
    };
  });
}

function summarizeOverload(results: WorkloadResult[]): OverloadSummary | undefined {
  const runs = results.flatMap((result) => (result.overload ? [result.overload] : []));
  if (runs.length === 0) return undefined;
  const m = (pick: (entry: (typeof runs)[number]) => number | undefined) => median(runs.map(pick));
  return {
    offeredPerS: m((entry) => entry.offeredPerS),
    acceptedShare: m((entry) => (entry.sent > 0 ? entry.accepted / entry.sent : undefined)),
    refusalP50Ms: m((entry) => entry.refusalMs.p50),
    refusalP99Ms: m((entry) => entry.refusalMs.p99),
    minShareOfMax: m((entry) => entry.minShareOfMax),
    metRuns: runs.filter((entry) => entry.met).length,
    runs: runs.length,
  };
}

export function summarize(runs: RunResult[]): Summary[] {
  const ids = [...new Set(runs.flatMap((run) => run.workloads.map((result) => result.id)))];
  return ids.map((id) => {
    const entries = runs.flatMap((run) => run.workloads.filter((result) => result.id === id).map((result) => ({ run, result })));
    const valid = entries.filter(({ result }) => (result.maxTasksPerS ?? 0) > 0);
    const m = (pick: (result: WorkloadResult, run: RunResult) => number | undefined) => median(valid.map(({ result, run }) => pick(result, run)));
    const results = entries.map(({ result }) => result);
    const memoryRuns = results.flatMap((result) => (result.redisMemory ? [result.redisMemory] : []));
    const overload = summarizeOverload(results);
    const measure = entries[0]?.result.measure ?? 'capacity';
    return {
      id,
      title: entries[0]?.result.title ?? id,
      measure,
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
      cpuGenerator: m((result) => result.costs?.cpuPer1000.generator),
      ...(memoryRuns.length > 0
        ? {
            redisBytesPerTaskFinished: median(memoryRuns.map((entry) => entry.bytesPerTaskFinished)),
            redisBytesPerTaskAfterWindow: median(memoryRuns.map((entry) => entry.bytesPerTaskAfterWindow)),
            redisKeysPerTaskAfterWindow: median(memoryRuns.map((entry) => entry.keysPerTaskAfterWindow)),
            redisMemoryMetRuns: memoryRuns.filter((entry) => entry.met).length,
          }
        : {}),
      ...(measure === 'idle' ? { idle: summarizeIdle(results) } : {}),
      ...(overload ? { overload } : {}),
    };
  });
}

function fmt(value: number | undefined, digits = 0): string {
  if (value === undefined || !Number.isFinite(value)) return '–';
  if (digits === 0) return Math.round(value).toLocaleString('en-US');
  return value.toFixed(digits);
}

const row = (cells: string[]) => `| ${cells.join(' | ')} |`;

/** "yes" / "no" for one run, "k of N runs" for several. */
function met(metRuns: number, runs: number): string {
  if (runs === 1) return metRuns === 1 ? 'yes' : 'NO';
  return `${metRuns} of ${runs} runs`;
}

function idleSection(report: Report): string[] {
  const cases = report.summary.find((entry) => entry.idle)?.idle;
  if (!cases) return [];
  const sample = report.runs.flatMap((run) => run.workloads.flatMap((result) => result.idle?.cases ?? []))[0];
  return [
    '',
    `**Idle latency (IDLE)**: one task at a time on an otherwise idle service (send, wait for its end with \`GET /result/:id?wait=10\`, send the next), ` +
      `${sample?.tasks ?? '?'} tasks per kind after ${sample?.warmup ?? '?'} unmeasured ones; from PostgreSQL's millisecond timestamps.`,
    '',
    '| Task | Median ms | p90 ms | max ms | Target (median) | Met |',
    '|---|---:|---:|---:|---:|---|',
    ...cases.flatMap((entry) => [
      row([
        `${entry.name}: created -> finished`,
        fmt(entry.p50Ms),
        fmt(entry.p90Ms),
        fmt(entry.maxMs),
        `<= ${entry.targetMedianMs} ms`,
        met(entry.metRuns, entry.runs),
      ]),
      ...(entry.stepP50Ms !== undefined
        ? [row([`${entry.name}: the step alone (started -> finished)`, fmt(entry.stepP50Ms), fmt(entry.stepP90Ms), fmt(entry.stepMaxMs), '', ''])]
        : []),
    ]),
  ];
}

function overloadSection(report: Report): string[] {
  const runs = report.runs.flatMap((run) => run.workloads.flatMap((result) => (result.overload ? [{ index: run.index, overload: result.overload }] : [])));
  if (runs.length === 0) return [];
  const seconds = report.settings.timing.overloadMs / 1000;
  return [
    '',
    `**Overload (W5)**: twice W1's max throughput (same run) offered open loop for ${seconds} s to the service with its default admission control; ` +
      'completions per second in 5-s bins of that window, from tasks.finished_at; refusals are 503 (admission control: `overloaded`, with Retry-After) or 429. ' +
      'Where W1\'s max is only a lower bound (">="), twice it may not be an overload at all.',
    '',
    '| Run | Offered/s | Sent | Accepted | Refused | Errors | Refusal p50 / p99 ms | Completions/s per 5 s | Lowest bin / W1 max | >= 90 % throughout |',
    '|---|---:|---:|---:|---|---:|---:|---|---:|---|',
    ...runs.map(({ index, overload: o }) =>
      row([
        String(index),
        fmt(o.offeredPerS),
        fmt(o.sent),
        fmt(o.accepted),
        `${fmt(o.refused)}${
          o.refused > 0
            ? ` (${Object.entries(o.refusedBy)
                .map(([why, count]) => `${why}: ${count}`)
                .join(', ')})`
            : ''
        }`,
        fmt(o.errors),
        `${fmt(o.refusalMs.p50, 1)} / ${fmt(o.refusalMs.p99, 1)}`,
        o.completionsPerSBy5s.map((rate) => fmt(rate)).join(', '),
        `${fmt(o.minShareOfMax * 100)} % of ${o.maxIsLowerBound ? '>= ' : ''}${fmt(o.maxTasksPerS)}/s`,
        o.met ? 'yes' : 'NO',
      ]),
    ),
  ];
}

function redisMemorySection(report: Report): string[] {
  const summary = report.summary.find((entry) => entry.redisBytesPerTaskAfterWindow !== undefined);
  const reports = report.runs.flatMap((run) => run.workloads.flatMap((result) => (result.redisMemory ? [result.redisMemory] : [])));
  const first = reports[0];
  if (!summary || !first) return [];
  const windowS = first.eventsKeepAfterEndS;
  return [
    '',
    `**Redis memory per finished task (${summary.id} latency phase)**: INFO memory used_memory of the private Redis before the phase (once the capacity search's event streams had expired), ` +
      `right after its tasks finished, and once their event streams had expired too (EVENTS_KEEP_AFTER_END_S=${windowS} s${report.settings.quick ? ', shortened from the default 60 s in quick mode' : ''}), ` +
      `divided by the phase's tasks (${first.tasks}${reports.length > 1 ? ' in the first run' : ''}). BullMQ keeps the last QUEUE_KEEP_COMPLETED (1,000) completed jobs per queue: ` +
      'they count here until the queue holds that many, and then each new job replaces an old one. ' +
      `Clients' buffers, part of used_memory and no task's, changed by ${fmt((first.afterWindow.clientBuffers - first.before.clientBuffers) / 1024, 1)} kB over that time: with few tasks they dominate.`,
    '',
    '| Right after: B/task | After the window: B/task | Keys/task after | Target (after) | Met |',
    '|---:|---:|---:|---:|---|',
    row([
      fmt(summary.redisBytesPerTaskFinished),
      fmt(summary.redisBytesPerTaskAfterWindow),
      fmt(summary.redisKeysPerTaskAfterWindow, 3),
      `<= ${first.targetBytesPerTask} B`,
      met(summary.redisMemoryMetRuns ?? 0, reports.length),
    ]),
    '',
    `Keys of the service's prefix that changed from before the phase to after the window${reports.length > 1 ? ' (first run)' : ''}: ` +
      (Object.entries(first.keyKindsChanged)
        .map(([kind, counts]) => `\`${kind}\` ${fmt(counts.before)} -> ${fmt(counts.after)}`)
        .join(', ') || 'none') +
      '.',
  ];
}

export function markdown(report: Report): string {
  const { machine, settings } = report;
  const medianNote = settings.runs > 1 ? `median of ${settings.runs} runs, each metric on its own` : 'one run';
  const lines = [
    `# Orchestrator benchmark, ${report.date}`,
    '',
    `- Machine: ${machine.cpu}, ${machine.cores} cores, ${machine.memoryGiB} GiB, Linux ${machine.kernel}; load average ${machine.loadAverage.join(' / ')} at the start, ${machine.loadAverageEnd.join(' / ')} at the end (the machine is shared: compare ratios, not absolute figures)`,
    `- Versions: node ${report.versions.node}, Redis ${report.versions.redis} (${settings.redis}), PostgreSQL ${report.versions.postgres}, bullmq ${report.versions.bullmq}, pg-boss ${report.versions['pg-boss']}, graphile-worker ${report.versions['graphile-worker']}; orchestrator at ${report.revision}`,
    `- Settings: ${settings.workers} worker processes x concurrency ${settings.concurrency} for every system${settings.apis > 1 ? `, ${settings.apis} orchestrator API processes` : ''}${settings.latencyRate ? `, latency phases (and costs) at ${settings.latencyRate} tasks/s instead of half the max` : ''}, ${settings.poolSize} PostgreSQL connections per process, ${settings.connections} HTTP connections; ${settings.quick ? 'quick mode' : 'full mode'} (stages of ${settings.timing.stageMs / 1000} s, latency phase ${settings.timing.latencyMs / 1000} s), tolerance ${settings.tolerance}; ${medianNote}; ${report.elapsedS} s in all`,
    `- Reproduce: \`npm run bench\`${settings.quick ? ' -- --quick' : ''}`,
    '',
    '| Workload | Max tasks/s | Steps/s | x W0 | p50 ms | p90 ms | p99 ms | max ms | Lua calls/step | Other Redis cmds/step | PG xacts/step | CPU s/1k tasks: API | workers | Redis | PostgreSQL | bench (load generator) |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...report.summary
      .filter((row) => row.measure === 'capacity')
      .map((row) =>
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
          fmt(row.cpuGenerator, 2),
        ]
          .join(' | ')
          .replace(/^/, '| ')
          .replace(/$/, ' |'),
      ),
    ...idleSection(report),
    ...overloadSection(report),
    ...redisMemorySection(report),
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
  "Latency: W1-W4 from tasks.created_at (the API's receipt) to tasks.finished_at (commit of the final result); peers from bench_results.received_at to finished_at; W0 from the job's timestamp (queue.add) to its finishedOn. PostgreSQL keeps milliseconds.",
  'Lua calls/step: EVALSHA + EVAL from INFO commandstats over the latency phase, divided by the steps run. Other Redis commands include those that the scripts themselves run (INFO commandstats counts both).',
  "PG xacts/step: xact_commit + xact_rollback of the system's own database (pg_stat_database), less the bench's own queries and one start-up transaction per new connection.",
  "CPU: utime + stime from /proc/<pid>/stat. W0's producer is the bench process itself (no API column); PostgreSQL is the backends serving the system's database; bench (load generator) is the bench process itself, which shares the machine with what it measures.",
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
