import { type LoadRun, openLoop } from './load.js';
import { type Distribution, distribution } from './stats.js';
import { epochNow, sleep } from './util.js';

/** A finished task (or job): when the system received it and when its final result was committed. */
export interface Completion {
  id: string;
  /** ms since the epoch. */
  created: number;
  finished: number;
  /** false when the task ended failed. */
  ok: boolean;
}

/** What the measurements drive: one workload on one running system. */
export interface Target {
  /** Creates one task; `tag` names the phase it belongs to. Resolves with the task's id. */
  submit(tag: string): Promise<string>;
  /** Those of `ids` that have not finished yet. */
  unfinished(tag: string, ids: string[]): Promise<string[]>;
  /** Times of those of `ids` that have finished, read from the system's own records. */
  completions(tag: string, ids: string[]): Promise<Completion[]>;
}

export interface SearchPlan {
  probeMs: number;
  /** Tasks kept outstanding (sent and not finished) at the start of the probe. */
  probeOutstanding: number;
  stageMs: number;
  maxStages: number;
  refinements: number;
  tolerance: number;
  drainTimeoutMs: number;
}

export interface StageReport {
  kind: 'probe' | 'stage';
  /** Offered rate (stage) or arrival rate achieved (probe), per second. */
  rate: number;
  durationMs: number;
  sent: number;
  accepted: number;
  errors: number;
  firstError?: string;
  /** Tasks that ended failed rather than completed. */
  failedTasks: number;
  /** Worst lateness of a send against its schedule (the generator's own limit). */
  maxLagMs: number;
  /** The part of the stage that is judged: its last two thirds. */
  windowMs: number;
  arrivalsPerS: number;
  completionsPerS: number;
  /** Arrivals minus completions inside the window, and the most a passing stage may have. */
  backlogGrowth: number;
  allowedGrowth: number;
  latencyP50Ms: number;
  drained: boolean;
  drainMs: number;
  passed: boolean;
  reason?: string;
}

export interface CapacityReport {
  /** Highest offered rate whose stage passed; 0 when none did. */
  maxRate: number;
  /** Lowest offered rate whose stage failed; absent when every stage passed (maxRate is then a lower bound). */
  lowestFailingRate?: number;
  probeRate: number;
  stages: StageReport[];
}

export interface LatencyReport {
  rate: number;
  durationMs: number;
  sent: number;
  accepted: number;
  errors: number;
  firstError?: string;
  failedTasks: number;
  drained: boolean;
  maxLagMs: number;
  /** Receipt by the system to the commit of the final result, from the system's own timestamps. */
  latencyMs: Distribution;
  /** Time the generator waited for the HTTP answer (202) or the add to return. */
  ackMs: Distribution;
  /** Scheduled send to final commit: the client's view, including any queueing before receipt. */
  clientMs: Distribution;
}

export const METHOD = [
  'Max throughput: a short probe keeps K tasks outstanding (sent, not finished; K grows while that raises the completion rate) and gives an estimate;',
  'then stages, starting at 0.8x the estimate, at a fixed offered rate (open loop) go up by 1.5x while they pass and down by 1.5x while they fail, then bisect (geometric mean)',
  'between the highest pass and the lowest fail. A stage passes when, over its last two thirds, tasks arrived on schedule (>= 1 - tolerance of the',
  'offered rate, no errors), completions kept up with arrivals (backlog growth <= tolerance of the offered work + 50 ms of arrivals),',
  'and the backlog drained afterwards. Max throughput is the highest passing offered rate.',
  "Latency: open loop at half that rate; receipt to commit of the final result from the system's own timestamps, read afterwards.",
  'Costs (Redis commands, PostgreSQL transactions, CPU) are measured over the latency phase, from idle to idle.',
].join(' ');

/** Step of the search until the first stage that passes and the first that fails are found. */
const UP = 1.5;
/** First stage, relative to the probe's estimate. */
const START = 0.8;
/** Timer jitter allowed on top of the tolerance: 50 ms worth of arrivals (and one task, for low rates). */
const GRACE_S = 0.05;

