import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeTestConnections } from '../fixtures/tools.js';
import { createHarness, type Harness, poll, submit, waitForTask } from '../helpers/harness.js';
import { type RecordedRequest, startServer, type TestServer } from '../helpers/http-server.js';

const SECRET = 'inventory-secret-value-0123456789';

/** An OpenAPI 3.1 document of the inventory service; `version` 2 drops `price` and renames createOrder. */
function inventoryDocument(version: 1 | 2) {
  const item = {
    type: 'object',
    properties: { id: { type: 'string' }, name: { type: 'string' }, ...(version === 1 ? { price: { type: 'number' } } : {}) },
    required: ['id', 'name'],
  };
  return {
    openapi: '3.1.0',
    info: { title: 'Inventory', version: String(version) },
    paths: {
      '/items/{id}': {
        get: {
          operationId: 'getItem',
          summary: 'One item',
          parameters: [
            { name: 'id', in: 'path', required: true, schema: { type: 'string' } },
            { name: 'verbose', in: 'query', schema: { type: 'boolean' } },
          ],
          responses: {
            '200': { description: 'The item', content: { 'application/json': { schema: { $ref: '#/components/schemas/Item' } } } },
            '404': { description: 'No such item' },
          },
        },
      },
      '/orders': {
        post: {
          operationId: version === 1 ? 'createOrder' : 'placeOrder',
          requestBody: {
            required: true,
            content: {
              'application/json': {
                schema: {
                  type: 'object',
                  properties: { item_id: { type: 'string' }, quantity: { type: 'integer', minimum: 1 } },
                  required: ['item_id', 'quantity'],
                },
              },
            },
          },
          responses: {
            '201': {
              description: 'Placed',
              content: { 'application/json': { schema: { type: 'object', properties: { order_id: { type: 'string' }, total: { type: 'number' } } } } },
            },
          },
        },
      },
      '/internal': { get: { responses: { '204': { description: 'No operationId: not a tool' } } } },
    },
    components: { schemas: { Item: item } },
  };
}

function pingDocument() {
  return {
    openapi: '3.0.3',
    info: { title: 'Flaky', version: '1' },
    paths: {
      '/ping': {
        get: {
          operationId: 'ping',
          responses: {
            '200': { description: 'pong', content: { 'application/json': { schema: { type: 'object', properties: { ok: { type: 'boolean' } } } } } },
          },
        },
      },
    },
  };
}

const json = (res: import('node:http').ServerResponse, status: number, body: unknown) =>
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));

