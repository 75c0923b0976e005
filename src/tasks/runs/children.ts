import type { ChildStart, Report, TaskState } from '../../engine/state.js';
import { ACTIVE_TASK_STATUSES } from '../../engine/status.js';
import type { NewTask } from '../../ledger/create-tasks.js';
import { capErrorRecord, toErrorRecord, ValidationError } from '../../lib/errors.js';
import { PolicyDeniedError } from '../../lib/policy-errors.js';
import { uuidv7Time } from '../../lib/uuid7.js';
import type { RunKey } from '../../queue/task-queues.js';
import type { RunCore } from './core.js';

/** Sub-workflows: starting a step's child task, once, through the work gate. */
export class RunChildren {
  constructor(private readonly core: RunCore) {}

  /**
   * Starts a sub-workflow step's child task, once: its id was chosen (and stored with the step)
   * before. A child that exists already (a retried parent, or a start made again after a crash) is
   * resumed when it failed or was cancelled, reports its result when it completed, and is left
   * to run otherwise.
   */
  async startChild(child: ChildStart, parent?: RunKey): Promise<void> {
    const [state] = await this.core.peek([child.childTaskId]);
    if (state) {
      if (state.status === 'failed' || state.status === 'cancelled') await this.core.verbs.resume(child.childTaskId);
      else if (state.status === 'completed') await this.core.verbs.report(childReport(child, state));
      return;
    }
    if (!this.core.deps.planChild) throw new Error('this process cannot start sub-workflows (no planChild)');
    let prepared: NewTask;
    try {
      const planChild = (params: Record<string, unknown>) => this.core.deps.planChild!(child.workflow, params);
      const planned = await planChild(child.params);
      const admitted = this.core.deps.admitChild ? await this.core.deps.admitChild(child, planned, planChild) : planned;
      if (admitted === 'held') {
        this.core.deps.logger.warn('the policy could not decide on a sub-workflow: its child starts once it can', {
          task_id: child.parentTaskId,
          step_id: child.stepId,
        });
        return;
      }
      const { plan, params } = admitted;
      prepared = this.core.verbs.prepare(
        {
          id: child.childTaskId,
          createdAt: uuidv7Time(child.childTaskId)!,
          taskType: child.workflow.name,
          workflow: child.workflow,
          params,
          owner: child.owner,
          requestHash: '',
          priority: child.priority ?? 0,
          delayMs: 0,
          parent: { taskId: child.parentTaskId, createdAt: child.parentCreatedAt, stepId: child.stepId },
          depth: child.depth,
        },
        plan,
      );
    } catch (error) {
      if (!(error instanceof ValidationError || error instanceof PolicyDeniedError)) throw error;
      // The child cannot start with these params (or may not): the parent's step fails with the reasons.
      await this.core.verbs.report({
        type: 'child',
        taskId: child.parentTaskId,
        stepId: child.stepId,
        childTaskId: child.childTaskId,
        status: 'failed',
        unstarted: true,
        error: capErrorRecord({
          ...toErrorRecord(error),
          name: error instanceof PolicyDeniedError ? 'PolicyDenied' : 'InvalidChildParams',
          details: error.details,
        }),
        at: new Date(),
      });
      return;
    }
    // Made once: the child's id was stored with the parent's step, and a second insert of it does nothing.
    const [outcome] = await this.core.verbs.create([prepared], parent);
    if (outcome && 'refused' in outcome) throw outcome.refused;
  }

  /** The run a task is in now: a resumed sub-workflow's child hangs its new root under it. */
  async parentRun(taskId: string): Promise<RunKey | undefined> {
    const [state] = await this.core.peek([taskId]);
    return state && ACTIVE_TASK_STATUSES.has(state.status) ? { taskId, run: state.run } : undefined;
  }
}

/** What a child that completed already tells its parent's step (a start made again finds it done). */
function childReport(child: ChildStart, state: TaskState): Report {
  return {
    type: 'child',
    taskId: child.parentTaskId,
    stepId: child.stepId,
    childTaskId: child.childTaskId,
    status: 'completed',
    output: state.result ?? null,
    at: new Date(),
  };
}
