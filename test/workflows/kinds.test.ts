import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TIMERS_QUEUE, timerJobId, toolQueueName } from '../../src/queue/jobs.js';
import { closeTestConnections, observationKey, testTools } from '../fixtures/tools.js';
import { createHarness, type Harness, poll, submit, waitForTask } from '../helpers/harness.js';

/**
 * The step kinds and their modifiers end to end, through the HTTP API, with real workers, Redis
 * and PostgreSQL: `when`, `for_each`, durable `sleep`, sub-workflows, and running a pinned version.
 */

type StepView = {
  id: string;
  status: string;
  reason?: string;
  output?: unknown;
  error?: { name: string };
  items?: Record<string, number>;
  iterations?: number;
  child_task_id?: string;
  wake_at?: string;
};
const byId = (task: { steps: StepView[] }) => Object.fromEntries(task.steps.map((step) => [step.id, step])) as Record<string, StepView>;

describe('step kinds', () => {
  let h: Harness;
  const define = async (definition: Record<string, unknown>) => {
    const response = await h.request('POST', '/workflows', definition);
    expect(response.status, JSON.stringify(response.body)).toBe(201);
    return response.body as { version: number };
  };
  beforeAll(async () => {
    h = await createHarness({ tools: testTools, env: { MAP_MAX_ITEMS: '50', EXIT_CANCEL_TIMEOUT_MS: '1500' } });
  });
  afterAll(async () => {
    await h.close();
    await closeTestConnections();
  });

  describe('when', () => {
    beforeAll(async () => {
      await define({
        name: 'route_order',
        parameters: [{ name: 'amount', type: 'number', required: true }],
        steps: [
          { id: 'total', tool: 'echo', input: { amount: '{{params.amount}}' } },
          { id: 'manual', tool: 'echo', depends_on: ['total'], when: 'steps.total.output.amount > 1000', input: { route: 'manual' } },
          { id: 'auto', tool: 'echo', depends_on: ['total'], when: 'steps.total.output.amount <= 1000', input: { route: 'auto' } },
          { id: 'after_manual', tool: 'echo', depends_on: ['manual'], input: { checked: true } },
          { id: 'join', tool: 'echo', depends_on: ['manual', 'auto'], input: { manual: '{{steps.manual.output.route}}', auto: '{{steps.auto.output.route}}' } },
        ],
        output: { route: '{{steps.join.output}}', manual: '{{steps.manual.status}}' },
      });
    });

    it('runs one branch of an if/else and the join after it; the other branch is skipped, and what is only after it too', async () => {
      const big = await waitForTask(h, await submit(h, { task_type: 'route_order', params: { amount: 1500.5 } }));
      expect(big.status).toBe('completed');
      expect(big.result).toEqual({ route: { manual: 'manual', auto: null }, manual: 'completed' });
      const small = await waitForTask(h, await submit(h, { task_type: 'route_order', params: { amount: 10 } }));
      expect(small.result).toEqual({ route: { manual: null, auto: 'auto' }, manual: 'skipped' });
      const steps = byId(small);
      expect(steps.manual).toMatchObject({ status: 'skipped', reason: 'condition' });
      expect(steps.after_manual).toMatchObject({ status: 'skipped', reason: 'branch_not_taken' });
      expect(steps.auto!.status).toBe('completed');
      expect(small.progress).toEqual({ completed: 5, total: 5 });
    });
  });

  describe('for_each', () => {
    beforeAll(async () => {
      await define({
        name: 'map_values',
        parameters: [
          { name: 'values', type: 'array', required: true },
          { name: 'key', type: 'string', required: true },
        ],
        steps: [
          { id: 'list', tool: 'echo', input: { values: '{{params.values}}' } },
          {
            id: 'each',
            tool: 'concurrent',
            depends_on: ['list'],
            for_each: '{{steps.list.output.values}}',
            max_parallel: 2,
            input: { key: '{{params.key}}', ms: 150, value: { v: '{{item}}', at: '{{index}}' } },
          },
        ],
        output: { values: '{{steps.each.output}}' },
      });
      await define({
        name: 'map_failing',
        parameters: [{ name: 'n', type: 'array', required: true }],
        steps: [{ id: 'each', tool: 'broken', for_each: '{{params.n}}', max_parallel: 1, on_failure: 'continue', input: { message: 'item {{index}} broke' } }],
        output: { each: '{{steps.each.output}}' },
      });
      await define({
        name: 'map_strict',
        parameters: [{ name: 'n', type: 'array', required: true }],
        steps: [{ id: 'each', tool: 'broken', for_each: '{{params.n}}', max_parallel: 1, input: { message: 'item {{index}} broke' } }],
      });
    });

    it('runs the tool once per item, at most max_parallel at once across two workers (each its own BullMQ connections), and outputs the items in order', async () => {
      const second = await h.startWorker();
      try {
        const key = `map-${Date.now()}`;
        const values = ['a', 'b', 'c', 'd', 'e', 'f'];
        const id = await submit(h, { task_type: 'map_values', params: { values, key } });
        const task = await waitForTask(h, id, 30_000);
        expect(task.status).toBe('completed');
        expect((task.result.values as { value: unknown }[]).map((entry) => entry.value)).toEqual(values.map((v, at) => ({ v, at })));
        expect(Number(await h.redis.get(`${observationKey(h.config.QUEUE_PREFIX, key)}:max`))).toBe(2);
        expect(byId(task).each).toMatchObject({ status: 'completed', items: { total: 6, done: 6, failed: 0, running: 0 } });

        // Per-item detail, a page at a time.
        const first = await h.request('GET', `/tasks/${id}/steps/each/items?limit=4`);
        expect(first.status).toBe(200);
        expect(first.body.items.map((item: { item: number; status: string }) => [item.item, item.status])).toEqual([
          [0, 'completed'],
          [1, 'completed'],
          [2, 'completed'],
          [3, 'completed'],
        ]);
        expect(first.body.items[2]).toMatchObject({ attempts: 1, input: { key, ms: 150, value: { v: 'c', at: 2 } }, output: { value: { v: 'c', at: 2 } } });
        const rest = await h.request('GET', `/tasks/${id}/steps/each/items?limit=4&cursor=${first.body.next_cursor}`);
        expect(rest.body).toMatchObject({ next_cursor: null });
        expect(rest.body.items.map((item: { item: number }) => item.item)).toEqual([4, 5]);
        expect((await h.request('GET', `/tasks/${id}/steps/nope/items`)).body.error.code).toBe('step_not_found');
        expect((await h.request('GET', `/tasks/${id}/steps/each/items?cursor=x`)).status).toBe(400);
      } finally {
        await second.close();
      }
    });

    it('completes over an empty list with [], and fails a list longer than MAP_MAX_ITEMS with TooManyItems', async () => {
      const empty = await waitForTask(h, await submit(h, { task_type: 'map_values', params: { values: [], key: 'empty' } }));
      expect(empty).toMatchObject({ status: 'completed', result: { values: [] } });
      const long = await waitForTask(h, await submit(h, { task_type: 'map_values', params: { values: Array.from({ length: 51 }, (_, i) => i), key: 'long' } }));
      expect(long).toMatchObject({ status: 'failed', error: { step: 'each', name: 'TooManyItems' } });
    });

    it('under on_failure continue, a failed item is {error} in its place; under fail, the first fails the step and no further item starts', async () => {
      const lenient = await waitForTask(h, await submit(h, { task_type: 'map_failing', params: { n: [1, 2] } }));
      expect(lenient.status).toBe('completed');
      expect(lenient.result.each).toEqual([
        { error: expect.objectContaining({ name: 'NonRetryableError', message: 'item 0 broke' }) },
        { error: expect.objectContaining({ message: 'item 1 broke' }) },
      ]);
      expect(byId(lenient).each!.items).toEqual({ total: 2, done: 2, failed: 2, running: 0 });
      const strict = await waitForTask(h, await submit(h, { task_type: 'map_strict', params: { n: [1, 2, 3] } }));
      expect(strict).toMatchObject({ status: 'failed', error: { step: 'each', message: 'item 0: item 0 broke' } });
      const items = (await h.request('GET', `/tasks/${strict.task_id}/steps/each/items`)).body.items;
      expect(items.map((item: { status: string; attempts: number }) => [item.status, item.attempts])).toEqual([
        ['failed', 1],
        ['skipped', 0],
        ['skipped', 0],
      ]);
      // Each failed item is a dead letter of its own.
      const letters = await h.request('GET', `/dead-letters?task_id=${lenient.task_id}`);
      expect(letters.body.items.map((letter: { step_id: string }) => letter.step_id).sort()).toEqual(['each[0]', 'each[1]']);
    });
  });

  describe('sleep', () => {
    beforeAll(async () => {
      await define({
        name: 'nap',
        parameters: [{ name: 'ms', type: 'integer', default: 1500 }],
        steps: [
          { id: 'before', tool: 'echo', input: {} },
          { id: 'cool_off', sleep: { ms: '{{params.ms}}' }, depends_on: ['before'] },
          { id: 'after', tool: 'echo', depends_on: ['cool_off'], input: { woke: '{{steps.cool_off.output.woke_at}}' } },
        ],
      });
    });

    it('waits holding no worker and no active job (a delayed timer stands for it), shows waiting with wake_at, then goes on', async () => {
      const id = await submit(h, { task_type: 'nap', params: { ms: 1500 } });
      const waiting = await poll(
        async () => {
          const step = byId((await h.request('GET', `/result/${id}`)).body).cool_off!;
          return step.status === 'waiting' ? step : undefined;
        },
        { label: 'the step to wait' },
      );
      expect(waiting).toMatchObject({ reason: 'sleep' });
      expect(Date.parse(waiting.wake_at!)).toBeGreaterThan(Date.now());
      const timers = h.api!.tasks as unknown as {
        deps: { queues: { shardOf(id: string): { timers: { getJob(id: string): Promise<{ getState(): Promise<string> } | undefined> } } } };
      };
      // The step is waiting once PostgreSQL commits; its timer is added to Redis just after.
      const timer = await poll(async () => timers.deps.queues.shardOf(id).timers.getJob(timerJobId(id, 1, 'cool_off')), { label: 'the timer job' });
      expect(await timer.getState()).toBe('delayed');
      for (const tool of h.registry.names()) {
        const active = await h.redis.llen(`${h.config.QUEUE_PREFIX}:${toolQueueName(tool)}:active`);
        expect(active, tool).toBe(0);
      }
      const task = await waitForTask(h, id);
      expect(task.status).toBe('completed');
      const steps = byId(task);
      expect(steps.cool_off).toMatchObject({ status: 'completed', output: { woke_at: expect.any(String) } });
      expect(Date.parse((steps.cool_off!.output as { woke_at: string }).woke_at)).toBeGreaterThanOrEqual(Date.parse(waiting.wake_at!));
      expect(steps.after!.status).toBe('completed');
    });

    it('ends when its task is cancelled: the step is cancelled and its timer goes', async () => {
      const id = await submit(h, { task_type: 'nap', params: { ms: 600_000 } });
      await poll(async () => byId((await h.request('GET', `/result/${id}`)).body).cool_off!.status === 'waiting', { label: 'the step to wait' });
      expect((await h.request('POST', `/tasks/${id}/cancel`)).status).toBe(200);
      const task = await waitForTask(h, id);
      expect(task.status).toBe('cancelled');
      expect(byId(task).cool_off).toMatchObject({ status: 'cancelled' });
      expect(byId(task).cool_off!.reason).toBeUndefined();
      await poll(async () => (await h.redis.zscore(`${h.config.QUEUE_PREFIX}:${TIMERS_QUEUE}:delayed`, timerJobId(id, 1, 'cool_off'))) === null, {
        label: 'the timer to be removed',
      });
    });
  });

  describe('repeat', () => {
    beforeAll(async () => {
      await define({
        name: 'poll_pages',
        parameters: [
          { name: 'stop', type: 'integer', required: true },
          { name: 'max', type: 'integer', default: 5 },
        ],
        steps: [
          {
            id: 'poll',
            tool: 'echo',
            input: { page: '{{iteration}}', before: '{{previous.output.page}}', label: '{{= params.stop == iteration ? "last" : "more"}}' },
            repeat: { until: 'output.page >= params.stop', max_iterations: 4, delay_ms: 300 },
          },
        ],
        output: { last: '{{steps.poll.output}}' },
      });
    });

    it('runs again until `until` holds, each iteration an item with its own job and input, waiting delay_ms between them', async () => {
      const id = await submit(h, { task_type: 'poll_pages', params: { stop: 2 } });
      const task = await waitForTask(h, id, 30_000);
      expect(task.status).toBe('completed');
      expect(task.result).toEqual({ last: { page: 2, before: 1, label: 'last' } });
      expect(byId(task).poll).toMatchObject({ status: 'completed', iterations: 3, items: { total: 3, done: 3, failed: 0, running: 0 } });
      const items = (await h.request('GET', `/tasks/${id}/steps/poll/items`)).body.items as {
        item: number;
        status: string;
        output: unknown;
        started_at: string;
        finished_at: string;
      }[];
      expect(items.map((item) => [item.item, item.status, item.output])).toEqual([
        [0, 'completed', { page: 0, before: null, label: 'more' }],
        [1, 'completed', { page: 1, before: 0, label: 'more' }],
        [2, 'completed', { page: 2, before: 1, label: 'last' }],
      ]);
      // The delay is the next job's: it cannot start earlier.
      for (const n of [1, 2]) expect(Date.parse(items[n]!.started_at) - Date.parse(items[n - 1]!.finished_at)).toBeGreaterThanOrEqual(290);
      const history = (await h.request('GET', `/tasks/${id}/history?step=poll`)).body.events as { type: string; data?: unknown }[];
      expect(history.filter((event) => event.type === 'iteration_ended').map((event) => event.data)).toEqual([
        { iteration: 0, until: false },
        { iteration: 1, until: false },
        { iteration: 2, until: true },
      ]);
    });

    it('fails with RepeatLimitReached past max_iterations, with every iteration recorded', async () => {
      const id = await submit(h, { task_type: 'poll_pages', params: { stop: 99 } });
      const task = await waitForTask(h, id, 30_000);
      expect(task.status).toBe('failed');
      expect(byId(task).poll).toMatchObject({ status: 'failed', iterations: 4, error: { name: 'RepeatLimitReached' } });
      // Retried, it starts over from its first iteration (the last run's iterations make way in the same commit).
      expect((await h.request('POST', `/tasks/${id}/retry`)).status).toBe(202);
      const again = await waitForTask(h, id, 30_000);
      expect(again).toMatchObject({ status: 'failed', run: 2 });
      const items = (await h.request('GET', `/tasks/${id}/steps/poll/items`)).body.items as { item: number; run: number; status: string }[];
      expect(items.map((item) => [item.item, item.run, item.status])).toEqual([0, 1, 2, 3].map((n) => [n, 2, 'completed']));
    });

    it('is cancelled with its task while it waits out its delay: the delayed iteration never runs', async () => {
      await define({
        name: 'poll_slowly',
        steps: [{ id: 'poll', tool: 'echo', input: { page: '{{iteration}}' }, repeat: { until: 'false', max_iterations: 10, delay_ms: 600_000 } }],
      });
      const id = await submit(h, { task_type: 'poll_slowly' });
      await poll(async () => byId((await h.request('GET', `/result/${id}`)).body).poll!.iterations === 2, { label: 'the second iteration to be queued' });
      expect((await h.request('POST', `/tasks/${id}/cancel`)).status).toBe(200);
      const task = await waitForTask(h, id);
      expect(task.status).toBe('cancelled');
      const items = (await h.request('GET', `/tasks/${id}/steps/poll/items`)).body.items as { item: number; status: string }[];
      expect(items.map((item) => [item.item, item.status])).toEqual([
        [0, 'completed'],
        [1, 'cancelled'],
      ]);
    });

    it('repeats a sub-workflow: each iteration a child task, listed under the parent, until `until` holds over its result', async () => {
      await define({
        name: 'count_child',
        parameters: [
          { name: 'round', type: 'integer', required: true },
          { name: 'last', type: 'integer' },
        ],
        steps: [{ id: 'c', tool: 'echo', input: { round: '{{params.round}}', last: '{{params.last}}' } }],
        output: { round: '{{steps.c.output.round}}' },
      });
      await define({
        name: 'count_parent',
        steps: [
          {
            id: 'rounds',
            workflow: 'count_child',
            input: { round: '{{iteration}}', last: '{{= iteration == 0.0 ? -1 : previous.output.round}}' },
            repeat: { until: 'output.round >= 2.0', max_iterations: 5 },
          },
        ],
        output: { last: '{{steps.rounds.output}}' },
      });
      const id = await submit(h, { task_type: 'count_parent' });
      const task = await waitForTask(h, id, 30_000);
      expect(task.status).toBe('completed');
      expect(task.result).toEqual({ last: { round: 2 } });
      const step = byId(task).rounds!;
      expect(step).toMatchObject({ status: 'completed', iterations: 3 });
      const children = (await h.request('GET', `/tasks?parent=${id}`)).body.items as { task_id: string; status: string }[];
      expect(children.map((child) => child.status)).toEqual(['completed', 'completed', 'completed']);
      // The step names the latest child; each child's params were the iteration's.
      expect(children[0]!.task_id).toBe(step.child_task_id);
      const params = await Promise.all(children.map(async (child) => (await h.request('GET', `/result/${child.task_id}?include=params`)).body.params));
      expect(params.reverse()).toEqual([
        { round: 0, last: -1 },
        { round: 1, last: 0 },
        { round: 2, last: 1 },
      ]);
      const items = (await h.request('GET', `/tasks/${id}/steps/rounds/items`)).body.items as { item: number; status: string; output: unknown }[];
      expect(items.map((item) => [item.item, item.status, item.output])).toEqual([
        [0, 'completed', { round: 0 }],
        [1, 'completed', { round: 1 }],
        [2, 'completed', { round: 2 }],
      ]);
    });

    it('refuses, with their paths, an `until` that does not check and locals outside a repeat step', async () => {
      const response = await h.request('POST', '/workflows', {
        name: 'poll_wrong',
        steps: [
          { id: 'a', tool: 'echo', input: {}, repeat: { until: 'output.page +', max_iterations: 3 } },
          { id: 'b', tool: 'echo', input: { page: '{{iteration}}' } },
          { id: 'c', tool: 'echo', input: {}, for_each: [1], repeat: { until: 'true', max_iterations: 2 } },
          { id: 'd', sleep: { ms: 1 }, repeat: { until: 'true', max_iterations: 2 } },
          { id: 'e', workflow: 'poll_pages', input: { stop: 1 }, repeat: { until: 'true', max_iterations: 2, delay_ms: 10 } },
        ],
      });
      expect(response.status).toBe(400);
      expect(response.body.error.code).toBe('invalid_workflow');
      const problems = response.body.error.details as { path: string; message: string }[];
      expect(problems, JSON.stringify(problems)).toEqual(
        expect.arrayContaining([
          { path: 'steps[0].repeat.until', message: expect.any(String) },
          { path: 'steps[1].input.page', message: '{{iteration}} is only defined in the input of a repeat step' },
          { path: 'steps[2].repeat', message: 'a step either repeats or maps over a list (for_each), not both' },
          { path: 'steps[3].repeat', message: 'a sleep step has no repeat' },
          { path: 'steps[4].repeat.delay_ms', message: expect.stringContaining('repeats without a delay') },
        ]),
      );
    });
  });

  describe('sub-workflows', () => {
    beforeAll(async () => {
      await define({
        name: 'child_record',
        parameters: [
          { name: 'key', type: 'string', required: true },
          { name: 'fail', type: 'boolean', default: false },
        ],
        steps: [
          { id: 'work', tool: 'record', input: { key: '{{params.key}}' } },
          {
            id: 'maybe',
            tool: 'flaky',
            depends_on: ['work'],
            when: 'params.fail',
            input: { succeed_on: 99, key: '{{params.key}}-flaky', count: 'calls' },
            retry: { attempts: 1 },
          },
          { id: 'wait', tool: 'hang', depends_on: ['work'], when: '!params.fail && params.key.startsWith("hang")', input: { key: '{{params.key}}-hang' } },
        ],
        output: { token: '{{steps.work.output.token}}' },
      });
      await define({
        name: 'parent_of_child',
        parameters: [
          { name: 'key', type: 'string', required: true },
          { name: 'fail', type: 'boolean', default: false },
        ],
        steps: [
          { id: 'enrich', workflow: 'child_record', input: { key: '{{params.key}}', fail: '{{params.fail}}' } },
          { id: 'use', tool: 'echo', depends_on: ['enrich'], input: { token: '{{steps.enrich.output.token}}' } },
        ],
        output: { token: '{{steps.use.output.token}}' },
      });
      await define({
        name: 'fan_out_children',
        parameters: [{ name: 'records', type: 'array', required: true }],
        steps: [
          {
            id: 'each',
            workflow: 'child_record',
            for_each: '{{params.records}}',
            input: { key: '{{item.key}}', fail: '{{item.fail}}' },
            max_parallel: 2,
          },
          { id: 'join', tool: 'echo', depends_on: ['each'], input: { tokens: '{{steps.each.output}}' } },
        ],
        output: { tokens: '{{steps.join.output.tokens}}' },
      });
      await define({
        name: 'fan_out_one_by_one',
        parameters: [{ name: 'records', type: 'array', required: true }],
        steps: [
          { id: 'each', workflow: 'child_record', for_each: '{{params.records}}', input: { key: '{{item.key}}', fail: '{{item.fail}}' }, max_parallel: 1 },
        ],
      });
    });

    type ItemView = { item: number; status: string; run: number; child_task_id?: string; started_at: string | null; input?: unknown; output?: unknown };
    const itemsOf = async (id: string, step: string) =>
      ((await h.request('GET', `/tasks/${id}/steps/${step}/items?limit=100`)).body as { items: ItemView[] }).items;

    it('maps over a sub-workflow: a child task per item, at most max_parallel at once, their results in item order', async () => {
      const key = `fan-${Date.now()}`;
      const records = [0, 1, 2, 3, 4].map((n) => ({ key: `${key}-${n}`, fail: false }));
      const id = await submit(h, { task_type: 'fan_out_children', params: { records } });
      const task = await waitForTask(h, id);
      expect(task.status, JSON.stringify(task.error)).toBe('completed');
      const each = byId(task).each!;
      expect(each).toMatchObject({ status: 'completed', items: { total: 5, done: 5, failed: 0 } });
      expect(each.child_task_id).toBeUndefined();
      const items = await itemsOf(id, 'each');
      expect(items.map((item) => item.status)).toEqual(Array(5).fill('completed'));
      // Each item ran its own child, which ran its step once, with the item's key.
      const children = items.map((item) => item.child_task_id!);
      expect(new Set(children).size).toBe(5);
      for (const [n, childId] of children.entries()) {
        const child = (await h.request('GET', `/result/${childId}`)).body;
        expect(child).toMatchObject({ status: 'completed', parent: { task_id: id, step_id: 'each' } });
        expect(items[n]!.input).toEqual({ key: `${key}-${n}`, fail: false });
        expect(items[n]!.output).toEqual(child.result);
        expect(items[n]!.started_at).not.toBeNull();
        expect(await h.redis.llen(observationKey(h.config.QUEUE_PREFIX, `${key}-${n}`))).toBe(1);
      }
      expect(task.result.tokens).toEqual(items.map((item) => item.output));
      const listed = (await h.request('GET', `/tasks?parent=${id}&limit=50`)).body as { items: { task_id: string }[] };
      expect(listed.items.map((child) => child.task_id).sort()).toEqual([...children].sort());
    });

    it('a failed child fails the map (the next items skipped); a retry keeps the completed children and resumes the failed one', async () => {
      const key = `fanfail-${Date.now()}`;
      const records = [
        { key: `${key}-0`, fail: false },
        { key: `${key}-1`, fail: false },
        { key: `${key}-2`, fail: true },
        { key: `${key}-3`, fail: false },
      ];
      const id = await submit(h, { task_type: 'fan_out_one_by_one', params: { records } });
      const failed = await waitForTask(h, id);
      expect(failed).toMatchObject({ status: 'failed', error: { step: 'each', name: 'SubWorkflowFailed' } });
      const before = await itemsOf(id, 'each');
      expect(before.map((item) => item.status)).toEqual(['completed', 'completed', 'failed', 'skipped']);
      expect(before[3]!.child_task_id).toBeUndefined();
      const failedChild = before[2]!.child_task_id!;

      expect((await h.request('POST', `/tasks/${id}/retry`)).status).toBe(202);
      const again = await waitForTask(h, id);
      expect(again).toMatchObject({ status: 'failed', run: 2, error: { step: 'each' } });
      const after = await itemsOf(id, 'each');
      // The completed children were kept (their steps ran once); the failed one was resumed, not replaced.
      expect(after.slice(0, 2).map((item) => [item.status, item.run, item.child_task_id])).toEqual([
        ['completed', 1, before[0]!.child_task_id],
        ['completed', 1, before[1]!.child_task_id],
      ]);
      expect(after[2]).toMatchObject({ status: 'failed', run: 2, child_task_id: failedChild });
      expect(after[3]).toMatchObject({ status: 'skipped', run: 2 });
      expect((await h.request('GET', `/result/${failedChild}`)).body).toMatchObject({ status: 'failed', run: 2 });
      for (const n of [0, 1, 2]) expect(await h.redis.llen(observationKey(h.config.QUEUE_PREFIX, `${key}-${n}`))).toBe(1);
      expect(await h.redis.llen(observationKey(h.config.QUEUE_PREFIX, `${key}-2-flaky`))).toBe(2);
    });

    it('cancels the running children with their parent, and never starts the pending ones', async () => {
      const key = `hangfan-${Date.now()}`;
      const records = [0, 1, 2].map((n) => ({ key: `hang-${key}-${n}`, fail: false }));
      const id = await submit(h, { task_type: 'fan_out_children', params: { records } });
      await poll(
        async () => {
          const started = await Promise.all(
            [0, 1].map(async (n) => (await h.redis.lrange(observationKey(h.config.QUEUE_PREFIX, `hang-${key}-${n}-hang`), 0, -1)).includes('started:1')),
          );
          return started.every(Boolean);
        },
        { label: 'the first two children to be running' },
      );
      expect((await h.request('POST', `/tasks/${id}/cancel`)).status).toBe(200);
      expect((await waitForTask(h, id)).status).toBe('cancelled');
      const items = await itemsOf(id, 'each');
      expect(items.map((item) => item.status)).toEqual(['cancelled', 'cancelled', 'cancelled']);
      expect(items[2]!.child_task_id).toBeUndefined();
      for (const item of items.slice(0, 2)) expect((await waitForTask(h, item.child_task_id!)).status).toBe('cancelled');
      const listed = (await h.request('GET', `/tasks?parent=${id}&limit=50`)).body as { items: unknown[] };
      expect(listed.items).toHaveLength(2);
    });

    it("runs the child as a task of its own, linked both ways, and takes its result as the step's output", async () => {
      const id = await submit(h, { task_type: 'parent_of_child', params: { key: `sub-${Date.now()}` } });
      const task = await waitForTask(h, id);
      expect(task.status).toBe('completed');
      const enrich = byId(task).enrich!;
      expect(enrich).toMatchObject({ status: 'completed', output: { token: task.result.token } });
      const child = await h.request('GET', `/result/${enrich.child_task_id}`);
      expect(child.body).toMatchObject({ status: 'completed', workflow: { name: 'child_record', version: 1 }, parent: { task_id: id, step_id: 'enrich' } });
      const listed = await h.request('GET', '/tasks?task_type=child_record&limit=200');
      expect(listed.body.items).toContainEqual(expect.objectContaining({ task_id: enrich.child_task_id, parent_task_id: id }));
    });

    it("fails the parent's step with the child's failure; retrying the parent resumes the child without running its completed steps again", async () => {
      const key = `subfail-${Date.now()}`;
      const id = await submit(h, { task_type: 'parent_of_child', params: { key, fail: true } });
      const failed = await waitForTask(h, id);
      expect(failed).toMatchObject({ status: 'failed', error: { step: 'enrich', name: 'SubWorkflowFailed' } });
      const childId = byId(failed).enrich!.child_task_id!;
      expect((await h.request('GET', `/result/${childId}`)).body).toMatchObject({ status: 'failed', error: { step: 'maybe' } });
      expect(await h.redis.llen(observationKey(h.config.QUEUE_PREFIX, key))).toBe(1);

      expect((await h.request('POST', `/tasks/${id}/retry`)).status).toBe(202);
      // The child resumes as its run 2: its completed step keeps its output (not run again); the failing one fails again.
      const again = await waitForTask(h, id);
      expect(again).toMatchObject({ status: 'failed', run: 2, error: { step: 'enrich' } });
      const child = (await h.request('GET', `/result/${childId}`)).body;
      expect(child).toMatchObject({ status: 'failed', run: 2 });
      expect(await h.redis.llen(observationKey(h.config.QUEUE_PREFIX, key))).toBe(1);
      expect(await h.redis.llen(observationKey(h.config.QUEUE_PREFIX, `${key}-flaky`))).toBe(2);
    });

    it('cancels the child with its parent', async () => {
      const key = `hang-${Date.now()}`;
      const id = await submit(h, { task_type: 'parent_of_child', params: { key } });
      const childId = await poll(
        async () => {
          const step = byId((await h.request('GET', `/result/${id}`)).body).enrich!;
          return step.child_task_id;
        },
        { label: 'the child to start' },
      );
      await poll(async () => (await h.redis.lrange(observationKey(h.config.QUEUE_PREFIX, `${key}-hang`), 0, -1)).includes('started:1'), {
        label: "the child's hanging step to start",
      });
      expect((await h.request('POST', `/tasks/${id}/cancel`)).status).toBe(200);
      expect((await waitForTask(h, id)).status).toBe('cancelled');
      const child = await waitForTask(h, childId);
      expect(child.status).toBe('cancelled');
      // Its running step was told to stop, wherever it ran.
      await poll(async () => (await h.redis.lrange(observationKey(h.config.QUEUE_PREFIX, `${key}-hang`), 0, -1)).some((entry) => entry.startsWith('aborted')), {
        label: "the child's step to be aborted",
      });
    });
  });

  describe('on_exit', () => {
    beforeAll(async () => {
      await define({
        name: 'with_exit',
        parameters: [
          { name: 'mode', type: 'string', required: true },
          { name: 'key', type: 'string', required: true },
        ],
        steps: [
          { id: 'ok', tool: 'echo', when: "params.mode == 'ok'", input: { done: true } },
          { id: 'bad', tool: 'broken', when: "params.mode == 'fail'", input: { message: 'the main step broke' }, retry: { attempts: 1 } },
          { id: 'slow', tool: 'hang', when: "params.mode == 'hang'", input: { key: '{{params.key}}-main' } },
        ],
        output: { done: '{{steps.ok.output.done}}' },
        on_exit: [
          { id: 'cleanup', tool: 'echo', input: { message: 'ended {{task.status}}: {{task.error.message}}', ok: '{{steps.ok.output}}' } },
          { id: 'alert', tool: 'record', depends_on: ['cleanup'], when: "task.status != 'completed'", input: { key: '{{params.key}}-alert' } },
        ],
      });
    });

    it('runs after a run that completed, seeing its outcome and outputs; the task keeps its own status and result', async () => {
      const key = `exit-ok-${Date.now()}`;
      const task = await waitForTask(h, await submit(h, { task_type: 'with_exit', params: { mode: 'ok', key } }));
      expect(task).toMatchObject({ status: 'completed', result: { done: true } });
      const steps = byId(task);
      expect(steps.cleanup).toMatchObject({ status: 'completed', output: { message: 'ended completed: ', ok: { done: true } } });
      expect(steps.alert).toMatchObject({ status: 'skipped', reason: 'condition' });
      const history = (await h.request('GET', `/tasks/${task.task_id}/history`)).body.events as { type: string; step_id?: string }[];
      const types = history.map((event) => event.type);
      // The handler ran between the run's end and the task's.
      expect(types.indexOf('exit_started')).toBeGreaterThan(-1);
      expect(types.indexOf('exit_started')).toBeLessThan(types.lastIndexOf('exit_ended'));
      expect(types.lastIndexOf('exit_ended')).toBeLessThan(types.indexOf('task_completed'));
    });

    it('runs after a failure, seeing the error; the task fails with the main step named, not the handler', async () => {
      const key = `exit-fail-${Date.now()}`;
      const task = await waitForTask(h, await submit(h, { task_type: 'with_exit', params: { mode: 'fail', key } }));
      expect(task).toMatchObject({ status: 'failed', error: { step: 'bad', message: expect.stringContaining('the main step broke') } });
      const steps = byId(task);
      expect(steps.cleanup!.output).toMatchObject({ message: expect.stringMatching(/^ended failed: .*the main step broke/), ok: null });
      expect(steps.alert!.status).toBe('completed');
      expect(await h.redis.llen(observationKey(h.config.QUEUE_PREFIX, `${key}-alert`))).toBe(1);
      // Retried, the run fails again and its exit handler runs again, in the new run.
      expect((await h.request('POST', `/tasks/${task.task_id}/retry`)).status).toBe(202);
      const again = await waitForTask(h, task.task_id);
      expect(again).toMatchObject({ status: 'failed', run: 2, error: { step: 'bad' } });
      expect(byId(again).cleanup).toMatchObject({ status: 'completed', output: { message: expect.stringMatching(/^ended failed: /) } });
      expect(await h.redis.llen(observationKey(h.config.QUEUE_PREFIX, `${key}-alert`))).toBe(2);
    });

    it('runs when the task is cancelled, and the task ends cancelled once it is done', async () => {
      const key = `exit-cancel-${Date.now()}`;
      const id = await submit(h, { task_type: 'with_exit', params: { mode: 'hang', key } });
      await poll(async () => (await h.redis.lrange(observationKey(h.config.QUEUE_PREFIX, `${key}-main`), 0, -1)).includes('started:1'), {
        label: 'the main step to start',
      });
      expect((await h.request('POST', `/tasks/${id}/cancel`)).status).toBe(200);
      const task = await waitForTask(h, id);
      expect(task).toMatchObject({ status: 'cancelled' });
      const steps = byId(task);
      expect(steps.slow!.status).toBe('cancelled');
      expect(steps.cleanup).toMatchObject({ status: 'completed', output: { message: 'ended cancelled: task was cancelled' } });
      expect(steps.alert!.status).toBe('completed');
    });

    it("bounds a cancelled task's exit handler: past EXIT_CANCEL_TIMEOUT_MS its running step is stopped and the task ends cancelled", async () => {
      const key = `exit-bound-${Date.now()}`;
      await define({
        name: 'slow_exit',
        parameters: [{ name: 'key', type: 'string', required: true }],
        steps: [{ id: 'main', tool: 'hang', input: { key: '{{params.key}}-main' } }],
        on_exit: [{ id: 'linger', tool: 'hang', input: { key: '{{params.key}}-exit' } }],
      });
      const id = await submit(h, { task_type: 'slow_exit', params: { key } });
      await poll(async () => (await h.redis.lrange(observationKey(h.config.QUEUE_PREFIX, `${key}-main`), 0, -1)).includes('started:1'), {
        label: 'the main step to start',
      });
      expect((await h.request('POST', `/tasks/${id}/cancel`)).status).toBe(200);
      // The exit step is spared the cancel's stop: it starts, and hangs.
      await poll(async () => (await h.redis.lrange(observationKey(h.config.QUEUE_PREFIX, `${key}-exit`), 0, -1)).includes('started:1'), {
        label: 'the exit step to start',
      });
      expect((await h.request('GET', `/result/${id}`)).body.status).toBe('running');
      const task = await waitForTask(h, id, 20_000);
      expect(task.status).toBe('cancelled');
      const history = (await h.request('GET', `/tasks/${id}/history`)).body.events as { type: string }[];
      expect(history.map((event) => event.type)).toContain('exit_timed_out');
      // Its worker was told to stop it, and the step closes with its attempt, as a cancelled task's running step does.
      await poll(async () => (await h.redis.lrange(observationKey(h.config.QUEUE_PREFIX, `${key}-exit`), 0, -1)).some((entry) => entry.startsWith('aborted')), {
        label: 'the exit step to be aborted',
      });
      await poll(async () => byId((await h.request('GET', `/result/${id}`)).body).linger!.status === 'cancelled', { label: 'the exit step to close' });
    });

    it('refuses, with their paths, what an exit handler cannot be', async () => {
      const response = await h.request('POST', '/workflows', {
        name: 'bad_exit',
        steps: [
          { id: 'a', tool: 'echo', input: {} },
          { id: 'b', tool: 'echo', depends_on: ['late'], input: {} },
        ],
        output: { late: '{{steps.late.output}}' },
        on_exit: [
          { id: 'late', tool: 'echo', depends_on: ['a'], input: { message: '{{params.missing}}', status: '{{task.status}}' } },
          { id: 'nap', sleep: { ms: 10 } },
        ],
      });
      expect(response.status).toBe(400);
      const paths = (response.body.error.details as { path: string; message: string }[]).map((problem) => `${problem.path}: ${problem.message}`);
      expect(paths).toEqual(
        expect.arrayContaining([
          expect.stringMatching(/^steps\[1\]\.depends_on\[0\]: late is an on_exit step/),
          expect.stringMatching(/^on_exit\[0\]\.depends_on\[0\]: an on_exit step depends only on on_exit steps/),
          expect.stringMatching(/^on_exit\[0\]\.input\.message: parameter missing is not declared/),
          expect.stringMatching(/^on_exit\[1\]\.sleep: an on_exit step runs a tool or a sub-workflow/),
          expect.stringMatching(/^output\.late: the output is made when the run ends/),
        ]),
      );
      // {{task}} is an exit step's only.
      const outside = await h.request('POST', '/workflows', { name: 'task_outside', steps: [{ id: 'a', tool: 'echo', input: { s: '{{task.status}}' } }] });
      expect(outside.body.error.details).toEqual([{ path: 'steps[0].input.s', message: '{{task}} is only defined in the input of an on_exit step' }]);
    });
  });

  describe('versions', () => {
    it('runs the version a request names, by execute or /assign-task; a tool has none, an unknown version is 404', async () => {
      const one = await define({ name: 'versioned', steps: [{ id: 'a', tool: 'echo', input: { v: 1 } }] });
      await define({ name: 'versioned', steps: [{ id: 'a', tool: 'echo', input: { v: 2 } }] });
      const pinned = await h.request('POST', '/workflows/versioned/execute', { parameters: {}, version: one.version });
      expect(pinned.status).toBe(202);
      expect((await waitForTask(h, pinned.body.task_id)).result).toEqual({ a: { v: 1 } });
      const current = await waitForTask(h, await submit(h, { task_type: 'versioned' }));
      expect(current).toMatchObject({ result: { a: { v: 2 } }, workflow: { version: 2 } });
      const byAssign = await waitForTask(h, await submit(h, { task_type: 'versioned', version: 1 }));
      expect(byAssign.workflow).toEqual({ name: 'versioned', version: 1 });
      expect((await h.request('POST', '/assign-task', { task_type: 'echo', version: 1 })).status).toBe(400);
      expect((await h.request('POST', '/workflows/versioned/execute', { parameters: {}, version: 9 })).body.error.code).toBe('workflow_not_found');
    });
  });
});
