import { ownerLimits } from '../../engine/key-limits.js';
import type { Plan } from '../../engine/plan.js';
import type { Decision, TaskState } from '../../engine/state.js';
import { ACTIVE_TASK_STATUSES, FINISHED_STEP_STATUSES } from '../../engine/status.js';
import type { KeyLimit, ReadyStep } from '../../engine/types.js';
import { type GateEntry, parseUnit, type Released, runUnit, stepUnit } from '../../queue/gates.js';
import { heldKey, type PreparedTask, type RunCore } from './core.js';

/**
 * Limits per key (src/engine/key-limits.ts, src/queue/gates.ts): jobs enter their gates where
 * they are decided, what ends gives its place back, and what a release or a rate window lets in
 * is admitted.
 */
export class RunLimits {
  constructor(private readonly core: RunCore) {}

  /**
   * Jobs enter their gates (one round trip): a task's run first when its workflow has limits of
   * its own, then each job's step (or item) with its step's limits and its API key's defaults.
   * Returns the jobs held back, by heldKey, with the kind of limit that holds them; jobs let in
   * are marked `limited` (their end releases the gates).
   */
  async gateJobs(jobs: readonly ReadyStep[], tasks: ReadonlyMap<string, { plan: Plan; owner: string }>): Promise<Map<string, 'c' | 'r'>> {
    const held = new Map<string, 'c' | 'r'>();
    if (!this.core.deps.gates) return held;
    const { KEY_CONCURRENCY, KEY_RATE_PER_MINUTE } = this.core.deps.config;
    const entries: GateEntry[] = [];
    const byUnit = new Map<string, ReadyStep>();
    const runs = new Set<string>();
    for (const job of jobs) {
      const task = tasks.get(job.taskId);
      if (!task || !this.core.limited(task.plan)) continue;
      let after: string | undefined;
      if (task.plan.limits) {
        after = runUnit(job.taskId, job.run);
        if (!runs.has(after)) entries.push({ taskId: job.taskId, unit: after, limits: task.plan.limits });
        runs.add(after);
      }
      const limits: KeyLimit[] = [
        ...(task.plan.steps.find((step) => step.id === job.stepId)?.limits ?? []),
        ...ownerLimits(task.owner, { concurrency: KEY_CONCURRENCY, perMinute: KEY_RATE_PER_MINUTE }),
      ];
      const unit = stepUnit(job.taskId, job.run, job.stepId, job.item);
      byUnit.set(unit, job);
      entries.push({ taskId: job.taskId, unit, limits, ...(after ? { after } : {}) });
    }
    if (entries.length === 0) return held;
    const wakes: { gate: string; at: number }[] = [];
    for (const result of await this.core.deps.gates.enter(entries)) {
      const job = byUnit.get(result.unit);
      if (result.admitted) {
        if (job) {
          job.limited = true;
          this.core.passed.add(job);
        }
        continue;
      }
      if (result.kind === 'r' && result.wakeAt !== undefined) wakes.push({ gate: result.gate, at: result.wakeAt });
      if (job) held.set(heldKey(job), result.kind);
    }
    if (wakes.length > 0) await this.core.deps.queues.addGateWakes(wakes);
    return held;
  }

  /**
   * Held back before its task was stored, a step may have been let in before the task was there
   * to hear it (the release found no task): it is told now. Told twice, the second is a no-op.
   */
  async admittedMeanwhile(tasks: readonly PreparedTask[], held: ReadonlyMap<string, 'c' | 'r'>): Promise<void> {
    const keys = [...held.keys()].map((key) => key.split('/'));
    const asked: { taskId: string; stepId?: string; unit: string }[] = [];
    for (const { task, plan } of tasks) {
      const steps = keys.filter(([taskId, , item]) => taskId === task.id && item === undefined).map(([, stepId]) => stepId!);
      if (steps.length === 0) continue;
      if (plan.limits) asked.push({ taskId: task.id, unit: runUnit(task.id, 1) });
      for (const stepId of steps) asked.push({ taskId: task.id, stepId, unit: stepUnit(task.id, 1, stepId) });
    }
    const where = await this.core.deps.gates!.where(asked.map(({ unit }) => unit));
    await Promise.all(
      asked.map(({ taskId, stepId }, index) =>
        where[index] === 'in' ? this.core.verbs.report({ type: 'admitted', taskId, run: 1, ...(stepId ? { stepId } : {}), at: new Date() }) : undefined,
      ),
    );
  }

