import type { Transition } from '../../engine/state.js';
import { type Claimed, claimSteps, type StepClaim } from '../../ledger/claim-steps.js';
import { Batcher } from '../../lib/batcher.js';
import type { RunCore } from './core.js';

/** Items per batch: one ledger call writes at most this many. */
const BATCH_MAX = 200;

/**
 * A worker's claims to run a step (or a map item) before its adapter runs, batched: one ledger
 * call serves every claim made at that moment.
 */
export class RunClaims {
  private readonly claims: Batcher<StepClaim, Claimed | undefined>;

  constructor(private readonly core: RunCore) {
    this.claims = new Batcher((claims) => this.core.safely(claims, (batch) => this.flushClaims(batch)), { maxSize: BATCH_MAX });
  }

  /** Resolves when every claim handed in so far is written (or failed). */
  idle(): Promise<void> {
    return this.claims.idle();
  }

  /** A worker's claim to run a step or item; false: it may not run (its task ended, it finished, a later delivery has it). */
  async claim(claim: Omit<StepClaim, 'createdAt'>): Promise<boolean> {
    const createdAt = await this.core.createdAt(claim.taskId);
    return (await this.claims.add({ ...claim, createdAt })) !== undefined;
  }

  private async flushClaims(batch: StepClaim[]): Promise<(Claimed | undefined)[]> {
    // Of several claims of one step in a batch, the latest delivery's is the one that counts.
    const key = (claim: StepClaim) => `${claim.taskId}/${claim.stepId}/${claim.item ?? ''}/${claim.run}`;
    const latest = new Map<string, StepClaim>();
    for (const claim of batch) {
      const seen = latest.get(key(claim));
      if (!seen || claim.attempt > seen.attempt) latest.set(key(claim), claim);
    }
    const claimed = await claimSteps(this.core.deps.sql, [...latest.values()], this.core.history);
    const took = new Map(claimed.map((claim) => [`${claim.taskId}/${claim.stepId}/${claim.item ?? ''}`, claim]));
    const transitions: Transition[] = [];
    const at = new Date().toISOString();
    for (const claim of claimed) {
      if (claim.taskBegan) transitions.push({ taskId: claim.taskId, status: 'running', at });
      if (claim.item === undefined) transitions.push({ taskId: claim.taskId, stepId: claim.stepId, status: 'running', at });
    }
    this.core.publish(transitions);
    return batch.map((claim) => (latest.get(key(claim)) === claim ? took.get(`${claim.taskId}/${claim.stepId}/${claim.item ?? ''}`) : undefined));
  }
}
