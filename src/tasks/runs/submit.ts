import { freshState, type NewTaskMeta, start } from '../../engine/decide.js';
import { holdBack } from '../../engine/key-limits.js';
import type { Plan } from '../../engine/plan.js';
import { type Decision, emptyDecision } from '../../engine/state.js';
import type { ReadyStep } from '../../engine/types.js';
import { createTasks, type NewTask, type StoredTask } from '../../ledger/create-tasks.js';
import { ValidationError } from '../../lib/errors.js';
import { MissingRootError, type NewJob, type NewRun, type RunKey } from '../../queue/task-queues.js';
import { type CreateOutcome, heldItems, type PreparedTask, type RunCore } from './core.js';
import { holdChanges, isFlow } from './flows.js';

/**
 * Starting tasks: a new task's plan started by the engine (prepare), then stored in one statement
 * and its jobs added — a one-tool task's one job, a workflow's run as a flow (create).
 */
export class RunSubmit {
  constructor(private readonly core: RunCore) {}

  /**
   * A new task's plan, started by the engine: which steps start at once, which are skipped or
   * wait. A step that starts at once with an input over STEP_INPUT_MAX_BYTES is the client's
   * 400, heard now, rather than a task that fails.
   */
  prepare(task: StoredTask, plan: Plan, paramsField = 'params'): NewTask {
    const decision = start(freshState(taskMeta(task), plan), this.core.options());
    const tooLarge = decision.steps.find((change) => change.set.status === 'failed' && change.set.error?.name === 'StepInputTooLarge');
    if (tooLarge) {
      const what = plan.single ? 'the input' : `the input of step '${tooLarge.stepId}'`;
      const at = (tooLarge.set.error?.details as { at?: string } | undefined)?.at;
      const where = at ? ` (at input${at.startsWith('[') ? '' : '.'}${at})` : '';
      const max = this.core.deps.config.STEP_INPUT_MAX_BYTES;
      throw new ValidationError(
        `params make ${what} larger than ${max} bytes`,
        [
          {
            path: paramsField,
            message: `${what} would be larger than ${max} bytes of JSON${plan.single ? '' : ' once its templates are resolved'}${where}: the limit is STEP_INPUT_MAX_BYTES`,
          },
        ],
        'invalid_params',
      );
    }
    return { task, plan, decision };
  }

  /**
   * Stores prepared tasks in one statement, then adds their jobs: a one-tool task's one job, a
   * workflow's run as a flow (its root with its first children), one round trip per shard (and
   * tool). A task whose jobs a shard refused is removed again (nothing is left half created).
   * `parent`: the run of a sub-workflow's parent, whose root the child's root hangs under.
   * Returns, per task, whether it was stored (not: its idempotency key is taken) or refused.
   */
  async create(prepared: readonly PreparedTask[], parent?: RunKey): Promise<CreateOutcome[]> {
    // Limits per key first: a step held back is stored waiting, with no job.
    const held = await this.core.verbs.gateJobs(
      prepared.flatMap(({ decision }) => decision.jobs),
      new Map(prepared.map(({ task, plan }) => [task.id, { plan, owner: task.owner ?? '' }])),
    );
    const entries = held.size > 0 ? prepared.map((entry) => ({ ...entry, decision: holdBack(entry.decision, held) })) : prepared;
    const release = (list: readonly PreparedTask[]) =>
      this.core.verbs.releaseTasks(list.filter(({ plan }) => this.core.limited(plan)).map(({ task }) => task.id));
    const stored = await createTasks(this.core.deps.sql, entries, this.core.history).catch(async (error: unknown) => {
      await release(entries);
      throw error;
    });
    const refused = new Map<string, unknown>();
    // A quota counted beside the insert answers before any job is added: a task it refused is
    // removed as one a shard refused is.
    const refusals = await Promise.all(entries.map(({ reserving }) => reserving));
    entries.forEach(({ task }, index) => {
      if (refusals[index] !== undefined && stored.has(task.id)) refused.set(task.id, refusals[index]);
    });
    const fresh = entries.filter(({ task }) => stored.has(task.id) && !refused.has(task.id));
    const states = new Map(fresh.map(({ task, plan }) => [task.id, freshState(taskMeta(task), plan)]));
    if (fresh.length > 0) {
      // The jobs before limits held some back: a held map item's hold stands in for its job.
      const original = new Map(prepared.map(({ task, decision }) => [task.id, decision.jobs]));
      try {
        const jobOf = ({ task, plan, trace }: PreparedTask, step: ReadyStep): NewJob => ({
          step: { ...step, ...(task.delayMs > 0 ? { delayMs: task.delayMs } : {}) },
          single: plan.single === true,
          ...this.core.jobOptions(states.get(task.id)!, step, true),
          ...(trace ? { trace } : {}),
        });
        const singles = fresh.filter(({ plan }) => !isFlow(plan));
        const runs: NewRun[] = fresh
          .filter(({ plan }) => isFlow(plan))
          .map((entry) => {
            const { task, decision, trace } = entry;
            const own = new Map([[task.id, states.get(task.id)!]]);
            return {
              taskId: task.id,
              run: 1,
              taskType: task.taskType,
              jobs: decision.jobs.map((step) => jobOf(entry, step)),
              timers: decision.timers,
              holds: [...holdChanges(decision, own).add, ...heldItems(original.get(task.id) ?? [], held)],
              ...(parent && this.core.deps.queues.shardOf(parent.taskId) === this.core.deps.queues.shardOf(task.id) ? { parent } : {}),
              ...(trace ? { trace } : {}),
            };
          });
        const [jobsRefused, runsRefused] = await Promise.all([
          this.core.deps.queues.addJobs(singles.flatMap((entry) => entry.decision.jobs.map((step) => jobOf(entry, step)))),
          runs.length > 0 ? this.addRuns(runs) : new Map<string, unknown>(),
        ]);
        for (const [id, error] of [...jobsRefused, ...runsRefused]) refused.set(id, error);
      } catch (error) {
        for (const { task } of fresh) refused.set(task.id, error);
      }
    }
    if (refused.size > 0) await this.remove([...refused.keys()]);
    await release(entries.filter(({ task }) => refused.has(task.id) || !stored.has(task.id)));
    const accepted = fresh.filter(({ task }) => !refused.has(task.id));
    if (accepted.length > 0) {
      const decision = merge(accepted.map(({ decision }) => decision));
      // Jobs, timers and holds are in (a flow's with its root); what else a start may ask for
      // (children, an immediate end) follows. A new task's first transitions are not published: a
      // client following it starts from a snapshot.
      await this.core.verbs.carryOut(
        { ...decision, jobs: [], timers: [], transitions: [] },
        { started: [], moved: [] },
        accepted.map(({ task }) => states.get(task.id)!),
        new Map(),
        { treesMade: true },
      );
      if (held.size > 0) await this.core.verbs.admittedMeanwhile(accepted, held);
    }
    return entries.map(({ task }) => (refused.has(task.id) ? { refused: refused.get(task.id) } : stored.has(task.id) ? { created: true } : { created: false }));
  }

