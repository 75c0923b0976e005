import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Stages } from '../loop.js';
import type { IdleFloor } from './costs.js';
import { DRAIN_TRIM } from './drain.js';
import type { MapScaleReport } from './mapscale.js';
import type { MachineInfo } from './metrics.js';
import { type BenchOptions, WORKLOAD_IDS } from './options.js';
import type { RunResult, WorkloadResult } from './runner.js';
import { median } from './stats.js';
import { WORKLOADS } from './workloads.js';

/**
 * Every figure of the report is the median over the runs of that figure measured in each run;
 * a ratio is computed in each run first (both sides from the same run), then its median taken,
 * never as a ratio of two medians.
 */

/** One IDLE case: medians over the runs. */
export interface IdleSummary {
  name: string;
  p50Ms?: number;
  p90Ms?: number;
  maxMs?: number;
  stepP50Ms?: number;
  stepP90Ms?: number;
  stepMaxMs?: number;
  targetMedianMs?: number;
  /** Runs whose median met the target, of `runs`. */
  metRuns: number;
  runs: number;
}

/** IDLE's chains: what a level adds, median of the per-run figures. */
export interface ChainLevelsSummary {
  from: string;
  to: string;
  levels: number;
  msPerLevel?: number;
  perRun: number[];
  targetMsPerLevel: number;
  metRuns: number;
  runs: number;
}

/** DRAIN, per kind: medians of the per-run figures (the ratio to the baseline computed in each run). */
export interface DrainSummary {
  id: string;
  title: string;
  stepsPerTask: number;
  tasks?: number;
  stepsPerS?: number;
  tasksPerS?: number;
  submitMs?: number;
  finishedWhileSubmittingShare?: number;
  ratioToBaseline?: number;
  ratioPerRun: number[];
}

/** RATE, per kind: medians of the per-run figures. */
export interface RateSummary {
  id: string;
  title: string;
  stepsPerTask: number;
  tasksPerS?: number;
  unitsPerS?: number;
  cpuMsPerUnit: { api?: number; workers?: number; redis?: number; postgres?: number; total?: number };
  pgTransactionsPerStep?: number;
  p50Ms?: number;
  ratioToBaseline?: number;
  ratioPerRun: number[];
  /** Runs where the rate was above the kind's maximum in that run. */
  aboveMaxRuns: number;
  runs: number;
}

/** The idle floor of one system: medians over the runs. */
export interface FloorSummary {
  system: string;
  cpuMsPerS: { api?: number; workers?: number; redis?: number; postgres?: number; generator?: number };
  postgresBenchMsPerS?: number;
  postgresProcesses?: number;
  runs: number;
}

/** One of the issue's targets: the median of the per-run figures, and whether it meets the target. */
export interface TargetRow {
  measure: string;
  /** Where the figure comes from. */
  source: string;
  value?: number;
  perRun: number[];
  unit: string;
  comparison: '<=' | '>=';
  target: number;
  /** The median meets the target. */
  met?: boolean;
  metRuns: number;
  /** A figure that qualifies the measured one (PostgreSQL: the system's own backends alone). */
  aside?: string;
  /** Runs whose figure is not what the target means (RATE above a kind's maximum). */
  caveat?: string;
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

/** MAPSCALE, one line of its tables: medians over the runs of each run's figures (ratios computed within each run). */
export interface MapScaleLine {
  label: string;
  p50Ms?: number;
  p95Ms?: number;
  bytes?: number;
  /** p50 over the baseline's p50 in the same window (GET lines) or answer over the chain's answer (cancel lines). */
  ratio?: number;
  ratioPerRun: number[];
}

export interface MapScaleCancelLine {
  label: string;
  answerMs?: number;
  pgSettledMs?: number;
  redisClearMs?: number;
  stoppedMs?: number;
  /** Jobs of the task waiting in Redis just before the cancel (median over the samples of the first run). */
  jobsWaitingBefore?: number;
  ratio?: number;
  ratioPerRun: number[];
  /** Every sample's answer, run by run. */
  answers: number[];
}

export interface MapScaleSummary {
  items: number;
  samples: number;
  cancelRounds: number;
  sleepMs: number;
  maxParallel: number;
  cancelSleepMs: number;
  mapRunMs?: number;
  sleepingMs: number;
  /** Runs where the map stayed in flight throughout its /result series. */
  inFlightRuns: number;
  runs: number;
  itemsDone: { atStart?: number; atEnd?: number };
  gets: MapScaleLine[];
  baselineInFlightOverFinished?: number;
  cancels: MapScaleCancelLine[];
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
  /** W1 and the workflows: the capacity row's p50 over W1's, in the same run. */
  p50RatioToW1?: number;
  luaPerStep?: number;
  redisCommandsPerStep?: number;
  redisRoundTripsPerTask?: number;
  pgTransactionsPerStep?: number;
  cpuApi?: number;
  cpuWorkers?: number;
  cpuRedis?: number;
  cpuPostgres?: number;
  /** PostgreSQL CPU ms per step (CPU s per 1,000 tasks / steps per task). */
  pgCpuMsPerStep?: number;
  /** The bench process: the load generator (W0: the producer). */
  cpuGenerator?: number;
  /** W1: Redis used_memory per finished task right after the latency phase, and after the events window. */
  redisBytesPerTaskFinished?: number;
  redisBytesPerTaskAfterWindow?: number;
  redisKeysPerTaskAfterWindow?: number;
  redisMemoryMetRuns?: number;
  idle?: IdleSummary[];
  chainLevels?: ChainLevelsSummary;
  overload?: OverloadSummary;
  drain?: DrainSummary[];
  rate?: RateSummary[];
  mapScale?: MapScaleSummary;
}

export interface Report {
  date: string;
  machine: MachineInfo & { loadAverageEnd: number[] };
  versions: Record<string, string>;
  revision: string;
  settings: Pick<
    BenchOptions,
    | 'quick'
    | 'workloads'
    | 'runs'
    | 'workers'
    | 'apis'
    | 'latencyRate'
    | 'unitRate'
    | 'drainConnections'
    | 'concurrency'
    | 'poolSize'
    | 'connections'
    | 'tolerance'
    | 'timing'
  > & { redis: string };
  method: string;
  notes: string[];
  summary: Summary[];
  floors: FloorSummary[];
  targets: TargetRow[];
  runs: RunResult[];
  /** STORM: bench/storm.ts's results, one per run (its own JSON, as it wrote it). */
  storm?: unknown;
  /** LOOP: bench/loop.ts's results, one per run (its own JSON, as it wrote it). */
  loop?: unknown;
  elapsedS: number;
}

function ratio(result: WorkloadResult, run: RunResult): number | undefined {
  const baseline = run.workloads.find((entry) => entry.id === 'W0')?.maxTasksPerS;
  return baseline && result.maxTasksPerS ? result.maxTasksPerS / baseline : undefined;
}

/** A workload's latency p50 over W1's, both at half their own maximum, in the same run. */
function p50RatioToW1(result: WorkloadResult, run: RunResult): number | undefined {
  const w1 = run.workloads.find((entry) => entry.id === 'W1')?.latency?.latencyMs.p50;
  const own = result.latency?.latencyMs.p50;
  return w1 && own !== undefined && Number.isFinite(own) ? own / w1 : undefined;
}

/** The finite values of `pick` over the runs, in run order. */
function perRun(runs: RunResult[], pick: (run: RunResult) => number | undefined): number[] {
  return runs.map(pick).filter((value): value is number => typeof value === 'number' && Number.isFinite(value));
}

const workloadOf = (run: RunResult, id: string) => run.workloads.find((entry) => entry.id === id);

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
      ...(runs[0]!.targetMedianMs !== undefined ? { targetMedianMs: runs[0]!.targetMedianMs } : {}),
      metRuns: runs.filter((entry) => entry.met).length,
      runs: runs.length,
    };
  });
}