/** Two significant digits: rates are approximate by nature, and tidy numbers read better. */
function tidy(rate: number): number {
  return Math.max(1, Number(rate.toPrecision(2)));
}

export async function waitDrained(target: Target, tag: string, ids: string[], timeoutMs: number): Promise<{ drained: boolean; drainMs: number }> {
  const start = epochNow();
  let left = ids;
  let interval = 20;
  while (left.length > 0) {
    if (epochNow() - start > timeoutMs) return { drained: false, drainMs: epochNow() - start };
    await sleep(interval);
    interval = Math.min(250, interval * 2);
    left = await target.unfinished(tag, left);
  }
  return { drained: true, drainMs: epochNow() - start };
}

/** Ids of the tasks a load run created. */
export function accepted(run: LoadRun): string[] {
  return run.arrivals.flatMap((arrival) => (arrival.id ? [arrival.id] : []));
}

/** Failed requests; a refusal counts as one here: a stage or latency phase that is refused is not sustained. */
function errorsOf(run: LoadRun): { errors: number; firstError?: string } {
  const failed = run.arrivals.filter((arrival) => arrival.error || arrival.refused);
  const first = failed[0];
  const firstError = first?.error ?? (first?.refused ? `HTTP ${first.refused.status}${first.refused.code ? ` ${first.refused.code}` : ''}` : undefined);
  return { errors: failed.length, ...(firstError ? { firstError } : {}) };
}

/** Judges a finished, drained load run: arrivals and completions inside its last two thirds. */
function judge(
  kind: StageReport['kind'],
  rate: number,
  run: LoadRun,
  done: Completion[],
  drain: { drained: boolean; drainMs: number },
  tolerance: number,
): StageReport {
  const durationMs = run.endedAt - run.startedAt;
  const from = run.startedAt + durationMs / 3;
  const to = run.endedAt;
  const windowS = (to - from) / 1000;
  const arrivals = done.filter((task) => task.created >= from && task.created < to).length;
  const completions = done.filter((task) => task.finished >= from && task.finished < to).length;
  const { errors, firstError } = errorsOf(run);
  const failedTasks = done.filter((task) => !task.ok).length;
  const backlogGrowth = arrivals - completions;
  // One task more either way: at low rates a window holds few tasks.
  const allowedGrowth = rate * (tolerance * windowS + GRACE_S) + 1;
  const latencies = done.map((task) => task.finished - task.created);
  const report: StageReport = {
    kind,
    rate,
    durationMs: Math.round(durationMs),
    sent: run.arrivals.length,
    accepted: accepted(run).length,
    errors,
    ...(firstError ? { firstError } : {}),
    failedTasks,
    maxLagMs: Math.round(run.maxLagMs),
    windowMs: Math.round(windowS * 1000),
    arrivalsPerS: arrivals / windowS,
    completionsPerS: completions / windowS,
    backlogGrowth,
    allowedGrowth: Math.round(allowedGrowth),
    latencyP50Ms: distribution(latencies).p50,
    drained: drain.drained,
    drainMs: Math.round(drain.drainMs),
    passed: false,
  };
  const reasons: string[] = [];
  if (!drain.drained) reasons.push('backlog did not drain');
  if (errors > Math.max(0, 0.001 * run.arrivals.length)) reasons.push(`${errors} requests failed${firstError ? ` (${firstError})` : ''}`);
  if (failedTasks > 0) reasons.push(`${failedTasks} tasks failed`);
  if (arrivals < rate * ((1 - tolerance) * windowS - GRACE_S) - 1) reasons.push(`arrivals ${report.arrivalsPerS.toFixed(0)}/s behind the offered ${rate}/s`);
  if (backlogGrowth > allowedGrowth) reasons.push(`backlog grew by ${backlogGrowth} (allowed ${report.allowedGrowth})`);
  report.passed = reasons.length === 0;
  if (!report.passed) report.reason = reasons.join('; ');
  return report;
}

