import type { TaskPlan } from '../engine/plan.js';
import { isFinished, type TaskStatus } from '../engine/status.js';
import { readyStep } from '../engine/step-input.js';
import type { ReadyStep, StepRow } from '../engine/types.js';
import type { Prisma as P } from '../generated/prisma/client.js';
import { createTasks, keyHolders, type StoredTask } from '../ledger/create-tasks.js';
import type { SqlRunner } from '../ledger/sql.js';
import { createdIn, createdTimes, taskById } from '../ledger/task-days.js';
import { uuidv7Time } from '../lib/uuid7.js';
import { DEFAULT_LIMITS, type Limits } from '../limits.js';
import type { Prisma } from './database.js';

export type NewTask = StoredTask;

export type CreateResult = { created: true } | { created: false; id: string; requestHash: string | null };

export interface TaskFilter {
  /** Only this owner's tasks. */
  owner?: string;
  status?: TaskStatus;
  taskType?: string;
  createdAfter?: Date;
  createdBefore?: Date;
  limit: number;
  cursor?: { createdAt: Date; id: string };
}

/** Tasks and their steps: what the API reads and writes. Step results go through StepResults. */
export class TaskStore {
  constructor(
    private readonly prisma: Prisma,
    /** Sizes a resumed step's input may have. */
    private readonly limits: Limits = DEFAULT_LIMITS,
    /** Where the ledger's statements run: the pool's plain SQL in the service (Database.sql). */
    private readonly sql: SqlRunner = prisma,
  ) {}

  /**
   * Stores tasks and their steps, many at once (the API batches concurrent submissions), in one
   * statement (src/ledger/create-tasks.ts). A task whose idempotency key is already taken by its
   * owner (by an earlier task or by one earlier in the same batch) is not stored; its result
   * names the task that holds the key.
   */
  async createMany(entries: { plan: TaskPlan; task: NewTask }[]): Promise<CreateResult[]> {
    const stored = await createTasks(this.sql, entries);
    const taken = entries.filter(({ task }) => !stored.has(task.id) && task.idempotencyKey).map(({ task }) => task);
    const holders =
      taken.length > 0
        ? await keyHolders(
            this.sql,
            taken.map((task) => ({ owner: task.owner ?? '', key: task.idempotencyKey! })),
          )
        : [];
    // JSON of the pair: no separator that a key could contain.
    const pair = (owner: string, key: string) => JSON.stringify([owner, key]);
    const byKey = new Map(holders.map((row) => [pair(row.owner_key, row.idempotency_key), row]));
    return entries.map(({ task }): CreateResult => {
      if (stored.has(task.id)) return { created: true };
      const holder = byKey.get(pair(task.owner ?? '', task.idempotencyKey ?? ''));
      if (!holder) throw new Error(`task ${task.id} was neither stored nor found by its idempotency key`);
      return { created: false, id: holder.id, requestHash: holder.request_hash };
    });
  }

  /** Undoes `createMany` for tasks that could not be enqueued: the tasks, their steps and the idempotency keys they took. */
  async removeMany(ids: string[]): Promise<void> {
    await this.sql.$executeRawUnsafe(
      `WITH t AS (
         DELETE FROM tasks WHERE id = ANY($1::uuid[]) AND ${createdIn('created_at', '$2')} RETURNING id, created_at, owner_key, idempotency_key
       ), s AS (
         DELETE FROM steps s USING t WHERE s.task_id = t.id AND s.task_created_at = t.created_at AND ${createdIn('s.task_created_at', '$2')}
       )
       DELETE FROM idempotency_keys k USING t WHERE k.owner_key = t.owner_key AND k.idempotency_key = t.idempotency_key AND k.task_id = t.id`,
      ids,
      createdTimes(ids),
    );
  }

  /** The task and its steps, read in one statement so they show one moment. */
  get(id: string) {
    return this.prisma.task.findFirst({
      where: taskById(id),
      include: { steps: { orderBy: { position: 'asc' } }, callbacks: { orderBy: { createdAt: 'asc' } } },
      relationLoadStrategy: 'join',
    });
  }

  /** The owner only, to refuse another owner's task before waiting for it. */
  async ownerOf(id: string): Promise<string | undefined> {
    const row = await this.prisma.task.findFirst({ where: taskById(id), select: { ownerKey: true } });
    return row?.ownerKey;
  }

