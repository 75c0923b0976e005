import { createHmac, timingSafeEqual } from 'node:crypto';
import { Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { callbackSecretFor } from '../../src/lib/callback-signing.js';
import { CALLBACKS_QUEUE, callbackJobId } from '../../src/queue/jobs.js';
import { testTools } from '../fixtures/tools.js';
import { createHarness, type Harness, poll, submit, waitForTask } from '../helpers/harness.js';
import { startServer, type TestServer } from '../helpers/http-server.js';

const SECRET = 'test-callback-secret-0123456789';

/** What a receiver does to trust a callback: recompute the signature over timestamp and body, with its owner's secret ('' without keys). */
function verify(headers: Record<string, string | string[] | undefined>, body: string): boolean {
  const timestamp = String(headers['x-orchestrator-timestamp']);
  const expected = `sha256=${createHmac('sha256', callbackSecretFor(SECRET, '')).update(`${timestamp}.${body}`).digest('hex')}`;
  const given = String(headers['x-orchestrator-signature']);
  return given.length === expected.length && timingSafeEqual(Buffer.from(given), Buffer.from(expected));
}

describe('completion callbacks', () => {
  let h: Harness;
  let receiver: TestServer;
  let failuresLeft = 0;
  /** Answers of /busy, in order; then 204. */
  let busyAnswers: { status: number; headers?: Record<string, string> }[] = [];
  beforeAll(async () => {
    receiver = await startServer((request, res) => {
      if (request.path.startsWith('/down')) {
        res.writeHead(500).end('down');
        return;
      }
      const busy = request.path.startsWith('/busy') ? busyAnswers.shift() : undefined;
      if (busy) {
        res.writeHead(busy.status, busy.headers).end();
        return;
      }
      if (request.path.startsWith('/flaky') && failuresLeft > 0) {
        failuresLeft -= 1;
        res.writeHead(503).end('try later');
        return;
      }
      if (request.path.startsWith('/gone')) {
        res.writeHead(410).end('gone');
        return;
      }
      res.writeHead(204).end();
    });
    h = await createHarness({
      tools: testTools,
      env: { CALLBACK_SECRET: SECRET, HTTP_TOOL_ALLOWED_HOSTS: `127.0.0.1:${receiver.port}`, CALLBACK_MAX_ATTEMPTS: '3' },
    });
  });
  afterAll(async () => {
    await h.close();
    await receiver.close();
  });

  it('POSTs the final result, signed over timestamp and body, and records the delivery', async () => {
    const id = await submit(h, { task_type: 'echo', params: { n: 1 }, callback_url: `${receiver.origin}/hook?x=1` });
    const delivery = await poll(() => receiver.received('/hook').find((request) => request.body.includes(id)), { label: 'the callback' });
    expect(delivery.method).toBe('POST');
    expect(delivery.headers['content-type']).toBe('application/json');
    expect(delivery.headers['x-orchestrator-event']).toBe('task.completed');
    expect(verify(delivery.headers, delivery.body)).toBe(true);
    // A tampered body does not verify.
    expect(verify(delivery.headers, delivery.body.replace('"n":1', '"n":2'))).toBe(false);
    expect(Math.abs(Number(delivery.headers['x-orchestrator-timestamp']) - Date.now() / 1000)).toBeLessThan(60);
    const payload = JSON.parse(delivery.body);
    expect(payload).toMatchObject({ event: 'task.completed', attempt: 1, task: { task_id: id, status: 'completed', result: { n: 1 } } });

    const result = await poll(
      async () => {
        const { body } = await h.request('GET', `/result/${id}`);
        return body.callback?.deliveries.length ? body : undefined;
      },
      { label: 'the delivery to be recorded' },
    );
    expect(result.callback).toMatchObject({ url: `${receiver.origin}/hook?x=1`, delivered: true });
    expect(result.callback.deliveries).toEqual([
      expect.objectContaining({ attempt: 1, status_code: 204, delivered: true, event: 'task.completed', error: null }),
    ]);
  });

  it('retries a failed delivery with backoff, recording each attempt', async () => {
    failuresLeft = 2;
    const id = await submit(h, { task_type: 'echo', params: {}, callback_url: `${receiver.origin}/flaky` });
    const result = await poll(
      async () => {
        const { body } = await h.request('GET', `/result/${id}`);
        return body.callback?.delivered ? body : undefined;
      },
      { label: 'the third delivery attempt', timeoutMs: 20_000 },
    );
    expect(result.callback.deliveries.map((d: { status_code: number; delivered: boolean }) => [d.status_code, d.delivered])).toEqual([
      [503, false],
      [503, false],
      [204, true],
    ]);
    const times = result.callback.deliveries.map((d: { at: string }) => Date.parse(d.at));
    // Exponential from 1 s with jitter: at least half a second, then at least a second.
    expect(times[1] - times[0]).toBeGreaterThanOrEqual(450);
    expect(times[2] - times[1]).toBeGreaterThanOrEqual(900);
    // The task's history has each delivery attempt, after the task's end.
    const history = (await h.request('GET', `/tasks/${id}/history`)).body.events as { type: string; attempt?: number; data?: Record<string, unknown> }[];
    const ended = history.findIndex((event) => event.type === 'task_completed');
    const callbacks = history.filter((event) => event.type.startsWith('callback_'));
    expect(callbacks.map((event) => [event.type, event.attempt, event.data?.status_code, event.data?.will_retry])).toEqual([
      ['callback_failed', 1, 503, true],
      ['callback_failed', 2, 503, true],
      ['callback_delivered', 3, 204, undefined],
    ]);
    expect(history.indexOf(callbacks[0]!)).toBeGreaterThan(ended);
  });

  const deliveriesOf = (id: string) => receiver.requests.filter((request) => request.body.includes(id));

  it('gives up after CALLBACK_MAX_ATTEMPTS, with every attempt recorded and the last one marked final', async () => {
    const id = await submit(h, { task_type: 'echo', params: {}, callback_url: `${receiver.origin}/down` });
    const result = await poll(
      async () => {
        const { body } = await h.request('GET', `/result/${id}`);
        return body.callback?.deliveries.length === 3 ? body : undefined;
      },
      { label: 'three recorded delivery attempts', timeoutMs: 20_000 },
    );
    expect(result.callback.delivered).toBe(false);
    expect(
      result.callback.deliveries.map((d: { attempt: number; status_code: number; delivered: boolean; will_retry: boolean }) => [
        d.attempt,
        d.status_code,
        d.delivered,
        d.will_retry,
      ]),
    ).toEqual([
      [1, 500, false, true],
      [2, 500, false, true],
      [3, 500, false, false],
    ]);
    const queue = new Queue(CALLBACKS_QUEUE, { connection: h.redis, prefix: h.config.QUEUE_PREFIX });
    try {
      await poll(async () => (await queue.getJobState(callbackJobId(id, 1))) === 'failed', { label: 'the callback job to fail for good' });
      expect((await queue.getJob(callbackJobId(id, 1)))!.attemptsMade).toBe(3);
    } finally {
      await queue.close();
    }
    expect(deliveriesOf(id)).toHaveLength(3);
  });

  it("retries after 408 and 429, waiting as long as the receiver's Retry-After asks", async () => {
    busyAnswers = [{ status: 408 }, { status: 429, headers: { 'retry-after': '3' } }];
    const id = await submit(h, { task_type: 'echo', params: {}, callback_url: `${receiver.origin}/busy` });
    const result = await poll(
      async () => {
        const { body } = await h.request('GET', `/result/${id}`);
        return body.callback?.delivered ? body : undefined;
      },
      { label: 'the delivery after 408 and 429', timeoutMs: 20_000 },
    );
    expect(
      result.callback.deliveries.map((d: { status_code: number; delivered: boolean; will_retry: boolean }) => [d.status_code, d.delivered, d.will_retry]),
    ).toEqual([
      [408, false, true],
      [429, false, true],
      [204, true, false],
    ]);
    const [, limited, delivered] = deliveriesOf(id);
    // The backoff alone would wait 1-2 s after the second failure; Retry-After: 3 wins.
    expect(delivered!.at - limited!.at).toBeGreaterThanOrEqual(2_950);
  });

  it('does not retry a receiver that refuses with a 4xx, and reports failed tasks too', async () => {
    const id = await submit(h, { task_type: 'broken', params: {}, callback_url: `${receiver.origin}/gone` });
    expect((await waitForTask(h, id)).status).toBe('failed');
    const delivery = await poll(() => receiver.received('/gone').find((request) => request.body.includes(id)), { label: 'the callback of the failed task' });
    expect(delivery.headers['x-orchestrator-event']).toBe('task.failed');
    const result = await poll(
      async () => {
        const { body } = await h.request('GET', `/result/${id}`);
        return body.callback?.deliveries.length ? body : undefined;
      },
      { label: 'the refused delivery to be recorded' },
    );
    expect(result.callback.delivered).toBe(false);
    expect(result.callback.deliveries).toEqual([expect.objectContaining({ status_code: 410, delivered: false, will_retry: false })]);
    // Still one attempt after the other steps of a retry would have happened.
    const job = await h.redis.hget(`${h.config.QUEUE_PREFIX}:callbacks:${id}.1.callback`, 'finishedOn');
    expect(job).not.toBeNull();
    expect(receiver.received('/gone').filter((request) => request.body.includes(id))).toHaveLength(1);
  });

  it('refuses a callback_url outside the allowlist, and nothing is stored', async () => {
    const before = await h.db.prisma.task.count();
    for (const url of ['http://example.com/hook', 'http://169.254.169.254/latest', `http://127.0.0.1:${receiver.port + 1}/x`]) {
      const response = await h.request('POST', '/assign-task', { task_type: 'echo', params: {}, callback_url: url });
      expect(response.status, url).toBe(400);
      expect(response.body.error.code).toBe('callback_url_not_allowed');
      expect(response.body.error.details[0].path).toBe('callback_url');
    }
    expect(await h.db.prisma.task.count()).toBe(before);
  });
});

describe('completion callbacks without CALLBACK_SECRET', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness({ worker: false, env: { HTTP_TOOL_ALLOWED_HOSTS: '127.0.0.1' } });
  });
  afterAll(async () => {
    await h.close();
  });

  it('refuses callback_url with 400 callbacks_disabled', async () => {
    const response = await h.request('POST', '/assign-task', { task_type: 'echo', params: {}, callback_url: 'http://127.0.0.1:9/hook' });
    expect(response.status).toBe(400);
    expect(response.body.error.code).toBe('callbacks_disabled');
  });
});
