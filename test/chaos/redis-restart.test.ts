import { readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeTestConnections, testTools } from '../fixtures/tools.js';
import { createHarness, type Harness, poll, submit, waitForTask } from '../helpers/harness.js';
import { type RedisServer, startRedisServer } from '../helpers/redis-server.js';
import {
  CHAOS_ENV,
  chaosSeed,
  checkOutcomes,
  defineChaosWorkflows,
  emptySubmitted,
  healthyAnswerMs,
  knob,
  mixedWorkload,
  report,
  type Submitted,
  seededRandom,
  sleep,
  submitPaced,
  WorkerFleet,
  waitForAllEnded,
} from './support.js';
import { sweep } from './sweep.js';

/**
 * Redis restart: the deployment's Redis (a private redis-server with AOF, fsync on every write)
 * is stopped in the middle of a load and started again on the same data. While it is down the
 * API answers POST /assign-task with 503 at once and stores nothing; the workers reconnect by
 * themselves; every task accepted before, during (none) or after the outage ends as meant.
 */

const OUTAGES = knob('CHAOS_REDIS_OUTAGES', 1, 3);
const DOWN_MS = knob('CHAOS_REDIS_DOWN_MS', 3_000, 5_000);
const SUBMIT_PER_SECOND = knob('CHAOS_REDIS_SUBMIT_PER_SECOND', 20, 40);
/**
 * The bound on a 503 while Redis is known to be down ("within about a second"), on top of the
 * slowest answer to the same request with Redis up under the same load, measured just before each
 * outage: a busy machine slows every answer, not only refusals.
 */
const DOWN_ANSWER_MS = 1_000;
/** The bound on any answer, including a request caught in flight when Redis went away (no hanging); on top of the same. */
const ANY_ANSWER_MS = 3_000;
/** Healthy answers measured before each outage. */
const BASELINE_PROBES = 10;

describe('Redis restarted under load', () => {
  let redis: RedisServer;
  let h: Harness;
  let fleet: WorkerFleet;
  const seed = chaosSeed();

  beforeAll(async () => {
    redis = await startRedisServer();
    h = await createHarness({ worker: false, tools: testTools, env: { ...CHAOS_ENV, REDIS_URL: redis.url } });
    fleet = new WorkerFleet(h.env);
    await fleet.start(3);
    await defineChaosWorkflows(h);
  }, 120_000);
  afterAll(async () => {
    await fleet?.destroy();
    // The harness removes its keys from Redis when it closes: Redis must be up for that.
    if (redis && !redis.running) await redis.start().catch(() => undefined);
    await h?.close().catch((error: Error) => console.error(`harness close: ${error.message}`));
    await redis?.close();
    await closeTestConnections();
  }, 120_000);

  it(`loses no accepted task across ${OUTAGES} Redis restart(s), answering 503 at once while it is down`, async () => {
    const started = Date.now();
    const random = seededRandom(seed);
    let outagesDone = false;
    // Submissions go on before, during and after every outage.
    const submitted: Submitted = emptySubmitted();
    const submission = submitPaced(h, mixedWorkload(100_000, random), {
      perSecond: SUBMIT_PER_SECOND,
      concurrency: 8,
      into: submitted,
      shouldStop: () => outagesDone,
    });

    const probes = { sent: 0, slowestMs: 0, healthySlowestMs: 0, notUnavailable: [] as { status: number; body: unknown }[] };
    for (let outage = 1; outage <= OUTAGES; outage += 1) {
      // Mid-load: some tasks are running.
      await poll(
        async () => {
          const { rows } = await h.db.pool.query<{ n: string }>(`SELECT count(*) AS n FROM tasks WHERE status = 'running'`);
          return Number(rows[0]!.n) > 0;
        },
        { label: 'tasks running before the outage', timeoutMs: 30_000 },
      );
      // The baseline: the same request as the probes below, answered with Redis up.
      probes.healthySlowestMs = Math.max(probes.healthySlowestMs, await healthyAnswerMs(h, submitted, BASELINE_PROBES, `redis-${outage}`));
      await redis.stop(outage % 2 === 1 ? 'shutdown' : 'SIGTERM');
      const downUntil = Date.now() + DOWN_MS;
      while (Date.now() < downUntil) {
        const sent = Date.now();
        const response = await h.request('POST', '/assign-task', { task_type: 'echo', params: { probe: probes.sent } });
        const ms = Date.now() - sent;
        probes.sent += 1;
        probes.slowestMs = Math.max(probes.slowestMs, ms);
        if (response.status !== 503 || response.body?.error?.code !== 'service_unavailable')
          probes.notUnavailable.push({ status: response.status, body: response.body });
        await sleep(100);
      }
      const ready = await h.request('GET', '/ready');
      expect(ready.status).toBe(503);
      expect(ready.body.error.details.checks.redis).toBe('down');
      expect((await h.request('GET', '/health')).status).toBe(200);
      await redis.start();
      await poll(async () => (await h.request('GET', '/ready')).status === 200, { label: 'the API to be ready after Redis came back', timeoutMs: 20_000 });
      // Let the load run on the restarted Redis for a while before the next outage or the end.
      await sleep(3_000);
    }
    outagesDone = true;
    await submission;

    expect(probes.notUnavailable, 'answers to POST /assign-task while Redis was down').toEqual([]);
    expect(probes.slowestMs, 'slowest 503 while Redis was down').toBeLessThan(DOWN_ANSWER_MS + probes.healthySlowestMs);
    expect(submitted.unexpected, 'answers other than 202 or 503').toEqual([]);
    expect(submitted.slowest503Ms, 'slowest 503 of a request caught by the outage').toBeLessThan(ANY_ANSWER_MS + probes.healthySlowestMs);

    await waitForAllEnded(h, 180_000, 'every accepted task to end after the Redis restarts');
    const { problems, figures } = await checkOutcomes(h, submitted.accepted);
    const swept = await sweep(h);
    expect(fleet.crashes, 'worker processes that died during the outages').toEqual([]);
    report('redis-restart', {
      seed,
      tasks_run: submitted.accepted.size,
      ...figures,
      outages_survived: OUTAGES,
      redis_starts: redis.starts,
      refused_503: submitted.unavailable + probes.sent,
      slowest_503_ms: Math.max(probes.slowestMs, submitted.slowest503Ms),
      slowest_healthy_ms: probes.healthySlowestMs,
      problems: problems.length,
      total_ms: Date.now() - started,
      redis_keys_after: swept.keys,
    });
    expect(problems).toEqual([]);
  }, 600_000);
});

