import { Redis } from 'ioredis';
import { type CapacityReport, findMaxRate, type LatencyReport, measureLatency, type SearchPlan } from './capacity.js';
import { beginCosts, type CostSources, type Costs, endCosts, type IdleFloor, measureFloor } from './costs.js';
import { type DrainReport, measureDrain } from './drain.js';
import { type IdleReport, measureIdle } from './idle.js';
import { type MapScaleReport, measureMapScale } from './mapscale.js';
import { PgAdmin, PostgresCluster, redisServerInfo } from './metrics.js';
import type { BenchOptions } from './options.js';
import { measureOverload, type OverloadReport } from './overload.js';
import { freePort, spawnRedis } from './processes.js';
import { measureRate, type RateReport } from './rate.js';
import { type KeyKinds, keyKinds, type MemoryReading, memoryReport, type RedisMemoryReport, readMemory, waitEventStreamsGone } from './redis-memory.js';
import { Releasers } from './releasers.js';
import { startOrchestrator } from './systems/orchestrator.js';
import { startPeer } from './systems/peer.js';
import { startRawBullmq } from './systems/raw-bullmq.js';
import type { RunContext, RunningSystem, SystemKind } from './systems/system.js';
import { coerceError, epochNow, shortId } from './util.js';
import {
  type CapacityWorkload,
  DefinitionRefused,
  type DrainWorkload,
  type IdleWorkload,
  type MapScaleWorkload,
  type OverloadWorkload,
  type RateWorkload,
  WORKLOADS,
  type Workload,
} from './workloads.js';

export interface WorkloadResult {
  id: string;
  title: string;
  measure: Workload['measure'];
  stepsPerTask?: number;
  /** Highest sustainable arrival rate, tasks per second (0 when it could not be found; absent for IDLE and W5). */
  maxTasksPerS?: number;
  maxStepsPerS?: number;
  capacity?: CapacityReport;
  latency?: LatencyReport;
  costs?: Costs;
  /** Redis memory per finished task around the latency phase (W1). */
  redisMemory?: RedisMemoryReport;
  idle?: IdleReport;
  overload?: OverloadReport;
  drain?: DrainReport;
  rate?: RateReport;
  mapScale?: MapScaleReport;
  error?: string;
  elapsedS: number;
}

export interface RunResult {
  index: number;
  runId: string;
  startedAt: string;
  elapsedS: number;
  redis: { url: string; private: boolean; version: string };
  /** The PostgreSQL server's postmaster, whose processes' CPU is counted; absent when /proc cannot see it. */
  postmasterPid?: number;
  /** CPU per second with no load, measured after each system started. */
  floors: IdleFloor[];
  workloads: WorkloadResult[];
}

function startSystem(ctx: RunContext, kind: SystemKind, env: Record<string, string>): Promise<RunningSystem> {
  switch (kind) {
    case 'raw-bullmq':
      return startRawBullmq(ctx);
    case 'orchestrator':
      return startOrchestrator(ctx, env);
    case 'pg-boss':
    case 'graphile-worker':
      return startPeer(ctx, kind);
  }
}

type Measured = Omit<WorkloadResult, 'elapsedS'>;

function costSources(ctx: RunContext, system: RunningSystem): CostSources {
  return {
    redis: ctx.redis,
    redisPid: ctx.redisPid,
    admin: ctx.admin,
    ...(ctx.cluster ? { cluster: ctx.cluster } : {}),
    processes: system.processes,
    ...(system.database ? { database: system.database } : {}),
    ...(system.benchClient ? { benchClient: system.benchClient } : {}),
  };
}

/** A system's settings as a key: the runner restarts the system when a workload asks for others. */
const envKey = (env: Record<string, string> | undefined) => JSON.stringify(Object.entries(env ?? {}).sort());

