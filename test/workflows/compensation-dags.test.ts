import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeTestConnections, observationKey, testTools } from '../fixtures/tools.js';
import { createHarness, type Harness, poll, submit, waitForTask } from '../helpers/harness.js';

/**
 * Compensation (docs/tools-and-workers.md "Compensation (sagas)") on random DAGs whose one step fails: whatever
 * completed before (or while) the task failed is undone exactly once, nothing else is, and every
 * compensation runs only after the compensations of the steps below its step and after its step
 * ended. Which steps complete before the failure depends on timing; the invariants do not.
 */

type StepView = { id: string; status: string; reason?: string; started_at: string | null; finished_at: string | null; compensation_of?: string };

let counter = 0;

describe('compensation on random DAGs (property-based)', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness({ tools: testTools, env: { WORKER_CONCURRENCY: '8' } });
  });
  afterAll(async () => {
    await h.close();
    await closeTestConnections();
  });

  it('undoes exactly the steps that completed, each once, in reverse dependency order', async () => {
    const stepArbitrary = (index: number) =>
      fc.record({
        deps: index === 0 ? fc.constant<number[]>([]) : fc.uniqueArray(fc.integer({ min: 0, max: index - 1 }), { maxLength: Math.min(index, 3) }),
        compensated: fc.boolean(),
        ms: fc.constantFrom(0, 0, 20, 60),
      });
    const graphs = fc
      .integer({ min: 2, max: 9 })
      .chain((size) => fc.tuple(fc.tuple(...Array.from({ length: size }, (_, index) => stepArbitrary(index))), fc.integer({ min: 0, max: size - 1 })));

    await fc.assert(
      fc.asyncProperty(graphs, async ([generated, failing]) => {
        counter += 1;
        const name = `saga_${counter}`;
        const key = `${name}-${Date.now()}`;
        const steps = generated.map((step, index) => {
          const id = `s${index}`;
          return {
            id,
            depends_on: step.deps.map((dep) => `s${dep}`),
            ...(index === failing
              ? { tool: 'broken', input: { key: `${key}-${id}` }, retry: { attempts: 1 } }
              : { tool: 'record', input: { key: `${key}-${id}`, ms: step.ms } }),
            ...(step.compensated ? { compensate: { tool: 'record', input: { key: `${key}-${id}-undo` } } } : {}),
          };
        });
        expect((await h.request('POST', '/workflows', { name, steps })).status).toBe(201);

        const id = await submit(h, { task_type: name });
        const task = await waitForTask(h, id, 60_000);
        expect(task.status).toBe('failed');
        expect(task.error).toMatchObject({ step: `s${failing}` });
        const byId = new Map<string, StepView>(task.steps.map((step: StepView) => [step.id, step]));
        const ancestors = (index: number): Set<number> => {
          const found = new Set<number>();
          const stack = [...generated[index]!.deps];
          while (stack.length > 0) {
            const next = stack.pop()!;
            if (!found.has(next)) {
              found.add(next);
              stack.push(...generated[next]!.deps);
            }
          }
          return found;
        };
        let ran = 0;
        for (const [index, step] of generated.entries()) {
          const row = byId.get(`s${index}`)!;
          if (ancestors(index).has(failing)) expect(row.status, `s${index} is below the failing step`).toBe('skipped');
          if (!step.compensated) continue;
          const undo = byId.get(`s${index}.compensate`)!;
          expect(undo.compensation_of).toBe(`s${index}`);
          const undone = await h.redis.llen(observationKey(h.config.QUEUE_PREFIX, `${key}-s${index}-undo`));
          if (row.status === 'completed') {
            ran += 1;
            expect(undo.status).toBe('completed');
            expect(undone, `s${index} undone once`).toBe(1);
            expect(Date.parse(undo.started_at!)).toBeGreaterThanOrEqual(Date.parse(row.finished_at!));
          } else {
            expect(`${undo.status}:${undo.reason}`).toBe('skipped:not_needed');
            expect(undone).toBe(0);
          }
        }
        // Reverse dependency order: an ancestor's compensation starts after its descendants' end.
        for (const [index, step] of generated.entries()) {
          const undo = byId.get(`s${index}.compensate`);
          if (!step.compensated || undo?.status !== 'completed') continue;
          for (const above of ancestors(index)) {
            const earlier = byId.get(`s${above}.compensate`);
            if (earlier?.status === 'completed') expect(Date.parse(earlier.started_at!)).toBeGreaterThanOrEqual(Date.parse(undo.finished_at!));
          }
        }
        if (ran > 0) expect(task.compensated).toBe(true);
        else expect(task.compensated).toBeUndefined();
        // A step without a compensation that was running when the task failed finishes on its own; then nothing is left open.
        await poll(async () => (await h.db.prisma.step.count({ where: { taskId: id, status: { in: ['pending', 'queued', 'running'] } } })) === 0, {
          label: `the steps of ${id} settled`,
        });
      }),
      { numRuns: 15 },
    );
  }, 300_000);
});