  /** Releases everything these tasks hold in gates, and lets in what now fits. */
  async releaseTasks(taskIds: readonly string[]): Promise<void> {
    if (!this.core.deps.gates || taskIds.length === 0) return;
    await this.admit(await this.core.deps.gates.release(taskIds.map((id) => ({ id, prefixes: [''] }))));
  }

  /**
   * Ended tasks met again (a report or a cancel retried after its commit's answer was lost) give
   * back what they held once more: their quotas (onEndedBefore) and their gates. A release of
   * what was released already changes nothing.
   */
  async releaseEndedBefore(tasks: readonly TaskState[]): Promise<void> {
    for (const task of tasks) this.core.deps.onEndedBefore?.(task.id, task.run);
    await this.releaseTasks(tasks.filter((task) => this.core.limited(task.plan.plan)).map((task) => task.id));
  }

  /** What a committed decision ended gives its gates back: ended tasks all they hold, ended steps (and their items) theirs. */
  async releaseEnded(decision: Decision, byId: ReadonlyMap<string, TaskState>): Promise<void> {
    if (!this.core.deps.gates) return;
    const prefixes = new Map<string, string[]>();
    const add = (taskId: string, prefix: string) => {
      const task = byId.get(taskId);
      if (!task || !this.core.limited(task.plan.plan)) return;
      prefixes.set(taskId, [...(prefixes.get(taskId) ?? []), prefix]);
    };
    const ended = new Set(decision.ended.map((end) => end.taskId));
    for (const taskId of ended) add(taskId, '');
    for (const transition of decision.transitions) {
      if (transition.stepId === undefined || ended.has(transition.taskId) || !FINISHED_STEP_STATUSES.has(transition.status)) continue;
      add(transition.taskId, stepUnit(transition.taskId, byId.get(transition.taskId)?.run ?? 1, transition.stepId));
    }
    for (const change of decision.items) {
      if (ended.has(change.taskId) || !change.set.status || !FINISHED_STEP_STATUSES.has(change.set.status)) continue;
      add(change.taskId, stepUnit(change.taskId, byId.get(change.taskId)?.run ?? 1, change.stepId, change.item));
    }
    if (prefixes.size === 0) return;
    await this.admit(await this.core.deps.gates.release([...prefixes].map(([id, list]) => ({ id, prefixes: list }))));
  }

  /** A rate gate's window moved on (its timer): lets in what fits. */
  async wakeGate(gate: string): Promise<void> {
    if (this.core.deps.gates) await this.admit(await this.core.deps.gates.wake(gate));
  }

  /** Work let in by a release or a wake-up gets its jobs; rate gates still holding some wake up later. */
  private async admit(released: Released): Promise<void> {
    await Promise.all([
      released.wakes.length > 0 ? this.core.deps.queues.addGateWakes(released.wakes) : undefined,
      ...released.admitted.map((unit) => this.core.verbs.report({ type: 'admitted', ...parseUnit(unit), at: new Date() })),
    ]);
  }

  /**
   * Gates against PostgreSQL, for the reconciler: what a task that ended, or a step that is no
   * longer queued, running or waiting, still holds is released (a process died between its commit
   * and its release); a step let in whose admission was lost is admitted again. Returns how many
   * units were released and admitted.
   */
  async reconcileGates(): Promise<{ released: number; admitted: number }> {
    const outcome = { released: 0, admitted: 0 };
    const gates = this.core.deps.gates;
    if (!gates) return outcome;
    const taskIds = await gates.tasks();
    for (let start = 0; start < taskIds.length; start += 200) {
      const chunk = taskIds.slice(start, start + 200);
      const states = new Map((await this.core.peek(chunk)).map((state) => [state.id, state]));
      const release: { id: string; prefixes: string[] }[] = [];
      for (const taskId of chunk) {
        const state = states.get(taskId);
        if (!state || !ACTIVE_TASK_STATUSES.has(state.status)) {
          release.push({ id: taskId, prefixes: [''] });
          continue;
        }
        const units = (await gates.units(taskId)).filter((unit) => {
          const { run, stepId, item } = parseUnit(unit);
          if (run !== state.run) return true;
          const step = stepId !== undefined ? state.steps.get(stepId) : undefined;
          return stepId !== undefined && item === undefined && (!step || FINISHED_STEP_STATUSES.has(step.status) || step.status === 'pending');
        });
        if (units.length > 0) release.push({ id: taskId, prefixes: units });
        outcome.released += units.length;
      }
      outcome.released += release.filter((entry) => entry.prefixes[0] === '').length;
      await this.admit(await gates.release(release));
    }
    return outcome;
  }
}