  /**
   * Adds runs as flows; a sub-workflow's run whose parent's root is gone (Redis lost it) makes
   * that root again (its processor then waits for what the parent's run waits on) and is added again.
   */
  async addRuns(runs: readonly NewRun[]): Promise<Map<string, unknown>> {
    const refused = await this.core.deps.queues.addRuns(runs);
    const orphans = runs.filter((run) => refused.get(run.taskId) instanceof MissingRootError);
    if (orphans.length === 0) return refused;
    await this.core.deps.queues.remakeRoots(orphans.map((run) => run.parent!));
    const again = await this.core.deps.queues.addRuns(orphans);
    for (const run of orphans) {
      if (again.has(run.taskId)) refused.set(run.taskId, again.get(run.taskId));
      else refused.delete(run.taskId);
    }
    return refused;
  }

  /** Undoes `create` for tasks that could not be enqueued: the tasks, their steps, items and history, and the idempotency keys they took. */
  private async remove(ids: string[]): Promise<void> {
    await this.core.deps.sql
      .$executeRawUnsafe(
        `WITH t AS (
           DELETE FROM tasks WHERE id = ANY($1::uuid[]) RETURNING id, created_at, owner_key, idempotency_key
         ), s AS (
           DELETE FROM steps s USING t WHERE s.task_id = t.id AND s.task_created_at = t.created_at
         ), i AS (
           DELETE FROM step_items i USING t WHERE i.task_id = t.id AND i.task_created_at = t.created_at
         ), e AS (
           DELETE FROM task_events e USING t WHERE e.task_id = t.id AND e.task_created_at = t.created_at
         )
         DELETE FROM idempotency_keys k USING t WHERE k.owner_key = t.owner_key AND k.idempotency_key = t.idempotency_key AND k.task_id = t.id`,
        ids,
      )
      .catch((error: Error) => this.core.deps.logger.error('could not remove tasks that failed to enqueue', { task_ids: ids, error: error.message }));
  }
}

/** What the engine needs to know of a new task besides its plan. */
function taskMeta(task: StoredTask): NewTaskMeta {
  return {
    id: task.id,
    createdAt: task.createdAt,
    taskType: task.taskType,
    params: task.params,
    callback: task.callbackUrl !== undefined,
    owner: task.owner ?? '',
    depth: task.depth ?? 0,
    parent: task.parent ? { taskId: task.parent.taskId, stepId: task.parent.stepId } : null,
  };
}

/** Several decisions as one (their lists joined), to carry out together. */
function merge(decisions: Decision[]): Decision {
  const merged = emptyDecision();
  for (const decision of decisions) {
    for (const key of Object.keys(merged) as (keyof Decision)[]) {
      const value = merged[key];
      if (Array.isArray(value)) (merged as unknown as Record<string, unknown[]>)[key] = [...value, ...(decision[key] as unknown[])];
    }
  }
  return merged;
}
