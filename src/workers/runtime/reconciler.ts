import { randomUUID } from 'node:crypto';
import type { Logger } from '../../logger.js';
import type { ActiveRun, RunRecovery } from '../../persistence/run-recovery.js';
import { stepJobId, TASKS_QUEUE, taskJobId, toolQueueName } from '../../queue/jobs.js';
import type { RedisClient } from '../../queue/redis.js';
import type { TaskQueues } from '../../queue/task-queues.js';
import { recordJobFailure, type SingleRunDeps } from './single-run.js';

export interface ReconcilerOptions {
  redis: RedisClient;
  queues: TaskQueues;
  recovery: RunRecovery;
  /** What recording a single run's failed job needs. */
  singleRun: SingleRunDeps;
  logger: Logger;
  /** QUEUE_PREFIX: where the lock that elects the reconciling worker lives. */
  prefix: string;
  /** How often one worker of the deployment looks. */
  intervalMs: number;
  /** Runs younger than this are left alone: their jobs may still be on their way. */
  staleAfterMs: number;
}

export interface Sweep {
  checked: number;
  restarted: number;
  retried: number;
  /** Single runs whose job had failed without a result: their failure was recorded. */
  failed: number;
}

/**
 * The job whose presence says a run's BullMQ side is alive: a workflow run's root, or a single
 * run's one job (a one-tool task's step is named after its tool, see planToolTask).
 */
function runJob(run: ActiveRun): { queue: string; jobId: string } {
  return run.single
    ? { queue: toolQueueName(run.taskType), jobId: stepJobId(run.id, run.run, run.taskType) }
    : { queue: TASKS_QUEUE, jobId: taskJobId(run.id, run.run) };
}

/**
 * Repairs runs whose BullMQ side went missing while PostgreSQL still says they are active, so
 * that an accepted task is never silently stuck:
 * - the run's root job does not exist (its flow was never created: the API lost the answer of
 *   its insert, or someone removed it): the run's queued and orphaned running steps are enqueued
 *   again under a new flow;
 * - the root job failed for good (its database writes kept failing during an outage): it is retried;
 * - a one-tool task's job (its run's only job) is missing: it is enqueued again; it failed outside
 *   the step processor and no worker recorded that: its failure is recorded.
 * One worker of the deployment runs it at a time (a lock in Redis).
 */
export class Reconciler {
  private timer?: NodeJS.Timeout;
  private running?: Promise<unknown>;
  private readonly owner = randomUUID();

  constructor(private readonly options: ReconcilerOptions) {}

  start(): void {
    const tick = () => {
      this.running = this.sweepIfLeader()
        .catch((error: Error) => this.options.logger.warn('reconciler sweep failed', { error: error.message }))
        .finally(() => {
          this.timer = setTimeout(tick, this.options.intervalMs);
          this.timer.unref();
        });
    };
    this.timer = setTimeout(tick, this.options.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearTimeout(this.timer);
    await this.running;
  }

  private async sweepIfLeader(): Promise<Sweep | undefined> {
    const lock = `${this.options.prefix}:reconciler`;
    const taken = await this.options.redis.set(lock, this.owner, 'PX', Math.max(1_000, this.options.intervalMs - 100), 'NX');
    if (taken !== 'OK') return undefined;
    return this.sweep();
  }

  /** One pass over the active runs older than staleAfterMs. */
  async sweep(): Promise<Sweep> {
    const { queues, recovery, logger } = this.options;
    const result: Sweep = { checked: 0, restarted: 0, retried: 0, failed: 0 };
    let after: { createdAt: Date; id: string } | undefined;
    for (;;) {
      const page = await recovery.activeRuns(this.options.staleAfterMs, 500, after);
      if (page.length === 0) break;
      after = { createdAt: page.at(-1)!.createdAt, id: page.at(-1)!.id };
      const found = await this.lookUp(page);
      for (const run of page) {
        result.checked += 1;
        const state = found.get(run);
        if (!state) continue;
        if (!state.exists) {
          const count = await recovery.restart(run.id, run.run, (ready) =>
            queues.startRun({ taskId: run.id, run: run.run, taskType: run.taskType, single: run.single }, ready),
          );
          logger.warn('run had no jobs in Redis: enqueued it again', { task_id: run.id, run: run.run, steps: count });
          result.restarted += 1;
        } else if (state.failed && run.single) {
          // The step's job failed outside the step processor and no worker recorded it.
          const job = await queues.toolQueue(run.id, run.taskType).getJob(runJob(run).jobId);
          if (!job) continue;
          await recordJobFailure(
            this.options.singleRun,
            { taskId: run.id, run: run.run, stepId: run.taskType, tool: run.taskType },
            job.failedReason || 'the step job failed',
          );
          logger.warn('single run job had failed without a result: recorded its failure', { task_id: run.id, run: run.run });
          result.failed += 1;
        } else if (state.failed) {
          const root = await queues.shardOf(run.id).tasks.getJob(taskJobId(run.id, run.run));
          await root?.retry('failed');
          logger.warn('run root job had failed: retried it', { task_id: run.id, run: run.run });
          result.retried += 1;
        }
      }
      if (page.length < 500) break;
    }
    return result;
  }

  /**
   * Whether each run's job exists and whether it failed, in one round trip per shard (a cluster
   * pipeline stays within one slot). A run whose shard could not be read is left out.
   */
  private async lookUp(page: ActiveRun[]): Promise<Map<ActiveRun, { exists: boolean; failed: boolean }>> {
    const { redis, queues } = this.options;
    const byShard = new Map<string, ActiveRun[]>();
    for (const run of page) {
      const { prefix } = queues.shardOf(run.id);
      byShard.set(prefix, [...(byShard.get(prefix) ?? []), run]);
    }
    const found = new Map<ActiveRun, { exists: boolean; failed: boolean }>();
    await Promise.all(
      [...byShard].map(async ([prefix, runs]) => {
        const pipeline = redis.pipeline();
        for (const run of runs) {
          const { queue, jobId } = runJob(run);
          pipeline.exists(`${prefix}:${queue}:${jobId}`);
          pipeline.zscore(`${prefix}:${queue}:failed`, jobId);
        }
        const replies = (await pipeline.exec()) ?? [];
        for (const [index, run] of runs.entries()) {
          const [existsError, exists] = replies[index * 2] ?? [];
          const [failedError, failedScore] = replies[index * 2 + 1] ?? [];
          if (!existsError && !failedError) found.set(run, { exists: exists !== 0, failed: failedScore !== null });
        }
      }),
    );
    return found;
  }
}
