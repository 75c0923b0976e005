import type { ErrorRecord } from '../errors.js';
import type { SqlRunner } from './sql.js';
import { createdIn } from './task-days.js';

export type TaskEnd = { id: string } & ({ status: 'completed'; result: unknown } | { status: 'failed'; error: ErrorRecord });

/**
 * Ends tasks whose steps have all finished, with what the engine made of them (a result, or why
 * it failed), in one statement; a task that ended otherwise meanwhile (cancelled) keeps its end.
 */
export async function endTasks(tx: SqlRunner, ends: readonly TaskEnd[], times: string[] | null): Promise<void> {
  const rows = ends.map((end) =>
    end.status === 'completed' ? { id: end.id, status: end.status, result: end.result ?? null, error: null } : { id: end.id, status: end.status, result: null, error: end.error },
  );
  await tx.$executeRawUnsafe(
    `UPDATE tasks t SET status = v.status::"TaskStatus", result = v.result, error = v.error, finished_at = now()
       FROM jsonb_to_recordset($1::jsonb) AS v(id uuid, status text, result jsonb, error jsonb)
      WHERE t.id = v.id AND ${createdIn('t.created_at', '$2')} AND t.status IN ('queued', 'running')`,
    JSON.stringify(rows),
    times,
  );
}