/** Redis memory before the latency phase, right after its tasks finished, and after the events window. */
class MemoryProbe {
  private before?: { reading: MemoryReading; kinds: KeyKinds };
  private finished?: MemoryReading;

  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly windowS: number,
    private readonly log: (line: string) => void,
  ) {}

  /**
   * Before the phase, and before its costs are read from: the capacity search's event streams
   * must have expired first, or their going would be counted against the phase.
   */
  async start(): Promise<void> {
    this.log(`Redis memory: waiting for the capacity search's event streams to expire (EVENTS_KEEP_AFTER_END_S=${this.windowS})`);
    await waitEventStreamsGone(this.redis, this.prefix, this.windowS);
    const kinds = await keyKinds(this.redis, this.prefix);
    this.before = { reading: await readMemory(this.redis), kinds };
  }

  /** INFO only, so this may come before the phase's costs are read. */
  async tasksFinished(): Promise<void> {
    this.finished = await readMemory(this.redis);
  }

  /** After the costs are read: the wait's SCANs are not the workload's commands. */
  async end(tasks: number): Promise<RedisMemoryReport> {
    const left = await waitEventStreamsGone(this.redis, this.prefix, this.windowS);
    const afterWindow = await readMemory(this.redis);
    const kinds = { before: this.before!.kinds, after: await keyKinds(this.redis, this.prefix) };
    const report = memoryReport(tasks, this.windowS, { before: this.before!.reading, finished: this.finished!, afterWindow }, kinds, left);
    this.log(
      `Redis memory per finished task: ${report.bytesPerTaskFinished} B right after, ${report.bytesPerTaskAfterWindow} B after ${report.waitedS} s ` +
        `(target <= ${report.targetBytesPerTask} B: ${report.met ? 'met' : 'NOT met'}); keys that changed: ${JSON.stringify(report.keyKindsChanged)}`,
    );
    return report;
  }
}

async function measureCapacity(ctx: RunContext, workload: CapacityWorkload, system: RunningSystem): Promise<Measured> {
  const { options } = ctx;
  const log = (line: string) => ctx.log(`${workload.id}: ${line}`);
  const target = await workload.target(system);
  // Scaled by the steps per task beyond W3's 12: a W6 task is 101 steps, and the probe's 20-30
  // outstanding W6 tasks (2,000-3,000 steps) took more than 15 s to run in a quick run on a busy
  // machine (W1's max 92/s), which failed W6 as if nothing ran.
  const drainTimeoutMs = (options.quick ? 15_000 : 30_000) * Math.max(1, workload.stepsPerTask / 12);
  const plan: SearchPlan = {
    probeMs: options.timing.probeMs,
    probeOutstanding: options.workers * options.concurrency,
    stageMs: options.timing.stageMs,
    maxStages: options.timing.maxStages,
    refinements: options.timing.refinements,
    tolerance: options.tolerance,
    drainTimeoutMs,
  };
  const capacity = await findMaxRate(target, workload.id, plan, log);
  const base = {
    id: workload.id,
    title: workload.title,
    measure: workload.measure,
    stepsPerTask: workload.stepsPerTask,
    maxTasksPerS: capacity.maxRate,
    maxStepsPerS: capacity.maxRate * workload.stepsPerTask,
    capacity,
  };
  if (capacity.maxRate === 0) return { ...base, error: 'no stage passed: no sustainable rate found' };

  const sources = costSources(ctx, system);
  const memory =
    workload.redisMemory && system.queuePrefix ? new MemoryProbe(ctx.redis, system.queuePrefix, options.timing.eventsKeepAfterEndS, log) : undefined;
  await memory?.start();
  const rate = options.latencyRate ? Math.min(options.latencyRate, capacity.maxRate) : capacity.maxRate / 2;
  const start = await beginCosts(sources);
  const latency = await measureLatency(target, `${workload.id}-latency`, rate, options.timing.latencyMs, drainTimeoutMs);
  await memory?.tasksFinished();
  const costs = await endCosts(sources, start, latency.accepted, workload.stepsPerTask);
  const { latencyMs: l } = latency;
  log(`latency at ${rate}/s: p50 ${l.p50} ms, p90 ${l.p90} ms, p99 ${l.p99} ms, max ${l.max} ms (${l.count} tasks)`);
  const redisMemory = await memory?.end(latency.accepted);
  const problems = [
    latency.drained ? '' : 'latency phase did not drain',
    latency.errors > 0 ? `${latency.errors} requests failed in the latency phase (${latency.firstError ?? ''})` : '',
    latency.failedTasks > 0 ? `${latency.failedTasks} tasks failed in the latency phase` : '',
    redisMemory && redisMemory.eventStreamsLeft > 0 ? `${redisMemory.eventStreamsLeft} event streams still in Redis after the window` : '',
  ].filter(Boolean);
  return { ...base, latency, costs, ...(redisMemory ? { redisMemory } : {}), ...(problems.length > 0 ? { error: problems.join('; ') } : {}) };
}

