import { readyStep } from '../engine/step-input.js';
import type { ReadyStep, StepRow } from '../engine/types.js';
import { createdIn, createdTimes } from '../ledger/task-days.js';
import { DEFAULT_LIMITS, type Limits } from '../limits.js';
import type { Prisma } from './database.js';
import { loadContext } from './step-results.js';

export interface ActiveRun {
  id: string;
  run: number;
  taskType: string;
  /** A one-tool task: its run is one job, without a root. */
  single: boolean;
}

/**
 * What the reconciler needs from PostgreSQL to repair runs that lost their BullMQ jobs: a task
 * accepted while its flow could not be created (the answer to the API was lost), or a flow that
 * was removed by hand. The record in PostgreSQL says what the run still has to do.
 */
export class RunRecovery {
  constructor(
    private readonly prisma: Prisma,
    /** Sizes a restarted step's input may have. */
    private readonly limits: Limits = DEFAULT_LIMITS,
  ) {}

  /** Active tasks accepted more than `olderThanMs` ago, oldest first, after `afterId` (paging). */
  async activeRuns(olderThanMs: number, limit: number, after?: { createdAt: Date; id: string }): Promise<(ActiveRun & { createdAt: Date })[]> {
    const rows = await this.prisma.$queryRawUnsafe<{ id: string; run: number; task_type: string; single: boolean; created_at: Date }[]>(
      `SELECT id::text AS id, run, task_type, workflow_name IS NULL AS single, created_at FROM tasks
        WHERE status IN ('queued', 'running') AND created_at < now() - make_interval(secs => $1)
          AND ($2::timestamptz IS NULL OR (created_at, id) > ($2::timestamptz, $3::uuid))
        ORDER BY created_at, id LIMIT $4`,
      olderThanMs / 1000,
      after?.createdAt ?? null,
      after?.id ?? null,
      limit,
    );
    return rows.map((row) => ({ id: row.id, run: row.run, taskType: row.task_type, single: row.single, createdAt: row.created_at }));
  }

  /**
   * The steps to enqueue again for a run that has no flow: those queued, and those "running"
   * whose job is gone (they run again: delivery is at least once). Runs inside the transaction
   * with `enqueue`, so the steps go back to queued only if their jobs were created.
   */
  async restart(taskId: string, run: number, enqueue: (ready: ReadyStep[]) => Promise<void>): Promise<number> {
    const times = createdTimes([taskId]);
    return this.prisma.$transaction(async (tx) => {
      const [task] = await tx.$queryRawUnsafe<{ status: string; run: number }[]>(
        `SELECT status::text AS status, run FROM tasks WHERE id = $1::uuid AND ${createdIn('created_at', '$2')} FOR UPDATE`,
        taskId,
        times,
      );
      if (!task || task.run !== run || (task.status !== 'queued' && task.status !== 'running')) return 0;
      const rows = await tx.$queryRawUnsafe<StepRow[]>(
        `UPDATE steps SET status = 'queued' WHERE task_id = $1::uuid AND ${createdIn('task_created_at', '$3')} AND run = $2 AND status IN ('queued', 'running')
         RETURNING step_id, tool, input_template, input, options, depends_on`,
        taskId,
        run,
        times,
      );
      const context = await loadContext(
        tx,
        rows.map((row) => ({ ...row, task_id: taskId })),
      );
      const ready = rows.map((row) => readyStep(row, context.get(taskId) ?? { params: {}, steps: new Map() }, this.limits));
      await enqueue(ready);
      return ready.length;
    });
  }
}
