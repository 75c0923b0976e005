import { cancel as cancelRuns, outstanding, resume as resumeRuns } from '../../engine/decide.js';
import type { Decision, Report, TaskState } from '../../engine/state.js';
import { ACTIVE_TASK_STATUSES, isFinished, type TaskStatus, waitsForTurn } from '../../engine/status.js';
import { loadMore } from '../../ledger/load-tasks.js';
import type { ErrorRecord } from '../../lib/errors.js';
import { stepUnit } from '../../queue/gates.js';
import type { HoldRef } from '../../queue/task-queues.js';
import type { RunCore } from './core.js';
import { currentHolds, holdChanges, isFlow } from './flows.js';

/**
 * Cancel, resume (retry), and what recovery asks: what a run waits on outside PostgreSQL, made
 * again (repair) for a redelivered step, a root that came up early, or the reconciler.
 */
export class RunRecovery {
  constructor(private readonly core: RunCore) {}

  /**
   * Cancels a task (and its sub-workflows' children): no further step starts, waiting steps end,
   * and workers are told to abort the steps they run. `owner`: only a task of this owner is found.
   */
  async cancel(
    taskId: string,
    owner?: string,
    by?: string,
  ): Promise<{ outcome: 'cancelled'; task: TaskState } | { outcome: 'finished'; status: TaskStatus } | undefined> {
    let found: TaskState | undefined;
    const options = this.core.options();
    const result = await this.core.transaction([taskId], (states) => {
      found = states.find((state) => state.id === taskId && (owner === undefined || state.owner === owner));
      return requestedBy(found ? cancelRuns([found], options) : { ...cancelRuns([], options) }, taskId, 'task_cancelled', by);
    });
    if (!found) return undefined;
    // Cancelled: it ended, or it runs its exit handler first (whose steps are spared the stop).
    const exiting = result.decision.tasks.some((change) => change.taskId === taskId && change.set.exit_status);
    if (!isFinished(found.status) && (result.decision.ended.length > 0 || exiting)) {
      const spare = exiting ? found.plan.exits.map((step) => step.id) : undefined;
      await this.core.deps
        .stopTask?.(taskId, found.run, spare)
        .catch((error: Error) => this.core.deps.logger.warn('task cancelled, but running steps could not be told', { task_id: taskId, error: error.message }));
      await this.core.verbs.carryOut(result.decision, result.applied, result.states);
      return { outcome: 'cancelled', task: found };
    }
    // A cancel that meets an ended run may be the client's retry of one that committed while its
    // answer was lost. Best effort: the answer is about the task, and a Redis away must not turn it into a 503.
    if (isFinished(found.status))
      await this.core.verbs
        .releaseEndedBefore([found])
        .catch((error: Error) => this.core.deps.logger.warn('could not give back what an ended task held', { task_id: taskId, error: error.message }));
    return { outcome: 'finished', status: found.status };
  }

  /**
   * Resumes a failed or cancelled task as a new run: completed steps (and map items) keep their
   * outputs, the others run again as their dependencies allow; a sub-workflow's child is
   * resumed too. The new run's jobs are added before its transaction commits, so a Redis that
   * refuses them leaves the task as it was. With `expectedRun`, only that run is made: a task another
   * retry resumed meanwhile (its run may even have ended already) is `moved_on`, left alone.
   */
  async resume(
    taskId: string,
    owner?: string,
    by?: string,
    expectedRun?: number,
  ): Promise<
    | { outcome: 'resumed'; run: number; task: TaskState }
    | { outcome: 'not_resumable'; status: TaskStatus }
    | { outcome: 'moved_on'; status: TaskStatus; run: number }
    | undefined
  > {
    let found: TaskState | undefined;
    let movedOn = false;
    const options = this.core.options();
    const result = await this.core.transaction(
      [taskId],
      (states) => {
        found = states.find((state) => state.id === taskId && (owner === undefined || state.owner === owner));
        movedOn = found !== undefined && expectedRun !== undefined && found.run + 1 !== expectedRun;
        return requestedBy(resumeRuns(found && !movedOn ? [found] : [], options), taskId, 'task_resumed', by);
      },
      {
        // The new run's jobs (a workflow's: its flow, root first) go in before the commit.
        before: async (_tx, { states, decision, heldItems: held }) => {
          const state = states.find((loaded) => loaded.id === taskId);
          const run = decision.tasks.find((change) => change.taskId === taskId)?.set.run;
          if (!state || run === undefined) return;
          if (!isFlow(state.plan.plan)) {
            if (decision.jobs.length > 0) await this.core.deps.queues.addSteps(decision.jobs);
            return;
          }
          const parent = state.parent ? await this.core.verbs.parentRun(state.parent.taskId) : undefined;
          const [error] = (
            await this.core.verbs.addRuns([
              {
                taskId,
                run,
                taskType: state.taskType,
                jobs: decision.jobs.map((step) => ({ step, ...this.core.jobOptions(state, step, true) })),
                timers: decision.timers,
                holds: [...holdChanges(decision, new Map([[taskId, state]])).add, ...held],
                ...(parent && this.core.deps.queues.shardOf(parent.taskId) === this.core.deps.queues.shardOf(taskId) ? { parent } : {}),
              },
            ])
          ).values();
          if (error !== undefined) throw error;
        },
      },
    );
    if (!found) return undefined;
    if (movedOn) return { outcome: 'moved_on', status: found.status, run: found.run };
    const made = result.decision.tasks.find((change) => change.taskId === taskId)?.set.run;
    if (made === undefined) return { outcome: 'not_resumable', status: found.status };
    const flow = isFlow(found.plan.plan);
    await this.core.verbs.carryOut({ ...result.decision, jobs: [], ...(flow ? { timers: [] } : {}) }, result.applied, result.states, new Map(), {
      treesMade: flow,
    });
    return { outcome: 'resumed', run: made, task: found };
  }

