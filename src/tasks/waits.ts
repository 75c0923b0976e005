import { z } from 'zod';
import { APPROVAL_DECISIONS, bufferedSignal, type PlanWait, type WaitStep } from '../engine/kinds/wait.js';
import type { Plan } from '../engine/plan.js';
import { isKind } from '../engine/registry.js';
import { isFinished, waitsForSomeone } from '../engine/status.js';
import type { Step, Task } from '../generated/prisma/client.js';
import { type ApprovalGrant, approvalKey, approvalLinks, type GrantProblem, openGrant } from '../lib/approval-links.js';
import type { ApiKeyScope, Config } from '../lib/config.js';
import { ConflictError, ForbiddenError, jsonPath, NotFoundError, type Problem, ValidationError } from '../lib/errors.js';
import { schemaProblems } from '../lib/json-schema.js';
import { jsonSize } from '../lib/limits.js';
import { PolicyDeniedError, PolicyUnavailableError } from '../lib/policy-errors.js';
import { unstorableProblems, zodProblems } from '../lib/problems.js';
import type { TaskStore } from '../persistence/task-store.js';
import type { Runs } from './runs.js';
import type { StepViewBody } from './task-view.js';
import type { WorkGate } from './work-gate.js';

/**
 * Wait steps from the outside (src/engine/kinds/wait.ts): signals sent with a key, approvals
 * decided through their links, and what a waiting step shows (its signal, its links).
 */

export const COMMENT_MAX_CHARS = 2000;

/** An approval's decision as a signal's payload (sent with a key), or as its page posts it. */
export const decisionSchema = z
  .object({
    decision: z.enum(APPROVAL_DECISIONS),
    comment: z.string().max(COMMENT_MAX_CHARS).optional(),
    fields: z.record(z.string(), z.unknown()).default({}),
  })
  .strict();

export interface WaitsDeps {
  config: LinkConfig & Pick<Config, 'STEP_OUTPUT_MAX_BYTES'>;
  store: TaskStore;
  runs: Runs;
  /** Asked before a signal or a decision is recorded (kind `signal`). */
  gate?: WorkGate;
}

/** Who sends a signal with a key: its id and scope (null without authentication). */
export interface Sender {
  keyId: string | null;
  scope: ApiKeyScope | null;
}

type StoredTask = Task & { steps: Step[] };

/** The wait steps of a stored task's plan. */
function waitSteps(task: { plan: unknown }): WaitStep[] {
  return ((task.plan as Plan | null)?.steps ?? []).filter((step) => isKind(step, 'wait'));
}

type Approval = NonNullable<PlanWait['approval']>;

/** What an approval page shows, or why its link is refused. */
export type ApprovalPage =
  | {
      ok: true;
      taskId: string;
      taskType: string;
      stepId: string;
      approver: string | null;
      shown: Record<string, unknown>;
      form?: Record<string, unknown>;
      expiresAt: Date;
    }
  | { ok: false; problem: GrantProblem | 'unavailable' | 'decided' | 'not_found' | 'refused' | 'policy_unavailable'; status?: string; reason?: string };

type LinkConfig = Pick<Config, 'APPROVAL_SECRET' | 'CALLBACK_SECRET' | 'NODE_ENV' | 'APPROVAL_LINK_TTL_DAYS' | 'PUBLIC_URL' | 'PORT'>;

/**
 * What a step waiting on someone waits for (its signal; an approval: for whom, and with `links`
 * its signed links); undefined for any other step. Links go only to those who may hand them out
 * (an admin key, the task.waiting callback): whoever else holds one could decide for its approver.
 */
export type WaitingView = (
  task: Pick<Task, 'id' | 'run'> & { plan: unknown },
  step: Pick<Step, 'stepId' | 'status' | 'reason' | 'startedAt' | 'wakeAt'>,
  links: boolean,
) => StepViewBody['waiting_for'];

/** The view of waiting steps, with links signed by this configuration's key. */
export function waitingForView(config: LinkConfig): WaitingView {
  const key = approvalKey(config);
  const baseUrl = config.PUBLIC_URL ?? `http://localhost:${config.PORT}`;
  return (task, step, links) => {
    if (!waitsForSomeone(step.status, step.reason)) return undefined;
    const planned = waitSteps(task).find((candidate) => candidate.id === step.stepId);
    if (!planned) return undefined;
    const approval = planned.wait.approval;
    const approvers = approval?.approvers ?? [];
    return {
      signal: planned.wait.signal,
      ...(step.wakeAt ? { timeout_at: step.wakeAt.toISOString() } : {}),
      ...(approval
        ? {
            approval: {
              approvers,
              ...(links
                ? {
                    links:
                      key && step.startedAt
                        ? approvalLinks(
                            key,
                            baseUrl,
                            { taskId: task.id, stepId: step.stepId, run: task.run, approvers, startedAt: step.startedAt, wakeAt: step.wakeAt },
                            config.APPROVAL_LINK_TTL_DAYS,
                          )
                        : [],
                  }
                : {}),
            },
          }
        : {}),
    };
  };
}

