import { randomUUID } from 'node:crypto';
import type { ApiKeyScope } from '../lib/config.js';
import { ApiError, ConflictError, DependencyUnavailableError, NotFoundError, UnavailableError, ValidationError } from '../lib/errors.js';
import type { Logger } from '../lib/logger.js';
import { PolicyDeniedError } from '../lib/policy-errors.js';
import { QuotaExceededError } from '../lib/quota-exceeded-error.js';
import type { Reachability } from '../persistence/database.js';
import { isTransientDatabaseError } from '../persistence/retry.js';
import type { ScheduleChange, ScheduleRow, ScheduleStore, TickRow } from '../persistence/schedule-store.js';
import { isRedisUnavailable } from '../queue/redis.js';
import type { Repeat, ScheduleQueue } from '../queue/schedule-queue.js';
import type { TaskRequest } from '../tasks/task-request.js';
import { SCHEDULE_KEY_PREFIX, type SubmitOptions, type Submitted } from '../tasks/task-service.js';
import { ownerClient } from '../tasks/work-gate.js';
import { type CatchUp, decideTicks, type Overlap } from './decide-ticks.js';
import type { CreateSchedule, UpdateSchedule } from './schedule-request.js';
import { cronProblem, nextFireTimes, type Timing } from './timing.js';

/** A tick processed later than this after its time was missed (Quartz's misfire threshold, 60 s, by default). */
export const DEFAULT_MISFIRE_GRACE_MS = 60_000;
/** How often a buffered tick looks whether the running task ended. */
export const DEFAULT_DRAIN_INTERVAL_MS = 250;
const RECENT_RUNS = 20;
const NEXT_FIRE_TIMES = 5;

export interface ScheduleServiceDeps {
  store: ScheduleStore;
  queue: ScheduleQueue;
  logger: Logger;
  /** Checks a task request as /assign-task would, without storing anything; with `kind` it asks the gate too (TaskService.check). */
  checkTask: (request: TaskRequest, options: SubmitOptions) => Promise<void>;
  /** Submits a tick's task through the gate (TaskService.submit); only the worker side needs it. */
  submit?: (request: TaskRequest, options: SubmitOptions) => Promise<Submitted>;
  /** Schedules a client key may have (SCHEDULES_MAX_PER_KEY); admin keys, and requests without authentication, have no limit. 0: none. */
  maxPerOwner?: number;
  /** Most missed ticks a catch-up runs (SCHEDULE_CATCH_UP_MAX). @defaultValue DEFAULT_CATCH_UP_MAX */
  catchUpMax?: number;
  /** Whether PostgreSQL can be reached: while it cannot, requests answer 503 at once instead of waiting for a connection. */
  reachability?: Reachability;
  /** @defaultValue DEFAULT_MISFIRE_GRACE_MS */
  graceMs?: number;
  /** @defaultValue DEFAULT_DRAIN_INTERVAL_MS */
  drainIntervalMs?: number;
  now?: () => Date;
}

export type CatchUpView = 'none' | 'latest' | { all_within_ms: number };

export interface ScheduleView {
  name: string;
  /** The key whose schedule it is (its ticks' tasks are that key's); null without authentication. */
  owner: string | null;
  cron: string | null;
  every_ms: number | null;
  timezone: string;
  task_type: string;
  params: Record<string, unknown>;
  overlap: Overlap;
  catch_up: CatchUpView;
  paused: boolean;
  next_fire_times: string[];
  created_at: string;
  updated_at: string;
}

export interface ScheduleRunView {
  tick_at: string;
  outcome: 'created' | 'pending' | 'skipped' | 'buffered' | 'failed' | 'denied';
  task_id: string | null;
  /** The task's status; null when no task was made or it expired. */
  status: string | null;
  error?: string;
}

/** Who asks for a schedule: the owner whose schedules it may reach (a client key: its own; undefined: any), and the key itself. */
export interface ScheduleAsker {
  /** Only this owner's schedules are found (a client key's view). */
  owner?: string;
  /** Which owner's schedule of the name is meant (`?owner=`), for keys that see every owner's. */
  pick?: string;
  keyId?: string;
  scope?: ApiKeyScope;
}

export function timingOf(row: Pick<ScheduleRow, 'cron' | 'every_ms' | 'timezone'>): Timing {
  return row.every_ms !== null ? { everyMs: row.every_ms } : { cron: row.cron!, timezone: row.timezone };
}

