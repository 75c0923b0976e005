import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TaskStore } from '../../src/persistence/task-store.js';
import { createHarness, type Harness, submit, waitForTask } from '../helpers/harness.js';

/**
 * GET /result's group-committed read (TaskStore.view) runs one plain statement on the pool instead
 * of Prisma's client: it must give the very records Prisma's read (TaskStore.get) gives, field
 * for field and type for type (Dates, BigInts, JSON, arrays, nulls), whatever the task holds.
 */
describe("GET /result's read", () => {
  let h: Harness;
  let store: TaskStore;
  beforeAll(async () => {
    h = await createHarness();
    store = new TaskStore(h.db.prisma, h.db.sql);
  });
  afterAll(async () => {
    await h.close();
  });

  const same = async (ids: string[]) => {
    const viewed = await Promise.all(ids.map((id) => store.view(id)));
    for (const [index, id] of ids.entries()) {
      const read = await store.get(id);
      expect(read).not.toBeNull();
      expect(viewed[index]).toStrictEqual(read);
    }
  };

  it('gives what Prisma gives: one-tool tasks, a failed one with attempts, a workflow, callbacks, unknown ids', async () => {
    const echo = await submit(h, { task_type: 'echo', params: { message: 'hi', list: [1, 'two', null], nested: { a: { b: true } } } });
    const failed = await submit(h, {
      task_type: 'http',
      params: { method: 'GET', url: 'http://not-allowed.invalid/x' },
      retry: { attempts: 2, backoff: { type: 'fixed', delay_ms: 10 } },
    });
    const diamond = await submit(h, { task_type: 'diamond', params: {} });
    const queued = await submit(h, { task_type: 'echo', params: { later: true }, delay_ms: 60_000 });
    for (const id of [echo, failed, diamond]) await waitForTask(h, id);
    // Two callback deliveries, as the callback sender records them.
    const task = await h.db.prisma.task.findFirstOrThrow({ where: { id: echo } });
    for (const [attempt, delivered] of [
      [1, false],
      [2, true],
    ] as const) {
      await h.db.prisma.callbackDelivery.create({
        data: {
          id: randomUUID(),
          taskId: echo,
          taskCreatedAt: task.createdAt,
          run: 1,
          attempt,
          url: 'https://example.test/hook',
          event: 'task.completed',
          statusCode: delivered ? 200 : 502,
          error: delivered ? null : 'bad gateway',
          delivered,
          willRetry: !delivered,
          durationMs: 12,
        },
      });
    }
    await same([echo, failed, diamond, queued]);
    // Asked together, in one statement, with an id twice.
    await same([diamond, echo, diamond]);
    const missing = '01890a5d-ac96-774b-bcce-b302099a8057';
    expect(await store.view(missing)).toBeUndefined();
    expect(await store.view(randomUUID())).toBeUndefined();
  });
});
