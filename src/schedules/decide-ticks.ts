import { fireTimesBetween, type Timing } from './timing.js';

export const OVERLAP_POLICIES = ['skip', 'allow', 'buffer_one'] as const;
export type Overlap = (typeof OVERLAP_POLICIES)[number];
export const CATCH_UP_POLICIES = ['none', 'latest', 'all_within_ms'] as const;
export type CatchUp = (typeof CATCH_UP_POLICIES)[number];

/** What was decided for one tick: make its task (`pending` until it is made), skip it, or let it wait. */
export type TickOutcome = 'pending' | 'skipped' | 'buffered';

/** At most this many ticks are decided at once: a catch-up over a long pause runs the newest of them. */
export const MAX_TICKS_PER_DECISION = 1000;

/** Most missed ticks one catch-up runs, unless SCHEDULE_CATCH_UP_MAX says otherwise (a day of hourly ticks). */
export const DEFAULT_CATCH_UP_MAX = 24;

export interface TickPolicy {
  timing: Timing;
  overlap: Overlap;
  catchUp: CatchUp;
  /** all_within_ms: how far back from now a missed tick is still run. */
  catchUpWindowMs?: number;
  /** all_within_ms: most missed ticks run, the newest. @defaultValue DEFAULT_CATCH_UP_MAX */
  catchUpMax?: number;
  /** Every tick at or before this was decided before. */
  decidedUntil: Date;
  /** Ticks at or before this are missed however recent (they fell while the schedule was paused). */
  missedUntil?: Date;
}

export interface TickState {
  /** Tasks of the schedule not ended yet (queued or running), and ticks whose task is being made. */
  active: number;
  /** Whether a tick waits already (buffer_one). */
  buffered: boolean;
}

/**
 * Decides every tick in (decidedUntil, now]. A tick is on time when it is at most `graceMs` old
 * (and did not fall while the schedule was paused): it runs, subject to the overlap policy. Older
 * ticks were missed (no worker ran, or the schedule was paused): the catch-up policy picks which
 * of them run, and those too go through the overlap policy; the others leave no trace.
 */
export function decideTicks(policy: TickPolicy, state: TickState, now: Date, graceMs: number): { tickAt: Date; outcome: TickOutcome }[] {
  const window = policy.catchUp === 'all_within_ms' ? (policy.catchUpWindowMs ?? 0) : 0;
  const horizon = new Date(now.getTime() - Math.max(graceMs, window));
  const recent = fireTimesBetween(policy.timing, policy.decidedUntil, now, MAX_TICKS_PER_DECISION, horizon);
  const missed = (at: Date) => (policy.missedUntil !== undefined && at <= policy.missedUntil) || now.getTime() - at.getTime() > graceMs;
  const runs = recent.filter((at) => !missed(at));
  const missedRecent = recent.filter(missed);
  // Newest first: a window of many ticks (a fast interval, a long outage) runs its newest few, not a burst.
  if (policy.catchUp === 'all_within_ms')
    runs.push(...missedRecent.filter((at) => now.getTime() - at.getTime() <= window).slice(0, policy.catchUpMax ?? DEFAULT_CATCH_UP_MAX));
  if (policy.catchUp === 'latest') {
    // The newest missed tick may lie before the horizon, when every later one is on time.
    const latest = missedRecent[0] ?? fireTimesBetween(policy.timing, policy.decidedUntil, new Date(horizon.getTime() - 1), 1)[0];
    if (latest) runs.push(latest);
  }
  runs.sort((a, b) => a.getTime() - b.getTime());
  let { active, buffered } = state;
  return runs.map((tickAt) => {
    if (policy.overlap === 'allow' || active === 0) {
      active += 1;
      return { tickAt, outcome: 'pending' as const };
    }
    if (policy.overlap === 'buffer_one' && !buffered) {
      buffered = true;
      return { tickAt, outcome: 'buffered' as const };
    }
    return { tickAt, outcome: 'skipped' as const };
  });
}