function repeatOf(row: ScheduleRow): Repeat {
  return row.every_ms !== null ? { every: row.every_ms } : { pattern: row.cron!, tz: row.timezone };
}

function catchUpColumns(catchUp: CreateSchedule['catch_up']): { catch_up: CatchUp; catch_up_window_ms: number | null } {
  return typeof catchUp === 'string'
    ? { catch_up: catchUp, catch_up_window_ms: null }
    : { catch_up: 'all_within_ms', catch_up_window_ms: catchUp.all_within_ms };
}

/** The idempotency key of a tick's task: one task per (schedule, tick), held in idempotency_keys. */
export function tickIdempotencyKey(scheduleId: string, tickAt: Date): string {
  return `${SCHEDULE_KEY_PREFIX}${scheduleId}:${tickAt.toISOString()}`;
}

/** Schedules: stored in PostgreSQL, fired by BullMQ job schedulers, one task per tick. Knows nothing of HTTP. */
export class ScheduleService {
  constructor(private readonly deps: ScheduleServiceDeps) {}

  /** The BullMQ queue of the ticks, for Bull Board. */
  get queue() {
    return this.deps.queue.queue;
  }

  get drainIntervalMs(): number {
    return this.deps.drainIntervalMs ?? DEFAULT_DRAIN_INTERVAL_MS;
  }

  private now(): Date {
    return this.deps.now?.() ?? new Date();
  }

  private async database<T>(work: () => Promise<T>): Promise<T> {
    if (this.deps.reachability && !this.deps.reachability.reachable) throw new DependencyUnavailableError('database');
    try {
      return await work();
    } catch (error) {
      if (isTransientDatabaseError(error)) throw new DependencyUnavailableError('database', error);
      throw error;
    }
  }

  private async redis<T>(work: () => Promise<T>): Promise<T> {
    if (!this.deps.queue.connected()) throw new DependencyUnavailableError('redis');
    try {
      return await work();
    } catch (error) {
      if (isRedisUnavailable(error) || /Connection is closed|Stream isn't writeable|enableOfflineQueue/i.test((error as Error).message)) {
        throw new DependencyUnavailableError('redis', error);
      }
      throw error;
    }
  }

  /**
   * A task type and params that /assign-task would accept; an unknown type is a 400 here (the
   * schedule is the resource). The policy is asked too (kind `schedule`): a schedule it refuses is
   * not stored (nor changed), and each tick asks again.
   */
  private async checkTask(taskType: string, params: Record<string, unknown>, options: SubmitOptions): Promise<void> {
    try {
      await this.deps.checkTask({ task_type: taskType, params }, { ...options, kind: 'schedule' });
    } catch (error) {
      if (error instanceof NotFoundError && (error.code === 'unknown_task_type' || error.code === 'workflow_not_found')) {
        const known = (error.details as { known_task_types?: string[] } | undefined)?.known_task_types;
        const message = known ? `${error.message}; known: ${known.join(', ')}` : error.message;
        throw new ValidationError(`unknown task_type: ${error.message}`, [{ path: 'task_type', message }], 'unknown_task_type');
      }
      throw error;
    }
  }

  private view(row: ScheduleRow): ScheduleView {
    const catchUp: CatchUpView = row.catch_up === 'all_within_ms' ? { all_within_ms: row.catch_up_window_ms ?? 0 } : (row.catch_up as 'none' | 'latest');
    return {
      name: row.name,
      owner: row.owner_key || null,
      cron: row.cron,
      every_ms: row.every_ms,
      timezone: row.timezone,
      task_type: row.task_type,
      params: row.params,
      overlap: row.overlap as Overlap,
      catch_up: catchUp,
      paused: row.paused,
      next_fire_times: row.paused ? [] : nextFireTimes(timingOf(row), this.now(), NEXT_FIRE_TIMES).map((at) => at.toISOString()),
      created_at: row.created_at.toISOString(),
      updated_at: row.updated_at.toISOString(),
    };
  }

  private missing(name: string): NotFoundError {
    return new NotFoundError('schedule_not_found', `no schedule is named ${JSON.stringify(name)}`);
  }

