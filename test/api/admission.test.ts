import type { AddressInfo } from 'node:net';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Admission } from '../../src/api/admission.js';
import { Metrics } from '../../src/observability/metrics.js';
import { finishedStepsKey } from '../../src/queue/event-log.js';
import { toolQueueName } from '../../src/queue/jobs.js';
import { Shards } from '../../src/queue/shards.js';
import { createHarness, type Harness, poll, waitForTask } from '../helpers/harness.js';
import { latch } from '../helpers/latch.js';

const MIN_BACKLOG = 5;

describe('admission control: POST /assign-task under overload', () => {
  let h: Harness;
  beforeAll(async () => {
    // No worker at first: nothing drains, so the backlog only grows.
    h = await createHarness({ worker: false, env: { ADMISSION_MIN_BACKLOG: String(MIN_BACKLOG), ADMISSION_SAMPLE_MS: '20', ADMISSION_MAX_WAIT_MS: '2000' } });
  });
  afterAll(async () => {
    await h.close();
  });

  it('refuses fast with 503 overloaded and Retry-After past the backlog limit, creates nothing then, and admits again once the workers drain it', async () => {
    const accepted: string[] = [];
    let refusal: { status: number; body: any; headers: Headers; ms: number } | undefined;
    // The API reads the backlog every 20 ms: submit until it has seen it pass the limit.
    await poll(
      async () => {
        const sent = Date.now();
        const response = await h.request('POST', '/assign-task', { task_type: 'echo', params: { n: accepted.length } });
        if (response.status === 202) {
          accepted.push(response.body.task_id);
          return undefined;
        }
        refusal = { ...response, ms: Date.now() - sent };
        return true;
      },
      { label: 'a refusal', timeoutMs: 30_000 },
    );
    expect(refusal!.status).toBe(503);
    // Answered ahead of Express, before the key (if any) is checked: no figures.
    expect(refusal!.body).toEqual({ error: { code: 'overloaded', message: expect.any(String) } });
    const retryAfter = Number(refusal!.headers.get('retry-after'));
    expect(Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= 30).toBe(true);
    // Admitted up to the limit, and past it only by what arrived between two readings.
    expect(accepted.length).toBeGreaterThan(MIN_BACKLOG);
    expect(accepted.length).toBeLessThan(MIN_BACKLOG + 40);

    // Refused requests created nothing; the refusals are counted.
    const refusedAgain = await h.request('POST', '/assign-task', { task_type: 'echo', params: { refused: true } });
    expect(refusedAgain.status).toBe(503);
    const { rows } = await h.db.pool.query<{ n: string }>(`SELECT count(*) AS n FROM tasks WHERE task_type = 'echo' AND params ? 'refused'`);
    expect(Number(rows[0]!.n)).toBe(0);
    const metrics = await (await fetch(`${h.url}/metrics`)).text();
    expect(Number(/^orchestrator_admission_refused_total (\d+)$/m.exec(metrics)?.[1])).toBeGreaterThanOrEqual(2);
    expect(Number(/^orchestrator_admission_backlog (\d+)$/m.exec(metrics)?.[1])).toBeGreaterThan(MIN_BACKLOG);

    // A worker drains the backlog: new tasks are admitted again, and every accepted one completes.
    await h.startWorker();
    const after = await poll(
      async () => {
        const answer = await h.request('POST', '/assign-task', { task_type: 'echo', params: { after: true } });
        return answer.status === 202 ? (answer.body.task_id as string) : undefined;
      },
      { label: 'admission after the drain', timeoutMs: 30_000 },
    );
    // Every accepted task ends here, so that the next test's finished-steps counter counts only its own.
    for (const id of [...accepted, after]) expect((await waitForTask(h, id)).status).toBe('completed');
  });

  it('admits what the workers drain in ADMISSION_MAX_WAIT_MS, measured from the finished-steps counter in Redis', async () => {
    const queueNames = [toolQueueName('echo')];
    const admission = new Admission(
      h.redis,
      Shards.of(h.config),
      () => queueNames,
      { maxWaitMs: 2_000, minBacklog: 10, maxBacklog: 0, sampleMs: 1_000, maxInFlight: 0 },
      new Metrics({ defaultMetrics: false }),
      h.logger,
    );
    const key = finishedStepsKey(h.config.QUEUE_PREFIX);
    await admission.sample(1_000_000);
    expect(admission.limit()).toBe(10);
    // 500 steps finished in the next second: 500/s, so 2 s of work is 1,000 jobs.
    await h.redis.incrby(key, 500);
    await admission.sample(1_001_000);
    expect(admission.limit()).toBe(1_000);
    const capped = new Admission(
      h.redis,
      Shards.of(h.config),
      () => queueNames,
      { maxWaitMs: 2_000, minBacklog: 10, maxBacklog: 300, sampleMs: 1_000, maxInFlight: 0 },
      new Metrics({ defaultMetrics: false }),
      h.logger,
    );
    await capped.sample(1_000_000);
    await h.redis.incrby(key, 500);
    await capped.sample(1_001_000);
    expect(capped.limit()).toBe(300);
  });

  it('refuses at once past ADMISSION_MAX_IN_FLIGHT submissions in flight in one process, and admits again as they are answered', async () => {
    const admission = new Admission(
      h.redis,
      Shards.of(h.config),
      () => [],
      { maxWaitMs: 0, minBacklog: 0, maxBacklog: 0, sampleMs: 1_000, maxInFlight: 2 },
      new Metrics({ defaultMetrics: false }),
      h.logger,
    );
    // A route that holds its answers until told: two submissions stay in flight.
    const held = latch();
    const app = express();
    app.post('/assign-task', admission.middleware(), async (_req, res) => {
      await held.opened;
      res.status(202).json({ ok: true });
    });
    const server = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/assign-task`;
    try {
      const first = fetch(url, { method: 'POST' });
      const second = fetch(url, { method: 'POST' });
      await poll(() => admission.inFlightNow === 2, { label: 'two submissions in flight', timeoutMs: 10_000 });
      const third = await fetch(url, { method: 'POST' });
      expect(third.status).toBe(503);
      expect(third.headers.get('retry-after')).toBe('1');
      expect(((await third.json()) as { error: unknown }).error).toMatchObject({ code: 'overloaded', details: { in_flight: 2, max_in_flight: 2 } });
      held.open();
      expect((await first).status).toBe(202);
      expect((await second).status).toBe(202);
      await poll(() => admission.inFlightNow === 0, { label: 'answered submissions leave the count', timeoutMs: 10_000 });
      expect((await fetch(url, { method: 'POST' })).status).toBe(202);
    } finally {
      server.close();
    }
  });
});

describe('admission: a client over its share waits behind the others', () => {
  const KEY_A = 'client@flood:admission-test-key-flood-0123456789';
  const KEY_B = 'client@polite:admission-test-key-polite-0123456789';
  const ADMIN = 'admin@ops:admission-test-key-admin-0123456789';
  const bearer = (entry: string) => ({ authorization: `Bearer ${entry.slice(entry.indexOf(':') + 1)}` });
  let h: Harness;
  beforeAll(async () => {
    // No worker at first: what is submitted waits, so the backlog and the counts per key only grow.
    h = await createHarness({ worker: false, env: { API_KEYS: `${KEY_A},${KEY_B},${ADMIN}`, ADMISSION_SAMPLE_MS: '20' } });
  });
  afterAll(async () => {
    await h.close();
  });

  /** Echo jobs waiting at a priority (BullMQ's prioritized set), over the shards. */
  async function prioritized(): Promise<number> {
    let n = 0;
    for (const prefix of Shards.of(h.config).prefixes) n += await h.redis.zcard(`${prefix}:${toolQueueName('echo')}:prioritized`);
    return n;
  }

  it("puts the tasks of a key holding more than an equal share at BullMQ's lowest priority while work waits, so another key's later task runs first", async () => {
    const submit = async (key: string, params: Record<string, unknown>) => {
      const response = await h.request('POST', '/assign-task', { task_type: 'echo', params }, bearer(key));
      expect(response.status, JSON.stringify(response.body)).toBe(202);
      return response.body.task_id as string;
    };
    // B holds one task, A more and more: once the API has read both counts, A's next task goes in behind.
    const early = [await submit(KEY_B, { b: 0 })];
    const behind: string[] = [];
    await poll(
      async () => {
        const before = await prioritized();
        const id = await submit(KEY_A, { a: early.length + behind.length });
        if ((await prioritized()) === before) {
          early.push(id);
          return undefined;
        }
        behind.push(id);
        return behind.length === 3 ? true : undefined;
      },
      { label: "key A's tasks put behind", timeoutMs: 30_000 },
    );
    // Key B's next task is under its share: it goes ahead of A's demoted ones.
    const late = await submit(KEY_B, { b: 1 });
    expect(await prioritized()).toBe(3);

    // One worker running one step at a time takes them in the queue's order.
    await h.startWorker({ WORKER_CONCURRENCY: '1' });
    for (const id of [...early, ...behind, late]) expect((await waitForTask(h, id, 20_000, bearer(ADMIN))).status).toBe('completed');
    const { rows } = await h.db.pool.query<{ task_id: string; started_at: Date; priority: number }>(
      'SELECT s.task_id, s.started_at, t.priority FROM steps s JOIN tasks t ON t.id = s.task_id',
    );
    const started = new Map(rows.map((row) => [row.task_id, row.started_at.getTime()]));
    for (const id of behind) expect(started.get(late)!).toBeLessThan(started.get(id)!);
    // Without a priority of its own, in the order asked, before every demoted task.
    for (const id of early) expect(started.get(id)!).toBeLessThan(Math.min(...behind.map((b) => started.get(b)!)));
    // The record keeps the priority the client asked for (none).
    expect(rows.every((row) => row.priority === 0)).toBe(true);
    const metrics = await (await fetch(`${h.url}/metrics`, { headers: bearer(ADMIN) })).text();
    expect(Number(/^orchestrator_admission_behind_total (\d+)$/m.exec(metrics)?.[1])).toBe(behind.length);
  });
});
