import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type ApiServer, startApi } from '../../src/api/server.js';
import { loadConfig } from '../../src/lib/config.js';
import { createHarness, type Harness, poll, uniqueName } from '../helpers/harness.js';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js';

/** The schedule endpoints while Redis or PostgreSQL is down: 503 at once, and nothing half changed. */
describe('schedules while Redis or PostgreSQL is down', () => {
  let h: Harness;
  let redisProxy: TcpProxy;
  let pgProxy: TcpProxy;
  let api: ApiServer;

  beforeAll(async () => {
    h = await createHarness({ api: false, worker: false });
    redisProxy = await startTcpProxy({ port: Number(new URL(h.config.REDIS_URL).port || 6379) });
    pgProxy = await startTcpProxy({ port: Number(new URL(h.config.DATABASE_URL).port || 5432) });
    const databaseUrl = new URL(h.config.DATABASE_URL);
    databaseUrl.port = String(pgProxy.port);
    const redisUrl = new URL(h.config.REDIS_URL);
    redisUrl.port = String(redisProxy.port);
    api = await startApi(loadConfig({ ...h.env, REDIS_URL: redisUrl.toString(), DATABASE_URL: databaseUrl.toString() }), h.logger, h.registry);
    h.url = api.url;
  });
  afterEach(async () => {
    redisProxy?.resume();
    pgProxy?.resume();
    await poll(async () => (await h.request('GET', '/ready')).status === 200, { label: 'the API to be ready again', timeoutMs: 15_000 });
  });
  afterAll(async () => {
    await api?.close();
    await Promise.all([redisProxy?.close(), pgProxy?.close()]);
    await h?.close();
  });

  const stored = async (name: string) =>
    h.db.sql.$queryRawUnsafe<{ paused: boolean }[]>(`SELECT paused FROM schedules WHERE name = $1`, name).then((rows) => rows[0]);

  it('Redis down: creating or resuming answers 503 and stores nothing; pausing is kept as it was', async () => {
    const paused = uniqueName('paused');
    expect((await h.request('POST', '/schedules', { name: paused, every_ms: 60_000, task_type: 'echo', paused: true })).status).toBe(201);
    redisProxy.pause();
    const name = uniqueName('down');
    const created = await h.request('POST', '/schedules', { name, every_ms: 60_000, task_type: 'echo' });
    expect(created.status).toBe(503);
    expect(created.body.error).toMatchObject({ code: 'service_unavailable', details: { dependency: 'redis' } });
    expect(await stored(name)).toBeUndefined();
    const resumed = await h.request('PATCH', `/schedules/${paused}`, { paused: false });
    expect(resumed.status).toBe(503);
    expect(await stored(paused)).toEqual({ paused: true });
  });

  it('PostgreSQL down: every schedule endpoint answers 503', async () => {
    const name = uniqueName('pg');
    expect((await h.request('POST', '/schedules', { name, every_ms: 60_000, task_type: 'echo', paused: true })).status).toBe(201);
    pgProxy.pause();
    await poll(async () => (await h.request('GET', '/ready')).status === 503, { label: 'the API to see PostgreSQL down' });
    for (const [method, path, body] of [
      ['POST', '/schedules', { name: uniqueName('x'), every_ms: 60_000, task_type: 'echo' }],
      ['GET', '/schedules', undefined],
      ['GET', `/schedules/${name}`, undefined],
      ['PATCH', `/schedules/${name}`, { paused: false }],
      ['DELETE', `/schedules/${name}`, undefined],
    ] as const) {
      const response = await h.request(method, path, body);
      expect(response.status, `${method} ${path}: ${JSON.stringify(response.body)}`).toBe(503);
      expect(response.body.error.details).toMatchObject({ dependency: 'database' });
    }
  });
});
