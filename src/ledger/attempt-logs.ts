import type { SqlRunner } from './sql.js';

/** What a tool logged through ctx.logger during one attempt (bounded by its worker), and how many lines were dropped. */
export interface AttemptLogEntry {
  taskId: string;
  createdAt: Date;
  run: number;
  stepId: string;
  item?: number;
  attempt: number;
  try?: number;
  lines: readonly { at: string; level: string; message: string; fields?: unknown }[];
  dropped: number;
}

/** Lines one attempt keeps, and their bytes (as JSON); past either the rest are counted as dropped. */
export const ATTEMPT_LOG_MAX_LINES = 200;
export const ATTEMPT_LOG_MAX_BYTES = 65_536;

/** The history event type that holds an attempt's lines: read by GET /tasks/{id}/steps/{step}/logs, left out of GET /tasks/{id}/history. */
export const ATTEMPT_LOGS = 'attempt_logs';

/**
 * Keeps an attempt's log lines as one event of its task's history (task_events): partitioned by
 * the task's day, so they go with the task (RETENTION_DAYS) and cost nothing to expire.
 */
export async function appendAttemptLogs(db: SqlRunner, entry: AttemptLogEntry): Promise<void> {
  await db.$executeRawUnsafe(
    `INSERT INTO task_events (task_id, task_created_at, run, step_id, item, type, attempt, at, data)
     VALUES ($1::uuid, $2::timestamptz, $3, $4, $5, $6, $7, now(), $8::jsonb)`,
    entry.taskId,
    entry.createdAt,
    entry.run,
    entry.stepId,
    entry.item ?? null,
    ATTEMPT_LOGS,
    entry.attempt,
    JSON.stringify({ ...(entry.try !== undefined ? { try: entry.try } : {}), lines: entry.lines, dropped: entry.dropped }),
  );
}
