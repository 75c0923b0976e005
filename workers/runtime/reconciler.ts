import { randomUUID } from 'node:crypto';
import type { Job } from 'bullmq';
import { jobTool } from '../../src/engine/registry.js';
import type { TaskState } from '../../src/engine/state.js';
import type { ReadyStep } from '../../src/engine/types.js';
import type { Logger } from '../../src/lib/logger.js';
import type { TaskStore } from '../../src/persistence/task-store.js';
import { stepJobId } from '../../src/queue/jobs.js';
import type { RedisClient } from '../../src/queue/redis.js';
import type { TaskQueues } from '../../src/queue/task-queues.js';
import type { Runs } from '../../src/tasks/runs.js';

/** Runs looked at per query. */
const PAGE = 200;

export interface ReconcilerOptions {
  redis: RedisClient;
  queues: TaskQueues;
  runs: Runs;
  store: TaskStore;
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
  /** Steps or items whose job was gone (or finished without a result): queued again (closed, when their task had ended). */
  requeued: number;
  /** Jobs BullMQ failed outside the step processor (they stalled too often): their failure was recorded. */
  failed: number;
  /** Tasks whose timers, children, callbacks or queued jobs were made again where they were missing. */
  repaired: number;
  /** Leases of limits per key whose work had ended (src/queue/gates.ts): given back. */
  released: number;
  /** Holds whose steps no longer wait (their drop was lost): dropped, so that their runs' roots close. */
  unheld: number;
}

