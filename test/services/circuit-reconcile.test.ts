import { Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SERVICES_QUEUE, stepJobId } from '../../src/queue/jobs.js';
import { closeTestConnections } from '../fixtures/tools.js';
import { createHarness, type Harness, poll, submit, waitForTask } from '../helpers/harness.js';
import { startServer, type TestServer } from '../helpers/http-server.js';

/**
 * A step waiting for its service's open circuit lives in a delayed job only: when Redis loses
 * that job (restarted empty), the reconciler makes it again from PostgreSQL, as it does for sleep
 * timers and wait timeouts, instead of leaving the step waiting for ever.
 */

const OPEN_MS = 8_000;

const document = {
  openapi: '3.0.3',
  info: { title: 'Flaky', version: '1' },
  paths: {
    '/ping': {
      get: {
        operationId: 'ping',
        responses: { '200': { description: 'pong', content: { 'application/json': { schema: { type: 'object' } } } } },
      },
    },
  },
};

describe('the reconciler and a step held by an open circuit', () => {
  let h: Harness;
  let service: TestServer;
  let failing = true;
  let queue: Queue;

  beforeAll(async () => {
    service = await startServer((request, res) => {
      const body = request.path === '/openapi.json' ? document : failing ? { error: 'down' } : { ok: true };
      res.writeHead(request.path === '/openapi.json' || !failing ? 200 : 503, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    });
    // No timer: the test runs sweeps itself. Every active run counts as stale at once.
    h = await createHarness({
      env: { HTTP_TOOL_ALLOWED_HOSTS: `127.0.0.1:${service.port}`, RECONCILE_INTERVAL_MS: '0', RECONCILE_AFTER_MS: '0', SERVICE_HEALTH_INTERVAL_MS: '0' },
    });
    queue = new Queue(SERVICES_QUEUE, { connection: h.redis, prefix: h.config.QUEUE_PREFIX });
    const registered = await h.request('POST', '/services', {
      name: 'flaky',
      base_url: service.origin,
      openapi_url: `${service.origin}/openapi.json`,
      circuit: { failure_threshold: 1, open_ms: OPEN_MS, half_open_probes: 1 },
    });
    expect(registered.status, JSON.stringify(registered.body)).toBe(201);
  });
  afterAll(async () => {
    await queue?.close();
    await h?.close();
    await service?.close();
    await closeTestConnections();
  });

  const stepOf = async (id: string) => (await h.request('GET', `/result/${id}`)).body.steps[0];

  it('makes the lost delayed job of a waiting step again: held again while the circuit is open, it completes once the service recovers', async () => {
    const id = await submit(h, { task_type: 'flaky.ping', params: {}, retry: { attempts: 10, backoff: { type: 'fixed', delay_ms: 50 } } });
    await poll(async () => ((await stepOf(id)).reason === 'circuit_open' ? true : undefined), { label: 'the step waiting for its circuit', intervalMs: 20 });
    const jobId = stepJobId(id, 1, 'flaky.ping');
    await poll(async () => (await queue.getJob(jobId))?.isDelayed(), { label: 'its job delayed', intervalMs: 20 });
    // Redis lost the job (restarted empty); PostgreSQL still says the step waits.
    await (await queue.getJob(jobId))!.remove();
    const sweep = await h.worker!.runtime.reconciler.sweep();
    expect(sweep.requeued).toBe(1);
    // The job is back; the circuit is still open, so its worker holds it again, and no call went out.
    const calls = service.received('/ping').length;
    await poll(async () => ((await stepOf(id)).reason === 'circuit_open' && (await (await queue.getJob(jobId))?.isDelayed()) ? true : undefined), {
      label: 'the step held again in a job made anew',
      intervalMs: 20,
    });
    expect(service.received('/ping')).toHaveLength(calls);
    // The next sweep finds its job where it belongs.
    expect((await h.worker!.runtime.reconciler.sweep()).requeued).toBe(0);

    failing = false;
    const task = await waitForTask(h, id, OPEN_MS + 15_000);
    expect(task.status).toBe('completed');
    // The call that opened the circuit, and the probe that closed it.
    expect(service.received('/ping')).toHaveLength(2);
  });

  it('lets a waiting step through when Redis lost its circuit as well: the service is called again', async () => {
    failing = true;
    const before = service.received('/ping').length;
    const id = await submit(h, { task_type: 'flaky.ping', params: {}, retry: { attempts: 10, backoff: { type: 'fixed', delay_ms: 50 } } });
    await poll(async () => ((await stepOf(id)).reason === 'circuit_open' ? true : undefined), { label: 'the step waiting for its circuit', intervalMs: 20 });
    const jobId = stepJobId(id, 1, 'flaky.ping');
    await poll(async () => (await queue.getJob(jobId))?.isDelayed(), { label: 'its job delayed', intervalMs: 20 });
    failing = false;
    // Everything in Redis about it is gone: the job, and the circuit (closed, as a new one is).
    await (await queue.getJob(jobId))!.remove();
    await h.redis.del(`${h.config.QUEUE_PREFIX}:circuit:flaky`, `${h.config.QUEUE_PREFIX}:circuit:flaky:transitions`);
    expect((await h.worker!.runtime.reconciler.sweep()).requeued).toBe(1);
    const task = await waitForTask(h, id);
    expect(task.status).toBe('completed');
    expect(service.received('/ping')).toHaveLength(before + 2);
  });
});
