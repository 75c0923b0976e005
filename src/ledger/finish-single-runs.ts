import { singleRunEnding } from '../engine/task-output.js';
import type { ErrorRecord } from '../errors.js';
import type { Limits } from '../limits.js';
import type { SqlRunner } from './sql.js';
import { createdIn, createdTimes } from './task-days.js';

/** A step's final result, as its worker reports it (here: a one-tool task's only step). */
export interface StepResult {
  taskId: string;
  run: number;
  stepId: string;
  tool: string;
  attempt: number;
  status: 'completed' | 'failed' | 'cancelled';
  output?: unknown;
  error?: ErrorRecord;
  /** Kept with the dead letter of a step that failed for good. */
  input?: unknown;
  startedAt: Date;
  finishedAt: Date;
}

/** What recording one result did: nothing (an earlier result, or the task ended meanwhile), or end its task. */
export type SingleRunRecorded =
  | { recorded: false }
  | { recorded: true; taskStatus: 'completed' | 'failed'; task: { type: string; createdAt: Date; callback: boolean } };

/**
 * Records the results of one-tool tasks and ends those tasks, in one statement for the whole
 * batch: the task row is updated only while its run is still active (a cancel that committed
 * first wins), the step row only when its task's row was, and a failed step leaves a dead
 * letter. What the task ends with (its result, or why it failed) is decided here by the engine,
 * before the statement. Of several results of one step in a batch, the first is recorded.
 */
export async function finishSingleRuns(
  db: SqlRunner,
  results: readonly StepResult[],
  limits: Pick<Limits, 'TASK_RESULT_MAX_BYTES'>,
): Promise<SingleRunRecorded[]> {
  const first = new Map<string, number>();
  results.forEach((result, index) => {
    const key = `${result.taskId}/${result.run}`;
    if (!first.has(key)) first.set(key, index);
  });
  const rows = [...first.values()].map((index) => {
    const result = results[index]!;
    const ending = singleRunEnding(result, limits);
    return {
      task_id: result.taskId,
      run: result.run,
      step_id: result.stepId,
      tool: result.tool,
      attempt: result.attempt,
      status: result.status,
      output: result.output ?? null,
      error: result.error ?? null,
      input: result.status === 'failed' ? (result.input ?? null) : null,
      started_at: result.startedAt.toISOString(),
      finished_at: result.finishedAt.toISOString(),
      task_status: ending.status,
      task_result: ending.status === 'completed' ? ending.result : null,
      task_error: ending.status === 'failed' ? ending.error : null,
    };
  });
  const ended = await db.$queryRawUnsafe<{ id: string; status: 'completed' | 'failed'; task_type: string; created_at: Date; callback: boolean }[]>(
    `WITH v AS (
       SELECT * FROM jsonb_to_recordset($1::jsonb) AS v(task_id uuid, run int, step_id text, tool text, attempt int, status text,
              output jsonb, error jsonb, input jsonb, started_at timestamptz, finished_at timestamptz, task_status text,
              task_result jsonb, task_error jsonb)
     ), t AS (
       UPDATE tasks t SET status = v.task_status::"TaskStatus", result = v.task_result, error = v.task_error, steps_remaining = 0,
              started_at = COALESCE(t.started_at, v.started_at), finished_at = now()
         FROM v
        WHERE t.id = v.task_id AND ${createdIn('t.created_at', '$2')} AND t.run = v.run AND t.status IN ('queued', 'running')
       RETURNING t.id, t.status::text AS status, t.task_type, t.created_at, t.callback_url IS NOT NULL AS callback
     ), s AS (
       UPDATE steps s SET status = v.status::"StepStatus", output = v.output, error = v.error, attempts = GREATEST(s.attempts, v.attempt),
              started_at = COALESCE(s.started_at, v.started_at), finished_at = v.finished_at
         FROM v JOIN t ON t.id = v.task_id
        WHERE s.task_id = v.task_id AND s.task_created_at = t.created_at AND ${createdIn('s.task_created_at', '$2')}
          AND s.step_id = v.step_id AND s.run = v.run AND s.status IN ('queued', 'running')
     ), d AS (
       INSERT INTO dead_letters (id, task_id, task_created_at, step_id, run, tool, input, error, attempts)
       SELECT gen_random_uuid(), v.task_id, t.created_at, v.step_id, v.run, v.tool, v.input, v.error, v.attempt
         FROM v JOIN t ON t.id = v.task_id
        WHERE v.status = 'failed'
       ON CONFLICT (task_id, task_created_at, step_id, run) DO NOTHING
     )
     SELECT id::text AS id, status, task_type, created_at, callback FROM t`,
    JSON.stringify(rows),
    createdTimes(rows.map((row) => row.task_id)),
  );
  const byTask = new Map(ended.map((row) => [row.id, row]));
  return results.map((result, index): SingleRunRecorded => {
    const row = first.get(`${result.taskId}/${result.run}`) === index ? byTask.get(result.taskId) : undefined;
    return row
      ? { recorded: true, taskStatus: row.status, task: { type: row.task_type, createdAt: row.created_at, callback: row.callback } }
      : { recorded: false };
  });
}