async function measureIdleLatency(ctx: RunContext, workload: IdleWorkload, system: RunningSystem): Promise<Measured> {
  const idle = await measureIdle(system, workload.cases, workload.id, (line) => ctx.log(`${workload.id}: ${line}`), workload.chainLevels);
  const failed = idle.cases.filter((entry) => entry.failedTasks > 0).map((entry) => `${entry.failedTasks} ${entry.name} tasks failed`);
  return { id: workload.id, title: workload.title, measure: workload.measure, idle, ...(failed.length > 0 ? { error: failed.join('; ') } : {}) };
}

async function measureOverloadOf(ctx: RunContext, workload: OverloadWorkload, system: RunningSystem, earlier: WorkloadResult[]): Promise<Measured> {
  const log = (line: string) => ctx.log(`${workload.id}: ${line}`);
  const of = earlier.find((result) => result.id === workload.of);
  const max = of?.maxTasksPerS;
  if (!max) throw new Error(`needs ${workload.of}'s max throughput from this run, and there is none`);
  const target = await workload.target(system);
  const lowerBound = of.capacity?.lowestFailingRate === undefined;
  const overload = await measureOverload(target, workload.id, { tasksPerS: max, lowerBound }, ctx.options.timing.overloadMs, 60_000);
  const o = overload;
  log(
    `offered ${o.offeredPerS}/s for ${o.durationMs / 1000} s: ${o.accepted} accepted, ${o.refused} refused` +
      (o.refused > 0 ? ` (${JSON.stringify(o.refusedBy)}; p50 ${o.refusalMs.p50} ms, p99 ${o.refusalMs.p99} ms), ` : ', ') +
      `${o.errors} errors; completions/s per 5 s ${o.completionsPerSBy5s.join(', ')}; lowest ${Math.round(o.minShareOfMax * 100)} % of ${lowerBound ? '>= ' : ''}${max}/s ` +
      `(target >= ${o.targetShare * 100} %: ${o.met ? 'met' : 'NOT met'})`,
  );
  const problems = [
    o.drained ? '' : 'the accepted tasks did not finish within 60 s',
    o.errors > 0 ? `${o.errors} requests failed (${o.firstError ?? ''})` : '',
    o.failedTasks > 0 ? `${o.failedTasks} tasks failed` : '',
  ].filter(Boolean);
  return {
    id: workload.id,
    title: workload.title,
    measure: workload.measure,
    stepsPerTask: workload.stepsPerTask,
    overload,
    ...(problems.length > 0 ? { error: problems.join('; ') } : {}),
  };
}

async function measureDrainOf(ctx: RunContext, workload: DrainWorkload, system: RunningSystem): Promise<Measured> {
  const { options } = ctx;
  const drain = await measureDrain(
    system,
    workload.kinds,
    {
      units: options.timing.drainUnits,
      connections: options.drainConnections,
      drainTimeoutMs: 180_000,
      baseline: workload.baseline,
      targetRatio: workload.targetRatio,
    },
    workload.id,
    (line) => ctx.log(`${workload.id}: ${line}`),
  );
  const problems = drain.kinds.flatMap((entry) =>
    [
      entry.drained ? '' : `${entry.id} did not drain within 180 s`,
      entry.refused > 0 ? `${entry.id}: ${entry.refused} submissions refused` : '',
      entry.errors > 0 ? `${entry.id}: ${entry.errors} submissions failed (${entry.firstError ?? ''})` : '',
      entry.failedTasks > 0 ? `${entry.id}: ${entry.failedTasks} tasks failed` : '',
      entry.steps !== entry.expectedSteps ? `${entry.id}: ${entry.steps} steps finished, ${entry.expectedSteps} expected` : '',
    ].filter(Boolean),
  );
  ctx.log(
    `${workload.id}: steps/s over ${workload.baseline} tasks/s: ${
      Object.entries(drain.ratios)
        .map(([id, ratio]) => `${id} ${ratio}`)
        .join(', ') || '-'
    } (target >= ${workload.targetRatio})`,
  );
  return { id: workload.id, title: workload.title, measure: workload.measure, drain, ...(problems.length > 0 ? { error: problems.join('; ') } : {}) };
}

