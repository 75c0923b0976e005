import type { FinishedStep, RunContext, StepRow } from '../engine/types.js';
import type { TaskOutputSource } from '../engine/task-output.js';
import type { ResultTransitions } from '../engine/transitions.js';
import type { SqlRunner } from './sql.js';
import { createdIn } from './task-days.js';

/** A step that became ready, as stored. */
export type ReadyRow = StepRow & { task_id: string };

/** A task whose last step just finished, with what its result is made of. */
export interface DoneTask {
  task: TaskOutputSource & { id: string };
  steps: (FinishedStep & { step_id: string })[];
}

export interface Advanced {
  ready: ReadyRow[];
  /**
   * Per task with ready steps: its params, and what the ready steps' direct dependencies ended
   * with. An input template may also refer to a further ancestor: the caller loads those.
   */
  contexts: Map<string, RunContext>;
  done: DoneTask[];
}

type StepOutcome = FinishedStep & { task_id: string; step_id: string };

/**
 * Applies what the engine decided from a batch of recorded results (src/engine/transitions.ts),
 * in one statement: failed tasks fail and their steps that never ran are skipped; the dependents
 * of the other results count their resolved dependencies down, and those that reach zero become
 * queued (exactly once: the row lock makes concurrent decrements of one step queue up); the
 * tasks count their finished steps down. It returns what the next decisions need: the steps that
 * became ready with their tasks' params and their dependencies' outcomes, and the tasks whose
 * count reached zero with all their steps' outcomes. Run it in the transaction that recorded the
 * results (whose effects it sees) and holds the tasks' row locks.
 */
export async function advanceTasks(tx: SqlRunner, decided: ResultTransitions, times: string[] | null): Promise<Advanced> {
  const [row] = await tx.$queryRawUnsafe<{ ready: ReadyRow[]; ready_params: { id: string; params: Record<string, unknown> }[]; ready_deps: StepOutcome[]; done: DoneTask['task'][]; done_steps: StepOutcome[] }[]>(
    `WITH failed AS (
       SELECT * FROM jsonb_to_recordset($1::jsonb) AS v(task_id uuid, error jsonb)
     ), resolved AS (
       SELECT * FROM jsonb_to_recordset($2::jsonb) AS v(task_id uuid, step_id text, n int)
     ), finished AS (
       SELECT * FROM jsonb_to_recordset($3::jsonb) AS v(task_id uuid, n int)
     ), failed_tasks AS (
       UPDATE tasks t SET status = 'failed', error = f.error, finished_at = now()
         FROM failed f WHERE t.id = f.task_id AND ${createdIn('t.created_at', '$4')}
     ), skipped AS (
       UPDATE steps s SET status = 'skipped', finished_at = now()
         FROM failed f WHERE s.task_id = f.task_id AND ${createdIn('s.task_created_at', '$4')} AND s.status IN ('pending', 'queued')
     ), decremented AS (
       UPDATE steps s SET remaining_deps = s.remaining_deps - r.n,
              status = CASE WHEN s.remaining_deps - r.n <= 0 THEN 'queued'::"StepStatus" ELSE s.status END,
              queued_at = CASE WHEN s.remaining_deps - r.n <= 0 THEN now() ELSE s.queued_at END
         FROM resolved r
        WHERE s.task_id = r.task_id AND ${createdIn('s.task_created_at', '$4')} AND s.step_id = r.step_id AND s.status = 'pending'
       RETURNING s.task_id, s.task_created_at, s.step_id, s.tool, s.input_template, s.input, s.options, s.depends_on, s.status
     ), ready AS (
       SELECT * FROM decremented WHERE status = 'queued'
     ), counted AS (
       -- A task still "queued" whose step reports a result has evidently started.
       UPDATE tasks t SET steps_remaining = t.steps_remaining - f.n,
              status = CASE WHEN t.status = 'queued' THEN 'running'::"TaskStatus" ELSE t.status END,
              started_at = COALESCE(t.started_at, now())
         FROM finished f WHERE t.id = f.task_id AND ${createdIn('t.created_at', '$4')}
       RETURNING t.id, t.created_at, t.steps_remaining
     ), done AS (
       SELECT id, created_at FROM counted WHERE steps_remaining <= 0
     )
     SELECT
       (SELECT COALESCE(jsonb_agg(jsonb_build_object('task_id', task_id, 'step_id', step_id, 'tool', tool, 'input_template', input_template,
                 'input', input, 'options', options, 'depends_on', depends_on)), '[]') FROM ready) AS ready,
       (SELECT COALESCE(jsonb_agg(jsonb_build_object('id', t.id, 'params', t.params)), '[]')
          FROM tasks t WHERE ${createdIn('t.created_at', '$4')} AND (t.id, t.created_at) IN (SELECT DISTINCT task_id, task_created_at FROM ready)) AS ready_params,
       (SELECT COALESCE(jsonb_agg(jsonb_build_object('task_id', s.task_id, 'step_id', s.step_id, 'status', s.status, 'output', s.output, 'error', s.error)), '[]')
          FROM steps s WHERE ${createdIn('s.task_created_at', '$4')}
           AND (s.task_id, s.task_created_at, s.step_id) IN (SELECT DISTINCT r.task_id, r.task_created_at, d.step_id FROM ready r, unnest(r.depends_on) AS d(step_id))) AS ready_deps,
       (SELECT COALESCE(jsonb_agg(jsonb_build_object('id', t.id, 'params', t.params, 'output_template', t.output_template, 'workflow_name', t.workflow_name)), '[]')
          FROM tasks t WHERE ${createdIn('t.created_at', '$4')} AND (t.id, t.created_at) IN (SELECT id, created_at FROM done)) AS done,
       (SELECT COALESCE(jsonb_agg(jsonb_build_object('task_id', s.task_id, 'step_id', s.step_id, 'status', s.status, 'output', s.output, 'error', s.error)), '[]')
          FROM steps s WHERE ${createdIn('s.task_created_at', '$4')} AND (s.task_id, s.task_created_at) IN (SELECT id, created_at FROM done)) AS done_steps`,
    JSON.stringify(decided.failed.map((failure) => ({ task_id: failure.taskId, error: failure.error }))),
    JSON.stringify(decided.resolved.map((entry) => ({ task_id: entry.taskId, step_id: entry.stepId, n: entry.count }))),
    JSON.stringify(decided.finished.map((entry) => ({ task_id: entry.taskId, n: entry.count }))),
    times,
  );
  const contexts = new Map<string, RunContext>();
  for (const task of row!.ready_params) contexts.set(task.id, { params: task.params, steps: new Map() });
  for (const step of row!.ready_deps) contexts.get(step.task_id)?.steps.set(step.step_id, step);
  const stepsOf = new Map<string, StepOutcome[]>();
  for (const step of row!.done_steps) stepsOf.set(step.task_id, [...(stepsOf.get(step.task_id) ?? []), step]);
  return {
    ready: row!.ready,
    contexts,
    done: row!.done.map((task) => ({ task, steps: stepsOf.get(task.id) ?? [] })),
  };
}
