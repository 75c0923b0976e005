import { measureLatency } from './capacity.js';
import { beginCosts, type CostSources, type Costs, endCosts } from './costs.js';
import type { RunningSystem } from './systems/system.js';
import { sleep } from './util.js';
import type { TaskKind } from './workloads.js';

/**
 * RATE: what one unit of work costs, when every kind runs the same units (steps) per second.
 * Cost per task falls steeply as the rate rises (batches grow with it), so W1 tasks and workflow
 * steps measured at their own half-maximum rates cannot be compared; here each kind is offered
 * open loop at `unitsPerS / stepsPerTask` tasks per second, and its CPU over all processes (API,
 * workers, Redis, every PostgreSQL process) is divided by the units it ran.
 */

export interface RateKindReport {
  id: string;
  title: string;
  stepsPerTask: number;
  tasksPerS: number;
  unitsPerS: number;
  /** The kind's maximum tasks/s in this run, when measured; above it, the phase ran a growing backlog, not that rate. */
  maxTasksPerS?: number;
  aboveMax: boolean;
  tasks: number;
  errors: number;
  firstError?: string;
  failedTasks: number;
  drained: boolean;
  p50Ms: number;
  p99Ms: number;
  costs: Costs;
  /** CPU ms per unit (step), by process kind, and summed (API + workers + Redis + PostgreSQL; not the generator). */
  cpuMsPerUnit: { api: number; workers: number; redis: number; postgres: number; total: number };
}

export interface RateReport {
  unitsPerS: number;
  durationMs: number;
  kinds: RateKindReport[];
  baseline: string;
  /** Each kind's total CPU per unit divided by the baseline's, in this run. */
  ratios: Record<string, number>;
  targetRatio: number;
}

const round3 = (value: number) => Math.round(value * 1000) / 1000;

export function cpuMsPerUnit(costs: Costs, stepsPerTask: number): RateKindReport['cpuMsPerUnit'] {
  // cpuPer1000 is CPU seconds per 1,000 tasks, that is CPU ms per task.
  const per = (msPerTask: number | undefined) => round3((msPerTask ?? 0) / stepsPerTask);
  const { api, workers, redis, postgres } = costs.cpuPer1000;
  const parts = { api: per(api), workers: per(workers), redis: per(redis), postgres: per(postgres) };
  return { ...parts, total: round3(parts.api + parts.workers + parts.redis + parts.postgres) };
}

export async function measureRate(
  system: RunningSystem,
  sources: CostSources,
  kinds: TaskKind[],
  plan: { unitsPerS: number; durationMs: number; drainTimeoutMs: number; baseline: string; targetRatio: number; maxTasksPerS: Record<string, number> },
  tagPrefix: string,
  log: (line: string) => void,
): Promise<RateReport> {
  const reports: RateKindReport[] = [];
  for (const kind of kinds) {
    await kind.prepare?.(system);
    const target = system.target(kind.body);
    await sleep(1_000);
    const tasksPerS = plan.unitsPerS / kind.stepsPerTask;
    const start = await beginCosts(sources);
    const latency = await measureLatency(target, `${tagPrefix}-${kind.id}`, tasksPerS, plan.durationMs, plan.drainTimeoutMs);
    const costs = await endCosts(sources, start, latency.accepted, kind.stepsPerTask);
    const perUnit = cpuMsPerUnit(costs, kind.stepsPerTask);
    log(
      `${kind.id} at ${round3(tasksPerS)} tasks/s (${plan.unitsPerS} units/s): ${perUnit.total} ms CPU per unit (API ${perUnit.api}, workers ${perUnit.workers}, ` +
        `Redis ${perUnit.redis}, PostgreSQL ${perUnit.postgres}); p50 ${latency.latencyMs.p50} ms; ${costs.pgTransactionsPerStep?.toFixed(2) ?? '-'} PG transactions per step`,
    );
    reports.push({
      id: kind.id,
      title: kind.title,
      stepsPerTask: kind.stepsPerTask,
      tasksPerS: round3(tasksPerS),
      unitsPerS: plan.unitsPerS,
      ...(plan.maxTasksPerS[kind.id] !== undefined ? { maxTasksPerS: plan.maxTasksPerS[kind.id] } : {}),
      aboveMax: plan.maxTasksPerS[kind.id] !== undefined && tasksPerS > plan.maxTasksPerS[kind.id]!,
      tasks: latency.accepted,
      errors: latency.errors,
      ...(latency.firstError ? { firstError: latency.firstError } : {}),
      failedTasks: latency.failedTasks,
      drained: latency.drained,
      p50Ms: latency.latencyMs.p50,
      p99Ms: latency.latencyMs.p99,
      costs,
      cpuMsPerUnit: perUnit,
    });
  }
  const baseline = reports.find((entry) => entry.id === plan.baseline);
  const ratios = Object.fromEntries(
    reports
      .filter((entry) => entry.id !== plan.baseline && baseline && baseline.cpuMsPerUnit.total > 0)
      .map((entry) => [entry.id, round3(entry.cpuMsPerUnit.total / baseline!.cpuMsPerUnit.total)]),
  );
  return { unitsPerS: plan.unitsPerS, durationMs: plan.durationMs, kinds: reports, baseline: plan.baseline, ratios, targetRatio: plan.targetRatio };
}
