import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ServiceStore } from '../../src/persistence/service-store.js';
import { closeTestConnections } from '../fixtures/tools.js';
import { createHarness, type Harness } from '../helpers/harness.js';
import { startServer, type TestServer } from '../helpers/http-server.js';
import { latch } from '../helpers/latch.js';

const pingDocument = {
  openapi: '3.1.0',
  info: { title: 'Ping', version: '1' },
  paths: {
    '/ping': { get: { operationId: 'ping', responses: { '200': { description: 'pong', content: { 'application/json': { schema: { type: 'object' } } } } } } },
  },
};

/**
 * A reading of the service registry (every SERVICES_RELOAD_MS, on a notice, on GET /services)
 * that began before a registration in the same process ends after it: what it read is older than
 * the registration, and must not take the new service out again. A loaded CI run met this: POST
 * /services answered 201, and the POST /workflows right after it answered "unknown tool".
 */
describe('a registry reading older than a registration', () => {
  let h: Harness;
  let server: TestServer;
  beforeAll(async () => {
    server = await startServer((_request, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(pingDocument)));
    h = await createHarness({ worker: false, env: { HTTP_TOOL_ALLOWED_HOSTS: `127.0.0.1:${server.port}`, SERVICE_HEALTH_INTERVAL_MS: '0' } });
  });
  afterAll(async () => {
    await h?.close();
    await server?.close();
    await closeTestConnections();
  });

  it('leaves a service registered while it was on its way, and its tools usable at once', async () => {
    const versions = ServiceStore.prototype.versions;
    const read = latch();
    const released = latch();
    // The next reading of the registry's versions is taken now, and handed over only once released.
    ServiceStore.prototype.versions = async function (this: ServiceStore) {
      ServiceStore.prototype.versions = versions;
      const snapshot = await versions.call(this);
      read.open();
      await released.opened;
      return snapshot;
    };
    try {
      // A reading already on its way when the function was patched (the one the registry starts
      // once its subscription is ready, just after the harness starts) is joined without calling
      // it: ask again until a reading does (one GET alone waited for the next timed reading, 10 s).
      let listing = h.request('GET', '/services');
      while ((await Promise.race([read.opened.then(() => 'read'), listing.then(() => 'answered')])) === 'answered') {
        listing = h.request('GET', '/services');
      }
      const registered = await h.request('POST', '/services', { name: 'pinger', base_url: server.origin, openapi_url: `${server.origin}/openapi.json` });
      expect(registered.status, JSON.stringify(registered.body)).toBe(201);
      released.open();
      // The old reading is done: it answered GET /services, and the service stays.
      expect((await listing).status).toBe(200);
    } finally {
      ServiceStore.prototype.versions = versions;
      released.open();
    }
    const workflow = await h.request('POST', '/workflows', { name: 'ping_once', steps: [{ id: 'p', tool: 'pinger.ping' }] });
    expect(workflow.status, JSON.stringify(workflow.body)).toBe(201);
    expect(((await h.request('GET', '/services')).body.services as { name: string }[]).map((service) => service.name)).toEqual(['pinger']);
  });
});
