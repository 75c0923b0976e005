import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rootJobId, stepJobId, TASKS_QUEUE, toolQueueName } from '../../src/queue/jobs.js';
import { closeTestConnections, observationKey, testTools } from '../fixtures/tools.js';
import { FlowInspector } from '../helpers/flows.js';
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
  let flows: FlowInspector;
  beforeAll(async () => {
    // Finished jobs are kept, so that each run's flow can be read once it has ended.
    h = await createHarness({ tools: testTools, env: { WORKER_CONCURRENCY: '16', QUEUE_KEEP_COMPLETED: '100000' } });
    flows = new FlowInspector(h);
  });
  afterAll(async () => {
    await flows?.close();
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
        // BullMQ carried the run as one flow: every step's job under its root, which completed once, after the last.
        await flows.expectClosedFlow(
          id,
          steps.map((step) => ({ queue: toolQueueName('flaky'), id: stepJobId(id, 1, step.id) })),
        );
      }),
      { numRuns: 20 },
    );
  }, 180_000);

  it('runs random DAGs of every kind (when, for_each of 0 to 4 items over a tool or a sub-workflow, repeats of 1 to 5 iterations of a tool or a sub-workflow, sub-workflows, failures under continue, a terminate at a random place, an exit handler) as a reference interpreter says', async () => {
    // A child every sub-workflow step runs: one recorded step.
    const child = await h.request('POST', '/workflows', {
      name: 'prop_child',
      parameters: [{ name: 'key', type: 'string', required: true }],
      steps: [{ id: 'c', tool: 'record', input: { key: '{{params.key}}' } }],
      output: { token: '{{steps.c.output.token}}' },
    });
    expect(child.status).toBe(201);
    const kinds = ['tool', 'tool', 'map', 'repeat', 'sub', 'subrepeat', 'submap', 'fail'] as const;
    const stepArbitrary = (index: number) =>
      fc.record({
        deps: index === 0 ? fc.constant<number[]>([]) : fc.uniqueArray(fc.integer({ min: 0, max: index - 1 }), { maxLength: Math.min(index, 3) }),
        kind: fc.constantFrom(...kinds),
        when: fc.option(fc.boolean(), { nil: undefined }),
        size: fc.integer({ min: 0, max: 4 }),
        // A map's max_parallel.
        parallel: fc.integer({ min: 1, max: 3 }),
      });
    // At most one terminate step, at a random position: it depends on every step before it and
    // every step after it depends on it, so what ran before it is known, and what comes after
    // never starts when it runs.
    const terminateArbitrary = fc.option(fc.record({ at: fc.nat(), status: fc.constantFrom('completed', 'failed'), output: fc.boolean() }), { nil: undefined });
    // An exit handler (on_exit) or none: its first step fails or records; a second, after it, runs
    // always or only when the run failed (`when` over task.status).
    const exitArbitrary = fc.option(fc.record({ fails: fc.boolean(), second: fc.option(fc.boolean(), { nil: undefined }) }), { nil: undefined });
    const graphs = fc.integer({ min: 1, max: 10 }).chain((size) =>
      fc
        .tuple(fc.tuple(...Array.from({ length: size }, (_, index) => stepArbitrary(index))), terminateArbitrary, exitArbitrary)
        .map(([steps, terminate, exit]) => {
          if (!terminate) return { generated: steps, terminate: undefined, exit };
          const at = terminate.at % steps.length;
          const generated = steps.map((step, index) => {
            if (index === at) return { ...step, kind: 'terminate' as const, deps: Array.from({ length: at }, (_, dep) => dep) };
            if (index > at && !step.deps.includes(at)) return { ...step, deps: [...step.deps, at] };
            return step;
          });
          return { generated, terminate: { ...terminate, at }, exit };
        }),
    );

    await fc.assert(
      fc.asyncProperty(graphs, async ({ generated, terminate, exit }) => {
        counter += 1;
        const name = `kinds_${counter}`;
        const key = `${name}-${Date.now()}`;
        const whens = generated.flatMap((step, index) => (step.when === undefined ? [] : [[`w${index}`, step.when] as const]));
        const steps = generated.map((step, index) => {
          const id = `s${index}`;
          const common = {
            id,
            depends_on: step.deps.map((dep) => `s${dep}`),
            ...(step.when !== undefined ? { when: `params.w${index}` } : {}),
          };
          const byKind = {
            terminate: {
              terminate: { status: terminate?.status ?? 'completed', ...(terminate?.output ? { output: { terminated: true, at: '{{= size(params)}}' } } : {}) },
            },
            tool: { tool: 'record', input: { key: `${key}-${id}` } },
            map: { tool: 'record', for_each: `{{params.list${index}}}`, max_parallel: step.parallel, input: { key: `${key}-${id}-{{index}}` } },
            // `size` loops after the first iteration (0: it runs once), some with a delay between them.
            repeat: {
              tool: 'record',
              input: { key: `${key}-${id}-{{iteration}}` },
              repeat: { until: `iteration >= ${step.size}.0`, max_iterations: 5, delay_ms: step.size % 2 === 0 ? 0 : 30 },
            },
            sub: { workflow: 'prop_child', input: { key: `${key}-${id}` } },
            // A child task per iteration.
            subrepeat: {
              workflow: 'prop_child',
              input: { key: `${key}-${id}-{{iteration}}` },
              repeat: { until: `iteration >= ${step.size}.0`, max_iterations: 5 },
            },
            // A child task per item, at most `parallel` at once.
            submap: { workflow: 'prop_child', for_each: `{{params.list${index}}}`, max_parallel: step.parallel, input: { key: `${key}-${id}-{{index}}` } },
            fail: { tool: 'broken', on_failure: 'continue', input: { key: `${key}-${id}` }, retry: { attempts: 1 } },
          };
          return { ...common, ...byKind[step.kind] };
        });
        const parameters = [
          ...whens.map(([param]) => ({ name: param, type: 'boolean', required: true })),
          ...generated.flatMap((step, index) =>
            step.kind === 'map' || step.kind === 'submap' ? [{ name: `list${index}`, type: 'array', required: true }] : [],
          ),
        ];
        const params = {
          ...Object.fromEntries(whens),
          ...Object.fromEntries(
            generated.flatMap((step, index) =>
              step.kind === 'map' || step.kind === 'submap' ? [[`list${index}`, Array.from({ length: step.size }, (_, item) => item)]] : [],
            ),
          ),
        };
        const output = Object.fromEntries(steps.map((step) => [step.id, `{{steps.${step.id}.status}}`]));
        const exitSteps = exit
          ? [
              exit.fails
                ? { id: 'e0', tool: 'broken', input: { key: `${key}-e0` }, retry: { attempts: 1 } }
                : { id: 'e0', tool: 'record', input: { key: `${key}-e0` } },
              ...(exit.second !== undefined
                ? [{ id: 'e1', tool: 'record', depends_on: ['e0'], ...(exit.second ? { when: "task.status == 'failed'" } : {}), input: { key: `${key}-e1` } }]
                : []),
            ]
          : undefined;
        const defined = await h.request('POST', '/workflows', { name, parameters, steps, output, ...(exitSteps ? { on_exit: exitSteps } : {}) });
        expect(defined.status, JSON.stringify(defined.body)).toBe(201);

        // The reference interpreter: what each step ends as.
        // A terminate step that runs ends the run: every step after it is skipped as terminated.
        const expected: string[] = [];
        let terminated = false;
        generated.forEach((step, index) => {
          const deps = step.deps.map((dep) => expected[dep]!);
          if (terminated) expected[index] = 'skipped:terminated';
          else if (deps.length > 0 && deps.every((status) => status.startsWith('skipped'))) expected[index] = 'skipped:branch_not_taken';
          else if (step.when === false) expected[index] = 'skipped:condition';
          else if (step.kind === 'terminate') {
            // Failing the run, the terminate step fails with it.
            expected[index] = terminate!.status;
            terminated = true;
          } else expected[index] = step.kind === 'fail' ? 'failed' : 'completed';
        });
        const statuses = Object.fromEntries(expected.map((status, index) => [`s${index}`, status.split(':')[0]]));

        const taskId = await submit(h, { task_type: name, params });
        const task = await waitForTask(h, taskId, 60_000);
        const byId = new Map<string, any>(task.steps.map((step: { id: string }) => [step.id, step]));
        const children: { queue: string; id: string }[] = [];
        // The exit handler ran once the run ended, each step once, and changed nothing of the task's outcome.
        const failedRun = terminated && terminate!.status === 'failed';
        if (exit) {
          expect(byId.get('e0')!.status).toBe(exit.fails ? 'failed' : 'completed');
          expect(await h.redis.llen(observationKey(h.config.QUEUE_PREFIX, `${key}-e0`))).toBe(1);
          children.push({ queue: toolQueueName(exit.fails ? 'broken' : 'record'), id: stepJobId(taskId, 1, 'e0') });
          if (exit.second !== undefined) {
            const runs = !exit.second || failedRun;
            const e1 = byId.get('e1')!;
            expect(e1.reason ? `${e1.status}:${e1.reason}` : e1.status).toBe(runs ? 'completed' : 'skipped:condition');
            expect(await h.redis.llen(observationKey(h.config.QUEUE_PREFIX, `${key}-e1`))).toBe(runs ? 1 : 0);
            if (runs) children.push({ queue: toolQueueName('record'), id: stepJobId(taskId, 1, 'e1') });
          }
          const lastMain = Math.max(...generated.map((_, index) => Date.parse(byId.get(`s${index}`)!.finished_at ?? '0')));
          expect(Date.parse(byId.get('e0')!.started_at)).toBeGreaterThanOrEqual(lastMain);
        }
        if (failedRun) {
          expect(task.status).toBe('failed');
          expect(task.error).toMatchObject({ name: 'Terminated', step: `s${terminate!.at}` });
        } else {
          expect(task.status).toBe('completed');
          expect(task.result).toEqual(terminated && terminate!.output ? { terminated: true, at: Object.keys(params).length } : statuses);
        }
        for (const [index, step] of generated.entries()) {
          const id = `s${index}`;
          const row = byId.get(id);
          expect(row.reason ? `${row.status}:${row.reason}` : row.status, id).toBe(expected[index]);
          // A terminate step runs no job.
          const runs = step.kind !== 'terminate' && (expected[index] === 'completed' || expected[index] === 'failed');
          // Each runnable step (each item of a map, a sub-workflow's child) ran exactly once; a skipped one never.
          const mapped = step.kind === 'map' || step.kind === 'submap';
          const items = mapped ? step.size : step.kind === 'repeat' || step.kind === 'subrepeat' ? step.size + 1 : 0;
          const keys =
            step.kind === 'terminate' ? [] : items > 0 || mapped ? Array.from({ length: items }, (_, item) => `${key}-${id}-${item}`) : [`${key}-${id}`];
          for (const observed of keys) expect(await h.redis.llen(observationKey(h.config.QUEUE_PREFIX, observed)), observed).toBe(runs ? 1 : 0);
          if (mapped && runs) expect(row.output).toHaveLength(step.size);
          // The jobs BullMQ ran for it, each a child of the run's root: a step's, each item's, a sub-workflow's root.
          if ((step.kind === 'repeat' || step.kind === 'subrepeat') && runs) expect(row.iterations).toBe(step.size + 1);
          if (step.kind === 'subrepeat' && runs) {
            // Each iteration's child, oldest first: its root under the run's.
            const { rows } = await h.db.pool.query<{ id: string }>(
              'SELECT id::text AS id FROM tasks WHERE parent_task_id = $1 AND parent_step_id = $2 ORDER BY created_at, id',
              [taskId, id],
            );
            expect(rows).toHaveLength(step.size + 1);
            expect(rows.at(-1)!.id).toBe(row.child_task_id);
            for (const child of rows) children.push({ queue: TASKS_QUEUE, id: rootJobId(child.id, 1) });
          }
          if (step.kind === 'submap' && runs) {
            // Each item ran one child of its own, linked to the run, whose result is the item's output.
            const listed = await h.request('GET', `/tasks/${taskId}/steps/${id}/items?limit=100`);
            expect(listed.status).toBe(200);
            const views = (listed.body as { items: { item: number; status: string; child_task_id?: string; started_at: string; finished_at: string }[] }).items;
            expect(views.map((view) => [view.item, view.status])).toEqual(Array.from({ length: step.size }, (_, item) => [item, 'completed']));
            const ids = views.map((view) => view.child_task_id!);
            const { rows } = await h.db.pool.query<{ id: string }>(
              'SELECT id::text AS id FROM tasks WHERE parent_task_id = $1 AND parent_step_id = $2 ORDER BY id',
              [taskId, id],
            );
            expect(rows.map((child) => child.id)).toEqual([...ids].sort());
            const results = [];
            for (const childId of ids) {
              const result = (await h.request('GET', `/result/${childId}`)).body;
              expect(result).toMatchObject({ status: 'completed', run: 1, parent: { task_id: taskId, step_id: id } });
              results.push(result.result);
              children.push({ queue: TASKS_QUEUE, id: rootJobId(childId, 1) });
            }
            // The step's output: the children's results, in item order.
            expect(row.output).toEqual(results);
            // Never more than max_parallel children at once: at each item's start, the items running.
            for (const view of views) {
              const at = Date.parse(view.started_at);
              const running = views.filter((other) => Date.parse(other.started_at) <= at && at < Date.parse(other.finished_at));
              expect(running.length, `items of ${id} running at ${view.started_at}`).toBeLessThanOrEqual(step.parallel);
            }
          }
          if (step.kind === 'subrepeat' || step.kind === 'submap') {
            // Its children's roots, above.
          } else if (runs && (step.kind === 'map' || step.kind === 'repeat')) {
            for (let item = 0; item < items; item += 1) children.push({ queue: toolQueueName('record'), id: stepJobId(taskId, 1, id, item) });
          } else if (runs && step.kind === 'sub') children.push({ queue: TASKS_QUEUE, id: rootJobId(row.child_task_id, 1) });
          else if (runs) children.push({ queue: toolQueueName(step.kind === 'fail' ? 'broken' : 'record'), id: stepJobId(taskId, 1, id) });
          // None ran before its dependencies ended.
          if (runs && row.started_at) {
            for (const dep of step.deps) {
              const before = byId.get(`s${dep}`);
              if (before.finished_at) expect(Date.parse(row.started_at)).toBeGreaterThanOrEqual(Date.parse(before.finished_at));
            }
          }
        }
        await flows.expectClosedFlow(taskId, children);
      }),
      { numRuns: 25 },
    );
  }, 300_000);

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