/** One stage: `rate` arrivals per second, open loop, for `plan.stageMs`; then drain and judge. */
async function stage(target: Target, tag: string, rate: number, plan: SearchPlan): Promise<StageReport> {
  const run = await openLoop(rate, plan.stageMs, () => target.submit(tag));
  const ids = accepted(run);
  const drain = await waitDrained(target, tag, ids, plan.drainTimeoutMs);
  const done = drain.drained ? await target.completions(tag, ids) : [];
  return judge('stage', rate, run, done, drain, plan.tolerance);
}

/**
 * The probe: a closed loop on completion. It keeps K tasks sent and unfinished, replacing each as
 * soon as it is seen finished, so the backlog it leaves is at most K however slow the system is.
 * K starts at `probeOutstanding` and grows by half while that still raises the completion rate
 * (a fast system needs many tasks in flight to be kept busy, a slow one drowns in them). The
 * completion rate it reaches is only the starting point of the search; it also warms the system up.
 */
async function probe(target: Target, tag: string, plan: SearchPlan): Promise<StageReport> {
  const open = new Map<string, number>();
  const ids: string[] = [];
  const arrivals: LoadRun['arrivals'] = [];
  const startedAt = epochNow();
  const inFlight = new Set<Promise<void>>();
  const launch = () => {
    const sentAt = epochNow();
    const promise = target
      .submit(tag)
      .then(
        (id) => {
          open.set(id, sentAt);
          ids.push(id);
          arrivals.push({ scheduledAt: sentAt, sentAt, doneAt: epochNow(), id });
        },
        (error: Error) => {
          arrivals.push({ scheduledAt: sentAt, sentAt, doneAt: epochNow(), error: error.message });
        },
      )
      .finally(() => inFlight.delete(promise));
    inFlight.add(promise);
  };

  let limit = plan.probeOutstanding;
  let growing = true;
  let intervalStart = startedAt;
  let intervalDone = 0;
  let lastRate = 0;
  let firstDoneAt: number | undefined;
  let totalDone = 0;
  let recentLatency: number | undefined;
  // At least probeMs; longer (up to twice) for a slow system, until it has finished 3 K tasks.
  const running = () => {
    const elapsed = epochNow() - startedAt;
    return elapsed < plan.probeMs || (elapsed < 2 * plan.probeMs && totalDone < 3 * limit);
  };
  for (let i = 0; i < limit; i += 1) launch();
  while (running()) {
    await sleep(10);
    if (open.size > 0) {
      const left = new Set(await target.unfinished(tag, [...open.keys()]));
      const now = epochNow();
      for (const [id, sentAt] of [...open]) {
        if (left.has(id)) continue;
        open.delete(id);
        firstDoneAt ??= now;
        totalDone += 1;
        intervalDone += 1;
        recentLatency = recentLatency === undefined ? now - sentAt : 0.8 * recentLatency + 0.2 * (now - sentAt);
        if (running()) launch();
      }
    }
    // Judge the rate over at least 200 ms and two task latencies, so that it means something.
    const elapsed = epochNow() - intervalStart;
    if (growing && recentLatency !== undefined && elapsed >= Math.max(200, 2 * recentLatency) && intervalDone > 0) {
      const rate = intervalDone / (elapsed / 1000);
      if (rate > 1.15 * lastRate) {
        const more = Math.ceil(limit / 2);
        limit += more;
        for (let i = 0; i < more; i += 1) launch();
      } else {
        growing = false;
      }
      lastRate = rate;
      intervalStart = epochNow();
      intervalDone = 0;
    }
  }
  const endedAt = epochNow();
  await Promise.all(inFlight);
  const run: LoadRun = { startedAt, endedAt, arrivals, maxLagMs: 0 };
  const drain = await waitDrained(target, tag, [...open.keys()], plan.drainTimeoutMs);
  const done = await target.completions(tag, ids);
  // Completions per second since the first one (the pipeline is full from then on). Shorter
  // windows overestimate when completions come in bursts, and an overloaded stage is costly.
  const overall = firstDoneAt !== undefined && endedAt > firstDoneAt ? totalDone / ((endedAt - firstDoneAt) / 1000) : 0;
  const rate = totalDone >= 10 ? overall : Math.max(overall, lastRate);
  const report = judge('probe', rate, run, done, drain, plan.tolerance);
  // The probe is never "passed": it only measures.
  return { ...report, completionsPerS: rate, passed: false, reason: `estimate ${rate.toFixed(0)}/s with up to ${limit} tasks outstanding` };
}