describe('the service registry', () => {
  let h: Harness;
  let inventory: TestServer;
  let flaky: TestServer;
  let slow: TestServer;
  let inFlight = 0;
  let mostInFlight = 0;
  let secretsDir: string;
  let documentVersion: 1 | 2 = 1;
  let flakyFails = true;

  beforeAll(async () => {
    inventory = await startServer((request: RecordedRequest, res) => {
      const url = new URL(request.path, 'http://x');
      if (url.pathname === '/openapi.json') return json(res, 200, inventoryDocument(documentVersion));
      if (url.pathname === '/health') return json(res, 200, { ok: true });
      if (request.headers.authorization !== `Bearer ${SECRET}`) return json(res, 401, { error: 'no token' });
      const item = /^\/items\/([^/]+)$/.exec(url.pathname);
      if (item && request.method === 'GET') {
        if (item[1] === 'missing') return json(res, 404, { error: 'no such item' });
        return json(res, 200, { id: decodeURIComponent(item[1]!), name: 'Widget', price: 2.5, verbose: url.searchParams.get('verbose') });
      }
      if (url.pathname === '/orders' && request.method === 'POST') {
        const body = JSON.parse(request.body) as { item_id: string; quantity: number };
        return json(res, 201, { order_id: `o-${body.item_id}`, total: body.quantity * 2.5 });
      }
      return json(res, 404, { error: 'no route' });
    });
    flaky = await startServer((request, res) => {
      if (request.path === '/openapi.json') return json(res, 200, pingDocument());
      if (flakyFails) return json(res, 503, { error: 'down' });
      return json(res, 200, { ok: true });
    });
    slow = await startServer((request, res) => {
      if (request.path === '/openapi.json') {
        return json(res, 200, {
          openapi: '3.1.0',
          info: { title: 'Slow', version: '1' },
          paths: {
            '/work': {
              post: { operationId: 'work', responses: { '200': { description: 'done', content: { 'application/json': { schema: { type: 'object' } } } } } },
            },
          },
        });
      }
      inFlight += 1;
      mostInFlight = Math.max(mostInFlight, inFlight);
      setTimeout(() => {
        inFlight -= 1;
        json(res, 200, { done: true });
      }, 300);
    });
    secretsDir = await mkdtemp(path.join(tmpdir(), 'service-secrets-'));
    await writeFile(path.join(secretsDir, 'secrets.json'), JSON.stringify({ inventory_token: SECRET }));
    h = await createHarness({
      env: {
        HTTP_TOOL_ALLOWED_HOSTS: `127.0.0.1:${inventory.port},127.0.0.1:${flaky.port},127.0.0.1:${slow.port}`,
        SERVICE_SECRETS_FILE: path.join(secretsDir, 'secrets.json'),
        SERVICE_HEALTH_INTERVAL_MS: '200',
        SERVICES_RELOAD_MS: '500',
        WORKER_METRICS_PORT: '0',
      },
    });
  });
  afterAll(async () => {
    await h?.close();
    await Promise.all([inventory?.close(), flaky?.close(), slow?.close()]);
    if (secretsDir) await rm(secretsDir, { recursive: true, force: true });
    await closeTestConnections();
  });

  const registerInventory = () =>
    h.request('POST', '/services', {
      name: 'inventory',
      base_url: inventory.origin,
      openapi_url: `${inventory.origin}/openapi.json`,
      auth: { type: 'bearer', secret_ref: 'inventory_token' },
      health_path: '/health',
      timeout_ms: 5000,
    });

  it('registers a service: its OpenAPI operations become typed tools, listed in /tools', async () => {
    const registered = await registerInventory();
    expect(registered.status, JSON.stringify(registered.body)).toBe(201);
    expect(registered.body.imported.version).toBe(1);
    expect(registered.body.imported.tools).toEqual(['inventory.createOrder', 'inventory.getItem']);
    expect(registered.body.imported.skipped).toEqual([{ where: 'GET /internal', reason: 'no operationId' }]);
    expect(registered.body.service.auth).toEqual({ type: 'bearer', secret_ref: 'inventory_token', secret_set: true });

    expect((await registerInventory()).status).toBe(409);
    const invalid = await h.request('POST', '/services', { name: 'bad name', base_url: 'ftp://x' });
    expect(invalid.status).toBe(400);
    expect(invalid.body.error.code).toBe('invalid_service');
    const refusedHost = await h.request('POST', '/services', {
      name: 'elsewhere',
      base_url: 'https://example.org',
      openapi_url: 'https://example.org/openapi.json',
    });
    expect(refusedHost.status).toBe(400);
    expect(refusedHost.body.error.code).toBe('host_not_allowed');
    const notOpenApi = await h.request('POST', '/services', { name: 'notopenapi', base_url: inventory.origin, openapi_url: `${inventory.origin}/health` });
    expect(notOpenApi.status).toBe(400);
    expect(notOpenApi.body.error.code).toBe('invalid_openapi_document');
    const unreachable = await h.request('POST', '/services', { name: 'gone', base_url: inventory.origin, openapi_url: `${inventory.origin}/nothing-here` });
    expect(unreachable.status).toBe(502);
    expect(unreachable.body.error.code).toBe('openapi_fetch_failed');

    const tools = await h.request('GET', '/tools');
    const getItem = tools.body.tools.find((tool: { name: string }) => tool.name === 'inventory.getItem');
    expect(getItem.input_schema).toMatchObject({
      type: 'object',
      properties: { path: { properties: { id: { type: 'string' } }, required: ['id'] }, query: { properties: { verbose: { type: 'boolean' } } } },
      required: ['path'],
    });
    expect(getItem.output_schema).toMatchObject({ type: 'object', properties: { price: { type: 'number' } }, required: ['id', 'name'] });
    expect(getItem.timeout_ms).toBe(5000);

    const one = await h.request('GET', '/services/inventory');
    expect(one.status).toBe(200);
    expect(one.body.operations.map((operation: { tool: string }) => operation.tool)).toEqual(['inventory.createOrder', 'inventory.getItem']);
    expect(one.body.circuit_state.state).toBe('closed');
    // Health is checked in the background, and shown in /services and (as information) /ready.
    await poll(async () => (await h.request('GET', '/services')).body.services[0]?.health?.status === 'up', { label: 'a health check' });
    expect((await h.request('GET', '/ready')).body.services).toEqual({ inventory: 'up' });
    expect(await (await fetch(`${h.url}/metrics`)).text()).toContain('orchestrator_service_up{service="inventory"} 1');
    expect((await h.request('GET', '/services/nothing')).status).toBe(404);
  });

  it('never stores nor answers the secret: responses and rows name it only', async () => {
    const answers = [
      await h.request('GET', '/services'),
      await h.request('GET', '/services/inventory'),
      await h.request('PATCH', '/services/inventory', { timeout_ms: 6000 }),
    ];
    for (const answer of answers) {
      expect(answer.status).toBe(200);
      expect(JSON.stringify(answer.body)).not.toContain(SECRET);
      expect(JSON.stringify(answer.body)).toContain('inventory_token');
    }
    const rows = await h.db.pool.query(`SELECT row_to_json(s)::text AS row FROM services s UNION ALL SELECT row_to_json(d)::text FROM service_documents d`);
    expect(rows.rows.length).toBeGreaterThanOrEqual(2);
    for (const { row } of rows.rows) expect(row).not.toContain(SECRET);
    // From the environment as well: SERVICE_SECRET_<REF>.
    process.env.SERVICE_SECRET_FROM_ENV = 'env-secret-value-0123456789';
    try {
      const withEnv = await h.request('POST', '/services', {
        name: 'envauth',
        base_url: inventory.origin,
        auth: { type: 'header', secret_ref: 'from.env', header_name: 'X-Key' },
      });
      expect(withEnv.body.service.auth).toEqual({ type: 'header', secret_ref: 'from.env', header_name: 'X-Key', secret_set: true });
      expect(JSON.stringify(withEnv.body)).not.toContain('env-secret-value');
    } finally {
      delete process.env.SERVICE_SECRET_FROM_ENV;
      await h.request('DELETE', '/services/envauth');
    }
    // The secret did reach the service, in the header its auth names.
    await submit(h, { task_type: 'inventory.getItem', params: { path: { id: 'probe' } } }).then((id) => waitForTask(h, id));
    expect(inventory.received('/items/probe').at(-1)?.headers.authorization).toBe(`Bearer ${SECRET}`);
  });

  it('calls operations with typed inputs and outputs, in a workflow checked against their schemas', async () => {
    const one = await submit(h, { task_type: 'inventory.getItem', params: { path: { id: 'a/b' }, query: { verbose: true } } });
    const done = await waitForTask(h, one);
    expect(done.status).toBe('completed');
    expect(done.result).toMatchObject({ id: 'a/b', name: 'Widget', price: 2.5, verbose: 'true' });
    expect(inventory.received('/items/a%2Fb?verbose=true')).toHaveLength(1);

    const badParams = await h.request('POST', '/assign-task', { task_type: 'inventory.getItem', params: { query: { verbose: true } } });
    expect(badParams.status).toBe(400);

    const refused = await h.request('POST', '/workflows', {
      name: 'bad_order',
      steps: [
        { id: 'item', tool: 'inventory.getItem', input: { path: { id: 'x' } } },
        { id: 'order', tool: 'inventory.createOrder', depends_on: ['item'], input: { body: { item_id: '{{steps.item.output.sku}}', quantity: 0 } } },
      ],
    });
    expect(refused.status).toBe(400);
    const paths = refused.body.error.details.map((problem: { path: string }) => problem.path);
    expect(paths).toEqual(expect.arrayContaining(['steps[1].input.body.item_id', 'steps[1].input.body.quantity']));

    const stored = await h.request('POST', '/workflows', {
      name: 'order_item',
      parameters: [{ name: 'item_id', type: 'string', required: true }],
      steps: [
        { id: 'item', tool: 'inventory.getItem', input: { path: { id: '{{params.item_id}}' } } },
        { id: 'order', tool: 'inventory.createOrder', depends_on: ['item'], input: { body: { item_id: '{{steps.item.output.id}}', quantity: 4 } } },
      ],
      output: { total: '{{steps.order.output.total}}', price: '{{steps.item.output.price}}' },
    });
    expect(stored.status, JSON.stringify(stored.body)).toBe(201);
    const run = await h.request('POST', '/workflows/order_item/execute', { parameters: { item_id: 'w1' } });
    const finished = await waitForTask(h, run.body.task_id);
    expect(finished.status).toBe('completed');
    expect(finished.result).toEqual({ total: 10, price: 2.5 });

    // The seed's shape: a service_call step is stored as the operation's tool step.
    const seeded = await h.request('POST', '/workflows', {
      name: 'seeded_order',
      parameters: [{ name: 'item_id', type: 'string', required: true }],
      steps: [
        {
          id: 'item',
          service_call: { service: 'inventory', endpoint: '/items/{id}', method: 'get', parameters: { id: '{{params.item_id}}', verbose: false } },
        },
        {
          id: 'order',
          depends_on: ['item'],
          service_call: {
            service: 'inventory',
            endpoint: '/orders',
            method: 'POST',
            parameters: { body: { item_id: '{{steps.item.output.id}}', quantity: 2 } },
          },
        },
      ],
      output: '{{steps.order.output.total}}',
    });
    expect(seeded.status, JSON.stringify(seeded.body)).toBe(201);
    expect(seeded.body.steps[0]).toMatchObject({ tool: 'inventory.getItem', input: { path: { id: '{{params.item_id}}' }, query: { verbose: false } } });
    expect(seeded.body.steps[0]).not.toHaveProperty('service_call');
    expect(seeded.body.steps[1]).toMatchObject({ tool: 'inventory.createOrder', input: { body: { item_id: '{{steps.item.output.id}}', quantity: 2 } } });
    const seededRun = await h.request('POST', '/workflows/seeded_order/execute', { parameters: { item_id: 's1' } });
    expect((await waitForTask(h, seededRun.body.task_id)).result).toBe(5);
    const unknownCall = await h.request('POST', '/workflows', {
      name: 'seeded_bad',
      steps: [{ id: 'a', service_call: { service: 'inventory', endpoint: '/nowhere', method: 'GET', parameters: {} } }],
    });
    expect(unknownCall.status).toBe(400);
    expect(unknownCall.body.error.details).toEqual([{ path: 'steps[0].service_call', message: expect.stringContaining('no operation GET /nowhere') }]);

    // A 4xx answer fails the step at once, without retrying.
    const missing = await waitForTask(h, await submit(h, { task_type: 'inventory.getItem', params: { path: { id: 'missing' } } }));
    expect(missing.status).toBe('failed');
    expect(inventory.received('/items/missing')).toHaveLength(1);
  });

  it('refuses, on refresh, a changed document that breaks workflows, naming them; ?force=true applies it', async () => {
    const same = await h.request('POST', '/services/inventory/refresh');
    expect(same.status).toBe(200);
    expect(same.body).toMatchObject({ changed: false, version: 1 });

    documentVersion = 2;
    const refused = await h.request('POST', '/services/inventory/refresh');
    expect(refused.status, JSON.stringify(refused.body)).toBe(409);
    expect(refused.body.error.code).toBe('breaking_change');
    const operations = { added: ['inventory.placeOrder'], removed: ['inventory.createOrder'], changed: ['inventory.getItem'] };
    expect(refused.body.error.details).toMatchObject({ version: 1, operations });
    expect(refused.body.error.details.affected_workflows.map((workflow: { name: string }) => workflow.name)).toEqual(['order_item', 'seeded_order']);
    // Nothing changed: the stored version, the tools, and the workflows still run.
    expect((await h.request('GET', '/services/inventory')).body.document_version).toBe(1);
    expect((await h.request('GET', '/tools')).body.tools.map((tool: { name: string }) => tool.name)).toContain('inventory.createOrder');
    const stillRuns = await h.request('POST', '/workflows/order_item/execute', { parameters: { item_id: 'w2' } });
    expect((await waitForTask(h, stillRuns.body.task_id)).status).toBe('completed');
    expect((await h.request('POST', '/services/inventory/refresh?force=maybe')).status).toBe(400);

    const refreshed = await h.request('POST', '/services/inventory/refresh?force=true');
    expect(refreshed.status, JSON.stringify(refreshed.body)).toBe(200);
    expect(refreshed.body).toMatchObject({ changed: true, version: 2, operations });
    expect(refreshed.body.affected_workflows.map((workflow: { name: string }) => workflow.name)).toEqual(['order_item', 'seeded_order']);
    const [affected] = refreshed.body.affected_workflows;
    expect(affected.name).toBe('order_item');
    expect(affected.problems.map((problem: { path: string }) => problem.path)).toEqual(expect.arrayContaining(['steps[1].tool', 'output.price']));
    // The tools follow the new document.
    const names = (await h.request('GET', '/tools')).body.tools.map((tool: { name: string }) => tool.name);
    expect(names).toContain('inventory.placeOrder');
    expect(names).not.toContain('inventory.createOrder');

    const noDocument = await h.request('POST', '/services', { name: 'plain', base_url: inventory.origin });
    expect(noDocument.status).toBe(201);
    expect((await h.request('POST', '/services/plain/refresh')).body).toMatchObject({ changed: false, version: 0 });
    const deleted = await h.request('DELETE', '/services/plain');
    expect(deleted.body).toEqual({ deleted: 'plain', affected_workflows: [], failed_tasks: [] });
    expect((await h.request('DELETE', '/services/plain')).status).toBe(404);
  });

  it("holds a service's calls to its concurrency: the others wait (reason concurrency) holding no worker", async () => {
    const registered = await h.request('POST', '/services', {
      name: 'slow',
      base_url: slow.origin,
      openapi_url: `${slow.origin}/openapi.json`,
      concurrency: 1,
    });
    expect(registered.status, JSON.stringify(registered.body)).toBe(201);
    const ids = await Promise.all([1, 2, 3].map(() => submit(h, { task_type: 'slow.work', params: {} })));
    await poll(
      async () => {
        const steps = await Promise.all(ids.map(async (id) => (await h.request('GET', `/result/${id}`)).body.steps[0]));
        return steps.some((step) => step.status === 'waiting' && step.reason === 'concurrency');
      },
      { label: 'a call waiting for its turn', timeoutMs: 10_000, intervalMs: 20 },
    );
    for (const id of ids) expect((await waitForTask(h, id)).status).toBe('completed');
    expect(slow.received('/work')).toHaveLength(3);
    expect(mostInFlight).toBe(1);
  });

  it('opens the circuit of a failing service: steps wait without calls while it is open, probes half-open it, it closes on recovery', async () => {
    const registered = await h.request('POST', '/services', {
      name: 'flaky',
      base_url: flaky.origin,
      openapi_url: `${flaky.origin}/openapi.json`,
      circuit: { failure_threshold: 2, open_ms: 1500, half_open_probes: 1 },
    });
    expect(registered.status, JSON.stringify(registered.body)).toBe(201);
    const retry = { attempts: 20, backoff: { type: 'fixed', delay_ms: 50 } };
    const ids = await Promise.all([1, 2, 3].map(() => submit(h, { task_type: 'flaky.ping', params: {}, retry })));

    // A step shows waiting, reason circuit_open, while the circuit is open.
    await poll(
      async () => {
        const { body } = await h.request('GET', `/result/${ids[0]}`);
        return body.steps[0].status === 'waiting' && body.steps[0].reason === 'circuit_open';
      },
      { label: 'a step waiting for the circuit', timeoutMs: 10_000, intervalMs: 10 },
    );
    // A waiting step's task can be cancelled: the step ends, and its held job never calls.
    const cancelled = await submit(h, { task_type: 'flaky.ping', params: {}, retry });
    await poll(async () => (await h.request('GET', `/result/${cancelled}`)).body.steps[0].reason === 'circuit_open', {
      label: 'the fourth step waiting',
      timeoutMs: 10_000,
      intervalMs: 10,
    });
    expect((await h.request('POST', `/tasks/${cancelled}/cancel`)).status).toBe(200);
    expect((await waitForTask(h, cancelled)).steps[0].status).toBe('cancelled');
    // Through one failed probe (half_open -> open), then the service recovers.
    await poll(
      async () =>
        (await h.request('GET', '/services/flaky')).body.circuit_state.transitions.some(
          (transition: { to: string; from: string }) => transition.from === 'half_open' && transition.to === 'open',
        ),
      { label: 'a failed probe', timeoutMs: 10_000 },
    );
    flakyFails = false;
    const finished = await Promise.all(ids.map((id) => waitForTask(h, id, 20_000)));
    for (const task of finished) expect(task.status).toBe('completed');

    const view = (await h.request('GET', '/services/flaky')).body;
    expect(view.circuit_state.state).toBe('closed');
    const transitions = [...view.circuit_state.transitions]
      .reverse()
      .map((transition: { from: string; to: string; at: string }) => ({ ...transition, at: Date.parse(transition.at) }));
    expect(transitions.map((transition) => `${transition.from}>${transition.to}`).slice(0, 3)).toEqual(['closed>open', 'open>half_open', 'half_open>open']);
    expect(transitions.at(-1)).toMatchObject({ from: 'half_open', to: 'closed' });
    // While open, the service received nothing: each open period ends with the one probe of the half-open period after it.
    const calls = flaky.received('/ping').map((request) => request.at);
    for (const [index, transition] of transitions.entries()) {
      if (transition.to !== 'open') continue;
      const next = transitions[index + 1];
      const end = next ? next.at : Number.POSITIVE_INFINITY;
      // A call let through before the circuit opened (the three tasks start at once) may arrive
      // just after: 300 ms of margin after the opening transition (a busy machine), far less than open_ms.
      const during = calls.filter((at) => at > transition.at + (transition.from === 'closed' ? 300 : 5) && at < end);
      expect(during, `calls while open from ${new Date(transition.at).toISOString()}`).toHaveLength(0);
    }
    // The worker that made each transition counted it.
    const metrics = await (await fetch(h.worker!.metricsUrl!)).text();
    for (const [from, to] of [
      ['closed', 'open'],
      ['open', 'half_open'],
      ['half_open', 'open'],
      ['half_open', 'closed'],
    ]) {
      expect(metrics).toMatch(new RegExp(`orchestrator_circuit_transitions_total\\{service="flaky",from="${from}",to="${to}"\\} [1-9]`));
    }
    expect(metrics).toMatch(/orchestrator_service_calls_held_total\{service="flaky"\} [1-9]/);
    // Each half-open period let one probe through (half_open_probes: 1).
    for (const [index, transition] of transitions.entries()) {
      if (transition.to !== 'half_open') continue;
      const end = transitions[index + 1]?.at ?? Number.POSITIVE_INFINITY;
      expect(calls.filter((at) => at >= transition.at - 5 && at <= end + 5)).toHaveLength(1);
    }
    // Every attempt a step recorded is a call the service received: deliveries held back by the open circuit are none.
    expect(finished.reduce((sum, task) => sum + task.steps[0].attempts, 0)).toBe(calls.length);
    // Until it closed: the three first calls (two failures opened it) and one probe per half-open period.
    const halfOpenPeriods = transitions.filter((transition) => transition.to === 'half_open').length;
    expect(calls.filter((at) => at <= Date.parse(view.circuit_state.since) + 5).length).toBeLessThanOrEqual(3 + halfOpenPeriods);
  });

  it('refuses to delete a service that unfinished tasks use, naming them; ?force=true deletes it and fails their steps at once', async () => {
    flakyFails = false;
    // A task accepted for later, and a workflow whose call of the service comes after a long sleep.
    const later = await submit(h, { task_type: 'flaky.ping', params: {}, delay_ms: 600_000 });
    const stored = await h.request('POST', '/workflows', {
      name: 'nap_then_ping',
      steps: [
        { id: 'nap', sleep: { ms: 600_000 } },
        { id: 'ping', tool: 'flaky.ping', depends_on: ['nap'] },
      ],
    });
    expect(stored.status, JSON.stringify(stored.body)).toBe(201);
    const napping = (await h.request('POST', '/workflows/nap_then_ping/execute', { parameters: {} })).body.task_id;
    const done = await submit(h, { task_type: 'flaky.ping', params: {} });
    expect((await waitForTask(h, done)).status).toBe('completed');

    const refused = await h.request('DELETE', '/services/flaky');
    expect(refused.status, JSON.stringify(refused.body)).toBe(409);
    expect(refused.body.error.code).toBe('service_in_use');
    expect(refused.body.error.details.task_count).toBe(2);
    expect([...refused.body.error.details.tasks].sort()).toEqual([later, napping].sort());
    expect((await h.request('GET', '/services/flaky')).status).toBe(200);
    expect((await h.request('DELETE', '/services/flaky?force=yes')).status).toBe(400);

    const forced = await h.request('DELETE', '/services/flaky?force=true');
    expect(forced.status, JSON.stringify(forced.body)).toBe(200);
    expect([...forced.body.failed_tasks].sort()).toEqual([later, napping].sort());
    expect((await h.request('GET', '/services/flaky')).status).toBe(404);
    // At once, not when the delay or the sleep is over, and saying why.
    for (const id of [later, napping]) {
      const task = (await h.request('GET', `/result/${id}`)).body;
      expect(task.status).toBe('failed');
      const step = task.steps.find((one: { tool: string }) => one.tool === 'flaky.ping');
      expect(step).toMatchObject({ status: 'failed', error: { name: 'ServiceDeleted', message: expect.stringContaining('flaky was deleted') } });
    }
    expect((await h.request('GET', `/result/${napping}`)).body.steps.find((one: { id: string }) => one.id === 'nap').status).not.toBe('waiting');
  });
});