describe('a durable sleep across a Redis that lost everything', () => {
  let redis: RedisServer;
  let h: Harness;
  beforeAll(async () => {
    redis = await startRedisServer();
    // The reconciler looks every 300 ms at every active run: it makes the lost timer again.
    h = await createHarness({ env: { ...CHAOS_ENV, REDIS_URL: redis.url, RECONCILE_INTERVAL_MS: '300', RECONCILE_AFTER_MS: '0' } });
    const defined = await h.request('POST', '/workflows', {
      name: 'nap_across',
      steps: [
        { id: 'a', tool: 'echo', input: { n: 1 } },
        { id: 'nap', depends_on: ['a'], sleep: { ms: 3_000 } },
        { id: 'b', tool: 'echo', depends_on: ['nap'], input: { woke: '{{steps.nap.output.woke_at}}' } },
      ],
    });
    expect(defined.status).toBe(201);
    const waits = await h.request('POST', '/workflows', {
      name: 'wait_across',
      steps: [
        { id: 'hold', wait: { signal: 'go' } },
        { id: 'timed', wait: { signal: 'never', timeout_ms: 3_000, on_timeout: 'continue' } },
        { id: 'b', tool: 'echo', depends_on: ['hold', 'timed'], input: { got: '{{steps.hold.output}}', timed_out: '{{steps.timed.output.timed_out}}' } },
      ],
    });
    expect(waits.status).toBe(201);
  }, 120_000);
  afterAll(async () => {
    if (redis && !redis.running) await redis.start().catch(() => undefined);
    await h?.close().catch((error: Error) => console.error(`harness close: ${error.message}`));
    await redis?.close();
  }, 120_000);

  it('wakes on time after Redis restarts empty: PostgreSQL keeps wake_at, and the timer is made again', async () => {
    const id = await submit(h, { task_type: 'nap_across' });
    const wakeAt = await poll(
      async () => {
        const nap = (await h.request('GET', `/result/${id}`)).body.steps?.find((step: { id: string }) => step.id === 'nap');
        return nap?.status === 'waiting' ? Date.parse(nap.wake_at) : undefined;
      },
      { label: 'the step to sleep' },
    );
    // Redis goes, and comes back with nothing: its append-only files are gone. (A key no client
    // writes again tells: the workers and the reconciler write their own as soon as they reconnect.)
    const sentinel = `${h.config.QUEUE_PREFIX}:test:sentinel`;
    await h.redis.set(sentinel, 'before');
    await redis.stop('shutdown');
    for (const entry of await readdir(redis.dir)) if (entry.startsWith('appendonly')) await rm(path.join(redis.dir, entry), { recursive: true, force: true });
    await redis.start();
    expect(await h.redis.exists(sentinel)).toBe(0);
    const task = await waitForTask(h, id, 30_000);
    expect(task.status).toBe('completed');
    const nap = task.steps.find((step: { id: string }) => step.id === 'nap');
    expect(nap.status).toBe('completed');
    expect(Date.parse(nap.output.woke_at)).toBeGreaterThanOrEqual(wakeAt);
    expect(task.steps.find((step: { id: string }) => step.id === 'b').output).toEqual({ woke: nap.output.woke_at });
  }, 120_000);

  it('keeps a wait across a worker restart and a Redis that lost everything: the signal is taken after, and the timeout fires from the timer made again', async () => {
    const id = await submit(h, { task_type: 'wait_across' });
    await poll(
      async () => {
        const steps = (await h.request('GET', `/result/${id}`)).body.steps ?? [];
        return steps.filter((step: { status: string }) => step.status === 'waiting').length === 2;
      },
      { label: 'both steps to wait' },
    );
    await h.worker!.close();
    const sentinel = `${h.config.QUEUE_PREFIX}:test:sentinel`;
    await h.redis.set(sentinel, 'before');
    await redis.stop('shutdown');
    for (const entry of await readdir(redis.dir)) if (entry.startsWith('appendonly')) await rm(path.join(redis.dir, entry), { recursive: true, force: true });
    await redis.start();
    expect(await h.redis.exists(sentinel)).toBe(0);
    await h.startWorker();
    const signalled = await h.request('POST', `/tasks/${id}/signals/go`, { after: 'restarts' });
    expect(signalled.status, JSON.stringify(signalled.body)).toBe(200);
    const task = await waitForTask(h, id, 30_000);
    expect(task.status).toBe('completed');
    expect(task.steps.find((step: { id: string }) => step.id === 'b').output).toEqual({ got: { after: 'restarts' }, timed_out: true });
  }, 120_000);
});
