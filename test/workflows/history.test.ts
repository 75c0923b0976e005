import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeTestConnections, testTools } from '../fixtures/tools.js';
import { createHarness, type Harness, submit, waitForTask } from '../helpers/harness.js';

/**
 * The durable history (docs/workflows.md "History") against a reference interpreter: from a random DAG and
 * its failure schedule (how many tries each step fails before it succeeds, or that it breaks for
 * good, or that its condition is false), what events each step, and the task, must have, in
 * which order. Every state change must appear once, in order, and nothing else.
 */

interface Event {
  seq: number;
  type: string;
  at: string;
  run: number;
  step_id?: string;
  item?: number;
  attempt?: number;
  data?: Record<string, any>;
}

async function history(h: Harness, id: string, query = ''): Promise<Event[]> {
  const events: Event[] = [];
  let after: string | null = null;
  do {
    const response: { status: number; body: any } = await h.request(
      'GET',
      `/tasks/${id}/history?limit=7${after ? `&after=${after}` : ''}${query ? `&${query}` : ''}`,
    );
    expect(response.status, JSON.stringify(response.body)).toBe(200);
    events.push(...response.body.events);
    after = response.body.next_cursor;
  } while (after);
  return events;
}

/** A compact form of an event, for comparing sequences. */
function shape(event: Event): string {
  const d = event.data ?? {};
  switch (event.type) {
    case 'attempt_started':
      return `attempt_started#${event.attempt}`;
    case 'attempt_ended':
      return `attempt_ended#${event.attempt}:${d.status}${d.will_retry ? ':retry' : ''}`;
    case 'retried':
      return `retried#${event.attempt}`;
    case 'step_skipped':
      return `step_skipped:${d.reason}`;
    default:
      return event.type;
  }
}

type Plan = { deps: number[]; fate: { kind: 'ok'; failures: number } | { kind: 'broken' } | { kind: 'when_false' } };

/** The reference interpreter: each step's events, and how each ends. */
function reference(plan: Plan[]): { steps: string[][]; ends: string[] } {
  const ends: string[] = [];
  const steps = plan.map((step, index) => {
    const deps = step.deps.map((dep) => ends[dep]!);
    if (deps.length > 0 && deps.every((end) => end === 'skipped')) {
      ends[index] = 'skipped';
      return ['step_skipped:branch_not_taken'];
    }
    if (step.fate.kind === 'when_false') {
      ends[index] = 'skipped';
      return ['step_skipped:condition'];
    }
    // A step made ready while its task runs is claimed in that commit: pending to running. A
    // step without dependencies is queued with the new task, and its delivery claims it.
    const events = step.deps.length === 0 ? ['step_queued', 'step_running'] : ['step_running'];
    if (step.fate.kind === 'broken') {
      ends[index] = 'failed';
      return [...events, 'attempt_started#1', 'attempt_ended#1:failed', 'step_failed'];
    }
    for (let attempt = 1; attempt <= step.fate.failures; attempt += 1) {
      events.push(`attempt_started#${attempt}`, `attempt_ended#${attempt}:failed:retry`, `retried#${attempt}`);
    }
    const last = step.fate.failures + 1;
    events.push(`attempt_started#${last}`, `attempt_ended#${last}:completed`, 'step_completed');
    ends[index] = 'completed';
    return events;
  });
  return { steps, ends };
}

let counter = 0;

