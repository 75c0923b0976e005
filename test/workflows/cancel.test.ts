import { Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toolQueueName } from '../../src/queue/jobs.js';
import { Shards } from '../../src/queue/shards.js';
import { observationKey, testTools } from '../fixtures/tools.js';
import { type NodeProcess, runEntry } from '../helpers/child-process.js';
import { createHarness, type Harness, poll, submit, waitForTask } from '../helpers/harness.js';

describe('cancelling a task', () => {
  let h: Harness;
  let worker: NodeProcess;
  beforeAll(async () => {
    // The API runs here; the steps run in another process, so the cancel has to cross it.
    h = await createHarness({ worker: false, tools: testTools });
    worker = runEntry('test/fixtures/worker-entry.ts', h.env);
    await worker.waitForOutput(/^ready$/m);
  });
  afterAll(async () => {
    await worker?.kill();
    await h.close();
  });

  it('aborts a step running in another worker process and never starts what follows', async () => {
    const key = `cancel-${Date.now()}`;
    const defined = await h.request('POST', '/workflows', {
      name: 'cancellable',
      parameters: [{ name: 'key', type: 'string', required: true }],
      steps: [
        { id: 'wait', tool: 'hang', input: { key: '{{params.key}}' } },
        { id: 'next', tool: 'echo', depends_on: ['wait'], input: {} },
      ],
    });
    expect(defined.status).toBe(201);
    const id = await submit(h, { task_type: 'cancellable', params: { key } });
    const observed = observationKey(h.config.QUEUE_PREFIX, key);
    await poll(async () => (await h.redis.lrange(observed, 0, -1)).includes('started:1'), { label: 'the hang step to start in the worker process' });

    const cancelled = await h.request('POST', `/tasks/${id}/cancel`);
    expect(cancelled.status).toBe(200);
    expect(cancelled.body).toMatchObject({ task_id: id, status: 'cancelled' });

    // The step's AbortSignal fired in the other process.
    await poll(async () => (await h.redis.lrange(observed, 0, -1)).includes('aborted:TaskStoppedError'), {
      label: 'the running step to be aborted',
    });
    const task = await poll(
      async () => {
        const { body } = await h.request('GET', `/result/${id}`);
        return body.steps.every((step: { status: string }) => step.status !== 'running') ? body : undefined;
      },
      { label: 'the aborted step to be recorded' },
    );
    expect(task.status).toBe('cancelled');
    const steps = Object.fromEntries(task.steps.map((step: { id: string }) => [step.id, step]));
    expect(steps.wait.status).toBe('cancelled');
    expect(steps.next.status).toBe('cancelled');
    expect(steps.next.started_at).toBeNull();
    // Nothing of the task is left to run in BullMQ: the aborted step's job finished, and the next step never had one.
    const queues = ['hang', 'echo'].map((tool) => new Queue(toolQueueName(tool), { connection: h.redis, prefix: Shards.of(h.config).prefixOf(id) }));
    try {
      await poll(
        async () => {
          const left = (await Promise.all(queues.map((queue) => queue.getJobs(['waiting', 'active', 'delayed', 'prioritized'])))).flat();
          return left.every((job) => job.data.taskId !== id);
        },
        { label: "the task's jobs to be done" },
      );
      const finished = (await Promise.all(queues.map((queue) => queue.getJobs(['completed', 'failed'])))).flat().filter((job) => job.data.taskId === id);
      expect(finished.map((job) => job.data.stepId)).toEqual(['wait']);
    } finally {
      await Promise.all(queues.map((queue) => queue.close()));
    }
  });

  it('answers 409 for a task that already ended and 404 for an unknown one', async () => {
    const id = await submit(h, { task_type: 'echo', params: {} });
    await waitForTask(h, id);
    const again = await h.request('POST', `/tasks/${id}/cancel`);
    expect(again.status).toBe(409);
    expect(again.body.error.code).toBe('task_finished');
    const unknown = await h.request('POST', '/tasks/00000000-0000-4000-8000-000000000000/cancel');
    expect(unknown.status).toBe(404);
  });

  it('cancels a task that is still waiting (delayed) before any step starts', async () => {
    const id = await submit(h, { task_type: 'echo', params: {}, delay_ms: 60_000 });
    const cancelled = await h.request('POST', `/tasks/${id}/cancel`);
    expect(cancelled.status).toBe(200);
    const task = await waitForTask(h, id);
    expect(task.status).toBe('cancelled');
    expect(task.steps[0]).toMatchObject({ status: 'cancelled', started_at: null });
    // The delayed step job was removed from Redis.
    await poll(async () => ((await h.redis.zcard(`${Shards.of(h.config).prefixOf(id)}:tool.echo:delayed`)) === 0 ? true : undefined), {
      label: 'the delayed step job to be removed',
    });
  });
});
