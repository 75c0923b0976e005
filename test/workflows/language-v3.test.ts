import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stepJobId, toolQueueName } from '../../src/queue/jobs.js';
import { closeTestConnections, observationKey, testTools } from '../fixtures/tools.js';
import { createHarness, type Harness, poll, submit, waitForTask } from '../helpers/harness.js';

/**
 * Workflow language v3 end to end, through the HTTP API with real workers, Redis and
 * PostgreSQL: computed values (`{{= CEL}}`), terminate, finer retry and signals that arrive
 * before their wait.
 */

type StepView = { id: string; status: string; reason?: string; output?: unknown; error?: { name: string; message: string } };
const byId = (task: { steps: StepView[] }) => Object.fromEntries(task.steps.map((step) => [step.id, step])) as Record<string, StepView>;

describe('workflow language v3', () => {
  let h: Harness;
  const define = async (definition: Record<string, unknown>) => {
    const response = await h.request('POST', '/workflows', definition);
    expect(response.status, JSON.stringify(response.body)).toBe(201);
  };
  beforeAll(async () => {
    h = await createHarness({ tools: testTools });
  });
  afterAll(async () => {
    await h.close();
    await closeTestConnections();
  });

  describe('computed values', () => {
    beforeAll(async () => {
      await define({
        name: 'computed',
        parameters: [
          { name: 'vip', type: 'boolean', required: true },
          { name: 'items', type: 'array', required: true },
        ],
        steps: [
          { id: 'a', tool: 'echo', input: { n: 2, items: '{{params.items}}' } },
          { id: 'b', tool: 'echo', input: { n: 3 } },
          {
            id: 'sum',
            tool: 'echo',
            depends_on: ['a', 'b'],
            input: {
              total: '{{= steps.a.output.n + steps.b.output.n}}',
              label: '{{= params.vip ? "gold" : "std"}}',
              count: '{{= size(steps.a.output.items)}}',
              text: 'total {{= steps.a.output.n * 10.0}}',
            },
          },
          {
            id: 'divide',
            tool: 'echo',
            depends_on: ['a'],
            on_failure: 'continue',
            input: { x: '{{= 1 / (size(steps.a.output.items) - size(steps.a.output.items))}}' },
          },
        ],
        output: { sum: '{{steps.sum.output}}', joined: '{{= steps.a.output.items.join("+")}}', failed: '{{= steps.divide.status == "failed"}}' },
      });
    });

    it('gives typed values to a step input and to the output, as integers where a double holds one', async () => {
      const task = await waitForTask(h, await submit(h, { task_type: 'computed', params: { vip: true, items: ['x', 'y'] } }));
      expect(task.status).toBe('completed');
      expect(task.result).toEqual({ sum: { total: 5, label: 'gold', count: 2, text: 'total 20' }, joined: 'x+y', failed: true });
      expect(JSON.stringify(task.result.sum.total)).toBe('5');
      // An expression that cannot be evaluated fails its step (not retried), saying where.
      const divide = byId(task).divide!;
      expect(divide.status).toBe('failed');
      expect(divide.error).toMatchObject({ name: 'ExpressionError' });
      expect(divide.error!.message).toMatch(/at x could not be evaluated/);
    });

    it('refuses a definition whose expressions do not check, with their paths', async () => {
      const response = await h.request('POST', '/workflows', {
        name: 'computed_bad',
        steps: [
          { id: 'a', tool: 'echo' },
          { id: 'b', tool: 'echo', input: { total: '{{= steps.a.output.n + 1}}' } },
        ],
        output: { x: '{{= params.ghost}}' },
      });
      expect(response.status).toBe(400);
      expect(response.body.error.details).toEqual(
        expect.arrayContaining([
          { path: 'steps[1].input.total', message: 'steps.a is not one of the steps this step depends on' },
          { path: 'output.x', message: 'params.ghost is not a declared parameter' },
        ]),
      );
    });
  });

  describe('terminate', () => {
    beforeAll(async () => {
      await define({
        name: 'terminate_early',
        parameters: [
          { name: 'count', type: 'number', required: true },
          { name: 'key', type: 'string', required: true },
        ],
        steps: [
          { id: 'check', tool: 'echo', input: { count: '{{params.count}}' } },
          { id: 'slow', tool: 'hang', input: { key: '{{params.key}}' } },
          { id: 'later', tool: 'echo', depends_on: ['slow'], input: { never: true } },
          {
            id: 'stop',
            depends_on: ['check'],
            when: 'steps.check.output.count == 0.0',
            terminate: { status: 'completed', output: { skipped: true, count: '{{= steps.check.output.count}}' } },
          },
          {
            id: 'fail_stop',
            depends_on: ['check'],
            when: 'steps.check.output.count < 0.0',
            terminate: { status: 'failed', reason: 'count was {{steps.check.output.count}}' },
          },
        ],
        output: { from: 'the workflow' },
      });
      await define({
        name: 'terminate_plain',
        steps: [
          { id: 'a', tool: 'echo', input: { n: 1 } },
          { id: 'stop', depends_on: ['a'], terminate: { status: 'completed' } },
          { id: 'b', tool: 'echo', depends_on: ['stop'], input: { n: 2 } },
        ],
        output: { a: '{{steps.a.output.n}}', b: '{{steps.b.output.n}}', b_status: '{{steps.b.status}}' },
      });
    });

    it('ends the run at once with its output: running steps cancelled and stopped, pending ones skipped as terminated', async () => {
      const key = `terminate-${Date.now()}`;
      const task = await waitForTask(h, await submit(h, { task_type: 'terminate_early', params: { count: 0, key } }));
      expect(task.status).toBe('completed');
      expect(task.result).toEqual({ skipped: true, count: 0 });
      const steps = byId(task);
      expect(steps.stop).toMatchObject({ status: 'completed', output: { status: 'completed' } });
      expect(steps.later).toMatchObject({ status: 'skipped', reason: 'terminated' });
      // Ready in the same decision, after `stop`: it never ran.
      expect(steps.fail_stop).toMatchObject({ status: 'skipped', reason: 'terminated' });
      // The hanging step's worker was told to stop, and the step ends cancelled.
      const ended = await poll(
        async () => {
          const view = await h.request('GET', `/tasks/${task.task_id}`);
          const slow = byId(view.body).slow!;
          return slow.status !== 'running' && slow.status !== 'queued' ? slow : undefined;
        },
        { timeoutMs: 15_000, label: 'the running step to end' },
      );
      expect(ended.status).toBe('cancelled');
      const history = await h.request('GET', `/tasks/${task.task_id}/history`);
      expect(JSON.stringify(history.body)).toContain('terminated');
    });

    it('fails the run with its reason as the error', async () => {
      const task = await waitForTask(h, await submit(h, { task_type: 'terminate_early', params: { count: -1, key: `terminate-f-${Date.now()}` } }));
      expect(task.status).toBe('failed');
      expect(task.error).toMatchObject({ name: 'Terminated', message: 'count was -1', step: 'fail_stop' });
      expect(byId(task).later).toMatchObject({ status: 'skipped', reason: 'terminated' });
      expect(byId(task).fail_stop).toMatchObject({ status: 'failed', error: { name: 'Terminated' } });
      // A retry meets the terminate step again: the run ends failed the same way, and what it skipped never runs.
      const retried = await h.request('POST', `/tasks/${task.task_id}/retry`);
      expect(retried.status, JSON.stringify(retried.body)).toBeLessThan(300);
      const again = await poll(
        async () => {
          const view = await h.request('GET', `/tasks/${task.task_id}`);
          return view.body.status === 'failed' && view.body.run === 2 ? view.body : undefined;
        },
        { timeoutMs: 15_000, label: 'the retried run to end' },
      );
      expect(again.error).toMatchObject({ name: 'Terminated', step: 'fail_stop' });
      expect(byId(again).later).toMatchObject({ status: 'skipped', reason: 'terminated' });
    });

    it("without an output gives the workflow's, over the steps that ran", async () => {
      const task = await waitForTask(h, await submit(h, { task_type: 'terminate_plain', params: {} }));
      expect(task.status).toBe('completed');
      expect(task.result).toEqual({ a: 1, b: null, b_status: 'skipped' });
      expect(byId(task).b).toMatchObject({ status: 'skipped', reason: 'terminated' });
    });

    it('refuses a terminate step with an input, other kinds’ fields or references outside its ancestors, with paths', async () => {
      const response = await h.request('POST', '/workflows', {
        name: 'terminate_bad',
        steps: [
          { id: 'a', tool: 'echo' },
          { id: 'stop', terminate: { status: 'failed', output: { x: '{{steps.a.output}}' } }, input: { y: 1 }, retry: { attempts: 2 } },
          { id: 'both', tool: 'echo', terminate: { status: 'completed' } },
        ],
      });
      expect(response.status).toBe(400);
      const paths = response.body.error.details.map((problem: { path: string }) => problem.path);
      expect(paths).toEqual(expect.arrayContaining(['steps[1].input', 'steps[1].retry', 'steps[1].terminate.output.x', 'steps[2]']));
    });
  });

  describe('finer retry', () => {
    it('caps the delay between tries at backoff.max_delay_ms', async () => {
      const key = `maxdelay-${Date.now()}`;
      await define({
        name: 'retry_capped',
        steps: [
          {
            id: 'f',
            tool: 'flaky',
            input: { succeed_on: 4, key },
            retry: { attempts: 4, backoff: { type: 'exponential', delay_ms: 100, max_delay_ms: 120 } },
          },
        ],
      });
      const task = await waitForTask(h, await submit(h, { task_type: 'retry_capped' }));
      expect(task.status).toBe('completed');
      // What BullMQ was asked to wait before each retry (due time minus when it was written: at most the delay chosen).
      const jobId = stepJobId(task.task_id, 1, 'f');
      const entries = await h.redis.xrange(`${h.config.QUEUE_PREFIX}:${toolQueueName('flaky')}:events`, '-', '+');
      const delays = entries.flatMap(([id, list]) => {
        const fields = new Map<string, string>();
        for (let i = 0; i < list.length; i += 2) fields.set(list[i]!, list[i + 1]!);
        return fields.get('event') === 'delayed' && fields.get('jobId') === jobId ? [Number(fields.get('delay')) - Number(id.split('-')[0])] : [];
      });
      // Uncapped, the third would be 200 to 400 ms.
      expect(delays).toHaveLength(3);
      for (const delay of delays) expect(delay).toBeLessThanOrEqual(120);
    });

    it('ends the retries once max_elapsed_ms has passed since the first try, with the last error', async () => {
      const key = `maxelapsed-${Date.now()}`;
      await define({
        name: 'retry_budget',
        steps: [
          { id: 'f', tool: 'flaky', input: { succeed_on: 100, key }, retry: { attempts: 50, backoff: { type: 'fixed', delay_ms: 100 }, max_elapsed_ms: 600 } },
        ],
      });
      const task = await waitForTask(h, await submit(h, { task_type: 'retry_budget' }), 30_000);
      expect(task.status).toBe('failed');
      const calls = await h.redis.llen(observationKey(h.config.QUEUE_PREFIX, key));
      // Tries 50 to 100 ms apart fit a handful into 600 ms, never 50.
      expect(calls).toBeGreaterThanOrEqual(2);
      expect(calls).toBeLessThan(15);
      expect(task.error).toMatchObject({ step: 'f', message: `attempt ${calls} failed on purpose` });
    });
  });

  describe('signals that arrive before their wait', () => {
    beforeAll(async () => {
      await define({
        name: 'early_signal',
        steps: [
          { id: 'nap', sleep: { ms: 600_000 } },
          { id: 'never', depends_on: ['nap'], wait: { signal: 'late', schema: { type: 'object' } } },
        ],
      });
    });

    it('keeps one (202 buffered; a second is 409 already_signalled, a payload that does not fit 400 at once), and a cancel drops it', async () => {
      const id = await submit(h, { task_type: 'early_signal' });
      const bad = await h.request('POST', `/tasks/${id}/signals/late`, [1, 2]);
      expect(bad.status).toBe(400);
      expect(bad.body.error.code).toBe('invalid_payload');
      const kept = await h.request('POST', `/tasks/${id}/signals/late`, { n: 1 });
      expect(kept.status).toBe(202);
      const again = await h.request('POST', `/tasks/${id}/signals/late`, { n: 2 });
      expect(again.status).toBe(409);
      expect(again.body.error).toMatchObject({ code: 'already_signalled', details: { step: 'never', status: 'pending' } });
      expect((await h.request('POST', `/tasks/${id}/cancel`)).status).toBe(200);
      const cancelled = await waitForTask(h, id);
      expect(byId(cancelled).never).toMatchObject({ status: 'cancelled' });
      expect(byId(cancelled).never!.output ?? null).toBeNull();
    });

    it('the wait takes the kept signal as its output when it is reached, with the history of both', async () => {
      await define({
        name: 'early_payment',
        steps: [
          { id: 'nap', sleep: { ms: 1500 } },
          {
            id: 'paid',
            depends_on: ['nap'],
            wait: { signal: 'payment', schema: { type: 'object', required: ['amount'], properties: { amount: { type: 'number' } } } },
          },
          { id: 'after', tool: 'echo', depends_on: ['paid'], input: { amount: '{{steps.paid.output.amount}}' } },
        ],
        output: { amount: '{{steps.after.output.amount}}' },
      });
      const id = await submit(h, { task_type: 'early_payment' });
      const invalid = await h.request('POST', `/tasks/${id}/signals/payment`, { amount: 'ten' });
      expect(invalid.status).toBe(400);
      expect(invalid.body.error.code).toBe('invalid_payload');
      const early = await h.request('POST', `/tasks/${id}/signals/payment`, { amount: 12 });
      expect(early.status, JSON.stringify(early.body)).toBe(202);
      expect(early.body).toMatchObject({ task_id: id, step_id: 'paid', signal: 'payment', status: 'buffered' });
      const second = await h.request('POST', `/tasks/${id}/signals/payment`, { amount: 13 });
      expect(second.status).toBe(409);
      expect(second.body.error.code).toBe('already_signalled');
      const task = await waitForTask(h, id, 20_000);
      expect(task.status).toBe('completed');
      expect(task.result).toEqual({ amount: 12 });
      expect(byId(task).paid).toMatchObject({ status: 'completed', output: { amount: 12 } });
      const events = (await h.request('GET', `/tasks/${id}/history?step=paid`)).body.events as { type: string; data?: Record<string, unknown> }[];
      expect(
        events.map((event) => event.type),
        JSON.stringify(events),
      ).toEqual(['signal_buffered', 'step_waiting', 'signal_received', 'step_woken']);
      expect(events[2]!.data).toMatchObject({ buffered: true });
      // Once taken, the step waits no more.
      const late = await h.request('POST', `/tasks/${id}/signals/payment`, { amount: 14 });
      expect(late.status).toBe(409);
    });
  });
});