export class Waits {
  private readonly key: Buffer | undefined;

  constructor(private readonly deps: WaitsDeps) {
    this.key = approvalKey(deps.config);
    this.waitingFor = waitingForView(deps.config);
  }

  /** Whether approval links are made (production needs APPROVAL_SECRET or CALLBACK_SECRET). */
  get linksEnabled(): boolean {
    return this.key !== undefined;
  }

  /** What a waiting step waits for, shown on the step in /result, the event stream and callbacks. */
  readonly waitingFor: WaitingView;

  /**
   * POST /tasks/:id/signals/:name: the payload checked, then recorded if the step still waits. An
   * approval is decided by someone other than its task's submitter (four eyes): the key that
   * submitted the task is refused (403 `approval_by_submitter`), and the decision of another key
   * is recorded as `key:<id>`, apart from the approvers' names that links record.
   */
  async signal(task: StoredTask, name: string, payload: unknown, sender: Sender): Promise<{ stepId: string; buffered: boolean }> {
    const step = waitSteps(task).find((candidate) => candidate.wait.signal === name);
    if (!step) {
      const known = waitSteps(task).map((candidate) => candidate.wait.signal);
      throw new NotFoundError('signal_not_found', `task ${task.id} has no step that waits for signal ${JSON.stringify(name)}`, { signals: known });
    }
    const approval = step.wait.approval;
    // Without authentication nobody is told apart: there is no submitter to refuse.
    if (approval && sender.keyId !== null && sender.keyId === task.ownerKey) {
      throw new ForbiddenError(
        'approval_by_submitter',
        `step ${step.id} is an approval: the key that submitted the task may not decide it; an approver decides through their link, or another (admin) key`,
        { step: step.id, approvers: approval.approvers ?? [] },
      );
    }
    const checked = this.checkPayload(step, payload, [], false);
    const by = sender.keyId === null ? 'anonymous' : approval ? `key:${sender.keyId}` : sender.keyId;
    const { buffered } = await this.record(task, step, checked, by, 'key', sender);
    return { stepId: step.id, buffered };
  }

  /** The approval a link is for, to show on its page. */
  async page(token: string): Promise<ApprovalPage> {
    const found = await this.open(token);
    if (!found.ok) return found;
    const { grant, task, step, approval } = found;
    const input = (step.input ?? {}) as Record<string, unknown>;
    const show = approval.show;
    return {
      ok: true,
      taskId: task.id,
      taskType: task.taskType,
      stepId: step.stepId,
      approver: approverOf(approval, grant),
      shown: show ? Object.fromEntries(show.filter((field) => field in input).map((field) => [field, input[field]])) : input,
      ...(approval.form ? { form: approval.form } : {}),
      expiresAt: new Date(grant.expiresAt * 1000),
    };
  }

  /** A decision posted on a link's page: recorded if the step still waits; problems with the form come back to show. */
  async decide(
    token: string,
    form: { decision: unknown; comment?: unknown; fields: Record<string, unknown>; name?: unknown },
  ): Promise<{ ok: true; decision: string } | { ok: false; problem: ApprovalPage & { ok: false } } | { ok: false; problems: Problem[] }> {
    const found = await this.open(token);
    if (!found.ok) return { ok: false, problem: found };
    const { grant, task, planned, approval } = found;
    let payload: z.output<typeof decisionSchema>;
    try {
      payload = this.checkPayload(
        planned,
        { decision: form.decision, ...(form.comment ? { comment: form.comment } : {}), fields: form.fields },
        [],
        true,
      ) as typeof payload;
    } catch (error) {
      if (error instanceof ValidationError) return { ok: false, problems: error.details as Problem[] };
      throw error;
    }
    const named = typeof form.name === 'string' && form.name.trim() !== '' ? form.name.trim().slice(0, 200) : undefined;
    const by = approverOf(approval, grant) ?? (named ? `link:${named}` : 'link');
    try {
      await this.record(task, planned, payload, by, 'link', { keyId: null, scope: null });
    } catch (error) {
      if (error instanceof ConflictError) return { ok: false, problem: { ok: false, problem: 'decided' } };
      if (error instanceof PolicyDeniedError)
        return { ok: false, problem: { ok: false, problem: 'refused', ...(error.reason ? { reason: error.reason } : {}) } };
      if (error instanceof PolicyUnavailableError) return { ok: false, problem: { ok: false, problem: 'policy_unavailable' } };
      throw error;
    }
    return { ok: true, decision: payload.decision };
  }

