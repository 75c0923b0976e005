import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { uuidv7 } from '../../src/lib/uuid7.js';
import { holdJobId, TIMERS_QUEUE, timerJobId } from '../../src/queue/jobs.js';
import { FlowInspector } from '../helpers/flows.js';
import { createHarness, type Harness, poll, submit, waitForTask } from '../helpers/harness.js';
import { storeToolTasks } from '../helpers/stored-tasks.js';

describe('the reconciler repairs runs whose jobs went missing', () => {
  let h: Harness;
  let flows: FlowInspector;
  beforeAll(async () => {
    // No timer: the test runs sweeps itself. Every active run counts as stale at once.
    h = await createHarness({ env: { RECONCILE_INTERVAL_MS: '0', RECONCILE_AFTER_MS: '0' } });
    flows = new FlowInspector(h);
    for (const definition of [
      { name: 'reconcile_gate', steps: [{ id: 'gate', wait: { signal: 'go' } }] },
      { name: 'reconcile_nap', steps: [{ id: 'nap', sleep: { ms: 600_000 } }] },
    ]) {
      const defined = await h.request('POST', '/workflows', definition);
      expect(defined.status, JSON.stringify(defined.body)).toBe(201);
    }
  });
  afterAll(async () => {
    await flows?.close();
    await h.close();
  });

  async function storeWithoutFlow(params: Record<string, unknown>): Promise<string> {
    // What the API leaves behind when its insert committed but it never heard so, and the
    // client saw a 503: a task in PostgreSQL with nothing in Redis.
    const id = uuidv7();
    await storeToolTasks(h.db.sql, h.registry, [{ id, params }]);
    return id;
  }

  it('enqueues again a stored task whose jobs were never added, and it completes', async () => {
    const id = await storeWithoutFlow({ lost: true });
    const sweep = await h.worker!.runtime.reconciler.sweep();
    expect(sweep.requeued).toBe(1);
    const task = await waitForTask(h, id);
    expect(task).toMatchObject({ status: 'completed', result: { lost: true } });
    // The next sweep finds nothing to do.
    expect((await h.worker!.runtime.reconciler.sweep()).requeued).toBe(0);
  });

  it('re-runs a step left "running" by a job that vanished', async () => {
    const id = await storeWithoutFlow({ orphan: 1 });
    // The step claims it started (its worker died), and no job exists any more.
    await h.db.prisma.step.updateMany({ where: { taskId: id }, data: { status: 'running', attempts: 1, startedAt: new Date() } });
    await h.db.prisma.task.updateMany({ where: { id }, data: { status: 'running' } });
    const sweep = await h.worker!.runtime.reconciler.sweep();
    expect(sweep.requeued).toBe(1);
    const task = await waitForTask(h, id);
    expect(task.status).toBe('completed');
    expect(task.steps[0].attempts).toBeGreaterThanOrEqual(1);
  });

  it('closes a step left running in a task that ended, whose job vanished', async () => {
    const id = await storeWithoutFlow({ left: 1 });
    // A step ran while its task failed (a sibling failed it); its job was lost with Redis.
    await h.db.prisma.step.updateMany({ where: { taskId: id }, data: { status: 'running', attempts: 1, startedAt: new Date() } });
    await h.db.prisma.task.updateMany({
      where: { id },
      data: { status: 'failed', finishedAt: new Date(), error: { name: 'StepFailed', message: 'a sibling failed' } },
    });
    const sweep = await h.worker!.runtime.reconciler.sweep();
    expect(sweep.requeued).toBe(1);
    const task = (await h.request('GET', `/result/${id}`)).body;
    expect(task.status).toBe('failed');
    expect(task.steps[0].status).toBe('cancelled');
    // Nothing was enqueued for it, and the next sweep does not look at it again.
    expect(await h.worker!.runtime.reconciler.sweep()).toMatchObject({ requeued: 0, failed: 0 });
  });

  it('leaves healthy runs alone', async () => {
    const { body } = await h.request('POST', '/assign-task', { task_type: 'sleep', params: { ms: 500 } });
    const sweep = await h.worker!.runtime.reconciler.sweep();
    expect(sweep.checked).toBeGreaterThanOrEqual(1);
    expect(sweep.requeued).toBe(0);
    expect((await waitForTask(h, body.task_id)).status).toBe('completed');
    expect(await h.db.prisma.step.findFirst({ where: { taskId: body.task_id } })).toMatchObject({ attempts: 1 });
  });

  it("drops a hold whose step no longer waits (its drop was lost), and the run's root closes; a standing hold stays", async () => {
    const id = await submit(h, { task_type: 'reconcile_gate' });
    // A sleep's timer beside it, in the same delayed set: not a hold, and left alone.
    const napping = await submit(h, { task_type: 'reconcile_nap' });
    const nap = await poll(
      async () => {
        const job = await flows.queue(napping, TIMERS_QUEUE).getJob(timerJobId(napping, 1, 'nap'));
        return job && (await job.getState()) === 'delayed' ? job : undefined;
      },
      { label: 'the sleep to have its timer' },
    );
    const timers = flows.queue(id, TIMERS_QUEUE);
    const hold = await poll(
      async () => {
        const job = await timers.getJob(holdJobId(id, 1, 'gate'));
        return job && (await job.getState()) === 'delayed' ? job : undefined;
      },
      { label: 'the wait to have its hold' },
    );
    // Its step waits: the hold stands, and the sweep leaves it.
    expect((await h.worker!.runtime.reconciler.sweep()).unheld).toBe(0);
    expect(await hold.getState()).toBe('delayed');
    // The run ended in PostgreSQL, and the worker that committed it died before its Redis
    // effects (the hold's drop, the root's end mark).
    await h.db.prisma.step.updateMany({ where: { taskId: id }, data: { status: 'cancelled', finishedAt: new Date() } });
    await h.db.prisma.task.updateMany({ where: { id }, data: { status: 'cancelled', finishedAt: new Date() } });
    expect((await h.worker!.runtime.reconciler.sweep()).unheld).toBe(1);
    expect(await timers.getJob(holdJobId(id, 1, 'gate'))).toBeUndefined();
    const root = await flows.closedRoot(id);
    expect(await flows.pending(root)).toEqual([]);
    expect((await h.worker!.runtime.reconciler.sweep()).unheld).toBe(0);
    expect(await nap.getState()).toBe('delayed');
  });
});
