import { describe, expect, it } from 'vitest';
import { DEFAULT_CATCH_UP_MAX, decideTicks, MAX_TICKS_PER_DECISION } from '../../src/schedules/decide-ticks.js';
import { cronProblem, fireTimesBetween, nextFireTimes, timezoneProblem } from '../../src/schedules/timing.js';

/** The pure rules of schedules: fire times, and which ticks run. */

const iso = (dates: Date[]) => dates.map((date) => date.toISOString());
const MIN = 60_000;

describe('fire times', () => {
  it('reads a cron expression in its time zone, and an interval at its multiples since the epoch', () => {
    expect(iso(nextFireTimes({ cron: '0 2 * * *', timezone: 'Europe/Berlin' }, new Date('2026-11-23T12:00:00Z'), 2))).toEqual([
      '2026-11-24T01:00:00.000Z',
      '2026-11-25T01:00:00.000Z',
    ]);
    expect(iso(nextFireTimes({ cron: '0 2 * * *', timezone: 'America/New_York' }, new Date('2026-11-23T12:00:00Z'), 1))).toEqual(['2026-11-24T07:00:00.000Z']);
    expect(iso(nextFireTimes({ cron: '*/10 * * * * *', timezone: 'UTC' }, new Date('2026-11-23T12:00:00.500Z'), 2))).toEqual([
      '2026-11-23T12:00:10.000Z',
      '2026-11-23T12:00:20.000Z',
    ]);
    expect(iso(nextFireTimes({ everyMs: 300 }, new Date(1_000), 3))).toEqual(iso([new Date(1_200), new Date(1_500), new Date(1_800)]));
    // A time exactly on a tick is not after it.
    expect(nextFireTimes({ everyMs: 300 }, new Date(1_200), 1)[0]!.getTime()).toBe(1_500);
  });

  it('lists the ticks of (after, until], newest first, bounded by a count and a floor', () => {
    const hourly = { cron: '0 * * * *', timezone: 'UTC' };
    const after = new Date('2026-11-23T10:00:00Z');
    const until = new Date('2026-11-23T13:00:00Z');
    expect(iso(fireTimesBetween(hourly, after, until, 10))).toEqual(['2026-11-23T13:00:00.000Z', '2026-11-23T12:00:00.000Z', '2026-11-23T11:00:00.000Z']);
    expect(iso(fireTimesBetween(hourly, after, until, 2))).toEqual(['2026-11-23T13:00:00.000Z', '2026-11-23T12:00:00.000Z']);
    expect(iso(fireTimesBetween(hourly, after, until, 10, new Date('2026-11-23T12:00:00Z')))).toEqual(['2026-11-23T13:00:00.000Z', '2026-11-23T12:00:00.000Z']);
    expect(iso(fireTimesBetween({ everyMs: 100 }, new Date(1_000), new Date(1_350), 10))).toEqual(iso([new Date(1_300), new Date(1_200), new Date(1_100)]));
    expect(fireTimesBetween({ everyMs: 100 }, new Date(1_000), new Date(1_000), 10)).toEqual([]);
  });

  it('names what is wrong with a cron expression or a time zone', () => {
    expect(cronProblem('0 2 * * *')).toBeUndefined();
    expect(cronProblem('0 2 * * 1-5', 'Asia/Tokyo')).toBeUndefined();
    expect(cronProblem('* * *')).toMatch(/5 fields/);
    expect(cronProblem('0 0 0 0 0 0 0')).toMatch(/5 fields/);
    expect(cronProblem('0 25 * * *')).toMatch(/invalid cron expression/);
    expect(cronProblem('0 0 30 2 *')).toMatch(/invalid cron expression/);
    expect(timezoneProblem('Europe/Berlin')).toBeUndefined();
    expect(timezoneProblem('Mars/Olympus')).toMatch(/unknown time zone/);
  });
});

