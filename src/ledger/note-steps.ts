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
}

/** Writes a batch of notes in one call (ledger_note); returns the ones taken (the step or item was still running in that run). */
export async function noteSteps(db: SqlRunner, notes: readonly StepNote[]): Promise<{ taskId: string; stepId: string; item?: number }[]> {
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
      })),
    ),
  );
  return row!.taken.map((note) => ({ taskId: note.task_id, stepId: note.step_id, ...(note.item !== null ? { item: note.item } : {}) }));
}