describe('task history', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness({ tools: testTools, env: { WORKER_CONCURRENCY: '16' } });
  });
  afterAll(async () => {
    await h.close();
    await closeTestConnections();
  });

  it('records every state change of a random workflow with retries once, in order, as a reference interpreter says', async () => {
    const fate = fc.oneof(
      { weight: 4, arbitrary: fc.record({ kind: fc.constant('ok' as const), failures: fc.integer({ min: 0, max: 2 }) }) },
      { weight: 1, arbitrary: fc.record({ kind: fc.constant('broken' as const) }) },
      { weight: 1, arbitrary: fc.record({ kind: fc.constant('when_false' as const) }) },
    );
    const stepArbitrary = (index: number) =>
      fc.record({
        deps: index === 0 ? fc.constant<number[]>([]) : fc.uniqueArray(fc.integer({ min: 0, max: index - 1 }), { maxLength: Math.min(index, 3) }),
        fate,
      });
    const graphs = fc.integer({ min: 1, max: 8 }).chain((size) => fc.tuple(...Array.from({ length: size }, (_, index) => stepArbitrary(index))));

    await fc.assert(
      fc.asyncProperty(graphs, async (generated) => {
        const plan = generated as Plan[];
        counter += 1;
        const name = `history_${counter}`;
        const key = `${name}-${Date.now()}`;
        const steps = plan.map((step, index) => {
          const id = `s${index}`;
          const common = { id, depends_on: step.deps.map((dep) => `s${dep}`), ...(step.fate.kind === 'when_false' ? { when: 'false' } : {}) };
          if (step.fate.kind === 'broken') return { ...common, tool: 'broken', on_failure: 'continue', input: { key: `${key}-${id}` }, retry: { attempts: 1 } };
          return {
            ...common,
            tool: 'flaky',
            input: { succeed_on: step.fate.kind === 'ok' ? step.fate.failures + 1 : 1, key: `${key}-${id}` },
            retry: { attempts: 4, backoff: { type: 'fixed', delay_ms: 10 } },
          };
        });
        const defined = await h.request('POST', '/workflows', { name, steps });
        expect(defined.status, JSON.stringify(defined.body)).toBe(201);
        const expected = reference(plan);

        const id = await submit(h, { task_type: name });
        const task = await waitForTask(h, id, 60_000);
        expect(['completed', 'failed']).toContain(task.status);
        const events = await history(h, id);

        // In order: seq increases; the whole list read page by page is the list read at once.
        for (let index = 1; index < events.length; index += 1) expect(events[index]!.seq).toBeGreaterThan(events[index - 1]!.seq);
        const whole = await h.request('GET', `/tasks/${id}/history?limit=500`);
        expect(whole.body.events).toEqual(events);
        expect(events.every((event) => event.run === 1)).toBe(true);

        // The task's own events.
        const ran = expected.steps.some((list) => list.includes('step_running'));
        const taskEvents = events.filter((event) => event.step_id === undefined).map(shape);
        expect(taskEvents).toEqual(['submitted', ...(ran ? ['task_started'] : []), `task_${task.status}`]);
        expect(events[0]!.type).toBe('submitted');
        expect(events.at(-1)!.type).toBe(`task_${task.status}`);

        // Each step's events, exactly.
        for (const [index, list] of expected.steps.entries()) {
          const stepId = `s${index}`;
          expect(events.filter((event) => event.step_id === stepId).map(shape), stepId).toEqual(list);
          expect((await history(h, id, `step=${stepId}`)).map(shape), `${stepId} (filtered)`).toEqual(list);
        }
        expect(events.length).toBe(taskEvents.length + expected.steps.flat().length);

        // A step starts only after its dependencies' ends; the task starts before any attempt.
        const position = (stepId: string, type: (t: string) => boolean) => events.findIndex((event) => event.step_id === stepId && type(event.type));
        const ending = (t: string) => t === 'step_completed' || t === 'step_failed' || t === 'step_skipped';
        for (const [index, step] of plan.entries()) {
          const first = events.findIndex((event) => event.step_id === `s${index}`);
          for (const dep of step.deps) expect(position(`s${dep}`, ending), `s${dep} before s${index}`).toBeLessThan(first);
        }
        if (ran) {
          const started = events.findIndex((event) => event.type === 'task_started');
          expect(started).toBeLessThan(events.findIndex((event) => event.type === 'attempt_started'));
        }
        // Attempts carry their worker, delivery and job (a first attempt claimed when its step was
        // made ready has no worker yet: its end says which ran it); ends their duration and errors.
        for (const event of events.filter((candidate) => candidate.type === 'attempt_started')) {
          expect(event.data).toMatchObject({ try: event.attempt, delivery: event.attempt });
          if (event.data!.claimed_when_ready) expect(event.attempt).toBe(1);
          else expect(event.data).toMatchObject({ worker: expect.any(String), job_id: expect.any(String) });
        }
        for (const event of events.filter((candidate) => candidate.type === 'attempt_ended')) {
          expect(event.data, 'who ran it').toMatchObject({ worker: expect.any(String), job_id: expect.any(String) });
          expect(event.data!.duration_ms).toBeGreaterThanOrEqual(0);
          if (event.data!.status === 'failed') expect(event.data!.error).toMatchObject({ name: expect.any(String), message: expect.any(String) });
        }
        // A fixed 10 ms backoff, with its jitter (half to all of it).
        for (const event of events.filter((candidate) => candidate.type === 'retried')) {
          expect(event.data).toMatchObject({ next_try: event.attempt! + 1 });
          expect(event.data!.delay_ms).toBeGreaterThanOrEqual(5);
          expect(event.data!.delay_ms).toBeLessThanOrEqual(10);
        }
      }),
      { numRuns: 12 },
    );
  }, 300_000);

  it("records a one-tool task's attempts, and GET /result shows the last ones with their errors and durations", async () => {
    // Fails twice (retried after 100-200 ms), then succeeds.
    const id = await submit(h, { task_type: 'flaky', params: { succeed_on: 3, key: `single-${Date.now()}` } });
    const task = await waitForTask(h, id, 30_000);
    expect(task.status).toBe('completed');
    const events = await history(h, id);
    expect(events.map(shape)).toEqual([
      'submitted',
      'step_queued',
      'task_started',
      'step_running',
      'attempt_started#1',
      'attempt_ended#1:failed:retry',
      'retried#1',
      'attempt_started#2',
      'attempt_ended#2:failed:retry',
      'retried#2',
      'attempt_started#3',
      'attempt_ended#3:completed',
      'step_completed',
      'task_completed',
    ]);
    const [retried] = events.filter((event) => event.type === 'retried');
    // The delay recorded is the one the backoff used: exponential from 100 ms, with jitter.
    expect(retried!.data!.delay_ms).toBeGreaterThanOrEqual(50);
    expect(retried!.data!.delay_ms).toBeLessThanOrEqual(100);
    const second = events.find((event) => event.type === 'attempt_started' && event.attempt === 2)!;
    expect(Date.parse(second.at) - Date.parse(retried!.at)).toBeGreaterThanOrEqual(retried!.data!.delay_ms - 5);

    const step = task.steps[0];
    expect(step.attempts).toBe(3);
    expect(step.last_attempts).toHaveLength(3);
    expect(
      step.last_attempts.map((attempt: { attempt: number; status: string; will_retry: boolean }) => [attempt.attempt, attempt.status, attempt.will_retry]),
    ).toEqual([
      [3, 'completed', false],
      [2, 'failed', true],
      [1, 'failed', true],
    ]);
    expect(step.last_attempts[1].error).toMatchObject({ message: 'attempt 2 failed on purpose' });
    for (const attempt of step.last_attempts) expect(attempt.duration_ms).toBeGreaterThanOrEqual(0);

    // A fast one-tool task goes from queued to its end in one write: its whole history with it.
    const fast = await submit(h, { task_type: 'echo', params: { hello: 'world' } });
    expect((await waitForTask(h, fast)).status).toBe('completed');
    expect((await history(h, fast)).map(shape)).toEqual([
      'submitted',
      'step_queued',
      'task_started',
      'step_running',
      'attempt_started#1',
      'attempt_ended#1:completed',
      'step_completed',
      'task_completed',
    ]);
  }, 60_000);

  it("records a map's items' attempts, each with its item, and its step's changes", async () => {
    const name = `history_map_${Date.now()}`;
    const defined = await h.request('POST', '/workflows', {
      name,
      steps: [{ id: 'each', tool: 'echo', for_each: [10, 20, 30], max_parallel: 2, input: { value: '{{item}}' } }],
    });
    expect(defined.status, JSON.stringify(defined.body)).toBe(201);
    const id = await submit(h, { task_type: name });
    expect((await waitForTask(h, id)).status).toBe('completed');
    const events = await history(h, id, 'step=each');
    expect(events.filter((event) => event.item === undefined).map(shape)).toEqual(['step_running', 'step_completed']);
    for (const item of [0, 1, 2]) {
      expect(events.filter((event) => event.item === item).map(shape), `item ${item}`).toEqual(['attempt_started#1', 'attempt_ended#1:completed']);
    }
  }, 60_000);

  it('records a cancel and a resume, and the resumed run apart', async () => {
    const name = `history_cancel_${Date.now()}`;
    const key = `${name}-hang`;
    const defined = await h.request('POST', '/workflows', {
      name,
      steps: [
        { id: 'first', tool: 'echo', input: {} },
        { id: 'wait', tool: 'hang', depends_on: ['first'], input: { key, release_on_call: 2 } },
      ],
    });
    expect(defined.status).toBe(201);
    const id = await submit(h, { task_type: name });
    // Cancelled while `wait` hangs.
    for (let tries = 0; ; tries += 1) {
      const events = await history(h, id, 'step=wait');
      if (events.some((event) => event.type === 'attempt_started')) break;
      expect(tries).toBeLessThan(100);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect((await h.request('POST', `/tasks/${id}/cancel`)).status).toBe(200);
    expect((await waitForTask(h, id)).status).toBe('cancelled');
    expect((await h.request('POST', `/tasks/${id}/retry`)).status).toBe(202);
    expect((await waitForTask(h, id, 30_000)).status).toBe('completed');

    const events = await history(h, id);
    const tasks = events.filter((event) => event.step_id === undefined).map((event) => `${event.type}@${event.run}`);
    expect(tasks).toEqual(['submitted@1', 'task_started@1', 'task_cancelled@1', 'task_resumed@2', 'task_started@2', 'task_completed@2']);
    const wait = events.filter((event) => event.step_id === 'wait').map((event) => `${shape(event)}@${event.run}`);
    expect(wait).toEqual([
      'step_running@1',
      'attempt_started#1@1',
      // Aborted with its task: the attempt's end, as the worker reported it.
      'attempt_ended#1:cancelled@1',
      'step_cancelled@1',
      'step_pending@2',
      // A retried task is queued until a worker takes a step: the step's delivery claims it.
      'step_queued@2',
      'step_running@2',
      'attempt_started#1@2',
      'attempt_ended#1:completed@2',
      'step_completed@2',
    ]);
    // The completed step is not run again, and its history says so: nothing in run 2.
    expect(events.filter((event) => event.step_id === 'first' && event.run === 2)).toEqual([]);
  }, 60_000);
});
