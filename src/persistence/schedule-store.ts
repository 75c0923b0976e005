import type { Sql, SqlRunner } from '../ledger/sql.js';

/** A schedule as stored (prisma/migrations/20261126000000_schedules, 20261127010000_schedules_per_owner). */
export interface ScheduleRow {
  id: string;
  name: string;
  owner_key: string;
  cron: string | null;
  every_ms: number | null;
  timezone: string;
  task_type: string;
  params: Record<string, unknown>;
  overlap: string;
  catch_up: string;
  catch_up_window_ms: number | null;
  paused: boolean;
  decided_until: Date;
  missed_until: Date | null;
  created_at: Date;
  updated_at: Date;
}

/** A decided tick, with its task's status when it made one (null once the task expired). */
export interface TickRow {
  tick_at: Date;
  outcome: string;
  task_id: string | null;
  error: string | null;
  task_status: string | null;
}

export type NewSchedule = Omit<ScheduleRow, 'created_at' | 'updated_at' | 'missed_until'>;
export type ScheduleChange = Partial<Omit<ScheduleRow, 'id' | 'name' | 'owner_key' | 'created_at' | 'updated_at'>>;

// catch_up_window_ms is a bigint (up to 30 days of milliseconds): read as a JS number, which holds it exactly.
const COLUMNS = `id::text, name, owner_key, cron, every_ms, timezone, task_type, params, overlap, catch_up, catch_up_window_ms::float8 AS catch_up_window_ms,
  paused, decided_until, missed_until, created_at, updated_at`;

/** Tasks that have not ended hold an overlap; only a schedule's latest tasks are looked at. */
const ACTIVE_LOOKBACK = 20;

function ownerFilter(owner: string | undefined, index: number): string {
  return owner === undefined ? '' : ` AND owner_key = $${index}`;
}

/** Schedules and their ticks in PostgreSQL, in plain SQL (a tick's decision locks its schedule's row). */
export class ScheduleStore {
  constructor(private readonly sql: Sql) {}

  /**
   * Stores a new schedule: `exists` when its owner has one of that name, `limit` (with how many it
   * holds) when its owner holds `maxPerOwner` already (0: no limit). The owner's schedules are
   * counted under a lock of that owner, so that concurrent creations cannot pass the limit together.
   */
  insert(row: NewSchedule, maxPerOwner = 0): Promise<{ outcome: 'inserted' | 'exists' } | { outcome: 'limit'; held: number }> {
    return this.sql.$transaction(async (tx) => {
      if (maxPerOwner > 0) {
        await tx.$executeRawUnsafe(`SELECT pg_advisory_xact_lock(hashtext('schedules:' || $1))`, row.owner_key);
        const [{ held } = { held: 0 }] = await tx.$queryRawUnsafe<{ held: number }[]>(
          `SELECT count(*)::int AS held FROM schedules WHERE owner_key = $1`,
          row.owner_key,
        );
        if (held >= maxPerOwner) return { outcome: 'limit' as const, held };
      }
      return { outcome: (await this.insertRow(tx, row)) ? ('inserted' as const) : ('exists' as const) };
    });
  }

  private async insertRow(db: SqlRunner, row: NewSchedule): Promise<boolean> {
    const inserted = await db.$executeRawUnsafe(
      `INSERT INTO schedules (id, name, owner_key, cron, every_ms, timezone, task_type, params, overlap, catch_up, catch_up_window_ms, paused, decided_until)
       VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10, $11, $12, $13)
       ON CONFLICT (owner_key, name) DO NOTHING`,
      row.id,
      row.name,
      row.owner_key,
      row.cron,
      row.every_ms,
      row.timezone,
      row.task_type,
      JSON.stringify(row.params),
      row.overlap,
      row.catch_up,
      row.catch_up_window_ms,
      row.paused,
      row.decided_until,
    );
    return inserted === 1;
  }

  /** `owner`: only that key's schedules; undefined: every one. */
  list(owner?: string): Promise<ScheduleRow[]> {
    return this.sql.$queryRawUnsafe<ScheduleRow[]>(
      `SELECT ${COLUMNS} FROM schedules WHERE true${ownerFilter(owner, 1)} ORDER BY name, owner_key`,
      ...(owner === undefined ? [] : [owner]),
    );
  }

