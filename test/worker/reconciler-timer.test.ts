import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { uuidv7 } from '../../src/lib/uuid7.js';
import type { Reconciler, Sweep } from '../../workers/runtime/reconciler.js';
import type { WorkerProcess } from '../../workers/worker.js';
import { createHarness, type Harness, poll, waitForTask } from '../helpers/harness.js';
import { storeToolTasks } from '../helpers/stored-tasks.js';

/**
 * The reconciler as it runs in a deployment: on its own timer, in two workers that share one
 * leader lock, and only for runs older than RECONCILE_AFTER_MS. (test/worker/reconciler.test.ts
 * calls sweep() by hand to check what one sweep repairs.)
 */

const INTERVAL_MS = 200;
/** The leader lock outlives a short interval: Math.max(1_000, interval - 100) in reconciler.ts. */
const LOCK_MS = 1_000;
const AGE_MS = 5_000;

interface Observed {
  worker: number;
  /** When it began and (sweeps) ended, Date.now(). */
  at: number;
  done?: number;
  sweep?: Sweep;
}

describe('the reconciler on its timer, in two workers', () => {
  let h: Harness;
  const workers: WorkerProcess[] = [];
  /** Every tick of either worker's timer, and what the sweeps found (only the leader sweeps). */
  const ticks: Observed[] = [];
  const sweeps: Observed[] = [];

  /** Records the ticks and sweeps of a worker's reconciler, still running the real ones. */
  function observe(reconciler: Reconciler, worker: number): void {
    const internals = reconciler as unknown as { sweepIfLeader(): Promise<Sweep | undefined> };
    const sweepIfLeader = internals.sweepIfLeader.bind(reconciler);
    const sweep = reconciler.sweep.bind(reconciler);
    vi.spyOn(internals, 'sweepIfLeader').mockImplementation(() => {
      ticks.push({ worker, at: Date.now() });
      return sweepIfLeader();
    });
    vi.spyOn(reconciler, 'sweep').mockImplementation(async () => {
      const seen: Observed = { worker, at: Date.now() };
      sweeps.push(seen);
      seen.sweep = await sweep();
      seen.done = Date.now();
      return seen.sweep;
    });
  }

  beforeAll(async () => {
    h = await createHarness({ worker: false, env: { RECONCILE_INTERVAL_MS: String(INTERVAL_MS), RECONCILE_AFTER_MS: String(AGE_MS) } });
    for (let n = 0; n < 2; n += 1) workers.push(await h.startWorker());
  });
  afterAll(async () => {
    await h.close();
  });

  /** A task in PostgreSQL with nothing in Redis (its jobs were never added), accepted at `receivedAt`. */
  async function storeWithoutFlow(params: Record<string, unknown>, receivedAt: Date): Promise<string> {
    const id = uuidv7(receivedAt);
    await storeToolTasks(h.db.sql, h.registry, [{ id, params }]);
    return id;
  }

  it('repairs a run older than RECONCILE_AFTER_MS by itself, and leaves a younger one alone until it is that old', async () => {
    for (const [index, worker] of workers.entries()) observe(worker.runtime.reconciler, index);
    const old = await storeWithoutFlow({ age: 'old' }, new Date(Date.now() - 10 * AGE_MS));
    const young = await storeWithoutFlow({ age: 'young' }, new Date());
    const storedAt = Date.now();
    const { createdAt: youngSince } = await h.db.prisma.task.findFirstOrThrow({ where: { id: young } });

    // Nobody calls sweep() here: the timer does.
    expect(await waitForTask(h, old)).toMatchObject({ status: 'completed', result: { age: 'old' } });
    const repaired = await waitForTask(h, young, AGE_MS + 15_000);
    expect(repaired).toMatchObject({ status: 'completed', result: { age: 'young' } });

    // The young run was not started before it reached the age...
    const youngEnd = youngSince.getTime() + AGE_MS;
    expect(Date.parse(repaired.steps[0].started_at)).toBeGreaterThanOrEqual(youngEnd);
    // ...although sweeps that could see it ran while it was younger.
    const duringYouth = sweeps.filter((seen) => seen.at > storedAt && seen.done !== undefined && seen.done < youngEnd);
    expect(duringYouth.length, 'sweeps while the young run was younger than the age').toBeGreaterThan(0);
  });

  it('lets one worker sweep per lock period although both tick every interval', async () => {
    for (const [index, worker] of workers.entries()) observe(worker.runtime.reconciler, index);
    ticks.length = 0;
    sweeps.length = 0;
    const from = Date.now();
    // Enough ticks that sweeping on every one of them could not hide under the lock's bound.
    await poll(() => [0, 1].every((worker) => ticks.filter((tick) => tick.worker === worker).length >= 10), {
      label: 'both reconcilers to tick ten times',
      timeoutMs: 20_000,
    });
    const elapsed = Date.now() - from;
    const taken = sweeps.length;
    const ticked = ticks.length;
    expect(ticked).toBeGreaterThanOrEqual(20);
    expect(taken).toBeGreaterThan(0);
    // Lock acquisitions are at least LOCK_MS apart. Allowance: acquisitions taken before `from`
    // whose sweep began after it on a slow event loop.
    expect(taken).toBeLessThanOrEqual(Math.floor(elapsed / LOCK_MS) + 3);
    // Without the lock every tick would sweep.
    expect(taken).toBeLessThan(ticked / 2);
  });
});
