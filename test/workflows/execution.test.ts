import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeTestConnections, observationKey, testTools } from '../fixtures/tools.js';
import { createHarness, type Harness, poll, submit, waitForTask } from '../helpers/harness.js';

async function define(h: Harness, definition: Record<string, unknown>): Promise<number> {
  const response = await h.request('POST', '/workflows', definition);
  if (response.status !== 201) throw new Error(`POST /workflows answered ${response.status}: ${JSON.stringify(response.body)}`);
  return response.body.version;
}

function byId(task: { steps: { id: string }[] }): Record<string, any> {
  return Object.fromEntries(task.steps.map((step) => [step.id, step]));
}

describe('running workflows', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness({ tools: testTools, env: { WORKER_CONCURRENCY: '20' } });
  });
  afterAll(async () => {
    await h.close();
    await closeTestConnections();
  });

  it('runs a linear chain in order, carrying outputs with their types', async () => {
    await define(h, {
      name: 'chain',
      parameters: [
        { name: 'n', type: 'integer', required: true },
        { name: 'label', type: 'string', default: 'item' },
      ],
      steps: [
        { id: 'first', tool: 'echo', input: { n: '{{params.n}}', tags: ['a', 'b'], flag: true } },
        {
          id: 'second',
          tool: 'echo',
          depends_on: ['first'],
          input: { n: '{{steps.first.output.n}}', tags: '{{steps.first.output.tags}}', text: '{{params.label}} #{{steps.first.output.n}}' },
        },
        {
          id: 'third',
          tool: 'echo',
          depends_on: ['second'],
          input: { all: '{{steps.second.output}}', flag: '{{steps.first.output.flag}}', missing: '{{steps.first.output.nothing}}' },
        },
      ],
      output: { n: '{{steps.third.output.all.n}}', summary: 'n={{steps.second.output.n}} tags={{steps.second.output.tags}}' },
    });
    const id = await submit(h, { task_type: 'chain', params: { n: 7 } });
    const task = await waitForTask(h, id);
    expect(task.status).toBe('completed');
    const steps = byId(task);
    expect(steps.second.output).toEqual({ n: 7, tags: ['a', 'b'], text: 'item #7' });
    expect(steps.third.output).toEqual({ all: { n: 7, tags: ['a', 'b'], text: 'item #7' }, flag: true, missing: null });
    expect(task.result).toEqual({ n: 7, summary: 'n=7 tags=["a","b"]' });
    expect(Date.parse(steps.second.started_at)).toBeGreaterThanOrEqual(Date.parse(steps.first.finished_at));
    expect(Date.parse(steps.third.started_at)).toBeGreaterThanOrEqual(Date.parse(steps.second.finished_at));
    expect(task.workflow).toEqual({ name: 'chain', version: 1 });
  });

  it('does not evaluate template syntax that arrives inside params', async () => {
    await define(h, {
      name: 'passthrough',
      parameters: [{ name: 'text', type: 'string', required: true }],
      steps: [
        { id: 'one', tool: 'echo', input: { text: '{{params.text}}' } },
        { id: 'two', tool: 'echo', depends_on: ['one'], input: { text: 'got: {{steps.one.output.text}}' } },
      ],
    });
    const id = await submit(h, { task_type: 'passthrough', params: { text: '{{params.text}} {{steps.one.output}}' } });
    const task = await waitForTask(h, id);
    expect(byId(task).two.output.text).toBe('got: {{params.text}} {{steps.one.output}}');
  });

  it('fails the task promptly under on_failure "fail", skipping the steps that had not started', async () => {
    await define(h, {
      name: 'fails_fast',
      steps: [
        { id: 'start', tool: 'echo', input: {} },
        // The gate gives "slow" time to start before "bad" fails.
        { id: 'gate', tool: 'sleep', depends_on: ['start'], input: { ms: 500 } },
        { id: 'bad', tool: 'broken', depends_on: ['gate'], input: { message: 'no luck' } },
        { id: 'slow', tool: 'sleep', depends_on: ['start'], input: { ms: 3_000 } },
        { id: 'after_bad', tool: 'echo', depends_on: ['bad'], input: {} },
        { id: 'after_slow', tool: 'echo', depends_on: ['slow'], input: {} },
      ],
    });
    const id = await submit(h, { task_type: 'fails_fast' });
    const task = await waitForTask(h, id);
    expect(task.status).toBe('failed');
    expect(task.error).toMatchObject({ step: 'bad', message: 'no luck' });
    expect(task.error_message).toBe('step bad (broken, 1 attempt) failed: NonRetryableError: no luck');
    const steps = byId(task);
    expect(steps.bad).toMatchObject({ status: 'failed', attempts: 1 });
    expect(steps.after_bad.status).toBe('skipped');
    expect(steps.after_bad.started_at).toBeNull();
    // The sleep that was already running finishes and is recorded; what depends on it never runs.
    const settled = await poll(
      async () => {
        const { body } = await h.request('GET', `/result/${id}`);
        const current = byId(body);
        return current.slow.status !== 'running' ? current : undefined;
      },
      { label: 'the running sleep to be recorded' },
    );
    expect(settled.slow.status).toBe('completed');
    // The task failed as soon as "bad" gave up, not after the sleep that was running beside it.
    expect(Date.parse(settled.slow.started_at)).toBeLessThan(Date.parse(task.finished_at));
    expect(Date.parse(task.finished_at)).toBeLessThan(Date.parse(settled.slow.finished_at));
    expect(settled.after_slow.status).toBe('skipped');
    expect(settled.after_slow.started_at).toBeNull();
  });

  it('cancels a step that was waiting out a retry backoff when the task failed, instead of leaving it running', async () => {
    const key = `backoff-${Date.now()}`;
    await define(h, {
      name: 'fails_during_backoff',
      parameters: [{ name: 'key', type: 'string', required: true }],
      steps: [
        // Fails its first attempt, then waits 30 s for the next: its job is delayed when "bad" fails.
        { id: 'waiting', tool: 'flaky', retry: { attempts: 2, backoff: { type: 'fixed', delay_ms: 30_000 } }, input: { succeed_on: 2, key: '{{params.key}}' } },
        { id: 'gate', tool: 'sleep', input: { ms: 300 } },
        { id: 'bad', tool: 'broken', depends_on: ['gate'], input: { message: 'no luck' } },
      ],
    });
    const id = await submit(h, { task_type: 'fails_during_backoff', params: { key } });
    const task = await waitForTask(h, id);
    expect(task.status).toBe('failed');
    // The step's job, delayed by its backoff, is dropped when the task fails, and the step is
    // settled then: cancelled (it had run an attempt; skipped is for steps that never started).
    const settled = await poll(
      async () => {
        const current = byId((await h.request('GET', `/result/${id}`)).body);
        return current.waiting.status !== 'running' ? current : undefined;
      },
      { label: 'the step in backoff to be settled', timeoutMs: 15_000 },
    );
    expect(settled.waiting).toMatchObject({ status: 'cancelled', attempts: 1 });
    expect(settled.waiting.error).toMatchObject({ message: 'attempt 1 failed on purpose' });
    expect(await h.redis.llen(observationKey(h.config.QUEUE_PREFIX, key))).toBe(1);
  });

  it('runs dependents under on_failure "continue", showing them the failure', async () => {
    await define(h, {
      name: 'keeps_going',
      steps: [
        { id: 'bad', tool: 'broken', on_failure: 'continue', input: { message: 'soft failure' } },
        { id: 'good', tool: 'echo', input: { ok: true } },
        {
          id: 'report',
          tool: 'echo',
          depends_on: ['bad', 'good'],
          input: {
            bad_status: '{{steps.bad.status}}',
            bad_error: '{{steps.bad.error.message}}',
            good: '{{steps.good.output.ok}}',
            bad_output: '{{steps.bad.output}}',
          },
        },
      ],
    });
    const id = await submit(h, { task_type: 'keeps_going' });
    const task = await waitForTask(h, id);
    expect(task.status).toBe('completed');
    const steps = byId(task);
    expect(steps.bad.status).toBe('failed');
    expect(steps.report.output).toEqual({ bad_status: 'failed', bad_error: 'soft failure', good: true, bad_output: null });
    expect(task.progress).toEqual({ completed: 3, total: 3 });
  });

  it('retries a failed task from its failed steps, reusing the outputs of the steps that succeeded', async () => {
    const key = `resume-${Date.now()}`;
    await define(h, {
      name: 'second_chance',
      parameters: [{ name: 'key', type: 'string', required: true }],
      steps: [
        { id: 'a', tool: 'flaky', input: { succeed_on: 1, key: '{{params.key}}-a', count: 'calls' } },
        // Two attempts per run and success on the third call: the first run fails, a resumed run succeeds.
        {
          id: 'b',
          tool: 'flaky',
          depends_on: ['a'],
          retry: { attempts: 2, backoff: { type: 'fixed', delay_ms: 10 } },
          input: { succeed_on: 3, key: '{{params.key}}-b', count: 'calls' },
        },
        { id: 'c', tool: 'echo', depends_on: ['b'], input: { a_calls: '{{steps.a.output.calls}}', b_calls: '{{steps.b.output.calls}}' } },
      ],
    });
    const id = await submit(h, { task_type: 'second_chance', params: { key } });
    const failed = await waitForTask(h, id);
    expect(failed.status).toBe('failed');
    expect(byId(failed).b).toMatchObject({ status: 'failed', attempts: 2 });
    expect(byId(failed).c.status).toBe('skipped');
    const aFinished = byId(failed).a.finished_at;

    const retried = await h.request('POST', `/tasks/${id}/retry`);
    expect(retried.status).toBe(202);
    expect(retried.body).toMatchObject({ task_id: id, status: 'queued', run: 2 });
    const resumed = await waitForTask(h, id);
    expect(resumed.status).toBe('completed');
    expect(resumed.run).toBe(2);
    const steps = byId(resumed);
    // a ran once, in the first run; c saw its stored output.
    expect(await h.redis.llen(observationKey(h.config.QUEUE_PREFIX, `${key}-a`))).toBe(1);
    expect(steps.a.finished_at).toBe(aFinished);
    expect(steps.b).toMatchObject({ status: 'completed', attempts: 1 });
    expect(steps.c.output).toEqual({ a_calls: 1, b_calls: 3 });
    expect(resumed.error).toBeUndefined();
  });

  it('records a dead letter for a step that exhausted its retries; replaying it resumes the task', async () => {
    const key = `dead-${Date.now()}`;
    await define(h, {
      name: 'dead_end',
      parameters: [{ name: 'key', type: 'string', required: true }],
      steps: [
        { id: 'a', tool: 'flaky', input: { succeed_on: 1, key: '{{params.key}}-a', count: 'calls' } },
        { id: 'b', tool: 'broken', depends_on: ['a'], input: { retryable: true, key: '{{params.key}}-b' } },
      ],
    });
    const id = await submit(h, { task_type: 'dead_end', params: { key } });
    expect((await waitForTask(h, id)).status).toBe('failed');
    const letters = await h.request('GET', `/dead-letters?task_id=${id}`);
    expect(letters.status).toBe(200);
    expect(letters.body.items).toHaveLength(1);
    expect(letters.body.items[0]).toMatchObject({
      task_id: id,
      step_id: 'b',
      tool: 'broken',
      attempts: 3,
      run: 1,
      // The input as the step received it (before the tool's defaults).
      input: { retryable: true, key: `${key}-b` },
      error: { message: 'broken on purpose' },
      replayed_at: null,
    });

    const replay = await h.request('POST', `/dead-letters/${letters.body.items[0].id}/replay`);
    expect(replay.status).toBe(202);
    expect(replay.body).toMatchObject({ task_id: id, run: 2, dead_letter_id: letters.body.items[0].id });
    const again = await waitForTask(h, id);
    expect(again.status).toBe('failed');
    expect(again.run).toBe(2);
    expect(await h.redis.llen(observationKey(h.config.QUEUE_PREFIX, `${key}-a`))).toBe(1);
    expect(await h.redis.llen(observationKey(h.config.QUEUE_PREFIX, `${key}-b`))).toBe(6);
    const after = await h.request('GET', `/dead-letters?task_id=${id}`);
    expect(after.body.items).toHaveLength(2);
    expect(after.body.items.find((item: { id: string }) => item.id === letters.body.items[0].id).replayed_at).not.toBeNull();
    const unknown = await h.request('POST', '/dead-letters/00000000-0000-4000-8000-000000000000/replay');
    expect(unknown.status).toBe(404);
  });

  it('answers 409 when retrying a task that did not fail, and 404 for an unknown one', async () => {
    const id = await submit(h, { task_type: 'echo', params: {} });
    await waitForTask(h, id);
    const response = await h.request('POST', `/tasks/${id}/retry`);
    expect(response.status).toBe(409);
    expect(response.body.error.code).toBe('task_not_retryable');
    const missing = await h.request('POST', '/tasks/00000000-0000-4000-8000-000000000000/retry');
    expect(missing.status).toBe(404);
  });
});
