import type { Transition } from '../engine/state.js';
import { type Claimed, claimSteps, type StepClaim } from '../ledger/claim-steps.js';
import { noteSteps, type StepNote } from '../ledger/note-steps.js';
import { Batcher } from '../lib/batcher.js';
import type { RunCore } from './run-core.js';

/** Items per batch: one ledger call writes at most this many. */
const BATCH_MAX = 200;

/**
 * A worker's claims to run a step (and its notes: progress, a failed attempt to be retried),
 * batched: one ledger call serves every claim made at that moment.
 */
export class RunClaims {
  private readonly claims: Batcher<StepClaim, Claimed | undefined>;
  private readonly notes: Batcher<StepNote, boolean>;

  constructor(private readonly core: RunCore) {
    this.claims = new Batcher((claims) => this.core.safely(claims, (batch) => this.flushClaims(batch)), { maxSize: BATCH_MAX });
    this.notes = new Batcher((notes) => this.core.safely(notes, (batch) => this.flushNotes(batch)), { maxSize: BATCH_MAX });
  }

  /** Resolves when every claim and note handed in so far is written (or failed). */
  async idle(): Promise<void> {
    await Promise.all([this.claims.idle(), this.notes.idle()]);
  }

  /** A worker's claim to run a step or item; false: it may not run (its task ended, it finished, a later delivery has it). */
  async claim(claim: Omit<StepClaim, 'createdAt'>): Promise<boolean> {
    const createdAt = await this.core.createdAt(claim.taskId);
    return (await this.claims.add({ ...claim, createdAt })) !== undefined;
  }

  /** An adapter's progress, or a failed attempt that will be retried. */
  async note(note: Omit<StepNote, 'createdAt'>): Promise<void> {
    const createdAt = await this.core.createdAt(note.taskId);
    await this.notes.add({ ...note, createdAt });
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

  private async flushNotes(batch: StepNote[]): Promise<boolean[]> {
    const taken = await noteSteps(this.core.deps.sql, batch, this.core.history);
    const keys = new Set(taken.map((note) => `${note.taskId}/${note.stepId}/${note.item ?? ''}`));
    const at = new Date().toISOString();
    this.core.publish(
      batch
        .filter((note) => note.progress && note.item === undefined && keys.has(`${note.taskId}/${note.stepId}/`))
        .map((note) => ({ taskId: note.taskId, stepId: note.stepId, status: 'running', at, progress: note.progress! })),
    );
    return batch.map((note) => keys.has(`${note.taskId}/${note.stepId}/${note.item ?? ''}`));
  }
}