  /**
   * The schedule `name` that `asker` means. Names are unique per owner: a client key finds its own
   * (another key's of the same name is not found, and nothing says it exists); a key that sees
   * every owner's names one with `pick` when several owners use the name (409 `schedule_ambiguous`).
   */
  private async find(name: string, asker: ScheduleAsker): Promise<ScheduleRow> {
    if (asker.owner !== undefined && asker.pick !== undefined && asker.pick !== asker.owner) throw this.missing(name);
    const rows = await this.database(() => this.deps.store.named(name, asker.owner ?? asker.pick));
    if (rows.length === 0) throw this.missing(name);
    if (rows.length > 1) {
      throw new ConflictError('schedule_ambiguous', `${rows.length} keys have a schedule named ${JSON.stringify(name)}: say whose with ?owner=<key id>`, {
        owners: rows.map((row) => row.owner_key),
      });
    }
    return rows[0]!;
  }

  /** `asker.keyId` owns the new schedule ('' without authentication). */
  async create(body: CreateSchedule, asker: Pick<ScheduleAsker, 'keyId' | 'scope'>): Promise<ScheduleView> {
    const owner = asker.keyId ?? '';
    await this.checkTask(body.task_type, body.params, { owner, ...(asker.scope ? { scope: asker.scope } : {}), schedule: body.name });
    // Known down: answer at once, before storing anything.
    if (!body.paused && !this.deps.queue.connected()) throw new DependencyUnavailableError('redis');
    const now = this.now();
    const id = randomUUID();
    const row = {
      id,
      name: body.name,
      owner_key: owner,
      cron: body.cron ?? null,
      every_ms: body.every_ms ?? null,
      timezone: body.timezone,
      task_type: body.task_type,
      params: body.params,
      overlap: body.overlap,
      ...catchUpColumns(body.catch_up),
      paused: body.paused,
      decided_until: now,
    };
    // A client key has a bounded number of schedules (each one makes work on its own); an admin key is the operator's.
    const max = asker.scope !== undefined && asker.scope !== 'admin' ? (this.deps.maxPerOwner ?? 0) : 0;
    const inserted = await this.database(() => this.deps.store.insert(row, max));
    if (inserted.outcome === 'limit') {
      throw new ConflictError(
        'too_many_schedules',
        `this key has ${inserted.held} schedules, as many as SCHEDULES_MAX_PER_KEY (${max}) allows: delete one before creating another`,
        { max, held: inserted.held },
      );
    }
    if (inserted.outcome === 'exists') {
      throw new ConflictError('schedule_exists', `you have a schedule named ${JSON.stringify(body.name)} already`, { name: body.name });
    }
    const stored = (await this.database(() => this.deps.store.byId(id)))!;
    if (!stored.paused) {
      // Without its job scheduler the schedule would not fire until a worker starts: nothing half made.
      await this.redis(() => this.deps.queue.install(id, repeatOf(stored))).catch(async (error: unknown) => {
        await this.deps.store.delete(id).catch(() => undefined);
        throw error;
      });
    }
    this.deps.logger.info('schedule created', { schedule: body.name, owner });
    return this.view(stored);
  }

  async list(owner?: string): Promise<ScheduleView[]> {
    return (await this.database(() => this.deps.store.list(owner))).map((row) => this.view(row));
  }

  async get(name: string, asker: ScheduleAsker = {}): Promise<ScheduleView & { recent_runs: ScheduleRunView[] }> {
    const row = await this.find(name, asker);
    const ticks = await this.database(() => this.deps.store.recent(row.id, RECENT_RUNS));
    return { ...this.view(row), recent_runs: ticks.map(runView) };
  }

