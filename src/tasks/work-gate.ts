import type { ChildStart } from '../engine/state.js';
import type { ApiKeyScope } from '../lib/config.js';
import { DependencyUnavailableError } from '../lib/errors.js';
import { PolicyDeniedError, PolicyUnavailableError } from '../lib/policy-errors.js';
import { QuotaExceededError } from '../lib/quota-exceeded-error.js';
import { type KeyQuotas, newClaimant } from '../queue/key-quotas.js';
import { isRedisUnavailable } from '../queue/redis.js';
import type { PolicyHook, PolicyInput } from './policy-hook.js';

/** Every path that makes work; the policy is told which one asks. */
export type WorkKind = PolicyInput['kind'];

/** What a refusal calls the work, in its message. */
const REFUSED: Record<WorkKind, string> = {
  submit: 'task',
  schedule: 'schedule',
  tick: 'scheduled task',
  retry: 'retry',
  replay: 'replay',
  child: 'sub-workflow',
  signal: 'signal',
};

/** Work asked for, on whose behalf. */
export interface WorkRequest {
  kind: WorkKind;
  /** The tool, or the workflow's name. */
  taskType: string;
  /** As validated (defaults filled in). */
  params: Record<string, unknown>;
  /** The asking key's id; a tick's and a child's: their owner's. Null (or '') without authentication. */
  keyId: string | null;
  scope: ApiKeyScope | null;
  /** Whose work it is: the task's or schedule's owner ('' without authentication). */
  owner: string;
  taskId?: string;
  schedule?: string;
  signal?: { name: string; payload: unknown; by: string };
  parent?: { taskId: string; stepId: string };
}

/** A task to count against a client's quotas (QUOTA_*): until it ends, it holds one of the client's tasks and its params' bytes. */
export interface QuotaClaim {
  /** `key:<id>`, `ip:<address>`, or `anonymous` (a schedule made without authentication). */
  client: string;
  taskId: string;
  /** The run it counts for: a new task's first (the default), or the run a retry is to make. */
  run?: number;
  delayMs?: number;
  /** Set by WorkGate.admit: this claim's mark on the run (newClaimant), which release takes back. */
  claimant?: string;
}

/** What the gate decided. */
export interface Admission {
  /** The params the policy rewrote (to be validated again by the caller); undefined: as asked. */
  rewritten?: Record<string, unknown>;
  /**
   * The quota's reservation, when it was left on its way (admit's `inFlight`): resolves to its
   * refusal (QuotaExceededError, DependencyUnavailableError), or undefined once the task is
   * counted; it never rejects.
   */
  reserving?: Promise<Error | undefined>;
}

/** The client whose quotas a key's work counts against when no request of it is there to say (a tick, a retried task's owner). */
export function ownerClient(owner: string): string {
  return owner ? `key:${owner}` : 'anonymous';
}

/**
 * The one admission of accepted work: every path that makes work (a submission, a schedule's
 * definition and each of its ticks, a retry, a dead-letter replay, a sub-workflow's child, a
 * signal) asks here, from the service that makes it, never from a route. The policy hook
 * (POLICY_URL) decides first, with its fail mode and its cache; then, for work that makes or
 * revives a task, the task is counted against its client's quotas. Limits per key on steps
 * (KEY_CONCURRENCY, KEY_RATE_PER_MINUTE, a plan's own) hold every task's steps in the ledger,
 * whichever path made the task (src/tasks/runs/submit.ts, runs/children.ts).
 *
 * Refusals are thrown: PolicyDeniedError (403), PolicyUnavailableError (closed fail mode, 503),
 * QuotaExceededError (429), DependencyUnavailableError (Redis did not answer the reservation).
 */
export class WorkGate {
  constructor(private readonly deps: { policy?: PolicyHook; quotas?: KeyQuotas } = {}) {}

  /** Whether quotas are counted at all. */
  get counts(): boolean {
    return this.deps.quotas?.enabled === true;
  }

  /**
   * Admits `request`, counting `claim` against its client's quotas when given. Returns the params
   * the policy rewrote (to be validated again by the caller, which calls release() if they do
   * not fit). With `inFlight`, a client far from its limits is not waited for: the reservation is
   * returned on its way (`reserving`), for a caller that stores the task meanwhile and must not
   * enqueue it before the reservation answers, nor release it before then (release(id, reserving)).
   */
  async admit(request: WorkRequest, claim?: QuotaClaim, options: { inFlight?: boolean } = {}): Promise<Admission> {
    let rewritten: Record<string, unknown> | undefined;
    if (this.deps.policy) {
      const decision = await this.deps.policy.decide(policyInput(request));
      if (!decision.allow) throw new PolicyDeniedError(decision.reason, REFUSED[request.kind]);
      rewritten = decision.params;
    }
    const admission: Admission = rewritten ? { rewritten } : {};
    if (!claim || !this.counts) return admission;
    const reserving = this.reserve(claim, rewritten ?? request.params);
    if (options.inFlight && !this.deps.quotas!.isNear(claim.client, claim.taskId)) {
      admission.reserving = reserving.then(
        () => undefined,
        (error: Error) => error,
      );
    } else await reserving;
    return admission;
  }

