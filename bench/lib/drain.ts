import { waitDrained } from './capacity.js';
import { Refused } from './load.js';
import type { RunningSystem } from './systems/system.js';
import { inChunks } from './systems/system.js';
import { epochNow, sleep } from './util.js';
import type { TaskKind } from './workloads.js';

/**
 * DRAIN: how fast the workers get through a backlog. For each kind of task, the same number of
 * units (steps) is submitted at once, over a fixed number of concurrent HTTP connections, while
 * the service's queues are paused (BullMQ's Queue.pause: the workers take nothing); once every
 * submission has been answered, the queues are resumed, and the finishes per second are read
 * afterwards from PostgreSQL (steps.finished_at): from the first finish to the last, less the
 * first and the last 5 % of the finishes (the workers' ramp-up, and the tail where too few steps
 * are left to keep every worker busy). Without the pause, W1's tasks finish as fast as the API
 * takes them (98 % of them before the last submission was answered, in a trial run): that would
 * measure the API, not the workers draining a backlog.
 */

/** Share of the finishes left out at each end. */
export const DRAIN_TRIM = 0.05;

export interface DrainKindReport {
  id: string;
  title: string;
  stepsPerTask: number;
  /** Tasks submitted, accepted, refused (503/429: admission control is off, so none are expected) and failed requests. */
  tasks: number;
  accepted: number;
  refused: number;
  errors: number;
  firstError?: string;
  /** Tasks that ended failed. */
  failedTasks: number;
  /** Steps read from PostgreSQL, and how many were expected (accepted tasks x steps per task). */
  steps: number;
  expectedSteps: number;
  /** First send to last answer, ms; and the share of the steps that finished before it ended (0 while the queues are paused). */
  submitMs: number;
  finishedWhileSubmittingShare: number;
  /** The queues paused while submitting; none when the system cannot pause them. */
  pausedQueues: string[];
  /** Resume to the last finish, ms. */
  resumeToLastMs: number;
  drained: boolean;
  /** First finish to last, ms; and the window kept after trimming. */
  spanMs: number;
  trimmedSpanMs: number;
  /** Steps per second over the trimmed window (the figure), and over the whole span. */
  stepsPerS: number;
  stepsPerSWhole: number;
  /** stepsPerS / stepsPerTask. */
  tasksPerS: number;
}

export interface DrainReport {
  unitsPerKind: number;
  connections: number;
  trim: number;
  kinds: DrainKindReport[];
  baseline: string;
  /** Each kind's steps/s divided by the baseline's tasks/s, in this run. */
  ratios: Record<string, number>;
  targetRatio: number;
}

interface Submitted {
  ids: string[];
  refused: number;
  errors: number;
  firstError?: string;
  startedAt: number;
  endedAt: number;
}

/** `count` POSTs, `connections` at a time, as fast as the API answers. */
async function submitAll(system: RunningSystem, kind: TaskKind, tag: string, count: number, connections: number): Promise<Submitted> {
  const target = system.target(kind.body, { connections });
  const ids: string[] = [];
  let refused = 0;
  let errors = 0;
  let firstError: string | undefined;
  let next = 0;
  const startedAt = epochNow();
  const lane = async () => {
    while (next < count) {
      next += 1;
      try {
        ids.push(await target.submit(tag));
      } catch (error) {
        if (error instanceof Refused) refused += 1;
        else errors += 1;
        firstError ??= error instanceof Error ? error.message : String(error);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(connections, count) }, lane));
  return { ids, refused, errors, ...(firstError ? { firstError } : {}), startedAt, endedAt: epochNow() };
}

/** Every step of the tasks: when it finished (ms since the epoch), from PostgreSQL. */
async function stepFinishes(system: RunningSystem, ids: string[]): Promise<number[]> {
  const client = system.benchClient;
  if (!client) throw new Error(`${system.kind} has no database to read steps from`);
  const rows = await inChunks(ids, (chunk) =>
    client.query<{ finished: number }>(
      `SELECT (extract(epoch FROM finished_at) * 1000)::float8 AS finished
         FROM steps WHERE task_id = ANY($1::uuid[]) AND finished_at IS NOT NULL`,
      [chunk],
    ),
  );
  return rows.map((row) => row.finished).sort((a, b) => a - b);
}