  /**
   * What these runs wait on outside PostgreSQL (the engine's outstanding), with the runs as
   * loaded, and the holds their roots need (flows.ts): steps that wait with no job, and
   * map items a limit per key holds back.
   */
  async outstanding(taskIds: readonly string[]): Promise<{ states: TaskState[]; decision: Decision; turns: Report[]; holds: HoldRef[] }> {
    const options = this.core.options();
    const states = await this.core.peek(taskIds);
    let decision = outstanding(states, options);
    if (decision.needs) {
      const needs = decision.needs;
      await this.core.deps.sql.$transaction((tx) => loadMore(tx, needs, states));
      decision = outstanding(states, options);
    }
    const turns: Report[] = [];
    const holds = states.flatMap(currentHolds);
    const limited = states.filter((state) => ACTIVE_TASK_STATUSES.has(state.status) && this.core.limited(state.plan.plan));
    if (this.core.deps.gates && limited.length > 0) {
      // Held back by a limit, a queued item has no job, and a step waits its turn: neither is missing.
      const units = decision.jobs.map((job) => stepUnit(job.taskId, job.run, job.stepId, job.item));
      const waiting = limited.flatMap((state) =>
        [...state.steps.values()].filter((step) => waitsForTurn(step.status, step.reason)).map((step) => ({ state, step })),
      );
      const where = await this.core.deps.gates.where([...units, ...waiting.map(({ state, step }) => stepUnit(state.id, state.run, step.id))]);
      for (const [index, job] of decision.jobs.entries())
        if (where[index] === 'line' && job.item !== undefined) holds.push({ taskId: job.taskId, run: job.run, stepId: job.stepId, item: job.item });
      decision = { ...decision, jobs: decision.jobs.filter((_, index) => where[index] !== 'line') };
      // A step let in whose admission was lost, or one Redis forgot, is admitted again (it enters its gates again).
      waiting.forEach(({ state, step }, index) => {
        if (where[units.length + index] !== 'line') turns.push({ type: 'admitted', taskId: state.id, run: state.run, stepId: step.id, at: new Date() });
      });
    }
    return { states, decision, turns, holds };
  }

  /**
   * Makes again what these runs wait on outside PostgreSQL (jobs, timers, holds, children,
   * callbacks, parents' reports), idempotently: for a step delivered again after its result was
   * committed (its worker died before carrying the result's effects out), for a run's root that
   * came up before its run ended, and for the reconciler. A flow's root that is gone is made again.
   */
  async repair(taskIds: readonly string[]): Promise<void> {
    const { states, decision, turns, holds } = await this.outstanding(taskIds);
    await this.core.verbs.carryOut(decision, { started: [], moved: [] }, states, new Map(), { holds });
    await Promise.all(turns.map((turn) => this.core.verbs.report(turn)));
  }

  /**
   * A run's root job came up (workers/runtime/run-roots.ts): true when its run has ended (or a
   * later run replaced it), so the root completes; otherwise what the run waits on is made again
   * (repair) and the root waits for its children again.
   */
  async closeRun(taskId: string, run: number): Promise<boolean> {
    const [state] = await this.core.peek([taskId]);
    if (!state || state.run !== run || isFinished(state.status)) return true;
    await this.repair([taskId]);
    return false;
  }

  /**
   * Which of these holds still stand for a step (or map item) that waits with no job: its run is
   * active and the step still waits so. A hold's own recheck asks for one; the reconciler for
   * every hold in Redis, to drop those whose drop was lost (a worker killed between a run's end
   * and its Redis effects, or a drop that met the hold while its recheck had it).
   */
  async standing(holds: readonly HoldRef[]): Promise<boolean[]> {
    const states = new Map((await this.core.peek([...new Set(holds.map((hold) => hold.taskId))])).map((state) => [state.id, state]));
    return holds.map((hold) => {
      const state = states.get(hold.taskId);
      if (!state || state.run !== hold.run || isFinished(state.status)) return false;
      const step = state.steps.get(hold.stepId);
      if (!step || step.run !== hold.run) return false;
      if (hold.item !== undefined) return step.status === 'running';
      return currentHolds(state).some((current) => current.stepId === hold.stepId);
    });
  }

  /** Fails these steps at once: the tool they call is gone for good (Report 'withdrawn'). Returns the tasks of the steps it failed. */
  async withdraw(steps: readonly { taskId: string; run: number; stepId: string }[], error: ErrorRecord): Promise<string[]> {
    const outcomes = await Promise.all(steps.map((step) => this.core.verbs.report({ type: 'withdrawn', ...step, error, at: new Date() })));
    return [...new Set(steps.filter((_, index) => outcomes[index]!.recorded).map((step) => step.taskId))];
  }

  /** Each task's state as the ledger has it (the reconciler compares it with BullMQ). */
  states(taskIds: readonly string[]): Promise<TaskState[]> {
    return this.core.peek(taskIds);
  }
}

/** Who asked (an API key's id) on the history event of a cancel or a resume of `taskId`; a child's, cancelled with its parent, says nothing. */
function requestedBy<D extends Decision>(decision: D, taskId: string, type: string, by: string | undefined): D {
  if (by === undefined) return decision;
  return {
    ...decision,
    history: decision.history.map((event) => (event.taskId === taskId && event.type === type ? { ...event, data: { ...event.data, by } } : event)),
  };
}