  /**
   * Takes back the reservation of a task admitted here whose run was not made after all (or whose
   * reservation went unanswered): the task stops counting unless another claimant of the same run
   * (a second retry at once) still holds it (KeyQuotas.undo). A reservation still on its way is
   * waited for first: an undo that reached Redis before it would find nothing to take back, and
   * the task would count until its lease lapsed.
   */
  release(claim: QuotaClaim, reserving?: Promise<unknown>): void {
    const quotas = this.deps.quotas;
    if (!quotas) return;
    const run = claim.run ?? 1;
    // A claim never reserved (admitted without quotas) has nothing to take back.
    const claimant = claim.claimant;
    if (claimant === undefined) return;
    if (reserving !== undefined) void reserving.then(() => quotas.undo(claim.taskId, run, claimant));
    else quotas.undo(claim.taskId, run, claimant);
  }

  private async reserve(claim: QuotaClaim, params: Record<string, unknown>): Promise<void> {
    const quotas = this.deps.quotas;
    if (!quotas?.enabled) return;
    // Only Redis is asked here: a lost connection is Redis away (a master failing over), not the database.
    const run = claim.run ?? 1;
    const claimant = newClaimant();
    claim.claimant = claimant;
    const refused = await quotas
      .reserve(claim.client, claim.taskId, Buffer.byteLength(JSON.stringify(params)), claim.delayMs ?? 0, run, claimant)
      .catch((error: unknown) => {
        // Unanswered is not undone: the client may resend the reservation once Redis is back
        // (an in-flight command is replayed on reconnect), so it is taken back as well (its mark
        // alone: nothing, if it never ran).
        quotas.undo(claim.taskId, run, claimant);
        throw isRedisUnavailable(error) ? new DependencyUnavailableError('redis', error) : error;
      });
    if (refused) {
      throw new QuotaExceededError(
        refused.limit,
        refused.max,
        refused.held,
        refused.limit === 'QUOTA_MAX_BYTES_PER_KEY' ? 'bytes of params' : 'unfinished tasks',
      );
    }
  }
}

function policyInput(request: WorkRequest): PolicyInput {
  return {
    kind: request.kind,
    task_type: request.taskType,
    params: request.params,
    key_id: request.keyId || null,
    scope: request.scope,
    owner: request.owner || null,
    ...(request.taskId !== undefined ? { task_id: request.taskId } : {}),
    ...(request.schedule !== undefined ? { schedule: request.schedule } : {}),
    ...(request.signal !== undefined ? { signal: request.signal } : {}),
    ...(request.parent !== undefined ? { parent: { task_id: request.parent.taskId, step_id: request.parent.stepId } } : {}),
  };
}

/**
 * A sub-workflow's child, asked about once its parent's decision is committed (Runs.startChild
 * runs after the transaction that chose the child's id, so no row lock is held while the policy
 * answers). Params the policy rewrote are planned again (`replan`, a ValidationError when they do
 * not fit); a refusal throws PolicyDeniedError, which fails the parent's step. When the policy
 * cannot decide under the closed fail mode, the child is `held`: not created, its parent's step
 * left running with the child's id, and the reconciler's repair starts it again later, asking
 * again. Children are not counted against quotas: their parent holds its owner's count already,
 * and a client at its quota would otherwise wait forever on parents waiting for their children.
 */
export async function admitChild<P extends { params: Record<string, unknown> }>(
  gate: WorkGate,
  child: Pick<ChildStart, 'childTaskId' | 'parentTaskId' | 'stepId' | 'workflow' | 'owner'>,
  planned: P,
  replan: (params: Record<string, unknown>) => Promise<P>,
): Promise<P | 'held'> {
  try {
    const { rewritten } = await gate.admit({
      kind: 'child',
      taskType: child.workflow.name,
      params: planned.params,
      keyId: child.owner || null,
      scope: null,
      owner: child.owner,
      taskId: child.childTaskId,
      parent: { taskId: child.parentTaskId, stepId: child.stepId },
    });
    return rewritten ? await replan(rewritten) : planned;
  } catch (error) {
    if (error instanceof PolicyUnavailableError) return 'held';
    throw error;
  }
}
