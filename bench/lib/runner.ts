import { Redis } from 'ioredis';
import { findMaxRate, measureLatency, type CapacityReport, type LatencyReport, type SearchPlan } from './capacity.js';
import { beginCosts, endCosts, type Costs, type CostSources } from './costs.js';
import { PgAdmin, redisServerInfo } from './metrics.js';
import type { BenchOptions } from './options.js';
import { freePort, spawnRedis } from './processes.js';
import { Releasers } from './releasers.js';
import { startOrchestrator } from './systems/orchestrator.js';
import { startPeer } from './systems/peer.js';
import { startRawBullmq } from './systems/raw-bullmq.js';
import type { RunContext, RunningSystem, SystemKind } from './systems/system.js';
import { coerceError, epochNow, shortId } from './util.js';
import { WORKLOADS, type Workload } from './workloads.js';

export interface WorkloadResult {
  id: string;
  title: string;
  stepsPerTask: number;
  /** Highest sustainable arrival rate, tasks per second (0 when unknown). */
  maxTasksPerS: number;
  maxStepsPerS: number;
  capacity?: CapacityReport;
  latency?: LatencyReport;
  costs?: Costs;
  error?: string;
  elapsedS: number;
}

export interface RunResult {
  index: number;
  runId: string;
  startedAt: string;
  elapsedS: number;
  redis: { url: string; private: boolean; version: string };
  workloads: WorkloadResult[];
}

function startSystem(ctx: RunContext, kind: SystemKind): Promise<RunningSystem> {
  switch (kind) {
    case 'raw-bullmq':
      return startRawBullmq(ctx);
    case 'orchestrator':
      return startOrchestrator(ctx);
    case 'pg-boss':
    case 'graphile-worker':
      return startPeer(ctx, kind);
  }
}

async function measure(ctx: RunContext, workload: Workload, system: RunningSystem, redisPid: number): Promise<Omit<WorkloadResult, 'elapsedS'>> {
  const { options } = ctx;
  const log = (line: string) => ctx.log(`${workload.id}: ${line}`);
  const target = await workload.target(system);
  const drainTimeoutMs = options.quick ? 15_000 : 30_000;
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
    stepsPerTask: workload.stepsPerTask,
    maxTasksPerS: capacity.maxRate,
    maxStepsPerS: capacity.maxRate * workload.stepsPerTask,
    capacity,
  };
  if (capacity.maxRate === 0) return { ...base, error: 'no stage passed: no sustainable rate found' };

  const sources: CostSources = {
    redis: ctx.redis,
    redisPid,
    admin: ctx.admin,
    processes: system.processes,
    ...(system.database ? { database: system.database } : {}),
    ...(system.benchClient ? { benchClient: system.benchClient } : {}),
  };
  const rate = capacity.maxRate / 2;
  const start = await beginCosts(sources);
  const latency = await measureLatency(target, `${workload.id}-latency`, rate, options.timing.latencyMs, drainTimeoutMs);
  const costs = await endCosts(sources, start, latency.accepted, workload.stepsPerTask);
  const { latencyMs: l } = latency;
  log(`latency at ${rate}/s: p50 ${l.p50} ms, p90 ${l.p90} ms, p99 ${l.p99} ms, max ${l.max} ms (${l.count} tasks)`);
  const problems = [
    latency.drained ? '' : 'latency phase did not drain',
    latency.errors > 0 ? `${latency.errors} requests failed in the latency phase (${latency.firstError ?? ''})` : '',
    latency.failedTasks > 0 ? `${latency.failedTasks} tasks failed in the latency phase` : '',
  ].filter(Boolean);
  return { ...base, latency, costs, ...(problems.length > 0 ? { error: problems.join('; ') } : {}) };
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
    const ctx: RunContext = { options, runId, redisUrl, redis, admin, logDir, releasers, log };

    const results: WorkloadResult[] = [];
    let system: RunningSystem | undefined;
    for (const workload of WORKLOADS.filter((entry) => options.workloads.includes(entry.id))) {
      const workloadStart = epochNow();
      try {
        if (system?.kind !== workload.system) {
          await system?.stop();
          system = undefined;
          log(`starting ${workload.system}`);
          system = await startSystem(ctx, workload.system);
        }
        const result = await measure(ctx, workload, system, info.pid);
        results.push({ ...result, elapsedS: Math.round((epochNow() - workloadStart) / 100) / 10 });
      } catch (error) {
        const message = coerceError(error).message;
        log(`${workload.id}: FAILED: ${message}`);
        results.push({ id: workload.id, title: workload.title, stepsPerTask: workload.stepsPerTask, maxTasksPerS: 0, maxStepsPerS: 0, error: message, elapsedS: Math.round((epochNow() - workloadStart) / 100) / 10 });
        // A system that failed may be in any state: the next workload starts it afresh.
        await system?.stop().catch(() => undefined);
        system = undefined;
      }
    }
    await system?.stop();
    return {
      index,
      runId,
      startedAt: new Date(started).toISOString(),
      elapsedS: Math.round((epochNow() - started) / 1000),
      redis: { url: redisUrl, private: !options.redisUrl, version: info.version },
      workloads: results,
    };
  } finally {
    await releaseRun();
  }
}