describe('which ticks run', () => {
  const every = { everyMs: MIN };
  const base = new Date('2026-11-23T12:00:00Z').getTime();
  const policy = (overrides: Partial<Parameters<typeof decideTicks>[0]> = {}) => ({
    timing: every,
    overlap: 'allow' as const,
    catchUp: 'none' as const,
    decidedUntil: new Date(base),
    ...overrides,
  });
  const idle = { active: 0, buffered: false };
  const run = (decisions: ReturnType<typeof decideTicks>) => decisions.map(({ tickAt, outcome }) => [(tickAt.getTime() - base) / MIN, outcome]);

  it('a tick within the grace is on time; older ones are missed and catch_up picks among them', () => {
    const now = new Date(base + 10 * MIN + 5_000);
    expect(run(decideTicks(policy(), idle, now, 30_000))).toEqual([[10, 'pending']]);
    expect(run(decideTicks(policy({ catchUp: 'latest' }), idle, now, 30_000))).toEqual([
      [9, 'pending'],
      [10, 'pending'],
    ]);
    expect(run(decideTicks(policy({ catchUp: 'all_within_ms', catchUpWindowMs: 3 * MIN }), idle, now, 30_000))).toEqual([
      [8, 'pending'],
      [9, 'pending'],
      [10, 'pending'],
    ]);
    // The latest missed tick lies before the grace window when the later ticks are on time.
    // Grace 5 min: ticks 6 to 10 are on time; 5 is the latest missed one.
    expect(run(decideTicks(policy({ catchUp: 'latest' }), idle, now, 5 * MIN))).toEqual([
      [5, 'pending'],
      [6, 'pending'],
      [7, 'pending'],
      [8, 'pending'],
      [9, 'pending'],
      [10, 'pending'],
    ]);
  });

  it('a tick at or before missedUntil (a pause) is missed however recent', () => {
    const now = new Date(base + 3 * MIN + 1_000);
    expect(run(decideTicks(policy({ missedUntil: now }), idle, now, 60_000))).toEqual([]);
    expect(run(decideTicks(policy({ missedUntil: now, catchUp: 'latest' }), idle, now, 60_000))).toEqual([[3, 'pending']]);
  });

  it('overlap: skip, buffer_one and allow against an active task', () => {
    const now = new Date(base + 2 * MIN);
    const busy = { active: 1, buffered: false };
    expect(run(decideTicks(policy({ overlap: 'skip' }), busy, now, 5 * MIN))).toEqual([
      [1, 'skipped'],
      [2, 'skipped'],
    ]);
    expect(run(decideTicks(policy({ overlap: 'buffer_one' }), busy, now, 5 * MIN))).toEqual([
      [1, 'buffered'],
      [2, 'skipped'],
    ]);
    expect(run(decideTicks(policy({ overlap: 'buffer_one' }), { active: 1, buffered: true }, now, 5 * MIN))).toEqual([
      [1, 'skipped'],
      [2, 'skipped'],
    ]);
    expect(run(decideTicks(policy({ overlap: 'allow' }), busy, now, 5 * MIN))).toEqual([
      [1, 'pending'],
      [2, 'pending'],
    ]);
    expect(run(decideTicks(policy({ overlap: 'skip' }), idle, now, 5 * MIN))).toEqual([
      [1, 'pending'],
      [2, 'skipped'],
    ]);
  });

  it('a catch-up runs at most SCHEDULE_CATCH_UP_MAX missed ticks, the newest, however wide its window', () => {
    // Issue 28, finding 4: a window of 2,000,000,000 ms made up to MAX_TICKS_PER_DECISION (1,000) tasks in one resume.
    const now = new Date(base + 10_000 * MIN);
    const wide = { timing: { everyMs: 1_000 }, catchUp: 'all_within_ms' as const, catchUpWindowMs: 2_000_000_000, missedUntil: now };
    const decided = decideTicks(policy(wide), idle, now, 0);
    expect(decided).toHaveLength(DEFAULT_CATCH_UP_MAX);
    expect(decided.at(-1)!.tickAt.getTime()).toBe(now.getTime());
    expect(decided[0]!.tickAt.getTime()).toBe(now.getTime() - (DEFAULT_CATCH_UP_MAX - 1) * 1_000);
    expect(decideTicks(policy({ ...wide, catchUpMax: 3 }), idle, now, 0)).toHaveLength(3);
    // On-time ticks are not catch-up: a long stop still decides at most MAX_TICKS_PER_DECISION of them at once.
    const onTime = decideTicks(policy({ timing: { everyMs: 1_000 } }), idle, now, 10_000 * MIN);
    expect(onTime).toHaveLength(MAX_TICKS_PER_DECISION);
  });
});