/**
 * Makes BullMQ agree with PostgreSQL again for runs PostgreSQL says are active, so that an
 * accepted task is never silently stuck: every queued or running step (and map item) must have
 * its job, every sleeping step its timer, every running sub-workflow its child, every step
 * waiting for its service's circuit its delayed job. A job that is
 * gone, or that finished without its step having a result, is made again (the step queued
 * again: delivery is at least once); a job BullMQ failed outside the step processor (it stalled
 * too often: its workers kept dying) records the step's failure with BullMQ's reason; what else
 * is missing is made again (Runs.repair); a hold whose step no longer waits (its drop was lost)
 * goes, so that its run's root closes. One worker of the deployment runs it at a time (a lock in Redis).
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

  /**
   * One pass over the active runs older than staleAfterMs, then over the ended tasks with a step
   * left open (a step running when its task ended, whose job went missing or was failed by
   * BullMQ, would stay running: its report closes it). Ended tasks are not repaired: what they
   * wait on (callbacks, parents' reports) was carried out when they ended.
   */
  async sweep(): Promise<Sweep> {
    const { store } = this.options;
    const result: Sweep = { checked: 0, requeued: 0, failed: 0, repaired: 0, released: 0, unheld: 0 };
    await this.pages((after) => store.activeRuns(this.options.staleAfterMs, PAGE, after), result, true);
    await this.pages((after) => store.endedWithOpenSteps(this.options.staleAfterMs, PAGE, after), result, false);
    const gates = await this.options.runs.reconcileGates();
    result.released = gates.released;
    result.unheld = await this.dropStaleHolds();
    return result;
  }

  /** Drops the holds older than staleAfterMs whose steps no longer wait; returns how many. */
  private async dropStaleHolds(): Promise<number> {
    const { queues, runs, logger } = this.options;
    const holds = await queues.holdsMadeBefore(Date.now() - this.options.staleAfterMs);
    const stale = [];
    for (let start = 0; start < holds.length; start += PAGE) {
      const page = holds.slice(start, start + PAGE);
      const standing = await runs.standing(page);
      stale.push(...page.filter((_, index) => !standing[index]));
    }
    if (stale.length === 0) return 0;
    await queues.dropHolds(stale);
    logger.warn('dropped holds whose steps no longer wait', { holds: stale.length, task_ids: [...new Set(stale.map((hold) => hold.taskId))].slice(0, 10) });
    return stale.length;
  }

  private async pages(
    next: (after?: { createdAt: Date; id: string }) => Promise<{ id: string; createdAt: Date }[]>,
    result: Sweep,
    repair: boolean,
  ): Promise<void> {
    const { runs, logger } = this.options;
    let after: { createdAt: Date; id: string } | undefined;
    for (;;) {
      const page = await next(after);
      if (page.length === 0) break;
      after = { createdAt: page.at(-1)!.createdAt, id: page.at(-1)!.id };
      const { decision, states } = await runs.outstanding(page.map((task) => task.id));
      const byTask = new Map<string, ReadyStep[]>();
      for (const job of decision.jobs) byTask.set(job.taskId, [...(byTask.get(job.taskId) ?? []), job]);
      const held = new Map(states.map((state) => [state.id, circuitHeld(state)]));
      for (const task of page) {
        result.checked += 1;
        try {
          const outcome = await this.reconcile(task.id, byTask.get(task.id) ?? [], held.get(task.id) ?? []);
          result.requeued += outcome.requeued;
          result.failed += outcome.failed;
          if (repair && outcome.requeued + outcome.failed === 0) {
            await runs.repair([task.id]);
            result.repaired += 1;
          }
        } catch (error) {
          logger.warn('could not reconcile a run', { task_id: task.id, error: (error as Error).message });
        }
      }
      if (page.length < PAGE) break;
    }
  }

  /** Compares a run's expected jobs with what BullMQ holds, and reports what went wrong with them. */
  private async reconcile(taskId: string, jobs: ReadyStep[], held: HeldStep[]): Promise<{ requeued: number; failed: number }> {
    const { queues, runs, logger } = this.options;
    let requeued = 0;
    let failed = 0;
    // A step held by its service's open circuit waits in its delayed job (the engine expects no
    // job of a waiting step). Gone with Redis, it is let through as the circuit would: queued
    // again, its job made from PostgreSQL; its worker holds it again while the circuit is open.
    for (const step of held) {
      const job: Job | undefined = await queues.toolQueue(taskId, step.tool).getJob(stepJobId(taskId, step.run, step.stepId));
      const state = job ? await job.getState() : 'missing';
      if (state !== 'missing' && state !== 'completed' && state !== 'failed' && state !== 'unknown') continue;
      if (job) await job.remove().catch(() => undefined);
      const { recorded } = await runs.report({ type: 'circuit', taskId, run: step.run, stepId: step.stepId, open: false, at: new Date() });
      if (!recorded) continue;
      await runs.repair([taskId]);
      logger.warn('the job of a step waiting for its circuit was gone: queued it again', { task_id: taskId, step_id: step.stepId, state });
      requeued += 1;
    }
    for (const step of jobs) {
      const job: Job | undefined = await queues.toolQueue(taskId, step.tool).getJob(stepJobId(taskId, step.run, step.stepId, step.item));
      const state = job ? await job.getState() : 'missing';
      const where = { task_id: taskId, step_id: step.stepId, ...(step.item !== undefined ? { item: step.item } : {}) };
      if (state === 'failed') {
        const now = new Date();
        const reason = job?.failedReason || 'the step job failed';
        const error = { name: 'StepJobFailed', message: reason, retryable: false };
        const report = { taskId, run: step.run, stepId: step.stepId, attempt: 0, status: 'failed' as const, error, startedAt: now, finishedAt: now };
        const single = (job?.data as { single?: boolean } | undefined)?.single;
        const recorded = single
          ? (await runs.finishSingle({ ...report, tool: step.tool })).recorded
          : (await runs.report({ type: 'result', ...report, ...(step.item !== undefined ? { item: step.item } : {}) })).recorded;
        if (recorded) {
          logger.warn('step job had failed without a result: recorded its failure', { ...where, reason });
          failed += 1;
        }
      } else if (state === 'missing' || state === 'completed' || state === 'unknown') {
        // Completed without a result in PostgreSQL cannot come from the step processor, which
        // acknowledges a job only after its result is written: the job is stale, and goes.
        if (job) await job.remove().catch(() => undefined);
        const { recorded } = await runs.report({
          type: 'lost',
          taskId,
          run: step.run,
          stepId: step.stepId,
          ...(step.item !== undefined ? { item: step.item } : {}),
          at: new Date(),
        });
        if (recorded) {
          logger.warn('step job was gone without a result: queued it again', { ...where, state });
          requeued += 1;
        }
      }
    }
    return { requeued, failed };
  }
}

interface HeldStep {
  stepId: string;
  run: number;
  tool: string;
}

/** The steps of an active run that wait for their service's circuit (reason circuit_open). */
function circuitHeld(state: TaskState): HeldStep[] {
  if (state.status !== 'queued' && state.status !== 'running') return [];
  return [...state.steps.values()].flatMap((step) => {
    const planned = state.plan.byId.get(step.id);
    const tool = planned && jobTool(planned);
    if (step.status !== 'waiting' || step.reason !== 'circuit_open' || tool === undefined) return [];
    return [{ stepId: step.id, run: state.run, tool }];
  });
}
