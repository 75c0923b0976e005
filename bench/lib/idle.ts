import type { Target } from './capacity.js';
import { type Distribution, distribution } from './stats.js';
import type { RunningSystem } from './systems/system.js';
import { sleep } from './util.js';

/**
 * Idle latency: one task at a time on an otherwise idle service (send, wait until it has finished,
 * send the next), so that the figure is the service's own path with no queueing at all. What
 * W1-W4's latency (at half the maximum rate) cannot show: how fast a single task goes through.
 */

/** One kind of task measured this way. */
export interface IdleCase {
  name: string;
  /** The request body, as in the workload it comes from (W1's echo, W4's diamond). */
  body: () => unknown;
  /** Defines what the task needs first (a workflow), once, before the warm-up. */
  prepare?(system: RunningSystem): Promise<void>;
  /** The target for the median, created → finished, in ms (chains: per level, see IdleWorkload). */
  targetMedianMs?: number;
  /** Also report the step alone (steps.started_at → steps.finished_at): single-step tasks only. */
  stepAlone: boolean;
}

export interface IdleCaseReport {
  name: string;
  /** Tasks measured (after the warm-up ones, which are not). */
  tasks: number;
  warmup: number;
  failedTasks: number;
  /** tasks.created_at → tasks.finished_at, from PostgreSQL (millisecond timestamps). */
  latencyMs: Distribution;
  /** steps.started_at → steps.finished_at: the worker running the tool and committing the step. */
  stepMs?: Distribution;
  /** steps.queued_at → steps.started_at: from the job's enqueueing to a worker taking it. */
  pickupMs?: Distribution;
  targetMedianMs?: number;
  met?: boolean;
}

/** What each level of a chain adds when idle: (median of the long chain - median of the short one) / levels between. */
export interface ChainLevels {
  from: string;
  to: string;
  levels: number;
  msPerLevel: number;
  targetMsPerLevel: number;
  met: boolean;
}

export interface IdleReport {
  cases: IdleCaseReport[];
  chainLevels?: ChainLevels;
}

/** Tasks measured per case, and tasks run first (not measured) to warm the path up. */
export const IDLE_TASKS = 50;
const WARMUP_TASKS = 5;
/** Long poll per request (GET /result/:id?wait=10), and how many before giving up on a task. */
const WAIT_S = 10;
const MAX_POLLS = 6;
const FINISHED = new Set(['completed', 'failed', 'cancelled']);

/**
 * Waits for the task's end with GET /result/:id?wait=10: the API answers as soon as the task
 * ends (its events notice wakes the request), so nothing polls in a loop. How the end is awaited
 * does not enter the figure, which comes from PostgreSQL's timestamps.
 */
async function awaitEnd(system: RunningSystem, id: string): Promise<void> {
  if (!system.get) throw new Error(`${system.kind} has no API to wait on`);
  for (let poll = 0; poll < MAX_POLLS; poll += 1) {
    const { status, json } = await system.get(`/result/${id}?wait=${WAIT_S}`);
    if (status !== 200) throw new Error(`GET /result/${id} answered ${status}: ${JSON.stringify(json)}`);
    if (FINISHED.has(String((json as { status?: unknown }).status))) return;
  }
  throw new Error(`task ${id} did not finish within ${MAX_POLLS * WAIT_S} s`);
}

async function oneAtATime(system: RunningSystem, target: Target, tag: string, count: number): Promise<string[]> {
  const ids: string[] = [];
  for (let index = 0; index < count; index += 1) {
    const id = await target.submit(tag);
    await awaitEnd(system, id);
    ids.push(id);
  }
  return ids;
}

/** Each task's only step: run time and pickup time, from PostgreSQL. */
async function stepTimes(system: RunningSystem, ids: string[]): Promise<{ stepMs: number[]; pickupMs: number[] }> {
  if (!system.benchClient) throw new Error(`${system.kind} has no database to read steps from`);
  const rows = await system.benchClient.query<{ step: number; pickup: number | null }>(
    `SELECT (extract(epoch FROM finished_at - started_at) * 1000)::float8 AS step,
            (extract(epoch FROM started_at - queued_at) * 1000)::float8 AS pickup
       FROM steps WHERE task_id = ANY($1::uuid[]) AND finished_at IS NOT NULL AND started_at IS NOT NULL`,
    [ids],
  );
  return { stepMs: rows.map((row) => row.step), pickupMs: rows.flatMap((row) => (row.pickup === null ? [] : [row.pickup])) };
}

async function measureCase(system: RunningSystem, entry: IdleCase, tagPrefix: string): Promise<IdleCaseReport> {
  await entry.prepare?.(system);
  const target = system.target(entry.body);
  await oneAtATime(system, target, `${tagPrefix}-${entry.name}-warmup`, WARMUP_TASKS);
  const tag = `${tagPrefix}-${entry.name}`;
  const ids = await oneAtATime(system, target, tag, IDLE_TASKS);
  const done = await target.completions(tag, ids);
  const ok = done.filter((task) => task.ok);
  const latencyMs = distribution(ok.map((task) => task.finished - task.created));
  const steps = entry.stepAlone
    ? await stepTimes(
        system,
        ok.map((task) => task.id),
      )
    : undefined;
  return {
    name: entry.name,
    tasks: ids.length,
    warmup: WARMUP_TASKS,
    failedTasks: done.length - ok.length,
    latencyMs,
    ...(steps ? { stepMs: distribution(steps.stepMs), pickupMs: distribution(steps.pickupMs) } : {}),
    ...(entry.targetMedianMs !== undefined ? { targetMedianMs: entry.targetMedianMs, met: latencyMs.p50 <= entry.targetMedianMs } : {}),
  };
}

/** Every case in turn, each after a short pause so that the previous work has settled. */
export async function measureIdle(
  system: RunningSystem,
  cases: IdleCase[],
  tagPrefix: string,
  log: (line: string) => void,
  chain?: { from: { name: string; steps: number }; to: { name: string; steps: number }; targetMsPerLevel: number },
): Promise<IdleReport> {
  const reports: IdleCaseReport[] = [];
  for (const entry of cases) {
    await sleep(1_000);
    const report = await measureCase(system, entry, tagPrefix);
    const { latencyMs: l, stepMs: s } = report;
    log(
      `${entry.name}, one at a time: median ${l.p50} ms, p90 ${l.p90} ms, max ${l.max} ms` +
        (entry.targetMedianMs !== undefined ? ` (target median <= ${entry.targetMedianMs} ms: ${report.met ? 'met' : 'NOT met'})` : '') +
        (s ? `; step alone median ${s.p50} ms, p90 ${s.p90} ms, max ${s.max} ms` : ''),
    );
    reports.push(report);
  }
  const from = chain && reports.find((entry) => entry.name === chain.from.name);
  const to = chain && reports.find((entry) => entry.name === chain.to.name);
  if (!chain || !from || !to) return { cases: reports };
  const levels = chain.to.steps - chain.from.steps;
  const msPerLevel = (to.latencyMs.p50 - from.latencyMs.p50) / levels;
  log(
    `chain: ${msPerLevel.toFixed(1)} ms per level ((${to.latencyMs.p50} - ${from.latencyMs.p50}) / ${levels}; target <= ${chain.targetMsPerLevel} ms: ${msPerLevel <= chain.targetMsPerLevel ? 'met' : 'NOT met'})`,
  );
  return {
    cases: reports,
    chainLevels: { from: from.name, to: to.name, levels, msPerLevel, targetMsPerLevel: chain.targetMsPerLevel, met: msPerLevel <= chain.targetMsPerLevel },
  };
}