function summarizeChainLevels(results: WorkloadResult[]): ChainLevelsSummary | undefined {
  const runs = results.flatMap((result) => (result.idle?.chainLevels ? [result.idle.chainLevels] : []));
  const first = runs[0];
  if (!first) return undefined;
  return {
    from: first.from,
    to: first.to,
    levels: first.levels,
    msPerLevel: median(runs.map((entry) => entry.msPerLevel)),
    perRun: runs.map((entry) => entry.msPerLevel),
    targetMsPerLevel: first.targetMsPerLevel,
    metRuns: runs.filter((entry) => entry.met).length,
    runs: runs.length,
  };
}

/**
 * DRAIN's and RATE's summaries share a shape: per kind, medians over the runs of each run's
 * figures, and the kind's ratio to the baseline as each run computed it. `figures` adds a
 * measure's own medians (`m` takes one over that kind's reports). Undefined when no run measured it.
 */
function perKind<K extends { id: string; title: string; stepsPerTask: number }, F>(
  reports: readonly ({ kinds: readonly K[]; ratios: Record<string, number> } | undefined)[],
  figures: (m: (pick: (kind: K) => number | undefined) => number | undefined, kinds: K[]) => F,
) {
  const measured = reports.filter((report) => report !== undefined);
  if (measured.length === 0) return undefined;
  const ids = [...new Set(measured.flatMap((report) => report.kinds.map((kind) => kind.id)))];
  return ids.map((id) => {
    const kinds = measured.flatMap((report) => report.kinds.filter((kind) => kind.id === id));
    const ratios = measured.flatMap((report) => (report.ratios[id] !== undefined ? [report.ratios[id]] : []));
    return {
      id,
      title: kinds[0]!.title,
      stepsPerTask: kinds[0]!.stepsPerTask,
      ...figures((pick) => median(kinds.map(pick)), kinds),
      ratioToBaseline: median(ratios),
      ratioPerRun: ratios,
    };
  });
}

function summarizeDrain(results: WorkloadResult[]): DrainSummary[] | undefined {
  return perKind(
    results.map((result) => result.drain),
    (m) => ({
      tasks: m((kind) => kind.accepted),
      stepsPerS: m((kind) => kind.stepsPerS),
      tasksPerS: m((kind) => kind.tasksPerS),
      submitMs: m((kind) => kind.submitMs),
      finishedWhileSubmittingShare: m((kind) => kind.finishedWhileSubmittingShare),
    }),
  );
}

function summarizeRate(results: WorkloadResult[]): RateSummary[] | undefined {
  return perKind(
    results.map((result) => result.rate),
    (m, kinds) => ({
      tasksPerS: m((kind) => kind.tasksPerS),
      unitsPerS: m((kind) => kind.unitsPerS),
      cpuMsPerUnit: {
        api: m((kind) => kind.cpuMsPerUnit.api),
        workers: m((kind) => kind.cpuMsPerUnit.workers),
        redis: m((kind) => kind.cpuMsPerUnit.redis),
        postgres: m((kind) => kind.cpuMsPerUnit.postgres),
        total: m((kind) => kind.cpuMsPerUnit.total),
      },
      pgTransactionsPerStep: m((kind) => kind.costs.pgTransactionsPerStep),
      p50Ms: m((kind) => kind.p50Ms),
      aboveMaxRuns: kinds.filter((kind) => kind.aboveMax).length,
      runs: kinds.length,
    }),
  );
}

export function summarizeFloors(runs: RunResult[]): FloorSummary[] {
  const floors = runs.flatMap((run) => run.floors ?? []);
  const systems = [...new Set(floors.map((floor) => floor.system))];
  return systems.map((system) => {
    const entries = floors.filter((floor) => floor.system === system);
    const m = (pick: (floor: IdleFloor) => number | undefined) => median(entries.map(pick));
    return {
      system,
      cpuMsPerS: {
        api: m((floor) => floor.cpuMsPerS.api),
        workers: m((floor) => floor.cpuMsPerS.workers),
        redis: m((floor) => floor.cpuMsPerS.redis),
        postgres: m((floor) => floor.cpuMsPerS.postgres),
        generator: m((floor) => floor.cpuMsPerS.generator),
      },
      postgresBenchMsPerS: m((floor) => floor.postgresBenchMsPerS),
      postgresProcesses: m((floor) => floor.postgresProcesses),
      runs: entries.length,
    };
  });
}