  async update(name: string, change: UpdateSchedule, asker: ScheduleAsker = {}): Promise<ScheduleView> {
    const row = await this.find(name, asker);
    const columns: ScheduleChange = {};
    const now = this.now();
    if (change.cron !== undefined) Object.assign(columns, { cron: change.cron, every_ms: null });
    if (change.every_ms !== undefined) Object.assign(columns, { every_ms: change.every_ms, cron: null });
    if (change.timezone !== undefined) columns.timezone = change.timezone;
    const cron = columns.every_ms !== undefined && columns.every_ms !== null ? null : (columns.cron ?? row.cron);
    const problem = cron === null ? undefined : cronProblem(cron, columns.timezone ?? row.timezone);
    if (problem) {
      throw new ValidationError('the schedule is invalid', [{ path: change.cron !== undefined ? 'cron' : 'timezone', message: problem }], 'invalid_schedule');
    }
    const retimed = change.cron !== undefined || change.every_ms !== undefined || change.timezone !== undefined;
    // New timing: only its ticks from now on count, none of the past ones.
    if (retimed) columns.decided_until = now;
    if (change.task_type !== undefined || change.params !== undefined) {
      columns.task_type = change.task_type ?? row.task_type;
      columns.params = change.params ?? row.params;
    }
    if (change.overlap !== undefined) columns.overlap = change.overlap;
    if (change.catch_up !== undefined) Object.assign(columns, catchUpColumns(change.catch_up));
    const resumed = change.paused === false && row.paused;
    if (change.paused !== undefined) columns.paused = change.paused;
    // What it runs is checked, and put to the policy, when it changes and whenever the schedule
    // stays active after the change; a pause alone makes no work and needs no decision.
    if (columns.task_type !== undefined || !(columns.paused ?? row.paused)) {
      const options: SubmitOptions = {
        owner: row.owner_key,
        ...(asker.keyId !== undefined ? { keyId: asker.keyId } : {}),
        ...(asker.scope !== undefined ? { scope: asker.scope } : {}),
        schedule: row.name,
      };
      await this.checkTask(columns.task_type ?? row.task_type, columns.params ?? row.params, options);
    }
    // Ticks that fell while it was paused are missed ones, however recent: catch_up says which run.
    if (resumed) columns.missed_until = now;
    const updated = await this.database(() => this.deps.store.update(row.id, columns));
    if (!updated) throw this.missing(name);
    await this.redis(async () => {
      if (updated.paused) await this.deps.queue.uninstall(updated.id);
      else if (retimed || resumed || change.paused === false) await this.deps.queue.install(updated.id, repeatOf(updated));
      if (resumed) await this.deps.queue.catchUp(updated.id);
    }).catch(async (error: unknown) => {
      // Redis refused: the schedule is put back as it was, so that the 503 means nothing changed.
      const before = Object.fromEntries(Object.keys(columns).map((column) => [column, row[column as keyof ScheduleRow]])) as ScheduleChange;
      await this.deps.store.update(row.id, before).catch(() => undefined);
      throw error;
    });
    this.deps.logger.info('schedule changed', { schedule: name, fields: Object.keys(change) });
    return this.view(updated);
  }

  async delete(name: string, asker: ScheduleAsker = {}): Promise<void> {
    const row = await this.find(name, asker);
    await this.database(() => this.deps.store.delete(row.id));
    // A tick already in flight finds no schedule and makes nothing; a scheduler left behind by a lost Redis is removed at the next worker start.
    await this.deps.queue
      .uninstall(row.id)
      .catch((error: Error) => this.deps.logger.warn('could not remove a job scheduler', { schedule: name, error: error.message }));
    this.deps.logger.info('schedule deleted', { schedule: name });
  }

  /** The schedule and tick that made a task, for the task's view. */
  async tickOf(taskId: string): Promise<{ name: string; tick_at: string } | undefined> {
    const tick = await this.database(() => this.deps.store.tickOf(taskId));
    return tick ? { name: tick.name, tick_at: tick.tickAt.toISOString() } : undefined;
  }

  /**
   * Worker start: every schedule's job scheduler is made again from PostgreSQL (a flushed Redis
   * loses none), schedulers of deleted or paused schedules are removed, and each active schedule
   * gets a catch-up job for the ticks no worker was there to take.
   */
  async installAll(): Promise<number> {
    const rows = await this.deps.store.list();
    const active = rows.filter((row) => !row.paused);
    const keep = new Set(active.map((row) => row.id));
    for (const id of await this.deps.queue.installed()) if (!keep.has(id)) await this.deps.queue.uninstall(id);
    for (const row of active) {
      await this.deps.queue.install(row.id, repeatOf(row));
      await this.deps.queue.catchUp(row.id);
    }
    return active.length;
  }

