import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { type ApiServer, startApi } from '../../src/api/server.js';
import { loadConfig } from '../../src/lib/config.js';
import { dropDatabase } from '../../src/persistence/database.js';
import { runEntry } from '../helpers/child-process.js';
import { databaseUrl, TEST_POSTGRES_URL, TEST_REDIS_URL } from '../helpers/env.js';
import { createHarness, type Harness, poll, submit, uniqueName, waitForTask } from '../helpers/harness.js';
import { PGBOUNCER_POOL_SIZE, PGBOUNCER_QUERY_WAIT_TIMEOUT_S, type PgBouncer, pgbouncerAdmin, startPgBouncer } from '../helpers/pgbouncer.js';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js';

/** Numbers from PgBouncer's console arrive as text. */
interface StatsRow {
  database: string;
  total_xact_count: string;
}
interface ConnectionRow {
  database: string;
}

const pgbouncerUrl = () => {
  const url = inject('pgbouncerUrl');
  if (!url) throw new Error('run this file in a pgbouncer project (vitest.config.ts)');
  return url;
};

async function transactionsOf(database: string): Promise<number> {
  const rows = await pgbouncerAdmin<StatsRow>(pgbouncerUrl(), 'SHOW STATS');
  return Number(rows.find((row) => row.database === database)?.total_xact_count ?? 0);
}

describe('the service behind PgBouncer in transaction mode', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness();
    // A second worker: one more pool of client connections than PgBouncer has server connections.
    await h.startWorker();
  });
  afterAll(async () => {
    await h?.close();
  });

  it('is configured with PgBouncer as DATABASE_URL and PostgreSQL as DATABASE_DIRECT_URL', () => {
    expect(new URL(h.config.DATABASE_URL).port).toBe(new URL(pgbouncerUrl()).port);
    expect(new URL(h.config.DATABASE_DIRECT_URL).port).toBe(new URL(TEST_POSTGRES_URL).port || '5432');
  });

  // So that this project cannot pass by reaching PostgreSQL some other way: the transactions of
  // its database are counted by PgBouncer, and its three pools (the API's, two workers') share
  // fewer server connections.
  it('runs its transactions through PgBouncer, its clients taking turns on default_pool_size server connections', async () => {
    const database = new URL(h.config.DATABASE_URL).pathname.slice(1);
    const before = await transactionsOf(database);
    const ids = await Promise.all(Array.from({ length: 100 }, (_, index) => submit(h, { task_type: 'sleep', params: { ms: 20 + (index % 5) } })));
    for (const id of ids) expect((await waitForTask(h, id)).status).toBe('completed');
    // PgBouncer counts a transaction as it takes back its server connection, just after the
    // client got its answer: poll rather than read once.
    const after = await poll(
      async () => {
        const count = await transactionsOf(database);
        return count - before >= ids.length && count;
      },
      { label: `PgBouncer to count ${ids.length} transactions of ${database}`, timeoutMs: 5_000 },
    );
    expect(after - before).toBeGreaterThanOrEqual(ids.length);
    // The pools keep their connections open for 30 s once idle.
    const ofDatabase = async (command: string) =>
      (await pgbouncerAdmin<ConnectionRow>(pgbouncerUrl(), command)).filter((row) => row.database === database).length;
    expect(await ofDatabase('SHOW SERVERS')).toBeLessThanOrEqual(PGBOUNCER_POOL_SIZE);
    expect(await ofDatabase('SHOW CLIENTS')).toBeGreaterThan(PGBOUNCER_POOL_SIZE);
  });
});

describe('a process starting behind PgBouncer', () => {
  const database = uniqueName('orch_test_fresh');
  afterAll(async () => {
    await dropDatabase(databaseUrl(database));
  });

  it('creates and migrates its database over DATABASE_DIRECT_URL, then serves through PgBouncer', async () => {
    const child = runEntry('src/api/main.ts', {
      NODE_ENV: 'test',
      HOST: '127.0.0.1',
      PORT: '0',
      LOG_FORMAT: 'json',
      REDIS_URL: TEST_REDIS_URL,
      QUEUE_PREFIX: `{${uniqueName('t')}}`,
      DATABASE_URL: new URL(`/${database}`, pgbouncerUrl()).toString(),
      DATABASE_DIRECT_URL: databaseUrl(database),
    });
    try {
      await child.waitForOutput(/"message":"API listening"/);
      const url = /"url":"([^"]+)"/.exec(child.output.slice(child.output.indexOf('API listening')))![1];
      expect(child.output).toMatch(/"message":"created database"/);
      const ready = await fetch(`${url}/ready`);
      expect(ready.status).toBe(200);
      expect(await transactionsOf(database)).toBeGreaterThan(0);
    } finally {
      await child.signal('SIGTERM');
    }
  });
});

// The outage the chaos suite stages in front of the service (test/chaos/postgres-faults.test.ts),
// staged here behind PgBouncer: PgBouncer itself answers, PostgreSQL does not.
describe('PostgreSQL unreachable behind PgBouncer', () => {
  let proxy: TcpProxy;
  let bouncer: PgBouncer;
  let h: Harness;
  let api: ApiServer;
  beforeAll(async () => {
    proxy = await startTcpProxy({ port: Number(new URL(TEST_POSTGRES_URL).port || 5432) });
    bouncer = await startPgBouncer({ postgresUrl: TEST_POSTGRES_URL, serverPort: proxy.port });
    h = await createHarness({ api: false, worker: false });
    const env = { DATABASE_URL: bouncer.through(h.config.DATABASE_URL) };
    await h.startWorker(env);
    api = await startApi(loadConfig({ ...h.env, ...env }), h.logger, h.registry);
    h.url = api.url;
  });
  afterAll(async () => {
    proxy?.resume();
    await api?.close();
    await h?.close();
    await bouncer?.close();
    await proxy?.close();
  });

  it('answers 503 within query_wait_timeout, and runs tasks again once PostgreSQL is back', async () => {
    expect((await waitForTask(h, await submit(h, { task_type: 'echo', params: { before: true } }))).status).toBe('completed');
    proxy.pause();
    // The first request waits for a server connection until query_wait_timeout (2 s here, 120 s
    // by default); later ones fail at once while PgBouncer's logins keep failing. The bound leaves
    // room for a busy machine.
    for (let probe = 0; probe < 3; probe += 1) {
      const sent = Date.now();
      const response = await h.request('POST', '/assign-task', { task_type: 'echo', params: { probe } });
      expect(response.status).toBe(503);
      expect(response.body.error.code).toBe('service_unavailable');
      expect(Date.now() - sent).toBeLessThan(PGBOUNCER_QUERY_WAIT_TIMEOUT_S * 1_000 + 3_000);
    }
    expect((await h.request('GET', '/ready')).status).toBe(503);
    proxy.resume();
    await poll(async () => (await h.request('GET', '/ready')).status === 200, { label: 'the API to be ready again', timeoutMs: 10_000 });
    expect((await waitForTask(h, await submit(h, { task_type: 'echo', params: { after: true } }))).status).toBe('completed');
  });
});
