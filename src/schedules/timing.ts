import { CronExpressionParser } from 'cron-parser';

/** When a schedule fires: a cron expression in a time zone, or every so many milliseconds. */
export type Timing = { cron: string; timezone: string; everyMs?: undefined } | { everyMs: number; cron?: undefined; timezone?: string };

/** Why a time zone is not one, or undefined when it is (an IANA name such as `Europe/Berlin`, or `UTC`). */
export function timezoneProblem(timezone: string): string | undefined {
  try {
    new Intl.DateTimeFormat('en', { timeZone: timezone });
    return undefined;
  } catch {
    return `unknown time zone ${JSON.stringify(timezone)}: use an IANA name such as "Europe/Berlin" or "UTC"`;
  }
}

/** Why a cron expression is not one, or undefined when it is: five fields, or six with seconds first. */
export function cronProblem(cron: string, timezone = 'UTC'): string | undefined {
  const fields = cron.trim().split(/\s+/).length;
  if (fields < 5 || fields > 6)
    return `a cron expression has 5 fields (minute hour day-of-month month day-of-week) or 6 (seconds first); this one has ${fields}`;
  try {
    CronExpressionParser.parse(cron, { tz: timezone, currentDate: new Date() }).next();
    return undefined;
  } catch (error) {
    return `invalid cron expression: ${(error as Error).message}`;
  }
}

/** The first `count` fire times after `after`, oldest first. */
export function nextFireTimes(timing: Timing, after: Date, count: number): Date[] {
  if (timing.everyMs !== undefined) {
    const first = (Math.floor(after.getTime() / timing.everyMs) + 1) * timing.everyMs;
    return Array.from({ length: count }, (_, index) => new Date(first + index * timing.everyMs));
  }
  const times: Date[] = [];
  const iterator = CronExpressionParser.parse(timing.cron, { tz: timing.timezone, currentDate: after });
  try {
    while (times.length < count) times.push(new Date(iterator.next().getTime()));
  } catch {
    // An expression with no further time (a 29 February that never comes): fewer times.
  }
  return times;
}

/**
 * The fire times in (`after`, `until`], newest first, at most `limit` of them, and none before
 * `notBefore` (a bound on how far back a long pause is walked).
 */
export function fireTimesBetween(timing: Timing, after: Date, until: Date, limit: number, notBefore?: Date): Date[] {
  const floor = Math.max(after.getTime(), (notBefore?.getTime() ?? Number.NEGATIVE_INFINITY) - 1);
  const times: Date[] = [];
  if (timing.everyMs !== undefined) {
    for (let at = Math.floor(until.getTime() / timing.everyMs) * timing.everyMs; at > floor && times.length < limit; at -= timing.everyMs) {
      times.push(new Date(at));
    }
    return times;
  }
  // cron-parser's prev() is strictly before its current date: start 1 ms after `until` so `until` itself counts.
  const iterator = CronExpressionParser.parse(timing.cron, { tz: timing.timezone, currentDate: new Date(until.getTime() + 1) });
  try {
    while (times.length < limit) {
      const at = iterator.prev().getTime();
      if (at <= floor) break;
      times.push(new Date(at));
    }
  } catch {
    // No earlier time.
  }
  return times;
}
