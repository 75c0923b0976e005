import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeTestConnections, observationKey, testTools } from '../fixtures/tools.js';
import { createHarness, type Harness, poll, submit, waitForTask } from '../helpers/harness.js';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js';

describe('a step result that cannot be written while PostgreSQL is unreachable', () => {
  let h: Harness;
  let proxy: TcpProxy;
  beforeAll(async () => {
    h = await createHarness({ worker: false, tools: testTools });
    // The worker reaches PostgreSQL through a proxy the test can cut; the API does not.
    proxy = await startTcpProxy({ port: Number(new URL(h.config.DATABASE_URL).port || 5432) });
    const through = new URL(h.config.DATABASE_URL);
    through.port = String(proxy.port);
    await h.startWorker({ DATABASE_URL: through.toString(), DB_WRITE_RETRY_MS: '300' });
  });
  afterAll(async () => {
    proxy.resume();
    await h.close();
    await proxy.close();
    await closeTestConnections();
  });

  it('is parked in its job and written once the database is back, without running the step again', async () => {
    const key = `parked-${Date.now()}`;
    const id = await submit(h, { task_type: 'flaky', params: { succeed_on: 1, key, count: 'calls', delay_ms: 600 } });
    const observed = observationKey(h.config.QUEUE_PREFIX, key);
    await poll(async () => (await h.redis.llen(observed)) === 1, { label: 'the step to start' });
    // A first delivery records its start once it has run STEP_RUNNING_AFTER_MS (50 ms).
    await poll(async () => (await h.request('GET', `/result/${id}`)).body.status === 'running', { label: 'the start to be recorded' });
    // Cut the worker off while the step works: its result cannot be written.
    proxy.pause();
    const parked = await poll(
      async () => {
        const job = await h.redis.hget(`${h.config.QUEUE_PREFIX}:tool.flaky:${id}.1.flaky`, 'data');
        return job && JSON.parse(job).parked ? JSON.parse(job).parked : undefined;
      },
      { label: 'the result to be parked in the job', timeoutMs: 10_000 },
    );
    expect(parked).toMatchObject({ status: 'completed', output: { calls: 1 } });
    expect((await h.request('GET', `/result/${id}`)).body.status).toBe('running');
    proxy.resume();
    const task = await waitForTask(h, id, 20_000);
    expect(task).toMatchObject({ status: 'completed', result: { calls: 1 } });
    // The adapter ran once: the parked result was written, not recomputed.
    expect(await h.redis.llen(observed)).toBe(1);
    expect(task.steps[0].attempts).toBe(1);
  });
});
