import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TIMERS_QUEUE, timerJobId } from '../../src/queue/jobs.js';
import { createHarness, type Harness, poll, submit, waitForTask } from '../helpers/harness.js';
import { startServer, type TestServer } from '../helpers/http-server.js';
import { openSse } from '../helpers/sse.js';

/**
 * Wait steps end to end, through the HTTP API with a real worker, Redis and PostgreSQL: a signal
 * sent with a key (checked against its schema, first one wins), approvals decided with a key,
 * timeouts under both policies, cancel during a wait, and GET /tasks?status=waiting. The
 * approval links themselves are driven in a real browser (approval-links.test.ts).
 */

type StepView = { id: string; status: string; reason?: string; output?: unknown; error?: { name: string }; waiting_for?: any; wake_at?: string };
const byId = (task: { steps: StepView[] }) => Object.fromEntries(task.steps.map((step) => [step.id, step])) as Record<string, StepView>;

describe('wait steps', () => {
  let h: Harness;
  const define = async (definition: Record<string, unknown>) => {
    const response = await h.request('POST', '/workflows', definition);
    expect(response.status, JSON.stringify(response.body)).toBe(201);
  };
  const waitingStep = (id: string, step: string) =>
    poll(
      async () => {
        const task = (await h.request('GET', `/tasks/${id}`)).body;
        const found = byId(task)[step];
        return found?.status === 'waiting' ? found : undefined;
      },
      { label: `step ${step} of ${id} waiting` },
    );

  beforeAll(async () => {
    h = await createHarness();
    await define({
      name: 'wait_for_payment',
      parameters: [{ name: 'order', type: 'string', required: true }],
      steps: [
        { id: 'prepare', tool: 'echo', input: { order: '{{params.order}}' } },
        {
          id: 'paid',
          depends_on: ['prepare'],
          wait: {
            signal: 'payment',
            schema: {
              type: 'object',
              properties: { amount: { type: 'number', minimum: 0 }, currency: { enum: ['EUR', 'USD'] } },
              required: ['amount', 'currency'],
            },
          },
        },
        { id: 'ship', tool: 'echo', depends_on: ['paid'], when: 'steps.paid.output.amount >= 10', input: { amount: '{{steps.paid.output.amount}}' } },
        { id: 'refund', tool: 'echo', depends_on: ['paid'], when: 'steps.paid.output.amount < 10', input: { small: true } },
      ],
    });
    await define({
      name: 'timed_wait',
      parameters: [{ name: 'policy', type: 'string', required: true }],
      steps: [
        { id: 'hold', wait: { signal: 'go', timeout_ms: 400, on_timeout: 'fail' } },
        { id: 'after', tool: 'echo', depends_on: ['hold'], input: { ran: true } },
      ],
    });
    await define({
      name: 'lenient_wait',
      steps: [
        { id: 'hold', wait: { signal: 'go', timeout_ms: 400, on_timeout: 'continue' } },
        { id: 'after', tool: 'echo', depends_on: ['hold'], input: { timed_out: '{{steps.hold.output.timed_out}}' } },
      ],
    });
    await define({
      name: 'late_wait',
      steps: [
        { id: 'nap', sleep: { ms: 600_000 } },
        { id: 'hold', depends_on: ['nap'], wait: { signal: 'go' } },
      ],
    });
    await define({
      name: 'keyed_approval',
      parameters: [{ name: 'amount', type: 'number', required: true }],
      steps: [
        {
          id: 'review',
          wait: { approval: { form: { type: 'object', properties: { ticket: { type: 'integer' } }, required: ['ticket'] } } },
          input: { amount: '{{params.amount}}' },
        },
        { id: 'pay', tool: 'echo', depends_on: ['review'], when: 'steps.review.output.approved', input: { ticket: '{{steps.review.output.fields.ticket}}' } },
      ],
    });
  });
  afterAll(async () => {
    await h?.close();
  });

  it('waits holding no job until its signal; a payload that does not fit is 400 with its paths; the first signal stands, a second is 409; later steps branch on it', async () => {
    const id = await submit(h, { task_type: 'wait_for_payment', params: { order: 'A-1' } });
    const step = await waitingStep(id, 'paid');
    expect(step).toMatchObject({ reason: 'signal', waiting_for: { signal: 'payment' } });
    const listed = await h.request('GET', '/tasks?status=waiting');
    expect(listed.status).toBe(200);
    expect(listed.body.items.find((task: { task_id: string }) => task.task_id === id)).toMatchObject({ waiting_for: [{ step_id: 'paid', reason: 'signal' }] });
    // Nothing in BullMQ stands for a wait without a timeout: no worker slot, no job.
    expect(await h.redis.exists(`${h.config.QUEUE_PREFIX}:${TIMERS_QUEUE}:${timerJobId(id, 1, 'paid')}`)).toBe(0);

    const wrong = await h.request('POST', `/tasks/${id}/signals/payment`, { amount: -1, currency: 'GBP' });
    expect(wrong.status).toBe(400);
    expect(wrong.body.error.code).toBe('invalid_payload');
    expect(wrong.body.error.details.map((problem: { path: string }) => problem.path).sort()).toEqual(['amount', 'currency']);
    const unknown = await h.request('POST', `/tasks/${id}/signals/refund`, { amount: 1 });
    expect(unknown.status).toBe(404);
    expect(unknown.body.error).toMatchObject({ code: 'signal_not_found', details: { signals: ['payment'] } });

    // Two signals at once: exactly one is recorded.
    const [first, second] = await Promise.all([
      h.request('POST', `/tasks/${id}/signals/payment`, { amount: 25, currency: 'EUR' }),
      h.request('POST', `/tasks/${id}/signals/payment`, { amount: 5, currency: 'USD' }),
    ]);
    expect([first.status, second.status].sort()).toEqual([200, 409]);
    const winner = first.status === 200 ? { amount: 25, currency: 'EUR' } : { amount: 5, currency: 'USD' };
    const loser = first.status === 200 ? second : first;
    // The loser read the task either while the step had its signal and the rest still ran, or after
    // the task had ended (the steps after the wait are quick echoes): both say the first one stands.
    expect(['already_signalled', 'task_finished']).toContain(loser.body.error.code);

    const done = await waitForTask(h, id);
    expect(done.status).toBe('completed');
    const steps = byId(done);
    expect(steps.paid).toMatchObject({ status: 'completed', output: winner });
    expect(steps.paid!.waiting_for).toBeUndefined();
    expect(steps.ship!.status).toBe(winner.amount >= 10 ? 'completed' : 'skipped');
    expect(steps.refund!.status).toBe(winner.amount >= 10 ? 'skipped' : 'completed');
    const late = await h.request('POST', `/tasks/${id}/signals/payment`, { amount: 1, currency: 'EUR' });
    expect(late.status).toBe(409);
    expect(late.body.error.code).toBe('task_finished');
  });

  it('keeps one signal sent before its step waits (202 buffered; a second is 409 already_signalled), and ends the wait when the task is cancelled', async () => {
    const id = await submit(h, { task_type: 'late_wait' });
    await waitingStep(id, 'nap');
    const early = await h.request('POST', `/tasks/${id}/signals/go`, {});
    expect(early.status).toBe(202);
    expect(early.body).toMatchObject({ step_id: 'hold', status: 'buffered' });
    const second = await h.request('POST', `/tasks/${id}/signals/go`, {});
    expect(second.status).toBe(409);
    expect(second.body.error).toMatchObject({ code: 'already_signalled', details: { step: 'hold', status: 'pending' } });

    const waiting = await submit(h, { task_type: 'wait_for_payment', params: { order: 'A-2' } });
    await waitingStep(waiting, 'paid');
    expect((await h.request('POST', `/tasks/${waiting}/cancel`)).status).toBe(200);
    const cancelled = await waitForTask(h, waiting);
    expect(cancelled.status).toBe('cancelled');
    expect(byId(cancelled).paid!.status).toBe('cancelled');
    const after = await h.request('POST', `/tasks/${waiting}/signals/payment`, { amount: 1, currency: 'EUR' });
    expect(after.status).toBe(409);
    expect(after.body.error.code).toBe('task_finished');
    await h.request('POST', `/tasks/${id}/cancel`);
  });

  it('times out under on_timeout fail (the step fails WaitTimedOut, the task fails) and under continue (it completes {timed_out: true} and the task goes on)', async () => {
    const strict = await submit(h, { task_type: 'timed_wait', params: { policy: 'fail' } });
    const step = await waitingStep(strict, 'hold');
    expect(step.waiting_for.timeout_at).toBe(step.wake_at);
    const failed = await waitForTask(h, strict);
    expect(failed.status).toBe('failed');
    expect(byId(failed).hold).toMatchObject({ status: 'failed', error: { name: 'WaitTimedOut' } });
    expect(byId(failed).after!.status).toBe('skipped');

    const lenient = await waitForTask(h, await submit(h, { task_type: 'lenient_wait' }));
    expect(lenient.status).toBe('completed');
    expect(byId(lenient).hold).toMatchObject({ status: 'completed', output: { timed_out: true } });
    expect(byId(lenient).after).toMatchObject({ status: 'completed', output: { timed_out: true } });
    const events = (await h.request('GET', `/tasks/${lenient.task_id}/history?step=hold`)).body.events as { type: string }[];
    expect(events.map((event) => event.type)).toEqual(['step_waiting', 'wait_timed_out', 'step_woken']);
  });

  it('takes an approval decided with a key: the decision and the form (checked) are its output, with who decided', async () => {
    const id = await submit(h, { task_type: 'keyed_approval', params: { amount: 120 } });
    const step = await waitingStep(id, 'review');
    expect(step).toMatchObject({ reason: 'approval', waiting_for: { signal: 'review', approval: { approvers: [] } } });
    // Outside production without a secret the development key signs links.
    expect(step.waiting_for.approval.links).toHaveLength(1);
    expect(step.waiting_for.approval.links[0].url).toMatch(/\/approvals\/[\w-]+\.[\w-]+$/);

    const missingTicket = await h.request('POST', `/tasks/${id}/signals/review`, { decision: 'approved' });
    expect(missingTicket.status).toBe(400);
    expect(missingTicket.body.error.details[0].path).toBe('fields.ticket');
    const badDecision = await h.request('POST', `/tasks/${id}/signals/review`, { decision: 'maybe', fields: { ticket: 1 } });
    expect(badDecision.status).toBe(400);
    expect(badDecision.body.error.details[0].path).toBe('decision');

    const ok = await h.request('POST', `/tasks/${id}/signals/review`, { decision: 'approved', comment: 'fine', fields: { ticket: 42 } });
    expect(ok.status, JSON.stringify(ok.body)).toBe(200);
    expect(ok.body).toMatchObject({ task_id: id, step_id: 'review', signal: 'review', status: 'recorded' });
    const done = await waitForTask(h, id);
    expect(done.status).toBe('completed');
    expect(byId(done).review!.output).toMatchObject({ decision: 'approved', approved: true, comment: 'fine', fields: { ticket: 42 }, by: 'anonymous' });
    expect(byId(done).pay).toMatchObject({ status: 'completed', output: { ticket: 42 } });
    // The history says who decided, how, and that the step then woke and completed.
    const history = (await h.request('GET', `/tasks/${id}/history?step=review`)).body.events as { type: string; data?: Record<string, unknown> }[];
    expect(history.map((event) => event.type)).toEqual(['step_waiting', 'approval_decided', 'step_woken']);
    expect(history[1]!.data).toMatchObject({ decision: 'approved', by: 'anonymous', via: 'key', comment: 'fine' });
    expect(history[0]!.data).toMatchObject({ reason: 'approval' });
  });

  it('refuses definitions whose waits cannot work, with their paths', async () => {
    const response = await h.request('POST', '/workflows', {
      name: 'bad_waits',
      steps: [
        { id: 'a', wait: {} },
        { id: 'b', wait: { signal: 'go', schema: { type: 'object', properties: { x: { type: 'nonsense' } } } } },
        { id: 'c', wait: { signal: 'go' } },
        { id: 'd', wait: { approval: { form: { type: 'object', properties: { nested: { type: 'object' } } }, show: ['missing'] } } },
        { id: 'e', wait: { signal: 'x' }, retry: { attempts: 2 } },
      ],
    });
    expect(response.status).toBe(400);
    const paths = response.body.error.details.map((problem: { path: string }) => problem.path);
    expect(paths).toEqual(
      expect.arrayContaining([
        'steps[0].wait',
        'steps[1].wait.schema',
        'steps[2].wait.signal',
        'steps[3].wait.approval.form',
        'steps[3].wait.approval.show[0]',
        'steps[4].retry',
      ]),
    );
  });

  it("checks a payload's patterns in linear time: a pattern that backtracks exponentially in JavaScript answers at once", async () => {
    await define({ name: 'pattern_wait', steps: [{ id: 'hold', wait: { signal: 'code', schema: { type: 'string', pattern: '^(a+)+$' } } }] });
    const id = await submit(h, { task_type: 'pattern_wait' });
    await waitingStep(id, 'hold');
    const started = Date.now();
    const response = await h.request('POST', `/tasks/${id}/signals/code`, `"${'a'.repeat(50_000)}!"`);
    expect(response.status).toBe(400);
    // With a backtracking engine this input takes longer than the age of the universe.
    expect(Date.now() - started).toBeLessThan(5_000);
    await h.request('POST', `/tasks/${id}/cancel`);
  });

  describe('what a waiting step tells outside /result', () => {
    let withCallbacks: Harness;
    let receiver: TestServer;
    beforeAll(async () => {
      receiver = await startServer((_request, res) => res.writeHead(204).end());
      withCallbacks = await createHarness({
        env: { CALLBACK_SECRET: 'waits-callback-secret-0123456789', HTTP_TOOL_ALLOWED_HOSTS: `127.0.0.1:${receiver.port}` },
      });
      const defined = await withCallbacks.request('POST', '/workflows', {
        name: 'told_approval',
        steps: [
          { id: 'first', tool: 'echo', input: { n: 1 } },
          { id: 'review', depends_on: ['first'], wait: { approval: { approvers: ['ops'] } } },
        ],
      });
      expect(defined.status).toBe(201);
    });
    afterAll(async () => {
      await withCallbacks?.close();
      await receiver?.close();
    });

    it('the event stream and a task.waiting callback carry the approval link; the final callback follows the decision', async () => {
      const id = await submit(withCallbacks, { task_type: 'told_approval', callback_url: `${receiver.origin}/hook` });
      const stream = await openSse(`${withCallbacks.url}/tasks/${id}/events`);
      const events = await stream.waitFor((seen) => seen.some((event) => event.event === 'step' && event.data.status === 'waiting'));
      stream.close();
      const waiting = events.find((event) => event.event === 'step' && event.data.status === 'waiting')!;
      expect(waiting.data).toMatchObject({ step_id: 'review', reason: 'approval', waiting_for: { signal: 'review', approval: { approvers: ['ops'] } } });
      const link = waiting.data.waiting_for.approval.links[0];
      expect(link).toMatchObject({ approver: 'ops' });

      const told = await poll(() => receiver.requests.find((request) => request.headers['x-orchestrator-event'] === 'task.waiting'), {
        label: 'the task.waiting callback',
      });
      const body = JSON.parse(told.body);
      expect(body).toMatchObject({ event: 'task.waiting', step_id: 'review', task: { task_id: id, status: 'running' } });
      const step = body.task.steps.find((candidate: { id: string }) => candidate.id === 'review');
      expect(step.waiting_for.approval.links[0].url).toBe(link.url);

      expect((await withCallbacks.request('POST', `/tasks/${id}/signals/review`, { decision: 'rejected' })).status).toBe(200);
      expect((await waitForTask(withCallbacks, id)).status).toBe('completed');
      const ended = await poll(() => receiver.requests.find((request) => request.headers['x-orchestrator-event'] === 'task.completed'), {
        label: 'the final callback',
      });
      expect(JSON.parse(ended.body).task.steps[1]).toMatchObject({ id: 'review', output: { decision: 'rejected', approved: false } });
      expect(receiver.requests.filter((request) => request.headers['x-orchestrator-event'] === 'task.waiting')).toHaveLength(1);
    });
  });
});