  /** Status only: the cheap read behind long-polling. */
  async status(id: string): Promise<TaskStatus | undefined> {
    const row = await this.prisma.task.findFirst({ where: taskById(id), select: { status: true } });
    return row?.status;
  }

  /** Newest first; the cursor is the last row of the previous page. */
  list(filter: TaskFilter) {
    const where: P.TaskWhereInput = {
      ...(filter.owner !== undefined ? { ownerKey: filter.owner } : {}),
      ...(filter.status ? { status: filter.status } : {}),
      ...(filter.taskType ? { taskType: filter.taskType } : {}),
      ...(filter.createdAfter || filter.createdBefore
        ? { createdAt: { ...(filter.createdAfter ? { gte: filter.createdAfter } : {}), ...(filter.createdBefore ? { lt: filter.createdBefore } : {}) } }
        : {}),
    };
    const cursor = filter.cursor;
    return this.prisma.task.findMany({
      where: cursor ? { AND: [where, { OR: [{ createdAt: { lt: cursor.createdAt } }, { createdAt: cursor.createdAt, id: { lt: cursor.id } }] }] } : where,
      orderBy: [{ createdAt: 'desc' }, { id: 'desc' }],
      take: filter.limit,
      select: {
        id: true,
        taskType: true,
        status: true,
        createdAt: true,
        startedAt: true,
        finishedAt: true,
        stepsTotal: true,
        stepsRemaining: true,
        workflowName: true,
        workflowVersion: true,
      },
    });
  }

  /**
   * Marks the task cancelled and its steps that have not started. Steps already running are
   * left to their workers, which are told to abort them and record how they ended. With `owner`,
   * another owner's task is treated as missing.
   */
  async cancel(
    id: string,
    owner?: string,
  ): Promise<
    { outcome: 'cancelled'; run: number; taskType: string; single: boolean; createdAt: Date } | { outcome: 'finished'; status: TaskStatus } | undefined
  > {
    const times = createdTimes([id]);
    return this.prisma.$transaction(async (tx) => {
      const [task] = await tx.$queryRawUnsafe<{ status: TaskStatus; run: number; task_type: string; single: boolean; created_at: Date }[]>(
        `SELECT status::text AS status, run, task_type, workflow_name IS NULL AS single, created_at FROM tasks
          WHERE id = $1::uuid AND ${createdIn('created_at', '$3')} AND ($2::text IS NULL OR owner_key = $2) FOR UPDATE`,
        id,
        owner ?? null,
        times,
      );
      if (!task) return undefined;
      if (isFinished(task.status)) return { outcome: 'finished' as const, status: task.status };
      await tx.$executeRawUnsafe(
        `UPDATE tasks SET status = 'cancelled', finished_at = now(), error = $2::jsonb WHERE id = $1::uuid AND ${createdIn('created_at', '$3')}`,
        id,
        JSON.stringify({ name: 'Cancelled', message: 'task was cancelled' }),
        times,
      );
      await tx.$executeRawUnsafe(
        `UPDATE steps SET status = 'cancelled', finished_at = now() WHERE task_id = $1::uuid AND ${createdIn('task_created_at', '$2')} AND status IN ('pending', 'queued')`,
        id,
        times,
      );
      return { outcome: 'cancelled' as const, run: task.run, taskType: task.task_type, single: task.single, createdAt: task.created_at };
    });
  }