  private async open(
    token: string,
  ): Promise<{ ok: true; grant: ApprovalGrant; task: StoredTask; step: Step; planned: WaitStep; approval: Approval } | (ApprovalPage & { ok: false })> {
    if (!this.key) return { ok: false, problem: 'unavailable' };
    const grant = openGrant(this.key, token);
    if (typeof grant === 'string') return { ok: false, problem: grant };
    const task = await this.deps.store.get(grant.taskId);
    const step = task?.steps.find((candidate) => candidate.stepId === grant.stepId);
    const planned = task ? waitSteps(task).find((candidate) => candidate.id === grant.stepId) : undefined;
    const approval = planned?.wait.approval;
    if (!task || !step || !planned || !approval) return { ok: false, problem: 'not_found' };
    // Single use: the decision recorded, the step waits no more (nor does it for a link of an earlier run).
    if (task.run !== grant.run || !waitsForSomeone(step.status, step.reason) || isFinished(task.status))
      return { ok: false, problem: 'decided', status: step.status };
    return { ok: true, grant, task, step, planned, approval };
  }

  /** The payload as the step will record it, or a ValidationError with every problem at its path under `prefix`. */
  private checkPayload(step: WaitStep, payload: unknown, prefix: PropertyKey[], coerce: boolean): unknown {
    const problems: Problem[] = unstorableProblems(payload, prefix);
    let value = payload;
    if (step.wait.approval) {
      const parsed = decisionSchema.safeParse(payload);
      if (!parsed.success) problems.push(...zodProblems(parsed.error, prefix));
      else {
        value = parsed.data;
        const form = step.wait.approval.form;
        if (form) problems.push(...schemaProblems(form, parsed.data.fields, [...prefix, 'fields'], coerce));
      }
    } else if (step.wait.schema) {
      problems.push(...schemaProblems(step.wait.schema, payload, prefix));
    }
    const size = jsonSize(value, this.deps.config.STEP_OUTPUT_MAX_BYTES);
    if (size.over)
      problems.push({ path: jsonPath(prefix), message: `is more than STEP_OUTPUT_MAX_BYTES (${this.deps.config.STEP_OUTPUT_MAX_BYTES}) bytes of JSON` });
    if (problems.length > 0) throw new ValidationError(`the payload does not fit signal ${step.wait.signal} of step ${step.id}`, problems, 'invalid_payload');
    return value;
  }

  /**
   * Records a signal or a decision for a step that waits; a signal (not an approval) for a step
   * that does not wait yet is kept for it (`buffered`), one per step: the step takes it when it
   * starts waiting (src/engine/kinds/wait.ts).
   */
  private async record(task: StoredTask, step: WaitStep, payload: unknown, by: string, via: 'key' | 'link', sender: Sender): Promise<{ buffered: boolean }> {
    const state = task.steps.find((candidate) => candidate.stepId === step.id);
    if (isFinished(task.status))
      throw new ConflictError('task_finished', `the task already ended (${task.status}); it waits for nothing`, { status: task.status });
    const early = state?.status === 'pending' && step.wait.approval === undefined;
    if (early && bufferedSignal(state.output)) throw alreadyKept(step);
    if (!state || (!early && !waitsForSomeone(state.status, state.reason))) throw notWaiting(step, state?.status);
    // What the signal lets go on is work: the gate decides, as for a submission.
    await this.deps.gate?.admit({
      kind: 'signal',
      taskType: task.taskType,
      params: (task.params ?? {}) as Record<string, unknown>,
      keyId: sender.keyId,
      scope: sender.scope,
      owner: task.ownerKey,
      taskId: task.id,
      signal: { name: step.wait.signal, payload, by },
    });
    const { recorded } = await this.deps.runs.report({
      type: 'signal',
      taskId: task.id,
      run: task.run,
      stepId: step.id,
      signal: step.wait.signal,
      payload,
      by,
      via,
      at: new Date(),
    });
    // Another signal got there first (or the wait timed out, or the task ended) since it was read.
    if (!recorded) throw early ? alreadyKept(step) : notWaiting(step, 'completed');
    return { buffered: early };
  }
}

function alreadyKept(step: WaitStep): ConflictError {
  return new ConflictError(
    'already_signalled',
    `step ${step.id} does not wait yet, and already keeps a signal ${step.wait.signal} for when it does: the first signal stands`,
    { step: step.id, status: 'pending' },
  );
}

function notWaiting(step: WaitStep, status: string | undefined): ConflictError {
  return status === 'pending' || status === undefined
    ? new ConflictError(
        'not_waiting',
        `step ${step.id} does not wait for signal ${step.wait.signal} yet (it is ${status ?? 'pending'}); send it once it waits`,
        {
          step: step.id,
          status: status ?? 'pending',
        },
      )
    : new ConflictError('already_signalled', `step ${step.id} no longer waits for signal ${step.wait.signal} (it is ${status}): the first signal stands`, {
        step: step.id,
        status,
      });
}

function approverOf(approval: Approval, grant: ApprovalGrant): string | null {
  return grant.approver >= 0 ? (approval.approvers?.[grant.approver] ?? null) : null;
}
