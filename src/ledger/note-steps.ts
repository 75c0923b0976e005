import type { ErrorRecord } from '../lib/errors.js';
import type { SqlRunner } from './sql.js';

/** A note about a running step or item: an adapter's progress, or a failed attempt that will be retried. */
export interface StepNote {
  taskId: string;
  createdAt: Date;
  run: number;
  stepId: string;
  item?: number;
  /** With a failed attempt: the delivery it was, and its error. */
  attempt?: number;
  error?: ErrorRecord;
  progress?: { percent: number; message?: string };
  /** With a failed attempt, for the history: its try, when it ran, and the delay before the next. */
  try?: number;
  startedAt?: Date;
  finishedAt?: Date;
  delayMs?: number;
  /** With a failed attempt, for the history: the worker that ran it and its job's id. */
  worker?: string;
  jobId?: string;
}

/** Writes a batch of notes in one call (ledger_note); returns the ones taken (the step or item was still running in that run). */
export async function noteSteps(
  db: SqlRunner,
  notes: readonly StepNote[],
  options: { history?: boolean } = {},
): Promise<{ taskId: string; stepId: string; item?: number }[]> {
  if (notes.length === 0) return [];
  const [row] = await db.$queryRawUnsafe<{ taken: { task_id: string; step_id: string; item: number | null }[] }[]>(
    'SELECT ledger_note($1::jsonb) AS taken',
    JSON.stringify(
      notes.map((note) => ({
        task_id: note.taskId,
        created_at: note.createdAt,
        run: note.run,
        step_id: note.stepId,
        item: note.item ?? null,
        attempt: note.attempt ?? null,
        error: note.error ?? null,
        progress: note.progress ?? null,
        ...(note.error && options.history !== false
          ? {
              history: true,
              try: note.try ?? null,
              started_at: note.startedAt ?? null,
              finished_at: note.finishedAt ?? new Date(),
              delay_ms: note.delayMs ?? null,
              worker: note.worker ?? null,
              job_id: note.jobId ?? null,
            }
          : {}),
      })),
    ),
  );
  return row!.taken.map((note) => ({ taskId: note.task_id, stepId: note.step_id, ...(note.item !== null ? { item: note.item } : {}) }));
}
