import type { SqlRunner } from './sql.js';

/**
 * A worker's claim to run a step (or a map item), made before the adapter runs. `attempt` is the
 * attempt's number (docs/architecture.md "Words, once"): the job's deliveries but those an open circuit held
 * back (BullMQ's attemptsStarted grows with every delivery). A retry and a delivery after a lost
 * lock both count, so a step stuck "running" behind a dead worker can be claimed by the next
 * delivery, while an older delivery cannot take it back. Claiming again with the same number succeeds, so a claim whose commit was lost in
 * transit can simply be made again.
 */
export interface StepClaim {
  taskId: string;
  createdAt: Date;
  run: number;
  stepId: string;
  item?: number;
  attempt: number;
  at: Date;
  /** For the history: the retry policy's try (1 for the first), the worker, its job's id. */
  try?: number;
  worker?: string;
  jobId?: string;
}

export interface Claimed {
  taskId: string;
  stepId: string;
  item?: number;
  /** This claim moved its task from queued to running. */
  taskBegan: boolean;
}

/** Claims a batch of steps in one call (prisma/functions/ledger_claim.sql); returns the claims that took. At most one claim per step. */
export async function claimSteps(db: SqlRunner, claims: readonly StepClaim[], options: { history?: boolean } = {}): Promise<Claimed[]> {
  if (claims.length === 0) return [];
  const [row] = await db.$queryRawUnsafe<{ claimed: { task_id: string; step_id: string; item: number | null; task_began: boolean }[] }[]>(
    'SELECT ledger_claim($1::jsonb) AS claimed',
    JSON.stringify(
      claims.map((claim, index) => ({
        task_id: claim.taskId,
        created_at: claim.createdAt,
        run: claim.run,
        step_id: claim.stepId,
        item: claim.item ?? null,
        attempt: claim.attempt,
        at: claim.at,
        // Each claim that takes records its attempt's start in the history (the first row says whether).
        ...(index === 0 ? { history: options.history !== false } : {}),
        ...(options.history !== false ? { try: claim.try ?? null, worker: claim.worker ?? null, job_id: claim.jobId ?? null } : {}),
      })),
    ),
  );
  return row!.claimed.map((claim) => ({
    taskId: claim.task_id,
    stepId: claim.step_id,
    ...(claim.item !== null ? { item: claim.item } : {}),
    taskBegan: claim.task_began,
  }));
}
