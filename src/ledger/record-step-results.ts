import type { StepResult } from './finish-single-runs.js';
import type { SqlRunner } from './sql.js';
import { createdIn } from './task-days.js';

/** A workflow step's result that was recorded, with the step's place in the graph. */
export interface RecordedStep {
  task_id: string;
  step_id: string;
  status: 'completed' | 'failed' | 'cancelled';
  on_failure: 'fail' | 'continue';
  dependents: string[];
}

/**
 * Records the results of workflow steps, in one statement for the whole batch: a step takes a
 * result only while it is still queued or running in the same run (so a step that ran twice
 * keeps its first result), and a step that failed for good leaves a dead letter with what it
 * was given. Returns the steps that took their result. Pass at most one result per step and
 * run, inside the transaction that holds their tasks' row locks (src/persistence/step-results.ts).
 */
export async function recordStepResults(tx: SqlRunner, results: readonly StepResult[], times: string[] | null): Promise<RecordedStep[]> {
  const rows = results.map((result) => ({
    task_id: result.taskId,
    step_id: result.stepId,
    run: result.run,
    tool: result.tool,
    attempt: result.attempt,
    status: result.status,
    output: result.output ?? null,
    error: result.error ?? null,
    input: result.status === 'failed' ? (result.input ?? null) : null,
    started_at: result.startedAt.toISOString(),
    finished_at: result.finishedAt.toISOString(),
  }));
  return tx.$queryRawUnsafe<RecordedStep[]>(
    `WITH v AS (
       SELECT * FROM jsonb_to_recordset($1::jsonb) AS v(task_id uuid, step_id text, run int, tool text, attempt int, status text,
              output jsonb, error jsonb, input jsonb, started_at timestamptz, finished_at timestamptz)
     ), s AS (
       UPDATE steps s SET status = v.status::"StepStatus", output = v.output, error = v.error, attempts = GREATEST(s.attempts, v.attempt),
              started_at = COALESCE(s.started_at, v.started_at), finished_at = v.finished_at
         FROM v
        WHERE s.task_id = v.task_id AND ${createdIn('s.task_created_at', '$2')} AND s.step_id = v.step_id AND s.run = v.run
          AND s.status IN ('queued', 'running')
       RETURNING s.task_id, s.task_created_at, s.step_id, s.status, s.on_failure, s.dependents
     ), d AS (
       INSERT INTO dead_letters (id, task_id, task_created_at, step_id, run, tool, input, error, attempts)
       SELECT gen_random_uuid(), v.task_id, s.task_created_at, v.step_id, v.run, v.tool, v.input, v.error, v.attempt
         FROM v JOIN s ON s.task_id = v.task_id AND s.step_id = v.step_id
        WHERE s.status = 'failed'
       ON CONFLICT (task_id, task_created_at, step_id, run) DO NOTHING
     )
     SELECT task_id::text AS task_id, step_id, status::text AS status, on_failure::text AS on_failure, dependents FROM s`,
    JSON.stringify(rows),
    times,
  );
}
