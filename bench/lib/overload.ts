import { accepted, type Completion, type Target, waitDrained } from './capacity.js';
import { type Arrival, type LoadRun, openLoop } from './load.js';
import { type Distribution, distribution } from './stats.js';

/**
 * W5, overload: twice the maximum throughput measured for W1 in the same run, offered open loop
 * to the service with its default admission control. What it should show: refusals (503
 * `overloaded`, with Retry-After) come back fast, and the tasks it accepts keep finishing at
 * close to the maximum rate all along, instead of goodput collapsing under the excess.
 */

/** The issue's target: completions stay at or above this share of the maximum in every bin. */
export const OVERLOAD_TARGET_SHARE = 0.9;
/** Bins the target is judged on: 1-s bins are too noisy at a few hundred tasks per second. */
const JUDGED_BIN_MS = 5_000;

export interface OverloadReport {
  /** W1's maximum throughput in this run, and the rate offered (twice that). */
  maxTasksPerS: number;
  /** No stage of W1's search failed: its maximum is only a lower bound, so twice it may not overload. */
  maxIsLowerBound: boolean;
  offeredPerS: number;
  durationMs: number;
  sent: number;
  accepted: number;
  refused: number;
  /** Refusals by status and error code, e.g. "503 overloaded". */
  refusedBy: Record<string, number>;
  /** Send → answer of the refused requests (the generator's view, its pool's queueing included). */
  refusalMs: Distribution;
  /** Retry-After the refusals asked for, in seconds. */
  retryAfterS?: { min: number; max: number };
  errors: number;
  firstError?: string;
  failedTasks: number;
  /** Completions per second in each 1-s and each 5-s bin of the offered window (tasks.finished_at). */
  completionsPerSBy1s: number[];
  completionsPerSBy5s: number[];
  /** The lowest 5-s bin as a share of the maximum, and whether it is at least OVERLOAD_TARGET_SHARE. */
  minShareOfMax: number;
  targetShare: number;
  met: boolean;
  /** The accepted backlog finished afterwards (and how long that took). */
  drained: boolean;
  drainMs: number;
  /** Worst lateness of a send against its schedule: the generator's own limit. */
  maxLagMs: number;
  /** CPU seconds of the bench process (the generator) per 1,000 requests sent. */
  generatorCpuPer1000: number;
}

/** Completions per second in consecutive bins of `binMs` over [from, to); a last, shorter bin is scaled to its length. */
export function completionRates(done: Completion[], from: number, to: number, binMs: number): number[] {
  const bins = Math.max(1, Math.ceil((to - from) / binMs));
  const counts = new Array<number>(bins).fill(0);
  for (const task of done) {
    if (task.finished < from || task.finished >= to) continue;
    counts[Math.floor((task.finished - from) / binMs)]! += 1;
  }
  return counts.map((count, index) => {
    const length = Math.min(binMs, to - from - index * binMs);
    return Math.round((count / (length / 1000)) * 10) / 10;
  });
}

function refusals(arrivals: Arrival[]): Pick<OverloadReport, 'refused' | 'refusedBy' | 'refusalMs' | 'retryAfterS'> {
  const refused = arrivals.filter((arrival) => arrival.refused);
  const refusedBy: Record<string, number> = {};
  for (const { refused: why } of refused) {
    const key = `${why!.status}${why!.code ? ` ${why!.code}` : ''}`;
    refusedBy[key] = (refusedBy[key] ?? 0) + 1;
  }
  const retryAfter = refused.flatMap((arrival) => (arrival.refused?.retryAfterS !== undefined ? [arrival.refused.retryAfterS] : []));
  return {
    refused: refused.length,
    refusedBy,
    refusalMs: distribution(refused.map((arrival) => Math.round((arrival.doneAt - arrival.sentAt) * 10) / 10)),
    ...(retryAfter.length > 0 ? { retryAfterS: { min: Math.min(...retryAfter), max: Math.max(...retryAfter) } } : {}),
  };
}

const round3 = (value: number) => Math.round(value * 1000) / 1000;

function errors(run: LoadRun): { errors: number; firstError?: string } {
  const failed = run.arrivals.filter((arrival) => arrival.error);
  return { errors: failed.length, ...(failed[0]?.error ? { firstError: failed[0].error } : {}) };
}

/** Offers 2 x `maxTasksPerS` for `durationMs`, waits for the accepted tasks, and bins their completions. */
export async function measureOverload(
  target: Target,
  tag: string,
  max: { tasksPerS: number; lowerBound: boolean },
  durationMs: number,
  drainTimeoutMs: number,
): Promise<OverloadReport> {
  const maxTasksPerS = max.tasksPerS;
  const offeredPerS = 2 * maxTasksPerS;
  const cpu = process.cpuUsage();
  const run = await openLoop(offeredPerS, durationMs, () => target.submit(tag));
  const generator = process.cpuUsage(cpu);
  const ids = accepted(run);
  const drain = await waitDrained(target, tag, ids, drainTimeoutMs);
  const done = await target.completions(tag, ids);
  const by5s = completionRates(done, run.startedAt, run.endedAt, JUDGED_BIN_MS);
  const minShareOfMax = Math.min(...by5s) / maxTasksPerS;
  return {
    maxTasksPerS,
    maxIsLowerBound: max.lowerBound,
    offeredPerS,
    durationMs,
    sent: run.arrivals.length,
    accepted: ids.length,
    ...refusals(run.arrivals),
    ...errors(run),
    failedTasks: done.filter((task) => !task.ok).length,
    completionsPerSBy1s: completionRates(done, run.startedAt, run.endedAt, 1_000),
    completionsPerSBy5s: by5s,
    minShareOfMax: round3(minShareOfMax),
    targetShare: OVERLOAD_TARGET_SHARE,
    met: minShareOfMax >= OVERLOAD_TARGET_SHARE,
    drained: drain.drained,
    drainMs: Math.round(drain.drainMs),
    maxLagMs: Math.round(run.maxLagMs),
    generatorCpuPer1000: round3(((generator.user + generator.system) / 1e6) * (1000 / Math.max(1, run.arrivals.length))),
  };
}
