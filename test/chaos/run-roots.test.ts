import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { holdJobId, rootJobId, TIMERS_QUEUE } from '../../src/queue/jobs.js';
import { closeTestConnections, testTools } from '../fixtures/tools.js';
import { FlowInspector } from '../helpers/flows.js';
import { createHarness, type Harness, poll, submit, waitForTask } from '../helpers/harness.js';
import { CHAOS_ENV, WorkerFleet } from './support.js';
import { sweep } from './sweep.js';

/**
 * A run's root (src/queue/jobs.ts) held by a worker that is SIGKILLed while it processes it: the
 * root came up early (its run's hold was lost with Redis), its worker is killed while it asks
 * PostgreSQL about the run, and another worker takes the root over once its lock expires, makes
 * the lost hold again and waits for the run's children; the run then ends as meant, and its root
 * completes once.
 */
describe("a run's root under a SIGKILL", () => {
  let h: Harness;
  let fleet: WorkerFleet;
  let flows: FlowInspector;

  beforeAll(async () => {
    // Short locks: a killed worker's root comes back within seconds. No reconciler: the root alone must cope.
    h = await createHarness({ worker: false, tools: testTools, env: { ...CHAOS_ENV, WORKER_LOCK_DURATION_MS: '2000', RECONCILE_INTERVAL_MS: '0' } });
    fleet = new WorkerFleet(h.env);
    await fleet.start(1);
    flows = new FlowInspector(h);
    const defined = await h.request('POST', '/workflows', {
      name: 'root_chaos',
      steps: [
        { id: 'a', tool: 'echo', input: { v: 1 } },
        { id: 'gate', depends_on: ['a'], wait: { signal: 'go' } },
        { id: 'b', tool: 'echo', depends_on: ['gate'], input: { go: '{{steps.gate.output.go}}' } },
      ],
      output: { b: '{{steps.b.output}}' },
    });
    expect(defined.status).toBe(201);
  }, 120_000);
  afterAll(async () => {
    await flows?.close();
    await fleet?.destroy();
    await h?.close();
    await closeTestConnections();
  }, 120_000);

  it('is taken over by another worker, which makes the lost hold again; the run ends as meant and its root completes once', async () => {
    const id = await submit(h, { task_type: 'root_chaos' });
    const root = await poll(
      async () => {
        const job = await flows.root(id);
        return job && (await job.getState()) === 'waiting-children' && (await flows.pending(job)).join() === holdJobId(id, 1, 'gate') ? job : undefined;
      },
      { label: 'the run to wait on its hold' },
    );

    // Hold the task's row: a root that asks PostgreSQL about its run waits on it.
    const client = new pg.Client({ connectionString: h.config.DATABASE_DIRECT_URL });
    await client.connect();
    try {
      await client.query('BEGIN');
      await client.query('SELECT 1 FROM tasks WHERE id = $1 FOR UPDATE', [id]);
      // The hold is lost: its root has no pending child left, comes up, and its worker asks PostgreSQL (no end mark: the run goes on).
      expect(await flows.queue(id, TIMERS_QUEUE).remove(holdJobId(id, 1, 'gate'))).toBe(1);
      await poll(async () => (await root.getState()) === 'active', { label: 'the root to be taken by the worker' });
      const [victim] = fleet.live;
      fleet.release(victim!);
      await victim!.kill();
    } finally {
      await client.query('ROLLBACK').catch(() => undefined);
      await client.end();
    }

    // Another worker takes the root over once its lock expires (the stalled check), and makes the hold again.
    await fleet.add();
    await poll(
      async () => {
        const job = await flows.root(id);
        return job && (await job.getState()) === 'waiting-children' && (await flows.pending(job)).join() === holdJobId(id, 1, 'gate');
      },
      { label: 'the root to wait on its hold again', timeoutMs: 30_000 },
    );
    expect((await h.request('GET', `/result/${id}`)).body.status).toBe('running');

    expect((await h.request('POST', `/tasks/${id}/signals/go`, { go: true })).status).toBe(200);
    const task = await waitForTask(h, id, 30_000);
    expect(task.status).toBe('completed');
    expect(task.result).toEqual({ b: { go: true } });
    const closed = await flows.closedRoot(id);
    expect(closed.id).toBe(rootJobId(id, 1));
    expect(await flows.completions(id, closed.id!)).toBe(1);
    await sweep(h, { settleMs: 30_000 });
  }, 120_000);
});
