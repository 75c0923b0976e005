import type { Plan, PlanStep } from '../../engine/plan.js';
import { waitsWithoutJob } from '../../engine/registry.js';
import type { Decision, TaskState } from '../../engine/state.js';
import { ACTIVE_TASK_STATUSES, type StepStatus } from '../../engine/status.js';
import type { HoldRef } from '../../queue/task-queues.js';

/**
 * How a workflow's run maps onto a BullMQ flow (src/queue/jobs.ts): which runs are flows, and
 * which steps need a hold in their root's children because nothing else of theirs is in Redis.
 * Pure: Runs applies what these say.
 */

/** A workflow's run is a flow (a root job with its steps' jobs as children); a one-tool task is one job. */
export function isFlow(plan: Plan): boolean {
  return plan.single !== true;
}

/**
 * Whether a step in this state needs a hold in its run's root: its kind says it waits with no job
 * of its own (a wait for someone without a timeout, a step held back by a limit per key, a running
 * sub-workflow whose child may not be made yet). A sleep has its timer, and a step waiting for its
 * service's circuit its own delayed job.
 */
export function needsHold(step: PlanStep, status: StepStatus, reason: string | null, hasTimer: boolean): boolean {
  return waitsWithoutJob(step, status, reason, hasTimer);
}

/**
 * The holds a committed decision makes and ends, from each step's status before (as loaded) and
 * after: a step that starts waiting with no job gets one, a step that stops waiting loses it. Only
 * runs that are flows and stay active have holds; a run that ended lost its holds with its steps'
 * ends (every waiting step of an ending run is settled).
 */
export function holdChanges(decision: Decision, states: ReadonlyMap<string, TaskState>): { add: HoldRef[]; drop: HoldRef[] } {
  const add: HoldRef[] = [];
  const drop: HoldRef[] = [];
  const ended = new Set(decision.ended.map((end) => end.taskId));
  for (const change of decision.steps) {
    const state = states.get(change.taskId);
    const step = state?.plan.byId.get(change.stepId);
    const before = state?.steps.get(change.stepId);
    if (!state || !step || !before || !isFlow(state.plan.plan) || change.set.status === undefined) continue;
    const run = change.set.run ?? decision.tasks.find((task) => task.taskId === change.taskId)?.set.run ?? state.run;
    const held = ACTIVE_TASK_STATUSES.has(state.status) && needsHold(step, before.status, before.reason, before.wakeAt !== null);
    const reason = change.set.reason !== undefined ? change.set.reason : before.reason;
    const wakeAt = change.set.wake_at !== undefined ? change.set.wake_at : before.wakeAt;
    const holds = !ended.has(change.taskId) && needsHold(step, change.set.status, reason, wakeAt != null);
    if (held && (!holds || before.run !== run)) drop.push({ taskId: state.id, run: before.run, stepId: step.id });
    if (holds && (!held || before.run !== run)) add.push({ taskId: state.id, run, stepId: step.id });
  }
  return { add, drop };
}

/** The holds of a run as it stands (to make them again where they went missing: Runs.repair). */
export function currentHolds(state: TaskState): HoldRef[] {
  if (!isFlow(state.plan.plan) || !ACTIVE_TASK_STATUSES.has(state.status)) return [];
  return state.plan.order.flatMap((step) => {
    const current = state.steps.get(step.id);
    return current && current.run === state.run && needsHold(step, current.status, current.reason, current.wakeAt !== null)
      ? [{ taskId: state.id, run: state.run, stepId: step.id }]
      : [];
  });
}
