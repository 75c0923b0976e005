import { Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stepJobId, toolQueueName } from '../../src/queue/jobs.js';
import { closeTestConnections, observationKey, testTools } from '../fixtures/tools.js';
import { createHarness, type Harness, poll, submit, uniqueName, waitForTask } from '../helpers/harness.js';

/** Gaps between consecutive attempts, from the times the flaky tool recorded. */
function gaps(times: number[]): number[] {
  return times.slice(1).map((time, index) => time - times[index]!);
}

describe('retries and backoff', () => {
  let h: Harness;
  let queues: Map<string, Queue>;

  beforeAll(async () => {
    h = await createHarness({ tools: testTools, api: true });
    queues = new Map();
  });
  afterAll(async () => {
    for (const queue of queues.values()) await queue.close();
    await h.close();
    await closeTestConnections();
  });

  function queue(tool: string): Queue {
    let found = queues.get(tool);
    if (!found) {
      found = new Queue(toolQueueName(tool), { connection: h.redis, prefix: h.config.QUEUE_PREFIX });
      queues.set(tool, found);
    }
    return found;
  }

  async function observed(key: string): Promise<string[]> {
    return h.redis.lrange(observationKey(h.config.QUEUE_PREFIX, key), 0, -1);
  }

  /**
   * The retry delays BullMQ scheduled for a step's job, read from its queue's event stream: a
   * "delayed" event carries the time the job is due, and its stream id the time it was written.
   * The delay was counted from a moment just before that write, so due minus written is at most
   * the delay chosen: an upper bound that a busy machine can only make smaller, never larger.
   */
  async function scheduledDelays(taskId: string, tool: string): Promise<number[]> {
    const jobId = stepJobId(taskId, 1, tool);
    const entries = await h.redis.xrange(`${h.config.QUEUE_PREFIX}:${toolQueueName(tool)}:events`, '-', '+');
    return entries.flatMap(([id, list]) => {
      const fields = new Map<string, string>();
      for (let i = 0; i < list.length; i += 2) fields.set(list[i]!, list[i + 1]!);
      if (fields.get('event') !== 'delayed' || fields.get('jobId') !== jobId) return [];
      return [Number(fields.get('delay')) - Number(id.split('-')[0])];
    });
  }

  /** The step's BullMQ job has failed for good: BullMQ will not run another attempt. */
  async function waitForJobFailed(taskId: string, tool: string): Promise<void> {
    await poll(async () => (await queue(tool).getJobState(stepJobId(taskId, 1, tool))) === 'failed', {
      label: `job of ${tool} step of ${taskId} to be failed in BullMQ`,
    });
  }

  it('retries a flaky step until it succeeds, with exponentially growing, jittered delays', async () => {
    const key = uniqueName('flaky');
    // The tool's own policy: 4 attempts, exponential from 100 ms.
    const id = await submit(h, { task_type: 'flaky', params: { succeed_on: 3, key } });
    const result = await waitForTask(h, id);
    expect(result.status).toBe('completed');
    expect(result.result).toMatchObject({ attempt: 3 });
    expect(result.steps[0]).toMatchObject({ status: 'completed', attempts: 3, output: { attempt: 3 } });

    const times = (await observed(key)).map(Number);
    expect(times).toHaveLength(3);
    const [first, second] = gaps(times) as [number, number];
    // Equal jitter: delay n lies in [base*2^(n-1)/2, base*2^(n-1)]. The gaps between calls are
    // at least the delays; the delays BullMQ scheduled are at most the nominal ones.
    expect(first).toBeGreaterThanOrEqual(50);
    expect(second).toBeGreaterThanOrEqual(100);
    const delays = await scheduledDelays(id, 'flaky');
    expect(delays).toHaveLength(2);
    expect(delays[0]).toBeLessThanOrEqual(100);
    expect(delays[1]).toBeLessThanOrEqual(200);
  });

  it('doubles the delay with every failure (three gaps under a per-task exponential policy)', async () => {
    const key = uniqueName('flaky');
    const id = await submit(h, {
      task_type: 'flaky',
      params: { succeed_on: 4, key },
      retry: { attempts: 4, backoff: { type: 'exponential', delay_ms: 160 } },
    });
    const result = await waitForTask(h, id);
    expect(result.steps[0]).toMatchObject({ status: 'completed', attempts: 4 });
    const [first, second, third] = gaps((await observed(key)).map(Number)) as [number, number, number];
    // Lower bounds half of 160, 320, 640. A fixed delay of 160 could never give the third gap: that
    // is the growth. Not "the third gap longer than the first": a busy machine may stretch any gap
    // (once in CI the first took 1,027 ms), so only lower bounds hold for gaps.
    expect(first).toBeGreaterThanOrEqual(80);
    expect(second).toBeGreaterThanOrEqual(160);
    expect(third).toBeGreaterThanOrEqual(320);
    const delays = await scheduledDelays(id, 'flaky');
    expect(delays).toHaveLength(3);
    for (const [index, delay] of delays.entries()) expect(delay, `delay ${index + 1}`).toBeLessThanOrEqual(160 * 2 ** index);
  });

  it('uses the retry policy of the POST body: 2 attempts make a step that needs 3 fail', async () => {
    const key = uniqueName('flaky');
    const id = await submit(h, {
      task_type: 'flaky',
      params: { succeed_on: 3, key },
      retry: { attempts: 2, backoff: { type: 'fixed', delay_ms: 20 } },
    });
    const result = await waitForTask(h, id);
    expect(result.status).toBe('failed');
    expect(result.steps[0]).toMatchObject({ status: 'failed', attempts: 2 });
    expect(result.steps[0].error).toMatchObject({ name: 'RetryableError', message: 'attempt 2 failed on purpose' });
    await waitForJobFailed(id, 'flaky');
    expect(await observed(key)).toHaveLength(2);
  });

  it('honours retry_after_ms of a RetryableError when it asks for more than the backoff', async () => {
    const key = uniqueName('flaky');
    const id = await submit(h, { task_type: 'flaky', params: { succeed_on: 2, key, retry_after_ms: 700 } });
    const result = await waitForTask(h, id);
    expect(result.steps[0]).toMatchObject({ status: 'completed', attempts: 2 });
    const [gap] = gaps((await observed(key)).map(Number)) as [number];
    // The tool's backoff alone would wait 50-100 ms.
    expect(gap).toBeGreaterThanOrEqual(700);
    // Retry-After is a floor, not added to the backoff.
    const [delay] = await scheduledDelays(id, 'flaky');
    expect(delay).toBeLessThanOrEqual(700);
  });

  it('fails a non-retryable error after exactly one attempt, with a dead letter', async () => {
    const key = uniqueName('broken');
    const id = await submit(h, { task_type: 'broken', params: { retryable: false, message: 'no point trying again', key } });
    const result = await waitForTask(h, id);
    expect(result.status).toBe('failed');
    expect(result.error).toMatchObject({ step: 'broken', name: 'NonRetryableError', message: 'no point trying again' });
    expect(result.steps[0]).toMatchObject({ status: 'failed', attempts: 1 });
    expect(result.steps[0].error).toMatchObject({ name: 'NonRetryableError', message: 'no point trying again', retryable: false });
    await waitForJobFailed(id, 'broken');
    expect(await observed(key)).toEqual(['1']);

    const letters = await h.db.prisma.deadLetter.findMany({ where: { taskId: id } });
    expect(letters).toHaveLength(1);
    expect(letters[0]).toMatchObject({
      stepId: 'broken',
      run: 1,
      tool: 'broken',
      attempts: 1,
      input: { retryable: false, message: 'no point trying again', key },
      error: { name: 'NonRetryableError', message: 'no point trying again' },
      replayedAt: null,
    });
  });

  it("fails a retryable error after the tool's 3 attempts, with one dead letter", async () => {
    const key = uniqueName('broken');
    const id = await submit(h, { task_type: 'broken', params: { retryable: true, key } });
    const result = await waitForTask(h, id);
    expect(result.status).toBe('failed');
    expect(result.error).toMatchObject({ name: 'RetryableError', message: 'broken on purpose' });
    expect(result.steps[0]).toMatchObject({ status: 'failed', attempts: 3 });
    await waitForJobFailed(id, 'broken');
    expect(await observed(key)).toEqual(['1', '2', '3']);
    const letters = await h.db.prisma.deadLetter.findMany({ where: { taskId: id } });
    expect(letters).toHaveLength(1);
    expect(letters[0]).toMatchObject({ attempts: 3, error: { name: 'RetryableError', retryable: false } });
  });

  it('writes no dead letter for a step that succeeded after retries', async () => {
    const key = uniqueName('flaky');
    const id = await submit(h, { task_type: 'flaky', params: { succeed_on: 2, key } });
    expect((await waitForTask(h, id)).status).toBe('completed');
    expect(await h.db.prisma.deadLetter.count({ where: { taskId: id } })).toBe(0);
  });
});
