import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHarness, submit, waitForTask, type Harness } from '../helpers/harness.js';
import { runEntry, type NodeProcess } from '../helpers/child-process.js';
import { openSse, type SseEvent } from '../helpers/sse.js';

const finished = (events: SseEvent[]) => events.some((event) => event.event === 'task' && ['completed', 'failed', 'cancelled'].includes(event.data.status));

describe('live progress: GET /tasks/:id/events and ?wait=N', () => {
  let h: Harness;
  let second: NodeProcess;
  let secondUrl: string;
  beforeAll(async () => {
    h = await createHarness();
    const defined = await h.request('POST', '/workflows', {
      name: 'watched',
      steps: [
        { id: 'first', tool: 'echo', input: { n: 1 } },
        { id: 'nap', tool: 'sleep', depends_on: ['first'], input: { ms: 1200 } },
        { id: 'last', tool: 'echo', depends_on: ['nap'], input: { n: 2 } },
      ],
    });
    expect(defined.status).toBe(201);
    // A second API process: events must reach clients whichever process they are connected to.
    second = runEntry('src/api/main.ts', { ...h.env, LOG_LEVEL: 'info', LOG_FORMAT: 'json' });
    await second.waitForOutput(/"message":"API listening"/);
    secondUrl = JSON.parse(second.output.split('\n').find((line) => line.includes('"API listening"'))!).url;
  });
  afterAll(async () => {
    await second?.kill();
    await h.close();
  });

  it('streams a snapshot, then one event per step and task transition, and ends with the task — from the other API process', async () => {
    // Submitted to the in-process API; watched on the other one.
    const id = await submit(h, { task_type: 'watched' });
    const stream = await openSse(`${secondUrl}/tasks/${id}/events`);
    expect(stream.status).toBe(200);
    expect(stream.headers.get('content-type')).toMatch(/^text\/event-stream/);
    await stream.ended;
    const events = stream.events;
    expect(events[0]!.event).toBe('snapshot');
    expect(events[0]!.data.task_id).toBe(id);
    const transitions = events.slice(1).filter((event) => event.event !== 'progress');
    const last = transitions.at(-1)!;
    expect(last).toMatchObject({ event: 'task', data: { task_id: id, status: 'completed' } });
    // Every step that had not finished at the snapshot is seen completing, exactly once.
    const completions = transitions.filter((event) => event.event === 'step' && event.data.status === 'completed').map((event) => event.data.step_id);
    expect(new Set(completions).size).toBe(completions.length);
    expect(completions).toContain('last');
    expect(completions).toContain('nap');
    // The sleep reported progress on the way.
    const progress = events.filter((event) => event.event === 'progress');
    expect(progress.length).toBeGreaterThan(0);
    expect(progress.every((event) => event.data.step_id === 'nap' && event.data.percent > 0 && event.data.percent <= 100)).toBe(true);
    // Ids increase, so a client can resume from any of them.
    const ids = events.slice(1).map((event) => event.id!.split('-').map(BigInt));
    for (let i = 1; i < ids.length; i += 1) {
      const [ms, seq] = ids[i]!;
      const [prevMs, prevSeq] = ids[i - 1]!;
      expect(ms! > prevMs! || (ms === prevMs && seq! > prevSeq!)).toBe(true);
    }
  });

  it('resumes with Last-Event-ID without repeating what the client had', async () => {
    const id = await submit(h, { task_type: 'watched' });
    const first = await openSse(`${h.url}/tasks/${id}/events`);
    const seen = await first.waitFor((events) => events.some((event) => event.event === 'step' && event.data.step_id === 'first' && event.data.status === 'completed'));
    first.close();
    const lastSeen = seen.at(-1)!.id!;
    const resumed = await openSse(`${secondUrl}/tasks/${id}/events`, { 'last-event-id': lastSeen });
    await resumed.ended;
    expect(resumed.events[0]!.event).not.toBe('snapshot');
    const seenIds = new Set(seen.map((event) => event.id));
    expect(resumed.events.every((event) => !seenIds.has(event.id))).toBe(true);
    expect(finished(resumed.events)).toBe(true);
    expect(resumed.events.some((event) => event.event === 'step' && event.data.step_id === 'last' && event.data.status === 'completed')).toBe(true);
  });

  it('answers a finished task with its snapshot and ends', async () => {
    const id = await submit(h, { task_type: 'echo', params: { a: 1 } });
    await waitForTask(h, id);
    const stream = await openSse(`${h.url}/tasks/${id}/events`);
    await stream.ended;
    expect(stream.events).toHaveLength(1);
    expect(stream.events[0]).toMatchObject({ event: 'snapshot', data: { status: 'completed', result: { a: 1 } } });
  });

  it('answers 404 for an unknown task and 400 for a malformed Last-Event-ID', async () => {
    const unknown = await h.request('GET', '/tasks/00000000-0000-4000-8000-000000000000/events');
    expect(unknown.status).toBe(404);
    expect(unknown.body.error.code).toBe('task_not_found');
    const id = await submit(h, { task_type: 'echo', params: {} });
    const bad = await h.request('GET', `/tasks/${id}/events`, undefined, { 'last-event-id': 'yesterday' });
    expect(bad.status).toBe(400);
  });

  it('answers a long-poll on the other API process as soon as the task ends', async () => {
    const id = await submit(h, { task_type: 'sleep', params: { ms: 400 } });
    const started = Date.now();
    const response = await fetch(`${secondUrl}/result/${id}?wait=20`);
    const body = (await response.json()) as { status: string };
    expect(body.status).toBe('completed');
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('shows an adapter\'s progress in GET /result while it runs', async () => {
    const id = await submit(h, { task_type: 'sleep', params: { ms: 1500 } });
    const stream = await openSse(`${h.url}/tasks/${id}/events`);
    await stream.waitFor((events) => events.some((event) => event.event === 'progress'));
    const { body } = await h.request('GET', `/result/${id}`);
    stream.close();
    expect(body.steps[0].progress.percent).toBeGreaterThan(0);
    expect(body.steps[0].progress.message).toMatch(/slept \d+ of 1500 ms/);
    await waitForTask(h, id);
  });
});
