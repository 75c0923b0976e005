import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { uuidv7 } from '../../src/lib/uuid7.js';
import { DAY_MS, maintainPartitions } from '../../src/persistence/partitions.js';
import { createHarness, type Harness, poll } from '../helpers/harness.js';
import { storeToolTasks } from '../helpers/stored-tasks.js';

describe('expired tasks (RETENTION_DAYS)', () => {
  let h: Harness;
  beforeAll(async () => {
    // No worker: nothing runs the tasks, and the test runs the maintenance itself.
    h = await createHarness({ worker: false, env: { RETENTION_DAYS: '7' } });
  });
  afterAll(async () => {
    await h.close();
  });

  it('answers 410 task_expired on every endpoint that takes the id of a task past retention, and 404 for an unknown one', async () => {
    const expired = uuidv7(new Date(Date.now() - 8 * DAY_MS));
    const paths: [string, string][] = [
      ['GET', `/result/${expired}`],
      ['GET', `/result/${expired}?wait=1`],
      ['GET', `/tasks/${expired}`],
      ['GET', `/tasks/${expired}/events`],
      ['POST', `/tasks/${expired}/cancel`],
      ['POST', `/tasks/${expired}/retry`],
      ['GET', `/dead-letters?task_id=${expired}`],
    ];
    for (const [method, path] of paths) {
      const response = await h.request(method, path);
      expect(response.status, `${method} ${path}`).toBe(410);
      expect(response.body.error).toMatchObject({ code: 'task_expired', details: { retention_days: 7 } });
    }
    // A recent id and an id from before UUIDv7 ids that find nothing are unknown, not expired.
    for (const unknown of [uuidv7(), uuidv7(new Date(Date.now() - 6 * DAY_MS)), randomUUID()]) {
      const response = await h.request('GET', `/result/${unknown}`);
      expect(response.status).toBe(404);
      expect(response.body.error.code).toBe('task_not_found');
    }
  });

  it('drops a task past retention with its idempotency key, which a new task may then take', async () => {
    const body = { task_type: 'echo', params: { order: 42 } };
    // Submitted 8 days ago with the key.
    const old = uuidv7(new Date(Date.now() - 8 * DAY_MS));
    await storeToolTasks(h.db.sql, h.registry, [{ id: old, params: body.params, idempotencyKey: 'order-42', requestHash: 'old' }]);
    expect((await h.request('GET', `/result/${old}`)).status).toBe(200);

    await maintainPartitions(h.db.sql, new Date(), { retentionDays: 7, aheadDays: 3 }, h.logger);
    expect((await h.request('GET', `/result/${old}`)).status).toBe(410);
    const again = await h.request('POST', '/assign-task', { ...body, idempotency_key: 'order-42' });
    expect(again.status).toBe(202);
    expect(again.body.task_id).not.toBe(old);
    expect((await h.request('GET', `/result/${again.body.task_id}`)).body).toMatchObject({ status: 'queued' });
    // And the key is held by the new task now.
    const replay = await h.request('POST', '/assign-task', { ...body, idempotency_key: 'order-42' });
    expect(replay).toMatchObject({ status: 200, body: { task_id: again.body.task_id } });
  });
});

describe("a worker's retention timer (RETENTION_INTERVAL_MS)", () => {
  let h: Harness;
  beforeAll(async () => {
    // The worker maintains the partitions at start and then every 200 ms: the test only waits.
    h = await createHarness({ env: { RETENTION_DAYS: '7', RETENTION_INTERVAL_MS: '200' } });
  });
  afterAll(async () => {
    await h.close();
  });

  it('drops a day past retention by itself, and keeps the days within it', async () => {
    const old = uuidv7(new Date(Date.now() - 8 * DAY_MS));
    const recent = uuidv7(new Date(Date.now() - 6 * DAY_MS));
    await storeToolTasks(h.db.sql, h.registry, [
      { id: old, params: { age: 'old' } },
      { id: recent, params: { age: 'recent' } },
    ]);
    await poll(async () => (await h.request('GET', `/result/${old}`)).status === 410, { label: "the worker's timer to drop the expired day" });
    expect((await h.request('GET', `/result/${recent}`)).status).toBe(200);
  });
});