  /**
   * Starts a new run of a failed or cancelled task: steps that completed keep their outputs;
   * every other step is reset and waits for its unfinished dependencies again. `enqueue` is
   * called inside the transaction, so a failure to enqueue leaves the task as it was. With
   * `owner`, another owner's task is treated as missing.
   */
  async resume(
    id: string,
    enqueue: (run: { run: number; taskType: string; single: boolean; ready: ReadyStep[] }) => Promise<void>,
    owner?: string,
  ): Promise<{ outcome: 'resumed'; run: number } | { outcome: 'not_resumable'; status: TaskStatus } | undefined> {
    const times = createdTimes([id]);
    return this.prisma.$transaction(
      async (tx) => {
        const [task] = await tx.$queryRawUnsafe<{ status: TaskStatus; run: number; task_type: string; single: boolean; params: Record<string, unknown> }[]>(
          `SELECT status::text AS status, run, task_type, workflow_name IS NULL AS single, params FROM tasks
            WHERE id = $1::uuid AND ${createdIn('created_at', '$3')} AND ($2::text IS NULL OR owner_key = $2) FOR UPDATE`,
          id,
          owner ?? null,
          times,
        );
        if (!task) return undefined;
        if (task.status !== 'failed' && task.status !== 'cancelled') return { outcome: 'not_resumable' as const, status: task.status };
        const run = task.run + 1;
        const steps = await tx.$queryRawUnsafe<(StepRow & { status: string; output: unknown; error: unknown })[]>(
          `SELECT step_id, tool, status::text AS status, output, error, depends_on, input_template, input, options FROM steps WHERE task_id = $1::uuid AND ${createdIn('task_created_at', '$2')}`,
          id,
          times,
        );
        const completed = new Set(steps.filter((step) => step.status === 'completed').map((step) => step.step_id));
        const rerun = steps.filter((step) => !completed.has(step.step_id));
        const remaining = new Map(rerun.map((step) => [step.step_id, step.depends_on.filter((dep) => !completed.has(dep)).length]));
        await tx.$executeRawUnsafe(
          `UPDATE steps s SET status = CASE WHEN v.remaining = 0 THEN 'queued'::"StepStatus" ELSE 'pending'::"StepStatus" END,
                  remaining_deps = v.remaining, run = $2, attempts = 0, output = NULL, error = NULL,
                  started_at = NULL, finished_at = NULL, queued_at = CASE WHEN v.remaining = 0 THEN now() ELSE NULL END
             FROM unnest($3::text[], $4::int[]) AS v(step_id, remaining)
            WHERE s.task_id = $1::uuid AND ${createdIn('s.task_created_at', '$5')} AND s.step_id = v.step_id`,
          id,
          run,
          rerun.map((step) => step.step_id),
          rerun.map((step) => remaining.get(step.step_id)!),
          times,
        );
        await tx.$executeRawUnsafe(
          `UPDATE tasks SET status = 'queued', run = $2, steps_remaining = $3, error = NULL, result = NULL, finished_at = NULL
            WHERE id = $1::uuid AND ${createdIn('created_at', '$4')}`,
          id,
          run,
          rerun.length,
          times,
        );
        const context = {
          params: task.params,
          steps: new Map(steps.filter((step) => completed.has(step.step_id)).map((step) => [step.step_id, step])),
        };
        const ready = rerun.filter((step) => remaining.get(step.step_id) === 0).map((step) => readyStep(step, context, this.limits));
        await enqueue({ run, taskType: task.task_type, single: task.single, ready });
        return { outcome: 'resumed' as const, run };
      },
      { timeout: 15_000, maxWait: 5_000 },
    );
  }

  /** Newest first, optionally for one task or tool; the cursor is the last row's (created_at, id). */
  listDeadLetters(filter: { taskId?: string; tool?: string; limit: number; cursor?: { createdAt: Date; id: string } }) {
    const where: P.DeadLetterWhereInput = {
      ...(filter.taskId ? { taskId: filter.taskId, ...(uuidv7Time(filter.taskId) ? { taskCreatedAt: uuidv7Time(filter.taskId) } : {}) } : {}),
      ...(filter.tool ? { tool: filter.tool } : {}),
    };
    const cursor = filter.cursor;
    return this.prisma.deadLetter.findMany({
      where: cursor ? { AND: [where, { OR: [{ createdAt: { lt: cursor.createdAt } }, { createdAt: cursor.createdAt, id: { lt: cursor.id } }] }] } : where,
      orderBy: [{ createdAt: 'desc' }, { id: 'desc' }],
      take: filter.limit,
    });
  }

  /** Queued and running tasks, for the active-tasks gauge. */
  async activeCounts(): Promise<{ status: string; count: number }[]> {
    const rows = await this.prisma.task.groupBy({ by: ['status'], where: { status: { in: ['queued', 'running'] } }, _count: { _all: true } });
    return rows.map((row) => ({ status: row.status, count: row._count._all }));
  }

  openDeadLetters(): Promise<number> {
    return this.prisma.deadLetter.count({ where: { replayedAt: null } });
  }

  getDeadLetter(id: string) {
    // Its id holds no time (dead letters are few, and off the hot path): every day's index is probed.
    return this.prisma.deadLetter.findFirst({ where: { id } });
  }

  async markReplayed(id: string): Promise<void> {
    await this.prisma.deadLetter.updateMany({ where: { id }, data: { replayedAt: new Date() } });
  }
}