  /** The schedules of this name: the owner's one, or (undefined) every owner's; names are unique per owner. */
  named(name: string, owner?: string): Promise<ScheduleRow[]> {
    return this.sql.$queryRawUnsafe<ScheduleRow[]>(
      `SELECT ${COLUMNS} FROM schedules WHERE name = $1${ownerFilter(owner, 2)} ORDER BY owner_key LIMIT 100`,
      name,
      ...(owner === undefined ? [] : [owner]),
    );
  }

  async byId(id: string, db: SqlRunner = this.sql, lock = false): Promise<ScheduleRow | undefined> {
    const rows = await db.$queryRawUnsafe<ScheduleRow[]>(`SELECT ${COLUMNS} FROM schedules WHERE id = $1::uuid${lock ? ' FOR UPDATE' : ''}`, id);
    return rows[0];
  }

  /** Changes a schedule's fields (locking it against a tick being decided meanwhile); undefined when it is gone. */
  async update(id: string, change: ScheduleChange): Promise<ScheduleRow | undefined> {
    const entries = Object.entries(change).filter(([, value]) => value !== undefined);
    const sets = entries.map(([column], index) => `${column} = $${index + 2}${column === 'params' ? '::jsonb' : ''}`);
    const values = entries.map(([column, value]) => (column === 'params' ? JSON.stringify(value) : value));
    const rows = await this.sql.$queryRawUnsafe<ScheduleRow[]>(
      `UPDATE schedules SET ${[...sets, 'updated_at = now()'].join(', ')} WHERE id = $1::uuid RETURNING ${COLUMNS}`,
      id,
      ...values,
    );
    return rows[0];
  }

  /** Deletes a schedule; its ticks stay, so its tasks still name it. */
  async delete(id: string): Promise<boolean> {
    return (await this.sql.$executeRawUnsafe(`DELETE FROM schedules WHERE id = $1::uuid`, id)) === 1;
  }

  /** The overlap state of a schedule: its unfinished tasks (and ticks whose task is being made), and whether a tick waits. */
  async state(id: string, db: SqlRunner = this.sql): Promise<{ active: number; buffered: boolean }> {
    const [row] = await db.$queryRawUnsafe<{ pending: number; running: number; buffered: number }[]>(
      `SELECT (SELECT count(*)::int FROM schedule_ticks WHERE schedule_id = $1::uuid AND outcome = 'pending') AS pending,
              (SELECT count(*)::int FROM (SELECT task_id FROM schedule_ticks WHERE schedule_id = $1::uuid AND outcome = 'created'
                                            ORDER BY tick_at DESC LIMIT ${ACTIVE_LOOKBACK}) c
                 JOIN tasks t ON t.id = c.task_id WHERE t.status IN ('queued', 'running')) AS running,
              (SELECT count(*)::int FROM schedule_ticks WHERE schedule_id = $1::uuid AND outcome = 'buffered') AS buffered`,
      id,
    );
    return { active: (row?.pending ?? 0) + (row?.running ?? 0), buffered: (row?.buffered ?? 0) > 0 };
  }

  /**
   * Decides ticks of a schedule under its row lock, so that processes deciding at once take
   * turns: `decide` gets the schedule and its overlap state and returns the ticks to record; a
   * tick already recorded keeps its row (the primary key), and decided_until moves to `until`.
   * Returns the schedule as locked, or undefined when it is gone.
   */
  decide(
    id: string,
    decide: (schedule: ScheduleRow, state: { active: number; buffered: boolean }) => { ticks: { tickAt: Date; outcome: string }[]; until?: Date },
  ): Promise<{ schedule: ScheduleRow; recorded: number } | undefined> {
    return this.sql.$transaction(async (tx) => {
      const schedule = await this.byId(id, tx, true);
      if (!schedule) return undefined;
      const { ticks, until } = decide(schedule, await this.state(id, tx));
      let recorded = 0;
      if (ticks.length > 0) {
        recorded = await tx.$executeRawUnsafe(
          `INSERT INTO schedule_ticks (schedule_id, tick_at, schedule_name, outcome)
           SELECT $1::uuid, t.at, $2, t.outcome FROM unnest($3::timestamptz[], $4::text[]) AS t(at, outcome)
           ON CONFLICT (schedule_id, tick_at) DO NOTHING`,
          id,
          schedule.name,
          ticks.map((tick) => tick.tickAt),
          ticks.map((tick) => tick.outcome),
        );
      }
      if (until && until > schedule.decided_until) await tx.$executeRawUnsafe(`UPDATE schedules SET decided_until = $2 WHERE id = $1::uuid`, id, until);
      return { schedule, recorded };
    });
  }