/** The issue's targets, each from the runs' own figures: the median of the per-run values. */
export function targets(runs: RunResult[]): TargetRow[] {
  const row = (
    measure: string,
    source: string,
    unit: string,
    comparison: TargetRow['comparison'],
    target: number,
    pick: (run: RunResult) => number | undefined,
    extra: { aside?: string; caveat?: string } = {},
  ): TargetRow => {
    const values = perRun(runs, pick);
    const value = median(values);
    const meets = (figure: number) => (comparison === '<=' ? figure <= target : figure >= target);
    return {
      measure,
      source,
      value,
      perRun: values,
      unit,
      comparison,
      target,
      ...(value !== undefined ? { met: meets(value) } : {}),
      metRuns: values.filter(meets).length,
      ...(extra.aside ? { aside: extra.aside } : {}),
      ...(extra.caveat ? { caveat: extra.caveat } : {}),
    };
  };
  const drainRatio = (id: string) => (run: RunResult) => workloadOf(run, 'DRAIN')?.drain?.ratios[id];
  const rateRatio = (id: string) => (run: RunResult) => workloadOf(run, 'RATE')?.rate?.ratios[id];
  const idleCase = (name: string) => (run: RunResult) => workloadOf(run, 'IDLE')?.idle?.cases.find((entry) => entry.name === name)?.latencyMs.p50;
  const pgCpuPerStep = (id: string) => (run: RunResult) => {
    const result = workloadOf(run, id);
    const ms = result?.costs?.cpuPer1000.postgres;
    return ms !== undefined && result?.stepsPerTask ? ms / result.stepsPerTask : undefined;
  };
  const pgXacts = (id: string) => (run: RunResult) => workloadOf(run, id)?.costs?.pgTransactionsPerStep;
  /** The same figure from the system's own backends alone, for a server shared with other work. */
  const ownAside = (id: string) => {
    const values = perRun(runs, (run) => {
      const result = workloadOf(run, id);
      const own = result?.costs?.pgOwnBackendsCpuS;
      return own !== undefined && result?.costs?.steps ? (own * 1000) / result.costs.steps : undefined;
    });
    const value = median(values);
    return value === undefined ? {} : { aside: `its own database's backends alone: ${value.toFixed(2)} ms` };
  };
  const rateCaveat = (id: string) => {
    const above = runs.filter((run) => workloadOf(run, 'RATE')?.rate?.kinds.some((kind) => (kind.id === id || kind.id === 'W1') && kind.aboveMax)).length;
    return above > 0 ? { caveat: `above a kind's maximum in ${above} of ${runs.length} run(s): a backlog, not that rate` } : {};
  };
  return [
    row('Capacity draining a backlog: W2 (chain) steps/s / W1 tasks/s', 'DRAIN', 'x', '>=', 0.7, drainRatio('W2')),
    row('Capacity draining a backlog: W3 (fan-out) steps/s / W1 tasks/s', 'DRAIN', 'x', '>=', 0.7, drainRatio('W3')),
    row('Capacity draining a backlog: W4 (diamond) steps/s / W1 tasks/s', 'DRAIN', 'x', '>=', 0.7, drainRatio('W4')),
    row('Idle diamond, created -> finished, median', 'IDLE', 'ms', '<=', 12, idleCase('diamond')),
    row(
      'Each level of a chain when idle: (chain of 5 - chain of 1) / 4',
      'IDLE',
      'ms',
      '<=',
      3,
      (run) => workloadOf(run, 'IDLE')?.idle?.chainLevels?.msPerLevel,
    ),
    row("W2 p50 at half its max / W1's p50 at half its max", 'W1, W2 latency phases', 'x', '<=', 2, (run) => {
      const w2 = workloadOf(run, 'W2');
      return w2 ? p50RatioToW1(w2, run) : undefined;
    }),
    row('CPU per W2 step / per W1 task, same units/s, all processes', 'RATE', 'x', '<=', 1.2, rateRatio('W2'), rateCaveat('W2')),
    row('CPU per W3 step / per W1 task, same units/s, all processes', 'RATE', 'x', '<=', 1.2, rateRatio('W3'), rateCaveat('W3')),
    // Issue 20 asks for the cost of limits per key, with no target: the ratio is shown against 1 (no cost).
    row(
      'CPU per W1 task under a limit per key / per W1 task, same units/s (issue 20: the cost, no target)',
      'RATE',
      'x',
      '<=',
      1,
      rateRatio('W1L'),
      rateCaveat('W1L'),
    ),
    row('PostgreSQL transactions per step under load: W2', 'W2 latency phase', '', '<=', 1, pgXacts('W2')),
    row('PostgreSQL transactions per step under load: W3', 'W3 latency phase', '', '<=', 1, pgXacts('W3')),
    row('PostgreSQL transactions per step under load: W4', 'W4 latency phase', '', '<=', 1, pgXacts('W4')),
    row('PostgreSQL CPU per W3 step (all its processes)', 'W3 latency phase', 'ms', '<=', 0.5, pgCpuPerStep('W3'), ownAside('W3')),
    row('PostgreSQL CPU per W1 task (all its processes)', 'W1 latency phase', 'ms', '<=', 0.3, pgCpuPerStep('W1'), ownAside('W1')),
    row('Idle echo, created -> finished, median', 'IDLE', 'ms', '<=', 3, idleCase('echo')),
    row('W1 max tasks/s / W0 max jobs/s', 'W0, W1 capacity', 'x', '>=', 0.2, (run) => {
      const w1 = workloadOf(run, 'W1');
      return w1 ? ratio(w1, run) : undefined;
    }),
    // Issue 30: a tool in a user's own worker (its results through the API) against the built-in echo.
    row("W1U (a user's own worker) max tasks/s / W1 max tasks/s", 'W1, W1U capacity', 'x', '>=', 0.8, (run) => {
      const w1 = workloadOf(run, 'W1')?.maxTasksPerS;
      const w1u = workloadOf(run, 'W1U')?.maxTasksPerS;
      return w1 && w1u ? w1u / w1 : undefined;
    }),
    row(
      "CPU per W1U task (a user's own worker) / per W1 task, same tasks/s, all processes",
      'USER',
      'x',
      '<=',
      1.2,
      (run) => workloadOf(run, 'USER')?.rate?.ratios.W1U,
    ),
    // The issue says "a map of 1,000 items must not make /result or cancel slow. Measure both.",
    // without a figure: these targets are ours.
    row(
      "GET /result of a task whose map of 1,000 items is in flight, p50 / a finished echo task's p50, same window (our target: the issue gives no figure)",
      'MAPSCALE',
      'x',
      '<=',
      mapScaleTarget(runs, 'resultRatio'),
      (run) => mapScaleOf(run)?.result.inFlight.ratioP50,
    ),
    ...[20, 1_000].map((maxParallel) =>
      row(
        `POST /tasks/:id/cancel of a map of 1,000 items in flight (max_parallel ${maxParallel.toLocaleString('en-US')}), answer / a running 3-step chain's, medians (our target)`,
        'MAPSCALE',
        'x',
        '<=',
        mapScaleTarget(runs, 'cancelRatio'),
        (run) => mapScaleOf(run)?.cancel.kinds.find((kind) => kind.maxParallel === maxParallel)?.answerRatioToChain,
      ),
    ),
  ];
}