async function measureRateOf(ctx: RunContext, workload: RateWorkload, system: RunningSystem, earlier: WorkloadResult[]): Promise<Measured> {
  const { options } = ctx;
  const log = (line: string) => ctx.log(`${workload.id}: ${line}`);
  // A rate above a kind's maximum in this run measures a growing backlog, not a cost at that rate.
  const maxTasksPerS: Record<string, number> = {};
  for (const kind of workload.kinds) {
    const max = earlier.find((result) => result.id === kind.id)?.maxTasksPerS;
    if (!max) continue;
    maxTasksPerS[kind.id] = max;
    if (options.unitRate / kind.stepsPerTask > max)
      log(`warning: ${options.unitRate / kind.stepsPerTask} ${kind.id} tasks/s is above its maximum in this run (${max}/s)`);
  }
  const rate = await measureRate(
    system,
    costSources(ctx, system),
    workload.kinds,
    {
      unitsPerS: options.unitRate,
      durationMs: options.timing.rateMs,
      // Above a kind's maximum (a busy machine) the backlog takes a while: the costs wait for it.
      drainTimeoutMs: 60_000,
      baseline: workload.baseline,
      targetRatio: workload.targetRatio,
      maxTasksPerS,
    },
    workload.id,
    log,
  );
  log(
    `CPU per unit over ${workload.baseline}'s: ${
      Object.entries(rate.ratios)
        .map(([id, ratio]) => `${id} ${ratio}`)
        .join(', ') || '-'
    } (target <= ${workload.targetRatio})`,
  );
  const problems = rate.kinds.flatMap((entry) =>
    [
      entry.drained ? '' : `${entry.id} did not drain`,
      entry.errors > 0 ? `${entry.id}: ${entry.errors} requests failed (${entry.firstError ?? ''})` : '',
      entry.failedTasks > 0 ? `${entry.id}: ${entry.failedTasks} tasks failed` : '',
    ].filter(Boolean),
  );
  return { id: workload.id, title: workload.title, measure: workload.measure, rate, ...(problems.length > 0 ? { error: problems.join('; ') } : {}) };
}

async function measureMapScaleOf(ctx: RunContext, workload: MapScaleWorkload, system: RunningSystem): Promise<Measured> {
  const mapScale = await measureMapScale(
    system,
    ctx.redis,
    {
      items: workload.items,
      samples: 30,
      cancelRounds: ctx.options.timing.mapCancelRounds,
      // In flight for at least items / max_parallel * sleep = 5 s: far longer than its /result series.
      sleepMs: 100,
      maxParallel: 20,
      // Under 1 s, the sleep tool reports no progress: nothing but the cancel happens meanwhile.
      cancelSleepMs: 900,
      cancelMaxParallel: [20, workload.items],
      timeoutMs: 30_000,
      targets: { resultRatio: workload.targetResultRatio, cancelRatio: workload.targetCancelRatio },
    },
    (line) => ctx.log(`${workload.id}: ${line}`),
  );
  const { result, cancel } = mapScale;
  ctx.log(
    `${workload.id}: /result of the map in flight / the echo task's, p50: ${result.inFlight.ratioP50} (target <= ${workload.targetResultRatio}: ` +
      `${result.inFlight.ratioP50 <= workload.targetResultRatio ? 'met' : 'NOT met'}); finished: ${result.finished.ratioP50}; cancel answer / the chain's: ${cancel.kinds
        .filter((kind) => kind.answerRatioToChain !== undefined)
        .map((kind) => `max_parallel ${kind.maxParallel} ${kind.answerRatioToChain}`)
        .join(', ')} (target <= ${workload.targetCancelRatio})`,
  );
  return {
    id: workload.id,
    title: workload.title,
    measure: workload.measure,
    mapScale,
    ...(mapScale.problems.length > 0 ? { error: mapScale.problems.join('; ') } : {}),
  };
}

function measure(ctx: RunContext, workload: Workload, system: RunningSystem, earlier: WorkloadResult[]): Promise<Measured> {
  switch (workload.measure) {
    case 'capacity':
      return measureCapacity(ctx, workload, system);
    case 'idle':
      return measureIdleLatency(ctx, workload, system);
    case 'overload':
      return measureOverloadOf(ctx, workload, system, earlier);
    case 'drain':
      return measureDrainOf(ctx, workload, system);
    case 'rate':
      return measureRateOf(ctx, workload, system, earlier);
    case 'mapscale':
      return measureMapScaleOf(ctx, workload, system);
  }
}

