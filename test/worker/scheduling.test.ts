import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { type AnyTool, defineTool } from '../../src/tools/tool.js';
import { createHarness, type Harness, submit, waitForTask } from '../helpers/harness.js';

/** When each step of `ids` started, from PostgreSQL, earliest first. */
async function startTimes(h: Harness, ids: string[]): Promise<{ taskId: string; started: number; finished: number }[]> {
  const steps = await h.db.prisma.step.findMany({ where: { taskId: { in: ids } } });
  return steps
    .map((step) => ({ taskId: step.taskId, started: step.startedAt!.getTime(), finished: step.finishedAt!.getTime() }))
    .sort((a, b) => a.started - b.started);
}

const RATE = { max: 2, duration_ms: 1_500 };
const limited = defineTool({
  name: 'limited',
  description: 'test: a tool with a rate limit',
  input: z.object({ n: z.int() }),
  output: z.object({ n: z.int() }),
  rate_limit: RATE,
  async run(input) {
    return input;
  },
});

describe("a tool's rate limit across two workers", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness({ worker: false, tools: [limited as AnyTool] });
  });
  afterAll(async () => {
    await h.close();
  });

  it(`starts at most ${RATE.max} steps per ${RATE.duration_ms} ms, whichever worker takes them`, async () => {
    const count = 5 * RATE.max;
    // A backlog first, so nothing but the limit paces the workers.
    const ids: string[] = [];
    for (let n = 0; n < count; n += 1) ids.push(await submit(h, { task_type: 'limited', params: { n } }));
    const workersStarting = Date.now();
    await Promise.all([h.startWorker(), h.startWorker()]);
    for (const id of ids) expect((await waitForTask(h, id)).status).toBe('completed');

    // The limit is a window per `duration_ms` holding at most `max` starts, counted in Redis for
    // every worker; the first window opened after the workers started. So the step that started
    // (k * max + 1)-th began at least k windows after that. No slack: a busy machine only makes
    // starts later. Without the limit, all of them start within moments of the workers.
    const starts = (await startTimes(h, ids)).map((step) => step.started);
    for (let k = 1; k * RATE.max < count; k += 1) {
      const index = k * RATE.max;
      expect(starts[index]! - workersStarting, `start #${index + 1}`).toBeGreaterThanOrEqual(k * RATE.duration_ms);
    }
  });
});

describe('priority', () => {
  let h: Harness;
  beforeAll(async () => {
    // No worker yet: everything submitted waits.
    h = await createHarness({ worker: false });
  });
  afterAll(async () => {
    await h.close();
  });

  it('runs waiting steps without a priority first, then by priority (1 first), in submission order within one', async () => {
    const submitted: { id: string; label: string }[] = [];
    for (const [label, priority] of [
      ['p3', 3],
      // BullMQ's largest: 2 ** 21 is refused (400), not taken and failed in Redis.
      ['lowest', 2 ** 21 - 1],
      ['p1 first', 1],
      ['p2', 2],
      ['none', undefined],
      ['p1 second', 1],
    ] as const) {
      const id = await submit(h, { task_type: 'sleep', params: { ms: 20 }, ...(priority ? { priority } : {}) });
      submitted.push({ id, label });
    }
    // Still waiting: no worker runs.
    const queued = await h.db.prisma.step.count({ where: { taskId: { in: submitted.map((task) => task.id) }, status: 'queued' } });
    expect(queued).toBe(submitted.length);

    // One worker running one step at a time takes them in the queue's order.
    await h.startWorker({ WORKER_CONCURRENCY: '1' });
    for (const { id } of submitted) expect((await waitForTask(h, id)).status).toBe('completed');
    const steps = await startTimes(
      h,
      submitted.map((task) => task.id),
    );
    const label = new Map(submitted.map((task) => [task.id, task.label]));
    expect(steps.map((step) => label.get(step.taskId))).toEqual(['none', 'p1 first', 'p1 second', 'p2', 'p3', 'lowest']);
    // One at a time: each started after the one before it finished, so the order is the queue's.
    for (let i = 1; i < steps.length; i += 1) expect(steps[i]!.started).toBeGreaterThanOrEqual(steps[i - 1]!.finished);
  });
});
