import { type Job, Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { holdJobId, rootJobId, stepJobId, TASKS_QUEUE, TIMERS_QUEUE, toolQueueName } from '../../src/queue/jobs.js';
import { Shards } from '../../src/queue/shards.js';
import { closeTestConnections, observationKey, testTools } from '../fixtures/tools.js';
import { FlowInspector } from '../helpers/flows.js';
import { createHarness, type Harness, poll, submit, waitForTask } from '../helpers/harness.js';

/**
 * A workflow's run is a BullMQ flow (src/queue/jobs.ts): BullMQ's own state is read during and
 * after a diamond, a map and a sub-workflow — the root waits in waiting-children while work
 * remains, every step job, item job, timer and hold is its child, a sub-workflow's root hangs
 * under its parent's, and nothing is left waiting once the runs end.
 */
describe('runs as BullMQ flows', () => {
  let h: Harness;
  let flows: FlowInspector;
  const queue = (taskId: string, name: string) => flows.queue(taskId, name);
  const root = (taskId: string, run = 1) => flows.root(taskId, run);
  const pending = (job: Job) => flows.pending(job);
  const processed = (job: Job) => flows.children(job);
  const closedRoot = (taskId: string, run = 1) => flows.closedRoot(taskId, run);
  const define = async (definition: Record<string, unknown>) => {
    const response = await h.request('POST', '/workflows', definition);
    expect(response.status, JSON.stringify(response.body)).toBe(201);
  };
  const waitingStep = (taskId: string, stepId: string) =>
    poll(
      async () => {
        const view = (await h.request('GET', `/result/${taskId}`)).body as { steps: { id: string; status: string }[] };
        return view.steps.find((step) => step.id === stepId)?.status === 'waiting';
      },
      { label: `step ${stepId} to wait` },
    );

  beforeAll(async () => {
    h = await createHarness({ tools: testTools });
    flows = new FlowInspector(h);
    await define({
      name: 'flow_diamond',
      steps: [
        { id: 'a', tool: 'echo', input: { v: 1 } },
        { id: 'b', tool: 'echo', depends_on: ['a'], input: { v: 2 } },
        { id: 'gate', depends_on: ['a'], wait: { signal: 'go' } },
        { id: 'd', tool: 'echo', depends_on: ['b', 'gate'], input: { b: '{{steps.b.output.v}}', go: '{{steps.gate.output.ok}}' } },
      ],
      output: { d: '{{steps.d.output}}' },
    });
    await define({
      name: 'flow_map',
      parameters: [{ name: 'values', type: 'array', required: true }],
      steps: [
        { id: 'list', tool: 'echo', input: { values: '{{params.values}}' } },
        {
          id: 'each',
          tool: 'broken',
          depends_on: ['list'],
          for_each: '{{steps.list.output.values}}',
          max_parallel: 2,
          on_failure: 'continue',
          input: { message: 'item {{item}} fails on purpose' },
        },
        { id: 'after', tool: 'echo', depends_on: ['each'], input: { done: true } },
      ],
    });
    await define({
      name: 'flow_child',
      steps: [{ id: 'hold_on', wait: { signal: 'release' } }],
      output: { released: '{{steps.hold_on.output.ok}}' },
    });
    await define({
      name: 'flow_parent',
      steps: [
        { id: 'first', tool: 'echo', input: { v: 1 } },
        { id: 'sub', workflow: 'flow_child', depends_on: ['first'] },
        { id: 'last', tool: 'echo', depends_on: ['sub'], input: { child: '{{steps.sub.output}}' } },
      ],
    });
    await define({ name: 'flow_hang', steps: [{ id: 'long', tool: 'hang', input: { key: 'flow-hang' } }] });
  });
  afterAll(async () => {
    await flows?.close();
    await h?.close();
    await closeTestConnections();
  });

  it('a diamond: the root waits in waiting-children with every step job and the wait hold as its children; it completes once, after the last step', async () => {
    const id = await submit(h, { task_type: 'flow_diamond' });
    await waitingStep(id, 'gate');
    const job = await root(id);
    expect(job).toBeDefined();
    await poll(async () => (await job!.getState()) === 'waiting-children', { label: 'the root to wait for its children' });
    // b ran and a ran; what is left is the wait, which has no job of its own: its hold stands in for it.
    await poll(async () => (await pending(job!)).join() === holdJobId(id, 1, 'gate'), { label: 'only the hold to be pending' });
    expect(await processed(job!)).toEqual([stepJobId(id, 1, 'a'), stepJobId(id, 1, 'b')].sort());
    const hold = await queue(id, TIMERS_QUEUE).getJob(holdJobId(id, 1, 'gate'));
    expect(await hold!.getState()).toBe('delayed');
    expect(hold!.parent?.id).toBe(rootJobId(id, 1));

    expect((await h.request('POST', `/tasks/${id}/signals/go`, { ok: true })).status).toBe(200);
    const task = await waitForTask(h, id);
    expect(task.status).toBe('completed');
    const closed = await closedRoot(id);
    expect(closed.progress).toEqual({ ended: 'completed' });
    // The hold went (removed, not processed); d ran under the same root.
    expect(await processed(closed)).toEqual([stepJobId(id, 1, 'a'), stepJobId(id, 1, 'b'), stepJobId(id, 1, 'd')].sort());
    expect(await pending(closed)).toEqual([]);
    expect(await queue(id, TIMERS_QUEUE).getJob(holdJobId(id, 1, 'gate'))).toBeUndefined();
    for (const step of ['a', 'b', 'd']) {
      const stepJob = await queue(id, toolQueueName('echo')).getJob(stepJobId(id, 1, step));
      expect(stepJob?.parent?.id, step).toBe(rootJobId(id, 1));
    }
    // Completed once, after the last step.
    await flows.expectClosedFlow(
      id,
      ['a', 'b', 'd'].map((step) => ({ queue: toolQueueName('echo'), id: stepJobId(id, 1, step) })),
    );
  });

  it('a map: items are children of the root; an item that fails under on_failure "continue" completes carrying its error instead of failing', async () => {
    const id = await submit(h, { task_type: 'flow_map', params: { values: [1, 2, 3] } });
    const task = await waitForTask(h, id);
    expect(task.status).toBe('completed');
    const closed = await closedRoot(id);
    const items = [0, 1, 2].map((item) => stepJobId(id, 1, 'each', item));
    expect(await processed(closed)).toEqual([stepJobId(id, 1, 'list'), stepJobId(id, 1, 'after'), ...items].sort());
    for (const item of items) {
      const itemJob = await queue(id, toolQueueName('broken')).getJob(item);
      expect(await itemJob!.getState(), item).toBe('completed');
      expect(itemJob!.returnvalue).toMatchObject({ status: 'failed', error: expect.stringContaining('fails on purpose') });
      expect(itemJob!.parent?.id).toBe(rootJobId(id, 1));
    }
    expect(await queue(id, toolQueueName('broken')).getFailedCount()).toBe(0);
  });

  it("a sub-workflow: the child task lives in its parent's shard and its root hangs under the parent's root", async () => {
    const id = await submit(h, { task_type: 'flow_parent' });
    const childId = await poll(
      async () => {
        const view = (await h.request('GET', `/result/${id}`)).body as { steps: { id: string; child_task_id?: string }[] };
        return view.steps.find((step) => step.id === 'sub')?.child_task_id;
      },
      { label: 'the child task' },
    );
    await waitingStep(childId, 'hold_on');
    const shards = Shards.of(h.config);
    expect(shards.indexOf(childId)).toBe(shards.indexOf(id));
    const parentRoot = await root(id);
    const childRoot = await root(childId);
    await poll(async () => (await childRoot!.getState()) === 'waiting-children', { label: "the child's root to wait" });
    expect(childRoot!.parent?.id).toBe(rootJobId(id, 1));
    expect(await parentRoot!.getState()).toBe('waiting-children');
    // The parent waits on the child's root and on the sub-workflow step's hold.
    expect(await pending(parentRoot!)).toEqual([holdJobId(id, 1, 'sub'), rootJobId(childId, 1)].sort());

    expect((await h.request('POST', `/tasks/${childId}/signals/release`, { ok: true })).status).toBe(200);
    const task = await waitForTask(h, id);
    expect(task.status).toBe('completed');
    expect((await closedRoot(childId)).progress).toEqual({ ended: 'completed' });
    const closed = await closedRoot(id);
    expect(await processed(closed)).toEqual([stepJobId(id, 1, 'first'), stepJobId(id, 1, 'last'), rootJobId(childId, 1)].sort());
  });

  it('a cancelled running step is no failure in BullMQ: its job completes, and so does its root', async () => {
    const id = await submit(h, { task_type: 'flow_hang' });
    await poll(async () => (await h.redis.lrange(observationKey(h.config.QUEUE_PREFIX, 'flow-hang'), 0, -1)).length > 0, { label: 'the step to start' });
    expect((await h.request('POST', `/tasks/${id}/cancel`)).status).toBe(200);
    expect((await waitForTask(h, id)).status).toBe('cancelled');
    const stepJob = await poll(
      async () => {
        // As closedRoot reads a root: a job read while it was still active has no finishedOn (nor
        // returnvalue), whatever its state is by the time getState answers.
        const job = await queue(id, toolQueueName('hang')).getJob(stepJobId(id, 1, 'long'));
        return job?.finishedOn !== undefined && (await job.getState()) === 'completed' ? job : undefined;
      },
      { label: 'the step job to complete' },
    );
    expect(stepJob.returnvalue).toMatchObject({ status: 'cancelled' });
    expect((await closedRoot(id)).progress).toEqual({ ended: 'cancelled' });
  });

  it('a one-tool task stays one job: no root, no parent', async () => {
    const id = await submit(h, { task_type: 'echo', params: { x: 1 } });
    expect((await waitForTask(h, id)).status).toBe('completed');
    expect(await root(id)).toBeUndefined();
    const job = await queue(id, toolQueueName('echo')).getJob(stepJobId(id, 1, 'echo'));
    expect(job?.parent).toBeUndefined();
  });

  it('leaves nothing waiting: no root in waiting-children, no hold, once every run has ended', async () => {
    for (const prefix of Shards.of(h.config).prefixes) {
      const tasks = new Queue(TASKS_QUEUE, { connection: h.redis, prefix });
      const timers = new Queue(TIMERS_QUEUE, { connection: h.redis, prefix });
      await poll(
        async () => {
          const counts = await tasks.getJobCounts('waiting-children', 'wait', 'active', 'delayed');
          return Object.values(counts).every((count) => count === 0);
        },
        { label: `no root left in ${prefix}` },
      );
      expect(await timers.getDelayedCount()).toBe(0);
      await Promise.all([tasks.close(), timers.close()]);
    }
  });
});
