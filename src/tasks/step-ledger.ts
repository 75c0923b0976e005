import type { AttemptLogEntry } from '../ledger/attempt-logs.js';
import type { StepClaim } from '../ledger/claim-steps.js';
import type { StepNote } from '../ledger/note-steps.js';
import type { ErrorRecord } from '../lib/errors.js';
import type { Runs } from './runs.js';

/** The step (or map item) a job runs, as its job data names it. */
export interface StepRef {
  taskId: string;
  run: number;
  stepId: string;
  item?: number;
  tool: string;
  /** A one-tool task's only step: its result ends the task in one write. */
  single?: boolean;
  /** Its job passed limits per key, which its result gives back. */
  limited?: boolean;
}

/** How a step's last attempt ended. */
export interface StepResult {
  attempt: number;
  try: number;
  worker: string;
  jobId?: string;
  status: 'completed' | 'failed' | 'cancelled';
  output?: unknown;
  error?: ErrorRecord;
  /** A failed step's input, kept with its dead letter. */
  input?: unknown;
  startedAt: Date;
  finishedAt: Date;
}

/**
 * What a step processor (workers/runtime/step-processor.ts) tells PostgreSQL about the jobs it
 * runs. The built-in worker holds it in-process (runsLedger, on the run driver); a worker of a
 * user's own holds no database and says the same over HTTP (workers/sdk), to the API's
 * `POST /workers/{worker_id}/steps`, which calls runsLedger. One implementation of the rules,
 * whichever side of the wire.
 */
export interface StepLedger {
  /** Records that a delivery starts; false: the step may not run (its task ended, or it finished already). */
  claim(claim: Omit<StepClaim, 'createdAt'> & { tool: string }): Promise<boolean>;
  /** Records a step's final result; when it is not recorded, what the recorded one caused is made sure of (settle). Returns whether it was recorded. */
  finish(ref: StepRef, result: StepResult): Promise<boolean>;
  /**
   * After a result not recorded, or a delivery that may not run: what the recorded result caused
   * is made again where it went missing. Throws when the result must be written on a later delivery.
   */
  settle(ref: StepRef): Promise<void>;
  /** Progress, or a failed attempt that will be retried. */
  note(note: Omit<StepNote, 'createdAt'> & { tool: string }): Promise<void>;
  /** What the tool logged through ctx.logger during an attempt (bounded by the worker). */
  logs(entry: Omit<AttemptLogEntry, 'createdAt'> & { tool: string }): Promise<void>;
}

/** The ledger on the run driver: what the built-in worker uses, and what the API does for a user's worker. */
export function runsLedger(runs: Runs): StepLedger {
  const ledger: StepLedger = {
    claim: ({ tool: _tool, ...claim }) => runs.claim(claim),
    note: ({ tool: _tool, ...note }) => runs.note(note),
    logs: ({ tool: _tool, ...entry }) => runs.logs(entry),
    async finish(ref, result) {
      const common = {
        taskId: ref.taskId,
        run: ref.run,
        stepId: ref.stepId,
        attempt: result.attempt,
        try: result.try,
        worker: result.worker,
        ...(result.jobId !== undefined ? { jobId: result.jobId } : {}),
        status: result.status,
        ...(result.output !== undefined ? { output: result.output } : {}),
        ...(result.error !== undefined ? { error: result.error } : {}),
        ...(result.status === 'failed' && result.input !== undefined ? { input: result.input } : {}),
        startedAt: result.startedAt,
        finishedAt: result.finishedAt,
      };
      const recorded = ref.single
        ? (await runs.finishSingle({ ...common, tool: ref.tool }, ref.limited === true)).recorded
        : (await runs.report({ type: 'result', ...common, ...(ref.item !== undefined ? { item: ref.item } : {}) })).recorded;
      if (!recorded) await ledger.settle(ref);
      return recorded;
    },
    /**
     * A one-tool task's result refused while its run is active and its step has none read the
     * task before a retry's transaction committed (a retry adds the new run's job before it
     * commits, and that job ran in between): it throws, and the result is written on the job's
     * next delivery. A step left running in a task that ended meanwhile (its worker died) is
     * closed as cancelled.
     */
    async settle(ref) {
      const { taskId, run, stepId, item, single } = ref;
      const [task] = await runs.states([taskId]);
      if (!task || task.run !== run) return;
      const step = task.steps.get(stepId);
      const active = task.status === 'queued' || task.status === 'running';
      if (single && active && step && (step.status === 'queued' || step.status === 'running')) {
        throw new Error(`the result of run ${run} was refused while that run is active: it is written on the job's next delivery`);
      }
      // A step (or item) left running by a task or map that ended meanwhile, whose job came back after a backoff or a crash: closed.
      const stopped = !active || (item !== undefined && step?.status !== 'running');
      if (stopped && (item !== undefined || step?.status === 'running'))
        await runs.report({ type: 'lost', taskId, run, stepId, ...(item !== undefined ? { item } : {}), at: new Date() });
      else await runs.repair([taskId]);
    },
  };
  return ledger;
}
