import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeTestConnections, observationKey, testTools } from '../fixtures/tools.js';
import { createHarness, type Harness, submit, waitForTask } from '../helpers/harness.js';

/** A random DAG: step i may depend on any steps before it, so it is acyclic by construction. */
const dagArbitrary = fc
  .integer({ min: 1, max: 30 })
  .chain((size) =>
    fc.tuple(
      ...Array.from({ length: size }, (_, index) =>
        index === 0 ? fc.constant<number[]>([]) : fc.uniqueArray(fc.integer({ min: 0, max: index - 1 }), { maxLength: Math.min(index, 4) }),
      ),
    ),
  );

let counter = 0;

describe('random DAGs (property-based)', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness({ tools: testTools, env: { WORKER_CONCURRENCY: '16' } });
  });
  afterAll(async () => {
    await h.close();
    await closeTestConnections();
  });

  it('runs every step exactly once, never before its dependencies', async () => {
    await fc.assert(
      fc.asyncProperty(dagArbitrary, async (dependencies) => {
        counter += 1;
        const name = `dag_${counter}`;
        const key = `${name}-${Date.now()}`;
        const steps = dependencies.map((deps, index) => ({
          id: `s${index}`,
          // flaky with succeed_on 1 never fails, and counts its calls per step in Redis.
          tool: 'flaky',
          depends_on: deps.map((dep) => `s${dep}`),
          input: { succeed_on: 1, key: `${key}-s${index}`, count: 'calls' },
        }));
        const defined = await h.request('POST', '/workflows', { name, steps });
        expect(defined.status).toBe(201);
        const id = await submit(h, { task_type: name });
        const task = await waitForTask(h, id, 30_000);
        expect(task.status).toBe('completed');
        const rows = await h.db.prisma.step.findMany({ where: { taskId: id } });
        expect(rows).toHaveLength(steps.length);
        const byId = new Map(rows.map((row) => [row.stepId, row]));
        for (const step of steps) {
          const row = byId.get(step.id)!;
          expect(row.status).toBe('completed');
          expect(row.attempts).toBe(1);
          expect(await h.redis.llen(observationKey(h.config.QUEUE_PREFIX, `${key}-${step.id}`))).toBe(1);
          for (const dep of step.depends_on) {
            expect(row.startedAt!.getTime()).toBeGreaterThanOrEqual(byId.get(dep)!.finishedAt!.getTime());
          }
        }
      }),
      { numRuns: 20 },
    );
  }, 180_000);

  it('ends every task under load when a step deep in the DAG fails', async () => {
    // 12 steps in four layers; step s9 (third layer) breaks in every other task.
    const layers = [['s0'], ['s1', 's2', 's3'], ['s4', 's5', 's6', 's7', 's8', 's9'], ['s10', 's11']];
    const steps = [
      { id: 's0', tool: 'echo', input: {} },
      ...layers[1]!.map((id) => ({ id, tool: 'echo', depends_on: ['s0'], input: {} })),
      ...layers[2]!.map((id, index) =>
        id === 's9'
          ? {
              id,
              tool: 'broken',
              depends_on: ['s3'],
              input: { message: '{{params.failure}}' },
              retry: { attempts: 2, backoff: { type: 'fixed', delay_ms: 5 } },
            }
          : { id, tool: 'sleep', depends_on: [layers[1]![index % 3]!], input: { ms: 20 } },
      ),
      { id: 's10', tool: 'echo', depends_on: ['s4', 's5', 's6'], input: {} },
      { id: 's11', tool: 'echo', depends_on: ['s7', 's8', 's9'], input: {} },
    ];
    // "broken" cannot succeed, so tasks that should complete get an echo in its place instead:
    // two versions of the workflow, run side by side.
    const ok = steps.map((step) => (step.id === 's9' ? { id: 's9', tool: 'echo', depends_on: ['s3'], input: {} } : step));
    expect((await h.request('POST', '/workflows', { name: 'deep_ok', steps: ok })).status).toBe(201);
    expect(
      (
        await h.request('POST', '/workflows', {
          name: 'deep_failure',
          parameters: [{ name: 'failure', type: 'string', required: true }],
          steps,
        })
      ).status,
    ).toBe(201);
    const ids = await Promise.all(
      Array.from({ length: 60 }, (_, index) =>
        index % 2 === 0 ? submit(h, { task_type: 'deep_ok' }) : submit(h, { task_type: 'deep_failure', params: { failure: `failure ${index}` } }),
      ),
    );
    const tasks = await Promise.all(ids.map((id) => waitForTask(h, id, 60_000)));
    tasks.forEach((task, index) => {
      if (index % 2 === 0) {
        expect(task.status).toBe('completed');
        expect(task.progress).toEqual({ completed: 12, total: 12 });
      } else {
        expect(task.status).toBe('failed');
        expect(task.error).toMatchObject({ step: 's9', message: `failure ${index}` });
        const s11 = task.steps.find((step: { id: string }) => step.id === 's11');
        expect(s11.status).toBe('skipped');
        expect(s11.started_at).toBeNull();
      }
    });
    // Steps of failed tasks that were already running finish and are recorded; nothing stays
    // pending, queued or running.
    expect(await waitForSettled(h, ids)).toBe(0);
  }, 120_000);
});

/** Steps of failed tasks that were already running finish shortly after; wait for them. */
async function waitForSettled(h: Harness, ids: string[]): Promise<number> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const left = await h.db.prisma.step.count({ where: { taskId: { in: ids }, status: { in: ['pending', 'queued', 'running'] } } });
    if (left === 0 || Date.now() > deadline) return left;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
