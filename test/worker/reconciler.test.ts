import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { finishPlan, planToolTask } from '../../src/engine/plan.js';
import { uuidv7 } from '../../src/lib/uuid7.js';
import { TaskStore } from '../../src/persistence/task-store.js';
import { createHarness, type Harness, waitForTask } from '../helpers/harness.js';

describe('the reconciler repairs runs whose jobs went missing', () => {
  let h: Harness;
  let store: TaskStore;
  beforeAll(async () => {
    // No timer: the test runs sweeps itself. Every active run counts as stale at once.
    h = await createHarness({ env: { RECONCILE_INTERVAL_MS: '0', RECONCILE_AFTER_MS: '0' } });
    store = new TaskStore(h.db.prisma);
  });
  afterAll(async () => {
    await h.close();
  });

  async function storeWithoutFlow(params: Record<string, unknown>): Promise<string> {
    // What the API leaves behind when its insert committed but it never heard so, and the
    // client saw a 503: a task in PostgreSQL with nothing in Redis.
    const id = uuidv7();
    const plan = finishPlan(planToolTask(h.registry.get('echo')!, params));
    await store.createMany([{ plan, task: { id, requestHash: 'x', priority: 0, delayMs: 0 } }]);
    return id;
  }

  it('enqueues again a stored task whose flow was never created, and it completes', async () => {
    const id = await storeWithoutFlow({ lost: true });
    const sweep = await h.worker!.runtime.reconciler.sweep();
    expect(sweep.restarted).toBe(1);
    const task = await waitForTask(h, id);
    expect(task).toMatchObject({ status: 'completed', result: { lost: true } });
    // The next sweep finds nothing to do.
    expect((await h.worker!.runtime.reconciler.sweep()).restarted).toBe(0);
  });

  it('re-runs a step left "running" by a job that vanished', async () => {
    const id = await storeWithoutFlow({ orphan: 1 });
    // The step claims it started (its worker died), and no job exists any more.
    await h.db.prisma.step.updateMany({ where: { taskId: id }, data: { status: 'running', attempts: 1, startedAt: new Date() } });
    await h.db.prisma.task.updateMany({ where: { id }, data: { status: 'running' } });
    const sweep = await h.worker!.runtime.reconciler.sweep();
    expect(sweep.restarted).toBe(1);
    const task = await waitForTask(h, id);
    expect(task.status).toBe('completed');
    expect(task.steps[0].attempts).toBeGreaterThanOrEqual(1);
  });

  it('leaves healthy runs alone', async () => {
    const { body } = await h.request('POST', '/assign-task', { task_type: 'sleep', params: { ms: 500 } });
    const sweep = await h.worker!.runtime.reconciler.sweep();
    expect(sweep.checked).toBeGreaterThanOrEqual(1);
    expect(sweep.restarted).toBe(0);
    expect((await waitForTask(h, body.task_id)).status).toBe('completed');
    expect(await h.db.prisma.step.findFirst({ where: { taskId: body.task_id } })).toMatchObject({ attempts: 1 });
  });
});