const mapScaleOf = (run: RunResult) => workloadOf(run, 'MAPSCALE')?.mapScale;

/** MAPSCALE's targets as the run recorded them (2 when it did not run: the row then says "not measured"). */
function mapScaleTarget(runs: RunResult[], which: 'resultRatio' | 'cancelRatio'): number {
  return runs.map(mapScaleOf).find((report) => report)?.targets[which] ?? 2;
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

function summarizeMapScale(results: WorkloadResult[]): MapScaleSummary | undefined {
  const reports = results.flatMap((result) => (result.mapScale ? [result.mapScale] : []));
  const first = reports[0];
  if (!first) return undefined;
  const m = (pick: (report: MapScaleReport) => number | undefined) => median(reports.map(pick));
  const ratios = (pick: (report: MapScaleReport) => number | undefined) =>
    reports.map(pick).filter((value): value is number => typeof value === 'number' && Number.isFinite(value));
  const line = (
    label: string,
    pick: (report: MapScaleReport) => { p50: number; p95: number; bytes: number },
    ratio?: (report: MapScaleReport) => number,
  ): MapScaleLine => ({
    label,
    p50Ms: m((report) => pick(report).p50),
    p95Ms: m((report) => pick(report).p95),
    bytes: m((report) => pick(report).bytes),
    ...(ratio ? { ratio: median(ratios(ratio)) } : {}),
    ratioPerRun: ratio ? ratios(ratio) : [],
  });
  const items = first.items.toLocaleString('en-US');
  return {
    items: first.items,
    samples: first.samples,
    cancelRounds: first.cancel.rounds,
    sleepMs: first.sleepMs,
    maxParallel: first.maxParallel,
    cancelSleepMs: first.cancelSleepMs,
    mapRunMs: m((report) => report.mapRunMs),
    sleepingMs: first.sleepingMs,
    inFlightRuns: reports.filter((report) => report.result.inFlight.inFlightThroughout).length,
    runs: reports.length,
    itemsDone: { atStart: m((report) => report.result.inFlight.itemsAtStart.done), atEnd: m((report) => report.result.inFlight.itemsAtEnd.done) },
    gets: [
      line(
        `(a) GET /result/:id, a map of ${items} items in flight`,
        (report) => report.result.inFlight.map,
        (report) => report.result.inFlight.ratioP50,
      ),
      line('(c) GET /result/:id, a finished echo task, in the same window', (report) => report.result.inFlight.baseline),
      line(
        `(b) GET /result/:id, the same map finished`,
        (report) => report.result.finished.map,
        (report) => report.result.finished.ratioP50,
      ),
      line('(c) GET /result/:id, the finished echo task, in the same window', (report) => report.result.finished.baseline),
      line(
        'GET /tasks/:id/steps/each/items?limit=100, first page',
        (report) => report.pages.first,
        (report) => report.pages.ratioFirstP50,
      ),
      line(
        `GET …/items?limit=100&cursor=${first.pages.middleCursor}, a middle page`,
        (report) => report.pages.middle,
        (report) => report.pages.ratioMiddleP50,
      ),
    ],
    baselineInFlightOverFinished: m((report) => report.result.baselineInFlightOverFinished),
    cancels: first.cancel.kinds.map((kind) => {
      const runs = reports.flatMap((report) => report.cancel.kinds.filter((entry) => entry.id === kind.id));
      const k = (pick: (entry: (typeof runs)[number]) => number | undefined) => median(runs.map(pick));
      const perRun = runs.map((entry) => entry.answerRatioToChain).filter((value): value is number => typeof value === 'number' && Number.isFinite(value));
      return {
        label: kind.title,
        answerMs: k((entry) => entry.answerMs),
        pgSettledMs: k((entry) => entry.pgSettledMs),
        redisClearMs: k((entry) => entry.redisClearMs),
        stoppedMs: k((entry) => entry.stoppedMs),
        jobsWaitingBefore: median(kind.samples.map((sample) => sample.before.jobsWaiting)),
        ...(kind.answerRatioToChain !== undefined ? { ratio: median(perRun) } : {}),
        ratioPerRun: perRun,
        answers: runs.flatMap((entry) => entry.samples.map((sample) => sample.answerMs)),
      };
    }),
  };
}

export function summarize(runs: RunResult[]): Summary[] {
  const ids = [...new Set(runs.flatMap((run) => run.workloads.map((result) => result.id)))];
  return ids.map((id) => {
    const entries = runs.flatMap((run) => run.workloads.filter((result) => result.id === id).map((result) => ({ run, result })));
    // Capacity figures from the runs where a maximum was found; the other measures from every run.
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
      ...(id !== 'W0' && id !== 'W1' && entries[0]?.result.latency ? { p50RatioToW1: m((result, run) => p50RatioToW1(result, run)) } : {}),
      luaPerStep: m((result) => result.costs?.luaPerStep),
      redisCommandsPerStep: m((result) => result.costs?.redisCommandsPerStep),
      redisRoundTripsPerTask: m((result) => result.costs?.redisRoundTripsPerTask),
      pgTransactionsPerStep: m((result) => result.costs?.pgTransactionsPerStep),
      cpuApi: m((result) => result.costs?.cpuPer1000.api),
      cpuWorkers: m((result) => result.costs?.cpuPer1000.workers),
      cpuRedis: m((result) => result.costs?.cpuPer1000.redis),
      cpuPostgres: m((result) => result.costs?.cpuPer1000.postgres),
      pgCpuMsPerStep: m((result) =>
        result.costs?.cpuPer1000.postgres !== undefined && result.stepsPerTask ? result.costs.cpuPer1000.postgres / result.stepsPerTask : undefined,
      ),
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
      ...(measure === 'idle' && summarizeChainLevels(results) ? { chainLevels: summarizeChainLevels(results)! } : {}),
      ...(overload ? { overload } : {}),
      ...(measure === 'drain' && summarizeDrain(results) ? { drain: summarizeDrain(results)! } : {}),
      ...(measure === 'rate' && summarizeRate(results) ? { rate: summarizeRate(results)! } : {}),
      ...(measure === 'mapscale' && summarizeMapScale(results) ? { mapScale: summarizeMapScale(results)! } : {}),
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
  const summary = report.summary.find((entry) => entry.idle);
  const cases = summary?.idle;
  if (!cases) return [];
  const sample = report.runs.flatMap((run) => run.workloads.flatMap((result) => result.idle?.cases ?? []))[0];
  const chain = summary.chainLevels;
  return [
    '',
    `**Idle latency (IDLE)**: one task at a time on an otherwise idle service (send, wait for its end with \`GET /result/:id?wait=10\`, send the next), ` +
      `${sample?.tasks ?? '?'} tasks per kind after ${sample?.warmup ?? '?'} unmeasured ones; from PostgreSQL's millisecond timestamps. ` +
      'The chains are echo steps, each depending on the previous one and passing its output on (`{{steps.<prev>.output.value}}`).',
    '',
    '| Task | Median ms | p90 ms | max ms | Target (median) | Met |',
    '|---|---:|---:|---:|---:|---|',
    ...cases.flatMap((entry) => [
      row([
        `${entry.name}: created -> finished`,
        fmt(entry.p50Ms),
        fmt(entry.p90Ms),
        fmt(entry.maxMs),
        entry.targetMedianMs !== undefined ? `<= ${entry.targetMedianMs} ms` : '',
        entry.targetMedianMs !== undefined ? met(entry.metRuns, entry.runs) : '',
      ]),
      ...(entry.stepP50Ms !== undefined
        ? [row([`${entry.name}: the step alone (started -> finished)`, fmt(entry.stepP50Ms), fmt(entry.stepP90Ms), fmt(entry.stepMaxMs), '', ''])]
        : []),
    ]),
    ...(chain
      ? [
          row([
            `each level of a chain: (${chain.to} - ${chain.from}) / ${chain.levels}, per run${chain.runs > 1 ? ` (${chain.perRun.map((value) => fmt(value, 1)).join(', ')})` : ''}`,
            fmt(chain.msPerLevel, 1),
            '',
            '',
            `<= ${chain.targetMsPerLevel} ms`,
            met(chain.metRuns, chain.runs),
          ]),
        ]
      : []),
  ];
}

/** "0.71 (0.70, 0.74, 0.69)": the median, and each run's figure when there are several. */
function withRuns(value: number | undefined, runs: number[], digits: number): string {
  return `${fmt(value, digits)}${runs.length > 1 ? ` (${runs.map((entry) => fmt(entry, digits)).join(', ')})` : ''}`;
}

/** W1's maximum over each peer's, computed within each run, then the median: "W1 / graphile-worker". */
function peersLine(report: Report): string[] {
  const peers = ['pg-boss', 'graphile-worker'].flatMap((id) => {
    const values = perRun(report.runs, (run) => {
      const w1 = workloadOf(run, 'W1')?.maxTasksPerS;
      const peer = workloadOf(run, id)?.maxTasksPerS;
      return w1 && peer ? w1 / peer : undefined;
    });
    return values.length > 0 ? [`${id} ${withRuns(median(values), values, 2)}`] : [];
  });
  if (peers.length === 0) return [];
  return ['', `W1's max tasks/s over each peer's, in the same run${report.runs.length > 1 ? ' (median of the per-run ratios)' : ''}: ${peers.join(', ')}.`];
}

function targetsSection(report: Report): string[] {
  if (report.targets.every((target) => target.value === undefined)) return [];
  const runs = report.settings.runs;
  return [
    '',
    `**The workflow engine issue's targets** (issue 19; the MAPSCALE rows' figures are ours, the issue asks only that a map of 1,000 items not make /result or cancel slow), ${runs > 1 ? `each the median of the ${runs} runs' own figures (in brackets, run by run); a ratio is computed within each run, then its median taken` : 'from this run'}:`,
    '',
    '| Target | From | Measured | Target | Met |',
    '|---|---|---:|---:|---|',
    ...report.targets.map((target) => {
      // Latencies are whole milliseconds (PostgreSQL's timestamps); a level of a chain and CPU ms are not.
      const digits = target.unit === 'ms' ? (Number.isInteger(target.value) ? 0 : 2) : 2;
      const unit = target.unit === 'x' ? 'x' : target.unit ? ` ${target.unit}` : '';
      return row([
        target.measure,
        target.source,
        target.value === undefined
          ? 'not measured'
          : `${fmt(target.value, digits)}${unit}${target.perRun.length > 1 ? ` (${target.perRun.map((value) => fmt(value, digits)).join(', ')})` : ''}${target.aside ? ` (${target.aside})` : ''}${target.caveat ? ` (!) ${target.caveat}` : ''}`,
        `${target.comparison} ${target.target}${unit}`,
        target.met === undefined
          ? '–'
          : `${target.met ? 'yes' : 'NO'}${target.perRun.length > 1 ? ` (${target.metRuns} of ${target.perRun.length} runs)` : ''}`,
      ]);
    }),
  ];
}

/** A section per rate workload: RATE, and HIST (RATE's W1 and W3 with TASK_HISTORY=off, to compare with RATE's). */
function rateSection(report: Report): string[] {
  return report.summary.flatMap((entry) => (entry.rate ? rateTable(report, entry.id, entry.rate) : []));
}

function rateTable(report: Report, id: string, kinds: RateSummary[]): string[] {
  const sample = report.runs.flatMap((run) => run.workloads.flatMap((result) => (result.id === id && result.rate ? [result.rate] : [])))[0];
  if (id !== 'RATE') {
    const title = WORKLOADS.find((workload) => workload.id === id)?.title ?? id;
    const rate = report.summary.find((entry) => entry.id === 'RATE')?.rate ?? [];
    return [
      '',
      `**${id}: ${title}**, measured as RATE is, in the same run. The last column: CPU per unit with the history (RATE's row) over without (this one).`,
      '',
      '| Kind | Tasks/s | CPU ms/unit: API | workers | Redis | PostgreSQL | total | PG xacts/step | p50 ms | RATE total / this |',
      '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
      ...kinds.map((kind) => {
        const on = rate.find((candidate) => candidate.id === kind.id)?.cpuMsPerUnit.total;
        const off = kind.cpuMsPerUnit.total;
        return row([
          `${kind.id} ${kind.title}`,
          fmt(kind.tasksPerS, kind.tasksPerS !== undefined && kind.tasksPerS < 100 ? 1 : 0),
          fmt(kind.cpuMsPerUnit.api, 3),
          fmt(kind.cpuMsPerUnit.workers, 3),
          fmt(kind.cpuMsPerUnit.redis, 3),
          fmt(kind.cpuMsPerUnit.postgres, 3),
          fmt(kind.cpuMsPerUnit.total, 3),
          fmt(kind.pgTransactionsPerStep, 2),
          fmt(kind.p50Ms),
          on !== undefined && off ? fmt(on / off, 2) : '–',
        ]);
      }),
    ];
  }
  return [
    '',
    `**CPU per unit at the same rate (RATE)**: each kind offered open loop at ${fmt(report.settings.unitRate)} units (steps) per second for ${fmt((sample?.durationMs ?? 0) / 1000)} s ` +
      '(W1 at that many tasks/s, W2 at a third, W3 at a twelfth); CPU of the API, the workers, Redis and every PostgreSQL process over the phase, from idle to idle, ' +
      "divided by the steps run. The ratio is each kind's total over W1's in the same run. (!) marks a rate above the kind's maximum in the run: " +
      'a backlog grew, and the figures are not costs at that rate (`--unit-rate` sets another).',
    '',
    '| Kind | Tasks/s | Units/s | CPU ms/unit: API | workers | Redis | PostgreSQL | total | / W1 task | PG xacts/step | p50 ms |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...kinds.map((kind) =>
      row([
        `${kind.id} ${kind.title}${kind.aboveMaxRuns > 0 ? ` (!) above its max in ${kind.runs > 1 ? `${kind.aboveMaxRuns} of ${kind.runs} runs` : 'this run'}` : ''}`,
        fmt(kind.tasksPerS, kind.tasksPerS !== undefined && kind.tasksPerS < 100 ? 1 : 0),
        fmt(kind.unitsPerS),
        fmt(kind.cpuMsPerUnit.api, 3),
        fmt(kind.cpuMsPerUnit.workers, 3),
        fmt(kind.cpuMsPerUnit.redis, 3),
        fmt(kind.cpuMsPerUnit.postgres, 3),
        fmt(kind.cpuMsPerUnit.total, 3),
        kind.id === 'W1' ? '1' : withRuns(kind.ratioToBaseline, kind.ratioPerRun, 2),
        fmt(kind.pgTransactionsPerStep, 2),
        fmt(kind.p50Ms),
      ]),
    ),
  ];
}

function drainSection(report: Report): string[] {
  const kinds = report.summary.find((entry) => entry.drain)?.drain;
  if (!kinds) return [];
  const sample = report.runs.flatMap((run) => run.workloads.flatMap((result) => (result.drain ? [result.drain] : [])))[0];
  return [
    '',
    `**Capacity draining a backlog (DRAIN)**: for each kind, ${fmt(sample?.unitsPerKind)} steps' worth of tasks submitted at once over ${fmt(sample?.connections)} connections ` +
      "while the service's queues are paused (BullMQ's Queue.pause), then resumed; on a service started for this phase with admission control off " +
      '(`ADMISSION_MAX_WAIT_MS=0`, `ADMISSION_MAX_IN_FLIGHT=0`). Finishes per second from `steps.finished_at`, from the first finish to the last, ' +
      `less the first and last ${DRAIN_TRIM * 100} % of the finishes (the workers' ramp-up, and the tail). The ratio is each kind's steps/s over W1's tasks/s in the same run.`,
    '',
    '| Kind | Tasks | Submitted in ms | Finished while submitting | Steps/s | Tasks/s | Steps/s / W1 tasks/s |',
    '|---|---:|---:|---:|---:|---:|---:|',
    ...kinds.map((kind) =>
      row([
        `${kind.id} ${kind.title}`,
        fmt(kind.tasks),
        fmt(kind.submitMs),
        kind.finishedWhileSubmittingShare === undefined ? '–' : `${fmt(kind.finishedWhileSubmittingShare * 100)} %`,
        fmt(kind.stepsPerS),
        fmt(kind.tasksPerS),
        kind.id === 'W1' ? '1' : withRuns(kind.ratioToBaseline, kind.ratioPerRun, 2),
      ]),
    ),
  ];
}

function mapScaleSection(report: Report): string[] {
  const summary = report.summary.find((entry) => entry.mapScale)?.mapScale;
  if (!summary) return [];
  const several = summary.runs > 1;
  const ratioCell = (line: { ratio?: number; ratioPerRun: number[] }) => (line.ratio === undefined ? '' : withRuns(line.ratio, line.ratioPerRun, 2));
  const items = summary.items.toLocaleString('en-US');
  return [
    '',
    `**A map of ${items} items (MAPSCALE)**: ${summary.samples} sequential requests per line, each alternating with one for a finished one-tool echo task (c), ` +
      `so that a line and its baseline come from the same moments; p50 and p95 of the time from sending to the whole answer read, in the bench process; the body's size in bytes. ` +
      `The map is one for_each step of the sleep tool (${summary.sleepMs} ms per item, max_parallel ${summary.maxParallel}), read while its items run ` +
      `(items done ${fmt(summary.itemsDone.atStart)} -> ${fmt(summary.itemsDone.atEnd)} during its series; in flight throughout in ${summary.inFlightRuns} of ${summary.runs} run(s)), ` +
      `then once finished (it ran ${fmt(summary.mapRunMs)} ms, of which ${fmt(summary.sleepingMs)} ms of sleeping at full parallelism). ` +
      `The echo task's p50 while the map ran over its p50 afterwards: ${fmt(summary.baselineInFlightOverFinished, 2)}.`,
    '',
    '| Request | p50 ms | p95 ms | Body bytes | p50 / (c) p50, same window |',
    '|---|---:|---:|---:|---:|',
    ...summary.gets.map((line) => row([line.label, fmt(line.p50Ms, 1), fmt(line.p95Ms, 1), fmt(line.bytes), ratioCell(line)])),
    '',
    `Cancelling, ${summary.cancelRounds} times each, in turn: a running 3-step chain of sleep steps (the baseline) and maps of ${items} items of sleep (${summary.cancelSleepMs} ms each) in flight, ` +
      'each cancelled about 200 ms after its first step or items started. From sending POST /tasks/:id/cancel: its answer; until PostgreSQL shows the task cancelled with no step and no item ' +
      "pending, queued or running (polled every few ms); until no job of the task is left in the tool queue's wait, paused, prioritized or delayed lists in Redis; until none is active " +
      `either (the running ones aborted). Medians${several ? ' of the per-run medians' : ''}; the ratio is the median answer over the chain's median answer, in the same run.`,
    '',
    '| Cancelled | Jobs waiting before | Answer ms | Settled in PostgreSQL ms | No job waiting ms | None active ms | Answer / chain | Each answer ms |',
    '|---|---:|---:|---:|---:|---:|---:|---|',
    ...summary.cancels.map((line) =>
      row([
        line.label,
        fmt(line.jobsWaitingBefore),
        fmt(line.answerMs),
        fmt(line.pgSettledMs),
        fmt(line.redisClearMs),
        fmt(line.stoppedMs),
        line.ratio === undefined ? '1' : ratioCell(line),
        line.answers.map((answer) => fmt(answer)).join(', '),
      ]),
    ),
  ];
}

function floorSection(report: Report): string[] {
  if (report.floors.length === 0) return [];
  return [
    '',
    `**Idle floor**: CPU ms per second of each system right after it started, with nothing sent for ${fmt(report.settings.timing.floorMs / 1000)} s, read the way every phase is read ` +
      "(the same flushes and counters). PostgreSQL is every process of the server (background writer, checkpointer, WAL writer, autovacuum, every database's backends); the bench's own " +
      'queries are taken out of it, here and in every phase (their CPU is in the last column). What a phase costs per task includes this floor times its duration.',
    '',
    '| System | API | workers | Redis | PostgreSQL | PostgreSQL processes | bench | bench queries taken out of PostgreSQL |',
    '|---|---:|---:|---:|---:|---:|---:|---:|',
    ...report.floors.map((floor) =>
      row([
        floor.system,
        fmt(floor.cpuMsPerS.api, 2),
        fmt(floor.cpuMsPerS.workers, 2),
        fmt(floor.cpuMsPerS.redis, 2),
        fmt(floor.cpuMsPerS.postgres, 2),
        fmt(floor.postgresProcesses),
        fmt(floor.cpuMsPerS.generator, 2),
        fmt(floor.postgresBenchMsPerS, 2),
      ]),
    ),
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

/** The command line's options that change what runs: --quick, and --workloads when not all ran. */
function reproduceArgs(settings: Report['settings']): string {
  const all = settings.workloads.length === WORKLOAD_IDS.length;
  // W0 is always run: it is named only when it is all that ran.
  const named = settings.workloads.filter((id) => id !== 'W0');
  const args = [settings.quick ? '--quick' : '', all ? '' : `--workloads ${named.length > 0 ? named.join(',') : 'W0'}`].filter(Boolean);
  return args.length > 0 ? ` -- ${args.join(' ')}` : '';
}

/** STORM (bench/storm.ts): per run, W5 closed loop and W5 fair against the run's maximum, and the cost of a refusal. */
function stormSection(report: Report): string[] {
  type StormRun = {
    run: number;
    maxPerS: number;
    stormOverMax: number;
    fairOverMax: number;
    storm: { completedPerS: number; notCompleted: number; total: number };
    fair: { completedPerS: number; extra: { polite: { acceptedShare: number; completedShare: number; p50Ms: number; p99Ms: number } } };
    refusal: { cpuMsPerRefusal: number; refused: number };
  };
  const runs = report.storm as StormRun[] | undefined;
  if (!runs) return [];
  return [
    '',
    '### STORM: W5 under a retry storm (npm start, wrk 256 connections closed loop, Retry-After ignored)',
    '',
    '| Run | Max tasks/s | W5 closed loop: completions vs max | not completed | W5 fair: completions vs max | polite accepted | polite completed | polite p50 ms | polite p99 ms | CPU ms per refusal |',
    '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...runs.map(
      (run) =>
        `| ${run.run} | ${fmt(run.maxPerS)} | ${fmt(run.stormOverMax * 100)} % | ${run.storm.notCompleted}/${run.storm.total} | ${fmt(run.fairOverMax * 100)} % | ` +
        `${fmt(run.fair.extra.polite.acceptedShare * 100, 1)} % | ${fmt(run.fair.extra.polite.completedShare * 100, 1)} % | ${fmt(run.fair.extra.polite.p50Ms)} | ${fmt(run.fair.extra.polite.p99Ms)} | ${fmt(run.refusal.cpuMsPerRefusal, 4)} |`,
    ),
  ];
}

/** LOOP (bench/loop.ts): per number of clients, the median over runs of each system's figures and of the ratio. */
function loopSection(report: Report): string[] {
  type Point = { clients: number; completedPerS: number; submit: { p50: number; p99: number }; result: { p50: number; p99: number }; stages?: Stages };
  const runs = report.loop as { orchestrator: Point[]; naive: Point[] }[] | undefined;
  if (!runs || runs.length === 0) return [];
  const median = (values: number[]) => {
    const sorted = [...values].sort((a, b) => a - b);
    return sorted[Math.floor((sorted.length - 1) / 2)]!;
  };
  return [
    '',
    `### LOOP: the closed loop (each client submits an echo task, long-polls its result, submits again; median of ${runs.length} run(s))`,
    '',
    '| Clients | Orchestrator tasks/s | submit p50 / p99 ms | result p50 / p99 ms | Naive tasks/s | submit p50 / p99 ms | result p50 / p99 ms | Orchestrator ÷ naive |',
    '|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...runs[0]!.orchestrator.map((_, index) => {
      const of = (system: 'orchestrator' | 'naive', pick: (point: Point) => number) => median(runs.map((run) => pick(run[system][index]!)));
      const cells = (system: 'orchestrator' | 'naive') =>
        `${fmt(of(system, (p) => p.completedPerS))} | ${fmt(of(system, (p) => p.submit.p50))} / ${fmt(of(system, (p) => p.submit.p99))} | ${fmt(of(system, (p) => p.result.p50))} / ${fmt(of(system, (p) => p.result.p99))}`;
      const ratio = median(runs.map((run) => run.orchestrator[index]!.completedPerS / run.naive[index]!.completedPerS));
      return `| ${runs[0]!.orchestrator[index]!.clients} | ${cells('orchestrator')} | ${cells('naive')} | ${fmt(ratio, 2)} |`;
    }),
    '',
    'Where a loop goes, medians in ms (bench/loop.ts, stages: the client clock against the task row): sent → created (the receipt), created → the submit answered, created → started → finished, finished → the result answered.',
    '',
    '| Clients | System | sent → created | created → accepted | created → started | started → finished | created → finished | finished → answered |',
    '|---:|---|---:|---:|---:|---:|---:|---:|',
    ...runs[0]!.orchestrator.flatMap((_, index) =>
      (['orchestrator', 'naive'] as const).map((system) => {
        const stage = (key: keyof Stages) => median(runs.map((run) => run[system][index]!.stages?.[key] ?? Number.NaN));
        const cell = (key: keyof Stages) => (Number.isNaN(stage(key)) ? '' : fmt(stage(key), 1));
        return `| ${runs[0]!.orchestrator[index]!.clients} | ${system} | ${cell('sentToCreated')} | ${cell('createdToAccepted')} | ${cell('createdToStarted')} | ${cell('startedToFinished')} | ${cell('createdToFinished')} | ${cell('finishedToAnswered')} |`;
      }),
    ),
  ];
}

export function markdown(report: Report): string {
  const { machine, settings } = report;
  const medianNote =
    settings.runs > 1 ? `median of ${settings.runs} runs, each metric on its own (a ratio computed within each run, then its median taken)` : 'one run';
  const lines = [
    `# Orchestrator benchmark, ${report.date}`,
    '',
    `- Machine: ${machine.cpu}, ${machine.cores} cores, ${machine.memoryGiB} GiB, Linux ${machine.kernel}; load average ${machine.loadAverage.join(' / ')} at the start, ${machine.loadAverageEnd.join(' / ')} at the end (the machine is shared: compare ratios, not absolute figures)`,
    `- Versions: node ${report.versions.node}, Redis ${report.versions.redis} (${settings.redis}), PostgreSQL ${report.versions.postgres}, bullmq ${report.versions.bullmq}, pg-boss ${report.versions['pg-boss']}, graphile-worker ${report.versions['graphile-worker']}; orchestrator at ${report.revision}`,
    `- Settings: ${settings.workers} worker processes x concurrency ${settings.concurrency} for every system${settings.apis > 1 ? `, ${settings.apis} orchestrator API processes` : ''}${settings.latencyRate ? `, latency phases (and costs) at ${settings.latencyRate} tasks/s instead of half the max` : ''}, ${settings.poolSize} PostgreSQL connections per process, ${settings.connections} HTTP connections; ${settings.quick ? 'quick mode' : 'full mode'} (stages of ${settings.timing.stageMs / 1000} s, latency phase ${settings.timing.latencyMs / 1000} s), tolerance ${settings.tolerance}; ${medianNote}; ${report.elapsedS} s in all`,
    `- Reproduce: \`npm run bench${reproduceArgs(settings)}\``,
    '',
    '| Workload | Max tasks/s | Steps/s | x W0 | p50 ms | p90 ms | p99 ms | max ms | Lua calls/step | Other Redis cmds/step | Redis round trips/task | PG xacts/step | PG CPU ms/step | CPU s/1k tasks: API | workers | Redis | PostgreSQL | bench (load generator) |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
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
          fmt(row.redisRoundTripsPerTask, 1),
          fmt(row.pgTransactionsPerStep, 2),
          fmt(row.pgCpuMsPerStep, 3),
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
    ...peersLine(report),
    ...targetsSection(report),
    ...idleSection(report),
    ...rateSection(report),
    ...drainSection(report),
    ...mapScaleSection(report),
    ...overloadSection(report),
    ...redisMemorySection(report),
    ...floorSection(report),
    ...stormSection(report),
    ...loopSection(report),
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
  "Latency: W1-W4 and W6 from tasks.created_at (the API's receipt) to tasks.finished_at (commit of the final result); peers from bench_results.received_at to finished_at; W0 from the job's timestamp (queue.add) to its finishedOn. PostgreSQL keeps milliseconds.",
  'Lua calls/step: EVALSHA + EVAL from INFO commandstats over the latency phase, divided by the steps run. Other Redis commands include those that the scripts themselves run (INFO commandstats counts both).',
  "Redis round trips/task: the reads Redis processed (INFO stats total_reads_processed: one per request or pipeline a client sends) over the latency phase, divided by the tasks run; every client's, idle traffic included (workers' blocking fetches, stalled checks), so compare it between builds at the same rate.",
  "PG xacts/step: xact_commit + xact_rollback of the system's own database (pg_stat_database), less the bench's own queries and one start-up transaction per new connection.",
  "CPU: utime + stime from /proc/<pid>/stat. PostgreSQL is every process of the server: the postmaster and all its children (every database's backends, background writer, checkpointer, WAL writer, autovacuum), and, through the postmaster's cutime + cstime, the children that exited during the phase; the bench's own connections' backends are taken out. It therefore includes other databases' activity on the same server (nothing else runs on it during the bench on the machine it was written for). W0 has no database and is not charged for PostgreSQL. W0's producer is the bench process itself (no API column); bench (load generator) is the bench process itself, which shares the machine with what it measures. PG CPU ms/step is the PostgreSQL column divided by the steps per task.",
  'x W0 is tasks/s divided by W0\'s jobs/s in the same run; for workflows, Steps/s shows the work done. ">=" marks a maximum where no stage failed (a lower bound). With several runs, every ratio (x W0, the targets, RATE and DRAIN) is computed within each run, then its median taken.',
  'pg-boss 10 workers poll: each work() loop fetches up to batchSize jobs, then waits out the rest of its polling interval (0.5 s at the least). The peer runs --concurrency loops per process, each fetching up to 20 jobs, started 50 ms apart so that they poll in turn; its throughput is bounded by workers x concurrency x 20 / 0.5 s (800/s with the defaults). See bench/README.md.',
  'graphile-worker runs with its documented batching (localQueue of concurrency + 1 jobs, completeJobBatchDelay and failJobBatchDelay of 25 ms); new jobs reach it by LISTEN/NOTIFY. See bench/README.md.',
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
