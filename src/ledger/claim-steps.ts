import type { SqlRunner } from './sql.js';
import { createdIn, createdTimes } from './task-days.js';

/**
 * A worker's claim to run a step, made before the adapter runs. `attempt` counts deliveries of
 * the step's job (BullMQ's attemptsStarted, which grows with every delivery): a retry and a
 * delivery after a lost lock both count, so a step stuck "running" behind a dead worker can be
 * claimed by the next delivery, while an older delivery cannot take it back. Claiming again with
 * the same number succeeds, so a claim whose commit was lost in transit can simply be made again.
 */
export interface StepClaim {
  taskId: string;
  run: number;
  stepId: string;
  attempt: number;
  at: Date;
}

export interface Claimed {
  taskId: string;
  run: number;
  stepId: string;
  /** This claim moved its task from queued to running. */
  taskBegan: boolean;
}

/**
 * Claims steps for a whole batch, in two statements of one transaction: a step is claimed while
 * its run is active and the step is queued, or running under an earlier delivery; its task
 * becomes running with its first claim. Returns the claims that took. Pass at most one claim per
 * step (the latest delivery).
 *
 * The tasks are locked first, in id order (FOR SHARE), as every writer of tasks locks them: a
 * cancel or a failure that ends the task either commits first, and the claim sees the task ended,
 * or waits for the claim, and then sees the step running and stops it. The claim itself is a
 * second statement so that it reads the steps as they are once those locks are held: a retry
 * enqueues its run's jobs before it commits, and a claim that read the steps in the same
 * statement as the locks would see the previous run and refuse the step.
 */
export async function claimSteps(tx: SqlRunner, claims: readonly StepClaim[]): Promise<Claimed[]> {
  if (claims.length === 0) return [];
  const ids = [...new Set(claims.map((claim) => claim.taskId))];
  const times = createdTimes(ids);
  await tx.$queryRawUnsafe(`SELECT 1 FROM tasks WHERE id = ANY($1::uuid[]) AND ${createdIn('created_at', '$2')} ORDER BY id FOR SHARE`, ids, times);
  const rows = await tx.$queryRawUnsafe<{ task_id: string; run: number; step_id: string; task_began: boolean }[]>(
    `WITH v AS (
       SELECT * FROM unnest($1::uuid[], $2::text[], $3::int[], $4::int[], $5::timestamptz[]) AS v(task_id, step_id, run, attempt, at)
     ), claimed AS (
       UPDATE steps s SET status = 'running', attempts = GREATEST(s.attempts, v.attempt), started_at = COALESCE(s.started_at, v.at)
         FROM v JOIN tasks t ON t.id = v.task_id AND ${createdIn('t.created_at', '$6')} AND t.run = v.run AND t.status IN ('queued', 'running')
        WHERE s.task_id = v.task_id AND s.task_created_at = t.created_at AND ${createdIn('s.task_created_at', '$6')}
          AND s.step_id = v.step_id AND s.run = v.run
          AND (s.status = 'queued' OR (s.status = 'running' AND s.attempts <= v.attempt))
    RETURNING s.task_id, s.run, s.step_id
     ), began AS (
       UPDATE tasks t SET status = 'running', started_at = COALESCE(t.started_at, now())
        WHERE t.id IN (SELECT task_id FROM claimed) AND ${createdIn('t.created_at', '$6')} AND t.status = 'queued'
    RETURNING t.id
     )
     SELECT c.task_id::text AS task_id, c.run, c.step_id, EXISTS (SELECT 1 FROM began b WHERE b.id = c.task_id) AS task_began FROM claimed c`,
    claims.map((claim) => claim.taskId),
    claims.map((claim) => claim.stepId),
    claims.map((claim) => claim.run),
    claims.map((claim) => claim.attempt),
    claims.map((claim) => claim.at.toISOString()),
    times,
  );
  return rows.map((row) => ({ taskId: row.task_id, run: row.run, stepId: row.step_id, taskBegan: row.task_began }));
}
