import type { Context } from '@opentelemetry/api';
import { jobTool } from '../../engine/registry.js';
import type { Decision, JobRef, TaskState } from '../../engine/state.js';
import { ACTIVE_TASK_STATUSES, waitsForSomeone } from '../../engine/status.js';
import type { ReadyStep } from '../../engine/types.js';
import type { Applied } from '../../ledger/apply-decision.js';
import { type HoldRef, MissingRootError, type NewJob } from '../../queue/task-queues.js';
import { heldItems, heldKey, type RunCore } from './core.js';
import { holdChanges, isFlow } from './flows.js';

/**
 * Carrying a committed decision out in the world outside PostgreSQL: jobs, timers and holds under
 * their run's root, drops, the root's end mark, callbacks and events; then what goes through the
 * ledger again (children to start or cancel, reports to parents).
 */
export class RunEffects {
  constructor(private readonly core: RunCore) {}

  /**
   * What a committed decision asks of the world outside PostgreSQL: jobs (with the items its
   * sweeps queued), timers, holds, jobs to drop, events, callbacks; then, once those are done,
   * what goes through the ledger again (children to start or cancel, reports to parents).
   *
   * In a flow, every new child (job, timer, hold) is added under its run's root before anything
   * is dropped, and before the job whose report made this decision is acknowledged: the root
   * always has a pending child while its run has work left (src/queue/jobs.ts). `treesMade`: the
   * decision's runs were just added as flows with their first children and holds (create, resume).
   * `holds`: more holds to make (map items held back where the decision was made, holds made
   * again by a repair). `admitted`: map items let in by a limit per key, whose holds go once
   * their jobs are in.
   */
  async carryOut(
    decision: Decision,
    applied: Applied,
    states: readonly TaskState[],
    traces: ReadonlyMap<string, Context> = new Map(),
    options: { treesMade?: boolean; holds?: HoldRef[]; admitted?: HoldRef[] } = {},
  ): Promise<void> {
    const byId = new Map(states.map((state) => [state.id, state]));
    // What committed is told first, whatever Redis does next: the task's events (and the
    // long-polls they wake) and the ends' releases (quotas, metrics) do not wait on the jobs,
    // holds and callbacks below, and are not lost when one of those throws (a Redis command
    // that timed out left a client's quota counted for an hour, and its long-polls asleep).
    this.core.publish(decision.transitions);
    for (const end of decision.ended) this.core.deps.onEnded?.(end);
    const ended = new Set(decision.ended.map((end) => end.taskId));
    const runOf = (task: TaskState) => decision.tasks.find((change) => change.taskId === task.id)?.set.run ?? task.run;
    /** A run's new children hang under its root while the run is active. */
    const inFlow = (taskId: string) => {
      const task = byId.get(taskId);
      return task !== undefined && isFlow(task.plan.plan) && !ended.has(taskId) && (ACTIVE_TASK_STATUSES.has(task.status) || runOf(task) > task.run);
    };
    const traced = (taskId: string) => (traces.has(taskId) ? { trace: traces.get(taskId)! } : {});
    const jobOf = (step: ReadyStep): NewJob => {
      const task = byId.get(step.taskId);
      return {
        step,
        single: task?.plan.plan.single === true,
        ...(task ? this.core.jobOptions(task, step, inFlow(task.id)) : {}),
        ...traced(step.taskId),
      };
    };
    const jobs: NewJob[] = decision.jobs.map(jobOf);
    for (const started of applied.started) {
      const task = byId.get(started.taskId);
      const step = task?.plan.byId.get(started.stepId);
      const tool = step && jobTool(step);
      if (task && step && tool)
        jobs.push(
          jobOf({
            taskId: task.id,
            // A retried task's items run in its new run.
            run: runOf(task),
            stepId: step.id,
            item: started.item,
            tool,
            input: started.input,
            retry: step.options.retry,
            timeoutMs: step.options.timeout_ms,
            dependencies: {},
            ...(step.options.priority ? { priority: step.options.priority } : {}),
          }),
        );
    }
    const drops: JobRef[] = [
      ...decision.dropJobs,
      ...applied.moved.flatMap((moved) => {
        const task = byId.get(moved.taskId);
        const step = task?.plan.byId.get(moved.stepId);
        const tool = step && jobTool(step);
        return moved.from === 'queued' && task && tool ? [{ taskId: task.id, run: task.run, stepId: moved.stepId, item: moved.item, tool }] : [];
      }),
    ];
    // Jobs not gated where they were decided (a map's items, jobs made again): held ones are not made.
    const ungated = jobs.filter(({ step }) => !this.core.passed.has(step)).map(({ step }) => step);
    const held =
      ungated.length > 0
        ? await this.core.verbs.gateJobs(ungated, new Map(states.map((state) => [state.id, { plan: state.plan.plan, owner: state.owner }])))
        : new Map();
    const admitted = held.size > 0 ? jobs.filter(({ step }) => !held.has(heldKey(step))) : jobs;
    const holds = options.treesMade ? { add: [], drop: [] } : holdChanges(decision, byId);
    // A map item held back by a limit waits with no job: its hold stands in for it.
    const itemHolds = [...(options.holds ?? []), ...heldItems(ungated, held)].filter((hold) => inFlow(hold.taskId));
    await this.withRoots(async () => {
      const refused = admitted.length > 0 ? await this.core.deps.queues.addJobs(admitted) : new Map();
      const [error] = refused.values();
      if (error !== undefined) throw error;
      await Promise.all([
        decision.timers.length > 0 ? this.core.deps.queues.addTimers(decision.timers, inFlow) : undefined,
        holds.add.length + itemHolds.length > 0 ? this.core.deps.queues.addHolds([...holds.add, ...itemHolds]) : undefined,
      ]);
    });
    // The new children are in: now what no longer holds the runs may go.
    const unheld = [...holds.drop, ...(options.admitted ?? [])];
    await Promise.all([
      unheld.length > 0 ? this.core.deps.queues.dropHolds(unheld) : undefined,
      // A flow's root learns that its run ended, so that it closes without asking PostgreSQL (workers/runtime/run-roots.ts).
      ...decision.ended
        .filter((end) => isFlow(byId.get(end.taskId)?.plan.plan ?? { steps: [], single: true }))
        .map((end) => this.core.deps.queues.markEnded(end.taskId, end.run, end.status)),
      ...decision.ended
        .filter((ended) => ended.callback)
        .map((ended) => this.core.deps.queues.enqueueCallback(ended, this.core.deps.config.CALLBACK_MAX_ATTEMPTS)),
      // A step that starts waiting for someone tells the task's callback_url (an approval: with its links).
      ...decision.transitions
        .filter((change) => change.stepId !== undefined && waitsForSomeone(change.status, change.reason ?? null) && byId.get(change.taskId)?.callback)
        .map((change) =>
          this.core.deps.queues.enqueueCallback(
            { taskId: change.taskId, run: runOf(byId.get(change.taskId)!), waitingStep: change.stepId! },
            this.core.deps.config.CALLBACK_MAX_ATTEMPTS,
          ),
        ),
    ]);
    // The jobs of queued steps and items (a cancelled map's: up to MAP_MAX_ITEMS) are removed
    // in the background: PostgreSQL already refuses their claims, so one that a worker takes
    // first never runs its tool; removing them only spares the workers that. Whoever waits on
    // this (a cancel's answer, a worker's acknowledgement) does not wait on Redis for them.
    const cleanup = drops.filter((ref) => !ref.running);
    if (cleanup.length > 0)
      this.core.inBackground(() =>
        this.core.deps.queues.dropJobs(cleanup).catch((dropError: Error) => this.core.deps.logger.warn('could not drop jobs', { error: dropError.message })),
      );
    const running = drops.filter((ref) => ref.running);
    const dropping = running.length > 0 ? this.core.deps.queues.dropJobs(running) : Promise.resolve([]);
    // A terminate step ended these runs: workers abort the steps they still run, as on a cancel.
    for (const stop of decision.stops)
      this.core.deps
        .stopTask?.(stop.taskId, stop.run, stop.spare)
        .catch((stopError: Error) =>
          this.core.deps.logger.warn('run terminated, but running steps could not be told', { task_id: stop.taskId, error: stopError.message }),
        );
    // A running step whose job waited out a retry's backoff is settled once its job is gone.
    const settling = dropping.then(
      (dropped) =>
        Promise.all(dropped.map((ref) => this.core.verbs.report({ type: 'lost', taskId: ref.taskId, run: ref.run, stepId: ref.stepId, at: new Date() }))),
      (dropError: Error) => this.core.deps.logger.warn('could not drop jobs', { error: dropError.message }),
    );
    await Promise.all([
      settling,
      this.core.verbs.releaseEnded(decision, byId),
      ...decision.children.map((child) => {
        const parent = byId.get(child.parentTaskId);
        return this.core.verbs.startChild(child, parent ? { taskId: parent.id, run: runOf(parent) } : undefined);
      }),
      ...decision.cancelChildren.map((id) => this.core.verbs.cancel(id).then(() => undefined)),
      ...decision.parentReports.map((report) => this.core.verbs.report(report).then(() => undefined)),
    ]);
  }

  /**
   * Runs `add` (new children of flows); when a root is gone (Redis lost it), makes it again and
   * runs `add` once more: the remade root's processor waits for what its run waits on.
   */
  private async withRoots(add: () => Promise<void>): Promise<void> {
    try {
      await add();
    } catch (error) {
      if (!(error instanceof MissingRootError)) throw error;
      this.core.deps.logger.warn("a run's root job was gone: made it again", { runs: error.runs });
      await this.core.deps.queues.remakeRoots(error.runs);
      await add();
    }
  }
}
