import { Queue } from 'bullmq';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type ApiServer, startApi } from '../../src/api/server.js';
import { loadConfig } from '../../src/lib/config.js';
import { TIMERS_QUEUE, toolQueueName } from '../../src/queue/jobs.js';
import { type NodeProcess, runEntry } from '../helpers/child-process.js';
import { createHarness, type Harness, poll, submit, waitForTask } from '../helpers/harness.js';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js';

/** Sends a request and measures how long the answer took. */
async function timed(h: Harness, method: string, path: string, body?: unknown) {
  const started = Date.now();
  const response = await h.request(method, path, body);
  return { ...response, ms: Date.now() - started };
}

describe('the API while Redis or PostgreSQL is down', () => {
  let h: Harness;
  let redisProxy: TcpProxy;
  let pgProxy: TcpProxy;
  let api: ApiServer;
  let queues: Queue[];

  beforeAll(async () => {
    // The worker of the harness talks to Redis and PostgreSQL directly; the API goes through proxies.
    h = await createHarness({ api: false });
    redisProxy = await startTcpProxy({ port: Number(new URL(h.config.REDIS_URL).port || 6379) });
    pgProxy = await startTcpProxy({ port: Number(new URL(h.config.DATABASE_URL).port || 5432) });
    const databaseUrl = new URL(h.config.DATABASE_URL);
    databaseUrl.port = String(pgProxy.port);
    const redisUrl = new URL(h.config.REDIS_URL);
    redisUrl.port = String(redisProxy.port);
    api = await startApi(loadConfig({ ...h.env, REDIS_URL: redisUrl.toString(), DATABASE_URL: databaseUrl.toString() }), h.logger, h.registry);
    h.url = api.url;
    queues = [TIMERS_QUEUE, ...h.registry.names().map(toolQueueName)].map((name) => new Queue(name, { connection: h.redis, prefix: h.config.QUEUE_PREFIX }));
  });
  afterEach(() => {
    redisProxy?.resume();
    pgProxy?.resume();
  });
  afterAll(async () => {
    for (const queue of queues ?? []) await queue.close();
    await api?.close();
    await Promise.all([redisProxy?.close(), pgProxy?.close()]);
    await h?.close();
  });

  /** Every job of every queue of this file, whatever its state. */
  async function jobCount(): Promise<number> {
    let total = 0;
    for (const queue of queues) {
      const counts = await queue.getJobCounts('waiting', 'active', 'delayed', 'prioritized', 'waiting-children', 'completed', 'failed');
      total += Object.values(counts).reduce((sum, n) => sum + n, 0);
    }
    return total;
  }

  async function waitUntilReady() {
    await poll(async () => (await h.request('GET', '/ready')).status === 200, { label: 'the API to be ready again', timeoutMs: 15_000 });
  }

  it('answers 503 service_unavailable within 2 s while Redis is down, and stores nothing', async () => {
    const tasksBefore = await h.db.prisma.task.count();
    redisProxy.pause();

    const response = await timed(h, 'POST', '/assign-task', { task_type: 'echo', params: { while: 'redis down' } });
    expect(response.status).toBe(503);
    expect(response.body.error).toMatchObject({ code: 'service_unavailable', details: { dependency: 'redis' } });
    expect(response.ms).toBeLessThan(2_000);
    expect(await h.db.prisma.task.count()).toBe(tasksBefore);

    const ready = await timed(h, 'GET', '/ready');
    expect(ready.status).toBe(503);
    expect(ready.body.error).toMatchObject({ code: 'not_ready', details: { checks: { redis: 'down', database: 'up' } } });
    expect(ready.ms).toBeLessThan(2_000);
    // Liveness stays 200: the process itself is fine.
    const health = await h.request('GET', '/health');
    expect(health.status).toBe(200);
    expect(health.body).toMatchObject({ status: 'degraded', checks: { redis: 'down', database: 'up' } });

    redisProxy.resume();
    await waitUntilReady();
    const id = await submit(h, { task_type: 'echo', params: { after: 'redis came back' } });
    expect((await waitForTask(h, id)).result).toEqual({ after: 'redis came back' });
  });

  it('answers 503 service_unavailable within 3 s while PostgreSQL is down, and enqueues nothing', async () => {
    const jobsBefore = await jobCount();
    const tasksBefore = await h.db.prisma.task.count();
    pgProxy.pause();

    const response = await timed(h, 'POST', '/assign-task', { task_type: 'echo', params: { while: 'postgres down' } });
    expect(response.status).toBe(503);
    expect(response.body.error).toMatchObject({ code: 'service_unavailable', details: { dependency: 'database' } });
    expect(response.ms).toBeLessThan(3_000);
    expect(await jobCount()).toBe(jobsBefore);
    expect(await h.db.prisma.task.count()).toBe(tasksBefore);

    const ready = await timed(h, 'GET', '/ready');
    expect(ready.status).toBe(503);
    expect(ready.body.error.details.checks).toEqual({ redis: 'up', database: 'down' });

    // Reads fail the same way, not with a 500.
    const read = await h.request('GET', '/result/00000000-0000-4000-8000-000000000000');
    expect(read.status).toBe(503);
    expect(read.body.error.code).toBe('service_unavailable');

    pgProxy.resume();
    await waitUntilReady();
    const id = await submit(h, { task_type: 'echo', params: { after: 'postgres came back' } });
    expect((await waitForTask(h, id)).result).toEqual({ after: 'postgres came back' });
    expect(await h.db.prisma.task.count()).toBe(tasksBefore + 1);
  });
});

describe('an API started while Redis is down', () => {
  let h: Harness;
  let child: NodeProcess | undefined;

  beforeAll(async () => {
    // The harness's worker registers the built-in tools, as a deployment's does: the API reads them
    // from PostgreSQL, Redis away or not, so that echo is a known task type (not a 404).
    h = await createHarness({ api: false });
  });
  afterEach(async () => {
    await child?.kill();
    child = undefined;
  });
  afterAll(async () => {
    await h.close();
  });

  it('starts, answers POST /assign-task with 503 within 2 s, stores nothing, and is not ready', { timeout: 90_000 }, async () => {
    const tasksBefore = await h.db.prisma.task.count();
    child = runEntry('src/api/main.ts', { ...h.env, REDIS_URL: 'redis://127.0.0.1:1', LOG_LEVEL: 'info', LOG_FORMAT: 'json' });
    // A start, not a bound under test: on a busy machine compiling and migrating take a while.
    await child.waitForOutput(/"message":"API listening"/, 60_000);
    const url = /"message":"API listening".*?"url":"(http:[^"]+)"/.exec(child.output)![1]!;
    h.url = url;

    const response = await timed(h, 'POST', '/assign-task', { task_type: 'echo', params: {} });
    expect(response.status).toBe(503);
    expect(response.body.error.code).toBe('service_unavailable');
    expect(response.ms).toBeLessThan(2_000);
    expect(await h.db.prisma.task.count()).toBe(tasksBefore);
    const ready = await h.request('GET', '/ready');
    expect(ready.status).toBe(503);
  });
});