/** Finds the highest offered rate the system sustains; see METHOD. */
export async function findMaxRate(target: Target, tagPrefix: string, plan: SearchPlan, log: (line: string) => void): Promise<CapacityReport> {
  const first = await probe(target, `${tagPrefix}-probe`, plan);
  log(`probe: ${first.reason ?? ''}`);
  if (!first.drained) throw new Error("the probe's tasks did not finish: is the system processing anything?");
  const stages: StageReport[] = [first];
  // Start a little below the estimate: a stage above capacity costs a long drain.
  let rate = tidy(START * first.completionsPerS || 1);
  let best: number | undefined;
  let lowestFail: number | undefined;
  let refinements = 0;
  // Past the budget, keep going down (a little) until some stage passes.
  for (let index = 0; index < plan.maxStages || (best === undefined && index < plan.maxStages + 2); index += 1) {
    const report = await stage(target, `${tagPrefix}-s${index}`, rate, plan);
    stages.push(report);
    log(
      `stage ${rate}/s: ${report.passed ? 'pass' : 'FAIL'}  arrivals ${report.arrivalsPerS.toFixed(0)}/s, completions ${report.completionsPerS.toFixed(0)}/s, ` +
        `p50 ${report.latencyP50Ms} ms, drain ${report.drainMs} ms${report.reason ? `  (${report.reason})` : ''}`,
    );
    if (!report.drained) break;
    // After an overload, let deferred work (trimming, vacuum, GC) settle before the next stage.
    if (!report.passed) await sleep(Math.min(2_000, plan.stageMs / 3));
    if (report.passed) best = Math.max(best ?? 0, rate);
    else lowestFail = Math.min(lowestFail ?? Number.POSITIVE_INFINITY, rate);
    let next: number;
    if (lowestFail === undefined) next = tidy(rate * UP);
    else if (best === undefined) next = tidy(rate / UP);
    else {
      if (refinements >= plan.refinements) break;
      next = tidy(Math.sqrt(best * lowestFail));
      if (next <= best || next >= lowestFail) break;
      refinements += 1;
    }
    if (next === rate) break;
    rate = next;
  }
  return { maxRate: best ?? 0, ...(lowestFail !== undefined ? { lowestFailingRate: lowestFail } : {}), probeRate: first.completionsPerS, stages };
}

/** Open loop at `rate` for `durationMs`; every task's latency from the system's own timestamps. */
export async function measureLatency(target: Target, tag: string, rate: number, durationMs: number, drainTimeoutMs: number): Promise<LatencyReport> {
  const run = await openLoop(rate, durationMs, () => target.submit(tag));
  const ids = accepted(run);
  const drain = await waitDrained(target, tag, ids, drainTimeoutMs);
  const done = await target.completions(tag, ids);
  const scheduled = new Map(run.arrivals.flatMap((arrival) => (arrival.id ? [[arrival.id, arrival.scheduledAt] as const] : [])));
  const ok = done.filter((task) => task.ok);
  const { errors, firstError } = errorsOf(run);
  return {
    rate,
    durationMs,
    sent: run.arrivals.length,
    accepted: ids.length,
    errors,
    ...(firstError ? { firstError } : {}),
    failedTasks: done.length - ok.length,
    drained: drain.drained,
    maxLagMs: Math.round(run.maxLagMs),
    latencyMs: distribution(ok.map((task) => task.finished - task.created)),
    ackMs: distribution(run.arrivals.map((arrival) => arrival.doneAt - arrival.sentAt)),
    clientMs: distribution(
      ok.flatMap((task) => {
        const at = scheduled.get(task.id);
        return at === undefined ? [] : [task.finished - at];
      }),
    ),
  };
}