/** Finishes per second between the finish at `trim` and the one at `1 - trim` of the sorted list. */
export function trimmedRate(sorted: number[], trim: number): { rate: number; spanMs: number } {
  if (sorted.length < 2) return { rate: 0, spanMs: 0 };
  const low = Math.floor(trim * sorted.length);
  const high = Math.max(low + 1, Math.ceil((1 - trim) * sorted.length) - 1);
  const spanMs = sorted[high]! - sorted[low]!;
  return { rate: spanMs > 0 ? ((high - low) * 1000) / spanMs : 0, spanMs };
}

const round1 = (value: number) => Math.round(value * 10) / 10;

async function drainKind(
  system: RunningSystem,
  kind: TaskKind,
  tag: string,
  units: number,
  connections: number,
  drainTimeoutMs: number,
): Promise<DrainKindReport> {
  await kind.prepare?.(system);
  const tasks = Math.max(1, Math.round(units / kind.stepsPerTask));
  const paused = await system.pauseQueues?.();
  let sent: Submitted;
  let resumedAt: number;
  try {
    sent = await submitAll(system, kind, tag, tasks, connections);
  } finally {
    resumedAt = epochNow();
    await paused?.resume();
  }
  const target = system.target(kind.body);
  const drain = await waitDrained(target, tag, sent.ids, drainTimeoutMs);
  const done = await target.completions(tag, sent.ids);
  const finishes = await stepFinishes(system, sent.ids);
  const trimmed = trimmedRate(finishes, DRAIN_TRIM);
  const whole = trimmedRate(finishes, 0);
  const stepsPerS = round1(trimmed.rate);
  return {
    id: kind.id,
    title: kind.title,
    stepsPerTask: kind.stepsPerTask,
    tasks,
    accepted: sent.ids.length,
    refused: sent.refused,
    errors: sent.errors,
    ...(sent.firstError ? { firstError: sent.firstError } : {}),
    failedTasks: done.filter((task) => !task.ok).length,
    steps: finishes.length,
    expectedSteps: sent.ids.length * kind.stepsPerTask,
    submitMs: Math.round(sent.endedAt - sent.startedAt),
    finishedWhileSubmittingShare: finishes.length > 0 ? Math.round((finishes.filter((at) => at <= sent.endedAt).length / finishes.length) * 1000) / 1000 : 0,
    pausedQueues: paused?.names ?? [],
    resumeToLastMs: finishes.length > 0 ? Math.round(finishes.at(-1)! - resumedAt) : 0,
    drained: drain.drained,
    spanMs: Math.round(whole.spanMs),
    trimmedSpanMs: Math.round(trimmed.spanMs),
    stepsPerS,
    stepsPerSWhole: round1(whole.rate),
    tasksPerS: round1(trimmed.rate / kind.stepsPerTask),
  };
}

/** Each kind in turn on the same service, a pause between them so that the previous one's after-work settles. */
export async function measureDrain(
  system: RunningSystem,
  kinds: TaskKind[],
  plan: { units: number; connections: number; drainTimeoutMs: number; baseline: string; targetRatio: number },
  tagPrefix: string,
  log: (line: string) => void,
): Promise<DrainReport> {
  const reports: DrainKindReport[] = [];
  for (const kind of kinds) {
    await sleep(2_000);
    const report = await drainKind(system, kind, `${tagPrefix}-${kind.id}`, plan.units, plan.connections, plan.drainTimeoutMs);
    log(
      `${kind.id}: ${report.accepted} tasks (${report.steps} steps) submitted in ${report.submitMs} ms to paused queues (${report.pausedQueues.join(', ') || 'none'}), ` +
        `${report.refused} refused, ${report.errors} errors; ` +
        `${report.stepsPerS} steps/s (${report.tasksPerS} tasks/s) over the middle ${100 - 2 * 100 * DRAIN_TRIM} % of ${report.trimmedSpanMs} ms; ` +
        `${Math.round(report.finishedWhileSubmittingShare * 100)} % finished while submitting${report.drained ? '' : '; DID NOT DRAIN'}`,
    );
    reports.push(report);
  }
  const baseline = reports.find((entry) => entry.id === plan.baseline);
  const ratios = Object.fromEntries(
    reports
      .filter((entry) => entry.id !== plan.baseline && baseline && baseline.tasksPerS > 0)
      .map((entry) => [entry.id, Math.round((entry.stepsPerS / baseline!.tasksPerS) * 1000) / 1000]),
  );
  return {
    unitsPerKind: plan.units,
    connections: plan.connections,
    trim: DRAIN_TRIM,
    kinds: reports,
    baseline: plan.baseline,
    ratios,
    targetRatio: plan.targetRatio,
  };
}
