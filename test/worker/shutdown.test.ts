import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { closeTestConnections, testTools } from '../fixtures/tools.js';
import { runEntry, type NodeProcess } from '../helpers/child-process.js';
import { createHarness, poll, submit, waitForTask, type Harness } from '../helpers/harness.js';

const SHUTDOWN_TIMEOUT_MS = 5_000;

describe('graceful shutdown of a worker process', () => {
  let h: Harness;
  const children: NodeProcess[] = [];

  beforeAll(async () => {
    // Only the child processes run steps.
    h = await createHarness({ worker: false, tools: testTools, env: { WORKER_SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS) } });
  });
  afterEach(async () => {
    for (const child of children.splice(0)) await child.kill();
  });
  afterAll(async () => {
    await h.close();
    await closeTestConnections();
  });

  async function startChild(env: Record<string, string> = {}): Promise<NodeProcess> {
    const child = runEntry('test/fixtures/worker-entry.ts', { ...h.env, ...env });
    children.push(child);
    await child.waitForOutput(/^ready$/m);
    return child;
  }

  async function result(id: string) {
    const response = await h.request('GET', `/result/${id}`);
    expect(response.status).toBe(200);
    return response.body;
  }

  it('finishes the running step on SIGTERM, exits 0, and takes no new step meanwhile', async () => {
    const worker = await startChild();
    const first = await submit(h, { task_type: 'sleep', params: { ms: 1_500 } });
    await poll(async () => (await result(first)).steps[0].status === 'running', { label: 'the sleep step to run in the child' });

    const signalled = Date.now();
    worker.child.kill('SIGTERM');
    await worker.waitForOutput(/^closing$/m);
    // Submitted while the child drains: it must stay for another worker.
    const second = await submit(h, { task_type: 'sleep', params: { ms: 10 } });

    const exit = await worker.waitForExit(SHUTDOWN_TIMEOUT_MS + 5_000);
    expect(exit.code).toBe(0);
    expect(exit.at - signalled).toBeLessThan(SHUTDOWN_TIMEOUT_MS);
    expect(worker.output).toMatch(/closed drained=true/);

    // Committed before the process exited, so no waiting here.
    const done = await result(first);
    expect(done.status).toBe('completed');
    expect(done.steps[0]).toMatchObject({ status: 'completed', attempts: 1 });
    expect(done.steps[0].output.slept_ms).toBeGreaterThanOrEqual(1_500);

    const waiting = await result(second);
    expect(waiting.status).toBe('queued');
    expect(waiting.steps[0]).toMatchObject({ status: 'queued', attempts: 0, started_at: null });

    const next = await startChild();
    const finished = await waitForTask(h, second);
    expect(finished.status).toBe('completed');
    expect(finished.steps[0].attempts).toBe(1);
    expect((await next.signal('SIGTERM')).code).toBe(0);
  });

  it('exits 0 at once on SIGTERM when it runs nothing', async () => {
    const worker = await startChild();
    const signalled = Date.now();
    const exit = await worker.signal('SIGTERM');
    expect(exit.code).toBe(0);
    expect(exit.at - signalled).toBeLessThan(3_000);
    expect(worker.output).toMatch(/closed drained=true/);
  });

  it('stops waiting for a running step after WORKER_SHUTDOWN_TIMEOUT_MS and still exits 0', async () => {
    const worker = await startChild({ WORKER_SHUTDOWN_TIMEOUT_MS: '600' });
    const id = await submit(h, { task_type: 'sleep', params: { ms: 6_000 } });
    await poll(async () => (await result(id)).steps[0].status === 'running', { label: 'the long sleep step to run in the child' });
    const signalled = Date.now();
    worker.child.kill('SIGTERM');
    const exit = await worker.waitForExit(3_000);
    expect(exit.code).toBe(0);
    expect(exit.at - signalled).toBeGreaterThanOrEqual(550);
    expect(worker.output).toMatch(/closed drained=false/);
    // Not failed: another worker takes the step over once its lock expires.
    expect((await result(id)).status).toBe('running');
  });
});
