import { afterAll, beforeAll, describe, expect, expectTypeOf, it } from 'vitest';
import { createClient, defineWorkflow, type FollowEvent, type OrchestratorClient, OrchestratorError, type WorkflowParams } from '../../client/index.js';
import { startApi } from '../../src/api/server.js';
import { loadConfig } from '../../src/lib/config.js';
import { createHarness, type Harness, poll, uniqueName } from '../helpers/harness.js';
import { KEY, whilePaused } from './support.js';

/** The typed client (client/index.ts) against a live API and worker over HTTP, with an API key. */

/** The error a promise rejects with; fails the test if it resolves. */
async function rejection(promise: Promise<unknown>): Promise<OrchestratorError> {
  const error = await promise.then(
    (value) => {
      throw new Error(`expected a rejection, got ${JSON.stringify(value)}`);
    },
    (reason: unknown) => reason,
  );
  expect(error).toBeInstanceOf(OrchestratorError);
  return error as OrchestratorError;
}

describe('the typed client', () => {
  let h: Harness;
  let client: OrchestratorClient;
  beforeAll(async () => {
    h = await createHarness({ env: { API_KEYS: KEY } });
    client = createClient({ baseUrl: `${h.url}/`, apiKey: KEY });
  });
  afterAll(async () => {
    await h?.close();
  });

  it('submits a task and waitForResult long-polls until it ends with its output', async () => {
    const params = { hello: 'world', n: [1, 2] };
    const submitted = await client.submit('echo', params);
    expect(submitted).toMatchObject({ status: 'assigned', replayed: false, message: "Task 'echo' successfully assigned" });

    const task = await client.waitForResult(submitted.task_id, { signal: AbortSignal.timeout(20_000) });
    expect(task).toMatchObject({ task_id: submitted.task_id, task_type: 'echo', status: 'completed', result: params, progress: { completed: 1, total: 1 } });
    expect(task.steps).toEqual([expect.objectContaining({ id: 'echo', tool: 'echo', status: 'completed', output: params })]);
    expect(await client.result(submitted.task_id)).toMatchObject({ status: 'completed', result: params });
  });

  it('follow yields a snapshot, then the step and task transitions, ends with the task, and resumes from an event id', async () => {
    const events: FollowEvent[] = [];
    const { taskId, stream } = await whilePaused(h, 'echo', async () => {
      const taskId = (await client.submit('echo', { followed: true })).task_id;
      const stream = client.follow(taskId, { signal: AbortSignal.timeout(20_000) });
      // The snapshot arrives while the step cannot start: every transition comes after it.
      const first = await stream.next();
      if (!first.done) events.push(first.value);
      return { taskId, stream };
    });
    for await (const event of stream) events.push(event);

    expect(events[0]).toMatchObject({ type: 'snapshot', task: { task_id: taskId, status: 'queued' } });
    expect(events).toContainEqual(expect.objectContaining({ type: 'step', task_id: taskId, step_id: 'echo', status: 'completed' }));
    expect(events.at(-1)).toMatchObject({ type: 'task', task_id: taskId, status: 'completed' });
    expect(events.every((event) => event.id.length > 0)).toBe(true);

    // Last-Event-ID: only what came after the snapshot, no snapshot again.
    const resumed: FollowEvent[] = [];
    for await (const event of client.follow(taskId, { lastEventId: events[0]!.id })) resumed.push(event);
    expect(resumed).toEqual(events.slice(1));
  });

  it('follow resumes from the last event id when the server ends a stream at its lifetime (EVENT_STREAM_MAX_S)', async () => {
    const shortLived = await startApi(loadConfig({ ...h.env, EVENT_STREAM_MAX_S: '1' }), h.logger, h.registry);
    try {
      const streams: (string | null)[] = [];
      const watched = createClient({
        baseUrl: shortLived.url,
        apiKey: KEY,
        fetch: (request) => {
          if (request.url.endsWith('/events')) streams.push(request.headers.get('last-event-id'));
          return fetch(request);
        },
      });
      const events: FollowEvent[] = [];
      const { stream, pending } = await whilePaused(h, 'echo', async () => {
        const { task_id: id } = await watched.submit('echo', { resumed: true });
        const stream = watched.follow(id, { signal: AbortSignal.timeout(20_000) });
        const first = await stream.next();
        if (!first.done) events.push(first.value);
        // Waiting for the next event: the stream reaches its lifetime meanwhile, and the client opens another.
        const pending = stream.next();
        await poll(() => streams.length >= 2, { label: 'a second stream' });
        return { stream, pending };
      });
      const next = await pending;
      if (!next.done) events.push(next.value);
      for await (const event of stream) events.push(event);

      expect(streams.slice(0, 2)).toEqual([null, events[0]!.id]);
      expect(events.filter((event) => event.type === 'snapshot')).toHaveLength(1);
      expect(events.at(-1)).toMatchObject({ type: 'task', status: 'completed' });
      expect(new Set(events.map((event) => event.id)).size).toBe(events.length);
    } finally {
      await shortLived.close();
    }
  });

  it('defineWorkflow declares a workflow that push stores and submit runs, typed by its parameters', async () => {
    const name = uniqueName('greet');
    const greet = defineWorkflow({
      name,
      parameters: [
        { name: 'who', type: 'string', required: true },
        { name: 'punctuation', type: 'string', default: '!' },
      ],
      steps: [
        { id: 'hello', tool: 'echo', input: { text: 'Hello, {{params.who}}' } },
        { id: 'shout', tool: 'echo', depends_on: ['hello'], input: { text: '{{steps.hello.output.text}}{{params.punctuation}}' } },
      ],
      output: { message: '{{steps.shout.output.text}}' },
    });
    expectTypeOf<WorkflowParams<typeof greet>>().toEqualTypeOf<{ who: string } & { punctuation?: string }>();

    const stored = await client.workflows.push(greet);
    expect(stored).toMatchObject({ name, version: 1 });
    expect((await client.workflows.list()).map((workflow) => workflow.name)).toContain(name);

    const submitted = await client.submit(greet, { who: 'Ada' });
    const task = await client.waitForResult(submitted.task_id, { signal: AbortSignal.timeout(20_000) });
    expect(task).toMatchObject({
      status: 'completed',
      workflow: { name, version: 1 },
      result: { message: 'Hello, Ada!' },
      progress: { completed: 2, total: 2 },
    });

    const executed = await client.workflows.execute(name, { who: 'Bob', punctuation: '?' });
    expect(await client.waitForResult(executed.task_id, { signal: AbortSignal.timeout(20_000) })).toMatchObject({ result: { message: 'Hello, Bob?' } });
  });

  it("throws the API's errors as OrchestratorError, with the code and every problem's path", async () => {
    const invalid = await rejection(client.submit('sleep', { ms: 'soon', extra: 1 }));
    expect(invalid).toMatchObject({ status: 400, code: 'invalid_params' });
    expect(invalid.problems.map((problem) => problem.path)).toContain('params.ms');
    expect(invalid.requestId).toMatch(/.+/);

    const unknown = await rejection(client.submit('no_such_tool'));
    expect(unknown).toMatchObject({ status: 404, code: 'unknown_task_type', problems: [] });

    const workflow = await rejection(
      client.workflows.push({
        name: uniqueName('broken'),
        steps: [
          { id: 'a', tool: 'echo' },
          { id: 'b', tool: 'nope', depends_on: ['missing'] },
        ],
      }),
    );
    expect(workflow).toMatchObject({ status: 400, code: 'invalid_workflow' });
    expect(workflow.problems.map((problem) => problem.path)).toEqual(expect.arrayContaining(['steps[1].tool', 'steps[1].depends_on[0]']));

    expect(await rejection(client.result('00000000-0000-4000-8000-000000000000'))).toMatchObject({ status: 404, code: 'task_not_found' });
    expect(await rejection(createClient({ baseUrl: h.url }).tools())).toMatchObject({ status: 401, code: 'unauthorized' });
  });

  it('an idempotency key returns the first task for the same body and refuses another body', async () => {
    const key = uniqueName('order');
    const first = await client.submit('echo', { order: 1 }, { idempotency_key: key });
    const again = await client.submit('echo', { order: 1 }, { idempotency_key: key });
    expect(first.replayed).toBe(false);
    expect(again).toMatchObject({ task_id: first.task_id, replayed: true });
    expect(await rejection(client.submit('echo', { order: 2 }, { idempotency_key: key }))).toMatchObject({ status: 409, code: 'idempotency_conflict' });
  });

  it('signals a wait step; a payload off its schema throws invalid_payload, and a second signal 409 (the task has ended)', async () => {
    const name = uniqueName('client_signal');
    await client.workflows.push({ name, steps: [{ id: 'hold', wait: { signal: 'go', schema: { type: 'object', required: ['ok'] } } }] } as never);
    const { task_id: id } = await client.submit(name);
    await poll(async () => (await client.result(id)).steps[0]?.status === 'waiting', { label: 'the step to wait' });
    expect(await rejection(client.signal(id, 'go', {}))).toMatchObject({ status: 400, code: 'invalid_payload' });
    expect(await client.signal(id, 'go', { ok: true })).toMatchObject({ task_id: id, step_id: 'hold', status: 'recorded' });
    expect(await client.waitForResult(id, { signal: AbortSignal.timeout(20_000) })).toMatchObject({ status: 'completed', result: { hold: { ok: true } } });
    expect(await rejection(client.signal(id, 'go', { ok: false }))).toMatchObject({ status: 409, code: 'task_finished' });
  });

  it('cancels a task and retries it as a new run', async () => {
    const submitted = await client.submit('sleep', { ms: 600_000 });
    expect(await client.cancel(submitted.task_id)).toMatchObject({ task_id: submitted.task_id, status: 'cancelled' });
    expect(await client.waitForResult(submitted.task_id, { signal: AbortSignal.timeout(20_000) })).toMatchObject({ status: 'cancelled' });
    expect(await rejection(client.cancel(submitted.task_id))).toMatchObject({ status: 409, code: 'task_finished' });

    expect(await client.retry(submitted.task_id)).toMatchObject({ task_id: submitted.task_id, status: 'queued', run: 2 });
    await client.cancel(submitted.task_id);
    expect(await client.waitForResult(submitted.task_id, { signal: AbortSignal.timeout(20_000) })).toMatchObject({ status: 'cancelled', run: 2 });
  });

  it('lists tasks and tools', async () => {
    const submitted = await client.submit('echo', { listed: true });
    const page = await client.tasks({ task_type: 'echo', limit: 200 });
    expect(page.items.map((task) => task.task_id)).toContain(submitted.task_id);
    expect((await client.tools()).map((tool) => tool.name)).toEqual(expect.arrayContaining(['echo', 'sleep', 'http', 'notify']));
  });
});
