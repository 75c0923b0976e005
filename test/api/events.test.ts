import { connect } from 'node:net';
import { PassThrough } from 'node:stream';
import { Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { type ApiServer, startApi } from '../../src/api/server.js';
import type { Transition } from '../../src/engine/state.js';
import { isFinished } from '../../src/engine/status.js';
import { loadConfig } from '../../src/lib/config.js';
import { EventLog } from '../../src/queue/event-log.js';
import { toolQueueName } from '../../src/queue/jobs.js';
import { masters } from '../../src/queue/redis.js';
import { Shards } from '../../src/queue/shards.js';
import { type NodeProcess, runEntry } from '../helpers/child-process.js';
import { createHarness, type Harness, poll, submit, waitForTask } from '../helpers/harness.js';
import { latch } from '../helpers/latch.js';
import { openSse, type SseEvent, type SseStream } from '../helpers/sse.js';

const finished = (events: SseEvent[]) => events.some((event) => event.event === 'task' && ['completed', 'failed', 'cancelled'].includes(event.data.status));

describe('live progress: GET /tasks/:id/events and ?wait=N', () => {
  let h: Harness;
  let second: NodeProcess;
  let secondUrl: string;
  // The in-process API's and worker's warnings (a failed event append logs one), printed when a test fails.
  const logged: string[] = [];
  beforeAll(async () => {
    const logStream = new PassThrough();
    logStream.on('data', (line: Buffer) => logged.push(line.toString('utf8').trim()));
    h = await createHarness({ env: { LOG_LEVEL: 'warn' }, logStream });
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

  /**
   * Submits a `watched` task and opens its event stream on the API at `url` before its first step
   * can run: that step waits in a paused queue (in every queue shard: the task's is not known yet)
   * until the stream has its snapshot, so every transition happens while it is open. (Opened
   * after the submission without that, on a busy machine the stream began after the first step
   * had completed, with a snapshot that held it.)
   */
  async function submitWatched(url: string): Promise<{ id: string; stream: SseStream }> {
    const echoes = Shards.of(h.config).prefixes.map((prefix) => new Queue(toolQueueName('echo'), { connection: h.redis, prefix }));
    await Promise.all(echoes.map((echo) => echo.pause()));
    try {
      const id = await submit(h, { task_type: 'watched' });
      const stream = await openSse(`${url}/tasks/${id}/events`);
      await stream.waitFor((events) => events.length > 0);
      return { id, stream };
    } finally {
      await Promise.all(echoes.map((echo) => echo.resume()));
      await Promise.all(echoes.map((echo) => echo.close()));
    }
  }

  it('streams a snapshot, then one event per step and task transition, and ends with the task — from the other API process', async () => {
    // Submitted to the in-process API; watched on the other one.
    const { id, stream } = await submitWatched(secondUrl);
    expect(stream.status).toBe(200);
    expect(stream.headers.get('content-type')).toMatch(/^text\/event-stream/);
    await stream.ended;
    const events = stream.events;
    expect(events[0]!.event).toBe('snapshot');
    expect(events[0]!.data).toMatchObject({ task_id: id, status: 'queued' });
    const transitions = events.slice(1).filter((event) => event.event !== 'progress');
    const last = transitions.at(-1)!;
    expect(last).toMatchObject({ event: 'task', data: { task_id: id, status: 'completed' } });
    // Every step is seen completing, exactly once, in order.
    const completions = transitions.filter((event) => event.event === 'step' && event.data.status === 'completed').map((event) => event.data.step_id);
    expect(completions).toEqual(['first', 'nap', 'last']);
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

  /** A `watched` task, followed from its start until its first step completed; then the client goes away. */
  async function watchUntilFirstStep(): Promise<{ id: string; seen: SseEvent[] }> {
    const { id, stream: first } = await submitWatched(h.url);
    let seen: SseEvent[] = [];
    onTestFailed(async () => {
      // What a rare failure needs to be explained: the task's event log as Redis holds it, its row, and the logs.
      const entries = await h.redis.xrange(new EventLog(h.redis, Shards.of(h.config), { ttlSeconds: 60, afterEndSeconds: 60 }).key(id), '-', '+');
      const row = (await h.db.pool.query('SELECT status, finished_at FROM tasks WHERE id = $1', [id])).rows[0];
      console.error(
        [
          `task ${id}: ${JSON.stringify(row)}`,
          `its events in Redis: ${JSON.stringify(entries)}`,
          `the first stream saw: ${JSON.stringify(seen.map((event) => [event.id, event.event, event.data?.step_id, event.data?.status]))}`,
          `warnings here: ${logged.join('\n') || '(none)'}`,
          `the other API's output (last 4,000 characters): ${second.output.slice(-4_000)}`,
        ].join('\n'),
      );
    });
    seen = await first.waitFor((events) =>
      events.some((event) => event.event === 'step' && event.data.step_id === 'first' && event.data.status === 'completed'),
    );
    first.close();
    return { id, seen };
  }

  it('resumes with Last-Event-ID without repeating what the client had', async () => {
    const { id, seen } = await watchUntilFirstStep();
    const lastSeen = seen.at(-1)!.id!;
    const resumed = await openSse(`${secondUrl}/tasks/${id}/events`, { 'last-event-id': lastSeen });
    await resumed.ended;
    const got = JSON.stringify(resumed.events.map((event) => [event.id, event.event, event.data?.step_id, event.data?.status]));
    expect(resumed.events[0]!.event, got).not.toBe('snapshot');
    const seenIds = new Set(seen.map((event) => event.id));
    expect(resumed.events.every((event) => !seenIds.has(event.id))).toBe(true);
    expect(finished(resumed.events)).toBe(true);
    expect(resumed.events.some((event) => event.event === 'step' && event.data.step_id === 'last' && event.data.status === 'completed')).toBe(true);
  });

  it('resumes a task that ended while its ending events are late (appended seconds after the commit) with those events, not a snapshot', async () => {
    const { id, seen } = await watchUntilFirstStep();
    // The worker (in this process) appends the task's ending events 4 s after their commit, as a
    // loaded machine once did 2 s late: longer than a fixed grace, which answered a snapshot.
    const append = EventLog.prototype.append;
    const late = latch();
    EventLog.prototype.append = async function (this: EventLog, transitions: Transition[]) {
      if (transitions.some((transition) => transition.taskId === id && !transition.stepId && isFinished(transition.status))) {
        await new Promise((resolve) => setTimeout(resolve, 4_000));
        await append.call(this, transitions);
        late.open();
        return;
      }
      return append.call(this, transitions);
    };
    try {
      await poll(async () => (await h.db.pool.query('SELECT status FROM tasks WHERE id = $1', [id])).rows[0]?.status === 'completed', {
        label: 'the task to end in PostgreSQL',
      });
      const resumed = await openSse(`${secondUrl}/tasks/${id}/events`, { 'last-event-id': seen.at(-1)!.id! });
      await resumed.ended;
      await late.opened;
      expect(resumed.events.map((event) => event.event)).not.toContain('snapshot');
      expect(resumed.events.at(-1)).toMatchObject({ event: 'task', data: { task_id: id, status: 'completed' } });
      expect(resumed.events.some((event) => event.event === 'step' && event.data.step_id === 'last' && event.data.status === 'completed')).toBe(true);
    } finally {
      EventLog.prototype.append = append;
    }
  });

  it("keeps a finished task's events in Redis only EVENTS_KEEP_AFTER_END_S; a later resume gets the snapshot", async () => {
    // Delayed, so that the stream opens before the task ends (an ended task answers its snapshot alone).
    const id = await submit(h, { task_type: 'echo', params: { kept: true }, delay_ms: 300 });
    const first = await openSse(`${h.url}/tasks/${id}/events`);
    await first.ended;
    const lastSeen = first.events.at(-1)!.id!;
    expect(first.events.at(-1)).toMatchObject({ event: 'task', data: { status: 'completed' } });
    const key = `${Shards.of(h.config).prefixOf(id)}:events:${id}`;
    const ttl = await h.redis.ttl(key);
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(h.config.EVENTS_KEEP_AFTER_END_S);
    expect(h.config.EVENTS_KEEP_AFTER_END_S).toBeLessThan(h.config.EVENTS_TTL_S);
    // What the expiry does, without waiting for it.
    await h.redis.del(key);
    const resumed = await openSse(`${secondUrl}/tasks/${id}/events`, { 'last-event-id': lastSeen });
    await resumed.ended;
    expect(resumed.events.at(-1)).toMatchObject({ event: 'snapshot', data: { task_id: id, status: 'completed', result: { kept: true } } });
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
    const response = await fetch(`${secondUrl}/result/${id}?wait=20`);
    const body = (await response.json()) as { status: string; finished_at: string };
    const answeredAt = Date.now();
    expect(body.status).toBe('completed');
    // Counted from the task's end, not from a guess of how long it takes: an answer only when
    // the 20 s ran out would come far later.
    expect(answeredAt - Date.parse(body.finished_at)).toBeLessThan(10_000);
  });

  it("shows an adapter's progress in GET /result while it runs", async () => {
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

describe('limits on event streams and long-polls', () => {
  const KEY_A = 'key-a-0123456789abcdef';
  const KEY_B = 'key-b-0123456789abcdef';
  let h: Harness;
  /** Another API process of the same deployment (same Redis and database). */
  let other: ApiServer;
  /** An API whose streams live one second. */
  let shortLived: ApiServer;
  let taskId: string;
  beforeAll(async () => {
    // No worker: the task stays queued, so streams and long-polls stay open until closed.
    h = await createHarness({ worker: false, env: { API_KEYS: `${KEY_A},${KEY_B}`, EVENT_STREAMS_PER_KEY: '2', LONG_POLLS_PER_KEY: '2' } });
    other = await startApi(loadConfig(h.env), h.logger, h.registry);
    shortLived = await startApi(loadConfig({ ...h.env, EVENT_STREAM_MAX_S: '1' }), h.logger, h.registry);
    const submitted = await h.request('POST', '/assign-task', { task_type: 'echo', params: {} }, { authorization: `Bearer ${KEY_A}` });
    expect(submitted.status).toBe(202);
    taskId = submitted.body.task_id;
  });
  afterAll(async () => {
    await shortLived?.close();
    await other?.close();
    await h?.close();
  });

  const auth = (key: string) => ({ authorization: `Bearer ${key}` });
  /** Slots of a kind held now, every client's (one sorted set per client; on a cluster the prefix's hash tag keeps them on one node). */
  const heldSlots = async (kind: string) => {
    let held = 0;
    for (const node of masters(h.redis)) {
      for (const key of await node.keys(`${h.config.QUEUE_PREFIX}:slots:${kind}:*`)) held += await node.zcard(key);
    }
    return held;
  };

  it('closes an API process promptly while a long-poll waits: the poll is answered, and no connection without a request holds the close', async () => {
    const closing = await startApi(loadConfig(h.env), h.logger, h.registry);
    const answer = fetch(`${closing.url}/result/${taskId}?wait=30`, { headers: auth(KEY_B) });
    // A client's spare connection, open but never used (undici opens such).
    const spare = connect(Number(new URL(closing.url).port), '127.0.0.1');
    const spareClosed = new Promise((resolve) => spare.once('close', resolve));
    await new Promise((resolve) => spare.once('connect', resolve));
    await poll(async () => (await heldSlots('long-polls')) === 1, { label: 'the long-poll to hold its slot' });
    const started = Date.now();
    await closing.close();
    const took = Date.now() - started;
    const response = await answer;
    expect(response.status).toBe(200);
    expect(((await response.json()) as { status: string }).status).toBe('queued');
    await spareClosed;
    // The connection the answer left idle was held for keepAliveTimeout (65 s), the spare one for headersTimeout (60 s).
    expect(took).toBeLessThan(10_000);
  });

  it('caps the event streams of a key across API processes, with 429 and Retry-After', async () => {
    const first = await openSse(`${h.url}/tasks/${taskId}/events`, auth(KEY_A));
    const second = await openSse(`${other.url}/tasks/${taskId}/events`, auth(KEY_A));
    const opened = [first, second];
    try {
      expect([first.status, second.status]).toEqual([200, 200]);
      const refused = await fetch(`${h.url}/tasks/${taskId}/events`, { headers: auth(KEY_A) });
      expect(refused.status).toBe(429);
      expect(refused.headers.get('retry-after')).toBe('5');
      expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('too_many_streams');
      // Another key has its own allowance.
      const otherKey = await openSse(`${other.url}/tasks/${taskId}/events`, auth(KEY_B));
      opened.push(otherKey);
      expect(otherKey.status).toBe(200);
      // A stream that ends gives its place back.
      first.close();
      const again = await poll(
        async () => {
          const stream = await openSse(`${h.url}/tasks/${taskId}/events`, auth(KEY_A));
          if (stream.status === 200) return stream;
          stream.close();
          return undefined;
        },
        { label: 'a free stream slot after closing one' },
      );
      opened.push(again);
    } finally {
      for (const stream of opened) stream.close();
    }
  });

  it('caps the waiting long-polls of a key across API processes; plain reads are not counted', async () => {
    const controller = new AbortController();
    const waiting = [h.url, other.url].map((url) =>
      fetch(`${url}/result/${taskId}?wait=30`, { headers: auth(KEY_A), signal: controller.signal }).catch(() => undefined),
    );
    try {
      // Both wait once their slots are taken (in Redis, counted across processes). A third is
      // sent only then: sent before, it could take a slot first and leave one of the two refused
      // (a loaded run did, and its probes then never met a full count).
      await poll(async () => (await heldSlots('long-polls')) === 2, { label: 'the two long-polls to hold their slots' });
      const refused = await fetch(`${other.url}/result/${taskId}?wait=1`, { headers: auth(KEY_A) });
      expect(refused.status).toBe(429);
      expect(refused.headers.get('retry-after')).toBe('5');
      expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('too_many_long_polls');
      expect((await fetch(`${h.url}/result/${taskId}`, { headers: auth(KEY_A) })).status).toBe(200);
      expect((await fetch(`${h.url}/result/${taskId}?wait=1`, { headers: auth(KEY_B) })).status).toBe(200);
    } finally {
      controller.abort();
      await Promise.all(waiting);
    }
    // Hung-up long-polls give their places back.
    await poll(async () => (await fetch(`${h.url}/result/${taskId}?wait=1`, { headers: auth(KEY_A) })).status === 200, {
      label: 'a long-poll slot after the others hung up',
    });
  });

  it('ends a stream at EVENT_STREAM_MAX_S with a reconnect event carrying the last id, from which the client resumes', async () => {
    const started = Date.now();
    const stream = await openSse(`${shortLived.url}/tasks/${taskId}/events`, auth(KEY_B));
    await stream.ended;
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
    const [snapshot, reconnect] = stream.events;
    expect(stream.events).toHaveLength(2);
    expect(snapshot).toMatchObject({ event: 'snapshot', data: { task_id: taskId, status: 'queued' } });
    expect(reconnect).toMatchObject({ event: 'reconnect', id: snapshot!.id, data: { reason: 'max_lifetime' } });
    const resumed = await openSse(`${shortLived.url}/tasks/${taskId}/events`, { ...auth(KEY_B), 'last-event-id': reconnect!.id! });
    expect(resumed.status).toBe(200);
    await resumed.ended;
    expect(resumed.events.map((event) => event.event)).toEqual(['reconnect']);
  });
});
