import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHarness, type Harness, submit } from '../helpers/harness.js';

const PACKAGE = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { name: string; version: string };
const BUILTIN = ['approve_batches', 'echo', 'http', 'notify', 'sleep'];

describe('system endpoints', () => {
  let h: Harness;
  beforeAll(async () => {
    // No worker: a submitted task stays waiting, so Bull Board has something to count.
    h = await createHarness({ worker: false });
  });
  afterAll(async () => {
    await h.close();
  });

  it('GET / names the service and links to its endpoints', async () => {
    const response = await h.request('GET', '/');
    expect(response.status).toBe(200);
    expect(response.body).toMatchObject({ name: PACKAGE.name, version: PACKAGE.version, uptime_s: expect.any(Number) });
    expect(response.body.links).toMatchObject({ assign_task: '/assign-task', tools: '/tools', health: '/health', ready: '/ready', queues: '/admin/queues' });
    // Every link without a placeholder answers (none is a dead link).
    for (const link of Object.values(response.body.links as Record<string, string>).filter((path) => !path.includes('{') && path !== '/assign-task')) {
      expect((await h.request('GET', link)).status, link).toBe(200);
    }
  });

  it('GET /health answers 200 with Redis and the database up', async () => {
    const response = await h.request('GET', '/health');
    expect(response.status).toBe(200);
    expect(response.body).toMatchObject({ status: 'ok', checks: { redis: 'up', database: 'up' } });
    expect(Date.parse(response.body.timestamp)).not.toBeNaN();
  });

  it('GET /ready answers 200 when Redis and PostgreSQL answer', async () => {
    const response = await h.request('GET', '/ready');
    expect(response.status).toBe(200);
    expect(response.body).toMatchObject({ ready: true, checks: { redis: 'up', database: 'up' } });
  });

  it('GET /tools describes every built-in tool with JSON Schemas and its defaults', async () => {
    const response = await h.request('GET', '/tools');
    expect(response.status).toBe(200);
    const tools = response.body.tools as Record<string, any>[];
    expect(tools.map((tool) => tool.name)).toEqual(expect.arrayContaining(BUILTIN));
    for (const tool of tools) {
      expect(tool.description, tool.name).toEqual(expect.any(String));
      for (const schema of [tool.input_schema, tool.output_schema]) {
        expect(schema.$schema, tool.name).toMatch(/json-schema\.org/);
        expect(schema.type, tool.name).toBe('object');
        // An object schema says what its keys are: named properties, or a rule for any key.
        expect(schema.properties !== undefined || schema.additionalProperties !== undefined, tool.name).toBe(true);
      }
      expect(tool.retry, tool.name).toMatchObject({
        attempts: expect.any(Number),
        backoff: { type: expect.stringMatching(/^(fixed|exponential)$/), delay_ms: expect.any(Number) },
      });
      expect(tool.timeout_ms, tool.name).toBeGreaterThan(0);
      expect(tool).toHaveProperty('rate_limit');
      expect(tool).toHaveProperty('concurrency');
    }
    const byName = Object.fromEntries(tools.map((tool) => [tool.name, tool]));
    expect(byName.sleep.input_schema).toMatchObject({ properties: { ms: { type: 'integer', minimum: 0 } }, required: ['ms'] });
    expect(byName.sleep.output_schema).toMatchObject({ properties: { slept_ms: { type: 'integer' } } });
    // Input schemas describe what a client may send: fields with defaults are optional.
    expect(byName.http.input_schema.required).toEqual(['url']);
    expect(byName.http.input_schema.properties.method.enum).toEqual(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE']);
    expect(byName.http).toMatchObject({ retry: { attempts: 5, backoff: { type: 'exponential', delay_ms: 500 } }, timeout_ms: 30_000, concurrency: 50 });
    expect(byName.notify.input_schema.properties.channel.enum).toEqual(['log', 'webhook']);
    expect(byName.approve_batches).toMatchObject({
      input_schema: {
        properties: {
          batch_ids: { type: 'array', items: { anyOf: [{ type: 'string' }, { type: 'integer' }] } },
          auto_approve: { type: 'boolean', default: false },
        },
        required: ['batch_ids'],
      },
      output_schema: { required: expect.arrayContaining(['processed_batches', 'approved', 'rejected']) },
      rate_limit: { max: 100, duration_ms: 1_000 },
      concurrency: 5,
    });
    expect(byName.echo.input_schema).toMatchObject({ type: 'object', additionalProperties: {} });
  });

  it("makes each request and response with the app's prototypes, so that Express has none to swap (expressjs/express#5998)", async () => {
    const { server, app } = h.api!;
    const seen: boolean[] = [];
    // First of the server's listeners: what Node made, before Express has touched it.
    const look = (req: object, res: object) => seen.push(Object.getPrototypeOf(req) === app.request, Object.getPrototypeOf(res) === app.response);
    server.prependListener('request', look);
    try {
      const response = await h.request('GET', '/health');
      expect(response.status).toBe(200);
      expect(response.headers.get('x-request-id')).toBeTruthy();
    } finally {
      server.off('request', look);
    }
    expect(seen).toEqual([true, true]);
  });

  it('GET /admin/queues serves the Bull Board page', async () => {
    const response = await h.request('GET', '/admin/queues');
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/text\/html/);
    expect(response.body).toMatch(/<title>Bull Dashboard<\/title>/);
    expect(response.body).toContain('<base href="/admin/queues/"');
  });

  it("Bull Board's API lists the runs' roots, every tool queue, the services queue, the timers queue, the callbacks queue and the schedules queue, with live counts", async () => {
    await submit(h, { task_type: 'echo', params: { for: 'the board' } });
    const response = await h.request('GET', '/admin/queues/api/queues');
    expect(response.status).toBe(200);
    const queues = response.body.queues as { name: string; counts: Record<string, number> }[];
    const names = queues.map((queue) => queue.name);
    expect(names).toContain('tasks');
    expect(names).toContain('timers');
    expect(names).toContain('callbacks');
    expect(names).toContain('schedules');
    for (const tool of h.registry.names()) expect(names).toContain(`tool.${tool}`);
    // …and the one queue of every registered service's operations.
    expect(names).toContain('services');
    expect(names.filter((name) => !['tasks', 'timers', 'callbacks', 'schedules', 'services'].includes(name)).every((name) => name.startsWith('tool.'))).toBe(
      true,
    );
    // A one-tool task is one job, without a parent (a workflow's run is a flow: test/workflows/flows.test.ts). It waits for a worker.
    expect(queues.find((queue) => queue.name === 'tool.echo')!.counts['waiting-children']).toBe(0);
    expect(queues.find((queue) => queue.name === 'tool.echo')!.counts.waiting).toBe(1);
  });
});