/** The idle floor of a system just started: a moment to settle, then CPU per second with no load. */
async function floorOf(ctx: RunContext, system: RunningSystem, label: string): Promise<IdleFloor> {
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  const floor = await measureFloor(label, costSources(ctx, system), ctx.options.timing.floorMs);
  const c = floor.cpuMsPerS;
  ctx.log(
    `${label}: idle floor, CPU ms per second: ${c.api !== undefined ? `API ${c.api}, ` : ''}workers ${c.workers}, Redis ${c.redis}` +
      `${c.postgres !== undefined ? `, PostgreSQL ${c.postgres} (all its processes; the bench's own queries, ${floor.postgresBenchMsPerS}, taken out)` : ''}, bench ${c.generator}`,
  );
  return floor;
}

/**
 * One complete run: a private Redis (unless --redis-url), then each system in turn with only
 * its own processes running, each workload measured on it; everything started is released at
 * the end, also when something fails.
 */
export async function runOnce(options: BenchOptions, index: number, outer: Releasers, logDir: string, log: (line: string) => void): Promise<RunResult> {
  const releasers = new Releasers();
  const releaseRun = outer.add(`run ${index}`, () => releasers.releaseAll());
  const started = epochNow();
  const runId = shortId();
  try {
    let redisUrl = options.redisUrl;
    if (!redisUrl) {
      const port = await freePort();
      const server = await spawnRedis(port, logDir);
      releasers.add('redis-server', () => server.stop());
      redisUrl = `redis://127.0.0.1:${port}`;
    }
    const redis = new Redis(redisUrl, { maxRetriesPerRequest: null });
    redis.on('error', () => undefined);
    releasers.add('bench Redis connection', () => void redis.disconnect());
    const info = await redisServerInfo(redis);
    const admin = new PgAdmin(options.postgresUrl);
    releasers.add('PostgreSQL admin connection', () => admin.close());
    const cluster = await PostgresCluster.find(admin);
    if (!cluster) log('PostgreSQL runs where /proc does not show it: its CPU is not measured');
    const ctx: RunContext = { options, runId, redisUrl, redis, admin, ...(cluster ? { cluster } : {}), redisPid: info.pid, logDir, releasers, log };

    const results: WorkloadResult[] = [];
    const floors: IdleFloor[] = [];
    let system: RunningSystem | undefined;
    for (const workload of WORKLOADS.filter((entry) => options.workloads.includes(entry.id))) {
      const workloadStart = epochNow();
      try {
        if (system?.kind !== workload.system || envKey(system.env) !== envKey(workload.env)) {
          await system?.stop();
          system = undefined;
          const label = `${workload.system}${
            workload.env
              ? ` (${Object.entries(workload.env)
                  .map(([key, value]) => `${key}=${value}`)
                  .join(', ')})`
              : ''
          }`;
          log(`starting ${label}`);
          system = await startSystem(ctx, workload.system, workload.env ?? {});
          // Once per system and settings in a run: a restart after a failure does not measure it again.
          if (!floors.some((floor) => floor.system === label)) floors.push(await floorOf(ctx, system, label));
        }
        const result = await measure(ctx, workload, system, results);
        results.push({ ...result, elapsedS: Math.round((epochNow() - workloadStart) / 100) / 10 });
      } catch (error) {
        const message = coerceError(error).message;
        log(`${workload.id}: FAILED: ${message}`);
        const failed = {
          id: workload.id,
          title: workload.title,
          measure: workload.measure,
          error: message,
          elapsedS: Math.round((epochNow() - workloadStart) / 100) / 10,
        };
        results.push(
          workload.measure === 'capacity' || workload.measure === 'overload'
            ? { ...failed, stepsPerTask: workload.stepsPerTask, ...(workload.measure === 'capacity' ? { maxTasksPerS: 0, maxStepsPerS: 0 } : {}) }
            : failed,
        );
        // A system that failed may be in any state: the next workload starts it afresh; unless the
        // failure was a definition it refused (W6 before for_each existed), which changed nothing.
        if (!(error instanceof DefinitionRefused)) {
          await system?.stop().catch(() => undefined);
          system = undefined;
        }
      }
    }
    await system?.stop();
    return {
      index,
      runId,
      startedAt: new Date(started).toISOString(),
      elapsedS: Math.round((epochNow() - started) / 1000),
      redis: { url: redisUrl, private: !options.redisUrl, version: info.version },
      ...(cluster ? { postmasterPid: cluster.postmasterPid } : {}),
      floors,
      workloads: results,
    };
  } finally {
    await releaseRun();
  }
}
