import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeTestConnections, hang, observationKey, testTools } from '../fixtures/tools.js';
import { createHarness, type Harness, poll, submit, uniqueName, waitForTask } from '../helpers/harness.js';

describe('step timeouts', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness({ tools: testTools });
  });
  afterAll(async () => {
    await h.close();
    await closeTestConnections();
  });

  const observed = (key: string) => h.redis.lrange(observationKey(h.config.QUEUE_PREFIX, key), 0, -1);

  it('aborts a step that runs past timeout_ms of the POST body and fails it with ToolTimeoutError', async () => {
    const key = uniqueName('hang');
    const id = await submit(h, { task_type: 'hang', params: { key }, timeout_ms: 300 });
    const result = await waitForTask(h, id);
    expect(result.status).toBe('failed');
    expect(result.error).toMatchObject({ name: 'ToolTimeoutError', message: 'step timed out after 300 ms' });
    expect(result.steps[0]).toMatchObject({ status: 'failed', attempts: 1, error: { name: 'ToolTimeoutError' } });
    expect(result.steps[0].duration_ms).toBeGreaterThanOrEqual(290);
    // The override is what ended it, long before the hang tool's own timeout.
    expect(result.steps[0].duration_ms).toBeLessThan(hang.timeout_ms / 2);
    // The adapter saw its AbortSignal fire, with the timeout as the reason.
    await poll(async () => (await observed(key)).includes('aborted:ToolTimeoutError'), { label: 'the hang tool to record its abort' });
    expect(await observed(key)).toEqual(['started:1', 'aborted:ToolTimeoutError']);
  });

  it('fails the attempt at the timeout even when the adapter ignores its signal', async () => {
    const key = uniqueName('hang');
    const id = await submit(h, { task_type: 'hang', params: { key, ignore_signal: true }, timeout_ms: 300 });
    const result = await waitForTask(h, id);
    expect(result.status).toBe('failed');
    expect(result.steps[0]).toMatchObject({ status: 'failed', attempts: 1, error: { name: 'ToolTimeoutError' } });
    expect(result.steps[0].duration_ms).toBeGreaterThanOrEqual(290);
    expect(result.steps[0].duration_ms).toBeLessThan(hang.timeout_ms / 2);
    expect(await observed(key)).toEqual(['started:1']);
    expect(await h.db.prisma.deadLetter.count({ where: { taskId: id } })).toBe(1);
  });

  it('counts a timeout as a failed attempt that is retried under the retry policy', async () => {
    const key = uniqueName('hang');
    const id = await submit(h, {
      task_type: 'hang',
      params: { key },
      timeout_ms: 200,
      retry: { attempts: 2, backoff: { type: 'fixed', delay_ms: 10 } },
    });
    const result = await waitForTask(h, id);
    expect(result.steps[0]).toMatchObject({ status: 'failed', attempts: 2, error: { name: 'ToolTimeoutError' } });
    await poll(async () => (await observed(key)).length === 4, { label: 'both attempts of the hang tool to record their abort' });
    expect(await observed(key)).toEqual(['started:1', 'aborted:ToolTimeoutError', 'started:2', 'aborted:ToolTimeoutError']);
  });

  it('does not time out a step that finishes within timeout_ms', async () => {
    const id = await submit(h, { task_type: 'sleep', params: { ms: 50 }, timeout_ms: 2_000 });
    const result = await waitForTask(h, id);
    expect(result.status).toBe('completed');
    expect(result.steps[0].output.slept_ms).toBeGreaterThanOrEqual(50);
  });
});