  /** Turns the waiting tick (buffer_one) into one whose task is made, once no task of the schedule is active. */
  promoteBuffered(id: string): Promise<'promoted' | 'waiting' | 'none'> {
    return this.sql.$transaction(async (tx) => {
      if (!(await this.byId(id, tx, true))) return 'none';
      const state = await this.state(id, tx);
      if (!state.buffered) return 'none';
      if (state.active > 0) return 'waiting';
      await tx.$executeRawUnsafe(`UPDATE schedule_ticks SET outcome = 'pending' WHERE schedule_id = $1::uuid AND outcome = 'buffered'`, id);
      return 'promoted';
    });
  }

  /** Ticks whose task is to be made, oldest first. */
  async pending(id: string): Promise<Date[]> {
    const rows = await this.sql.$queryRawUnsafe<{ tick_at: Date }[]>(
      `SELECT tick_at FROM schedule_ticks WHERE schedule_id = $1::uuid AND outcome = 'pending' ORDER BY tick_at`,
      id,
    );
    return rows.map((row) => row.tick_at);
  }

  /** A pending tick made its task, could not (`error`), or was refused by the gate (`denied`, with the reason). */
  async finish(id: string, tickAt: Date, outcome: { taskId: string } | { error: string } | { denied: string }): Promise<void> {
    await this.sql.$executeRawUnsafe(
      `UPDATE schedule_ticks SET outcome = $3, task_id = $4::uuid, error = $5 WHERE schedule_id = $1::uuid AND tick_at = $2 AND outcome = 'pending'`,
      id,
      tickAt,
      'taskId' in outcome ? 'created' : 'denied' in outcome ? 'denied' : 'failed',
      'taskId' in outcome ? outcome.taskId : null,
      'error' in outcome ? outcome.error : 'denied' in outcome ? outcome.denied : null,
    );
  }

  /** A schedule's latest decided ticks, newest first. */
  recent(id: string, limit: number): Promise<TickRow[]> {
    return this.sql.$queryRawUnsafe<TickRow[]>(
      `SELECT k.tick_at, k.outcome, k.task_id::text AS task_id, k.error, t.status::text AS task_status
         FROM (SELECT * FROM schedule_ticks WHERE schedule_id = $1::uuid ORDER BY tick_at DESC LIMIT $2) k
         LEFT JOIN tasks t ON t.id = k.task_id
        ORDER BY k.tick_at DESC`,
      id,
      limit,
    );
  }

  /** The schedule and tick that made a task, if one did. */
  async tickOf(taskId: string): Promise<{ name: string; tickAt: Date } | undefined> {
    const rows = await this.sql.$queryRawUnsafe<{ schedule_name: string; tick_at: Date }[]>(
      `SELECT schedule_name, tick_at FROM schedule_ticks WHERE task_id = $1::uuid LIMIT 1`,
      taskId,
    );
    return rows[0] ? { name: rows[0].schedule_name, tickAt: rows[0].tick_at } : undefined;
  }

  /** Deletes ticks recorded before `cutoff` (RETENTION_DAYS, as their tasks). */
  prune(cutoff: Date): Promise<number> {
    return this.sql.$executeRawUnsafe(`DELETE FROM schedule_ticks WHERE recorded_at < $1`, cutoff);
  }
}