  /**
   * Decides every tick of the schedule up to now (or `tickAt`, a tick job's own time, when the
   * clock here is behind it), then makes the tasks decided. Each tick has one row (its primary
   * key) and its task one idempotency key, so a tick job delivered twice, or deciding in several
   * processes at once, makes one task per tick.
   */
  async tick(scheduleId: string, tickAt?: Date): Promise<{ decided: number }> {
    const now = this.now();
    const until = tickAt && tickAt > now ? tickAt : now;
    const graceMs = this.deps.graceMs ?? DEFAULT_MISFIRE_GRACE_MS;
    let buffered = false;
    const outcome = await this.deps.store.decide(scheduleId, (schedule, state) => {
      if (schedule.paused) return { ticks: [] };
      const ticks = decideTicks(
        {
          timing: timingOf(schedule),
          overlap: schedule.overlap as Overlap,
          catchUp: schedule.catch_up as CatchUp,
          ...(schedule.catch_up_window_ms !== null ? { catchUpWindowMs: schedule.catch_up_window_ms } : {}),
          ...(this.deps.catchUpMax !== undefined ? { catchUpMax: this.deps.catchUpMax } : {}),
          decidedUntil: schedule.decided_until,
          ...(schedule.missed_until ? { missedUntil: schedule.missed_until } : {}),
        },
        state,
        until,
        graceMs,
      );
      buffered = state.buffered || ticks.some((tick) => tick.outcome === 'buffered');
      return { ticks, until };
    });
    if (!outcome) return { decided: 0 };
    await this.makeTasks(outcome.schedule);
    if (buffered) await this.drain(scheduleId);
    return { decided: outcome.recorded };
  }

  /**
   * buffer_one: starts the waiting tick once no task of the schedule is active. While one is, a
   * drain job asks again every drainIntervalMs (`later`; a drain job itself is delayed instead).
   */
  async drain(scheduleId: string, options: { later?: boolean } = { later: true }): Promise<'started' | 'waiting' | 'none'> {
    const outcome = await this.deps.store.promoteBuffered(scheduleId);
    if (outcome === 'waiting') {
      if (options.later) await this.deps.queue.drainLater(scheduleId, this.drainIntervalMs);
      return 'waiting';
    }
    if (outcome === 'none') return 'none';
    const schedule = await this.deps.store.byId(scheduleId);
    if (schedule) await this.makeTasks(schedule);
    return 'started';
  }

  /**
   * Makes the task of every tick decided to run and not made yet, through the gate as its owner's
   * submission (kind `tick`, counted against the owner's quotas). A tick the gate refuses (the
   * policy, a quota) is recorded `denied` with the reason and makes no task; one it cannot decide
   * now (the policy unavailable under the closed fail mode, Redis or PostgreSQL away) stays
   * pending, and the tick job is retried.
   */
  private async makeTasks(schedule: ScheduleRow): Promise<void> {
    const submit = this.deps.submit;
    if (!submit) throw new Error('this ScheduleService cannot submit tasks');
    for (const tickAt of await this.deps.store.pending(schedule.id)) {
      let result: { taskId: string } | { error: string } | { denied: string };
      try {
        const submitted = await submit(
          { task_type: schedule.task_type, params: schedule.params, idempotency_key: tickIdempotencyKey(schedule.id, tickAt) },
          { owner: schedule.owner_key, kind: 'tick', client: ownerClient(schedule.owner_key), schedule: schedule.name },
        );
        result = { taskId: submitted.taskId };
      } catch (error) {
        // The schedule's params changed between deciding and making: the key names the task made first.
        const holder = error instanceof ConflictError ? (error.details as { task_id?: string } | undefined)?.task_id : undefined;
        if (holder) result = { taskId: holder };
        else if (error instanceof PolicyDeniedError || error instanceof QuotaExceededError) result = { denied: `${error.code}: ${error.message}` };
        // The task type or params no longer fit (a workflow archived or changed): this tick fails; the next may not.
        else if (error instanceof ApiError && !(error instanceof UnavailableError)) result = { error: `${error.code}: ${error.message}` };
        else throw error;
      }
      await this.deps.store.finish(schedule.id, tickAt, result);
      if ('error' in result)
        this.deps.logger.warn('a scheduled task could not be made', { schedule: schedule.name, tick_at: tickAt.toISOString(), error: result.error });
      if ('denied' in result)
        this.deps.logger.info('a scheduled task was refused', { schedule: schedule.name, tick_at: tickAt.toISOString(), reason: result.denied });
    }
  }
}

function runView(tick: TickRow): ScheduleRunView {
  return {
    tick_at: tick.tick_at.toISOString(),
    outcome: tick.outcome as ScheduleRunView['outcome'],
    task_id: tick.task_id,
    status: tick.task_status,
    ...(tick.error ? { error: tick.error } : {}),
  };
}
