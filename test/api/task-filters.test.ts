import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { uuidv7 } from '../../src/lib/uuid7.js';
import { createHarness, type Harness, submit, waitForTask } from '../helpers/harness.js';

/**
 * GET /tasks filtered by a task's place among others (`parent`, `top_level`: the console nests
 * children under their parent) and by its params (`params`: the console's search by a param
 * value), with the bounds a search that no index serves keeps.
 */

describe('GET /tasks?parent=, ?top_level=, ?params=', () => {
  let h: Harness;
  const customer = `c-${randomUUID().slice(0, 8)}`;
  let parent: string;
  let child: string;
  let echoes: string[];

  beforeAll(async () => {
    h = await createHarness();
    parent = await submit(h, { task_type: 'order_with_profile', params: { order_id: 'o-1', customer_id: customer } });
    const done = await waitForTask(h, parent);
    expect(done.status).toBe('completed');
    child = done.steps.find((step: { id: string }) => step.id === 'enrich').child_task_id;
    echoes = [
      await submit(h, { task_type: 'echo', params: { customer_id: customer, n: 1 } }),
      await submit(h, { task_type: 'echo', params: { customer_id: customer, n: 2, vip: true } }),
      await submit(h, { task_type: 'echo', params: { customer_id: `${customer}-other`, n: 1 } }),
    ];
  });
  afterAll(async () => {
    await h?.close();
  });

  const ids = async (query: string): Promise<string[]> => {
    const response = await h.request('GET', `/tasks?${query}`);
    expect(response.status, JSON.stringify(response.body)).toBe(200);
    return response.body.items.map((task: { task_id: string }) => task.task_id);
  };
  const refused = async (query: string) => {
    const response = await h.request('GET', `/tasks?${query}`);
    expect(response.status).toBe(400);
    expect(response.body.error.code).toBe('validation_error');
    return response.body.error.details as { path: string; message: string }[];
  };

  it('lists the children of a task, and leaves them out of the top level', async () => {
    expect(await ids(`parent=${parent}`)).toEqual([child]);
    expect(await ids(`parent=${echoes[0]}`)).toEqual([]);
    const top = await ids('top_level=true&limit=200');
    expect(top).toContain(parent);
    expect(top).not.toContain(child);
    expect(await ids('limit=200')).toContain(child);
  });

  it('finds the tasks whose params have the given values, with the other filters', async () => {
    const params = (filter: unknown) => `params=${encodeURIComponent(JSON.stringify(filter))}`;
    // The child's params name the customer too (its step's input): a search finds every task that carries the value.
    expect((await ids(params({ customer_id: customer }))).sort()).toEqual([parent, child, echoes[0], echoes[1]].sort());
    expect(await ids(`${params({ customer_id: customer })}&task_type=echo&top_level=true`)).toEqual([echoes[1], echoes[0]]);
    expect(await ids(params({ customer_id: customer, vip: true }))).toEqual([echoes[1]]);
    expect(await ids(params({ customer_id: customer, n: 2 }))).toEqual([echoes[1]]);
    // Types count: the number 2 is not the string "2".
    expect(await ids(params({ customer_id: customer, n: '2' }))).toEqual([]);
    // Outside the window it looks at: created before created_after.
    expect(await ids(`${params({ customer_id: customer })}&created_after=${new Date(Date.now() + 60_000).toISOString()}`)).toEqual([]);
  });

  it('refuses a params filter that is not a small JSON object of values, and a window longer than 31 days', async () => {
    expect(await refused('params=customer_id')).toEqual([expect.objectContaining({ path: 'params' })]);
    expect(await refused(`params=${encodeURIComponent('[1]')}`)).toEqual([expect.objectContaining({ path: 'params' })]);
    expect(await refused(`params=${encodeURIComponent('{"a":{"nested":1}}')}`)).toEqual([expect.objectContaining({ path: expect.stringMatching(/^params/) })]);
    expect(await refused(`params=${encodeURIComponent(JSON.stringify({ a: 1, b: 2, c: 3, d: 4, e: 5, f: 6 }))}`)).toEqual([
      expect.objectContaining({ path: 'params' }),
    ]);
    expect(await refused(`params=${encodeURIComponent('{}')}`)).toEqual([expect.objectContaining({ path: 'params' })]);
    const longAgo = new Date(Date.now() - 40 * 86_400_000).toISOString();
    expect(await refused(`params=${encodeURIComponent('{"a":1}')}&created_after=${longAgo}`)).toEqual([
      expect.objectContaining({ path: 'created_after', message: expect.stringContaining('31 days') }),
    ]);
    expect(await refused('parent=not-a-task-id')).toEqual([expect.objectContaining({ path: 'parent' })]);
    expect(await refused('top_level=yes')).toEqual([expect.objectContaining({ path: 'top_level' })]);
    // An unknown task as parent has no children.
    expect(await ids(`parent=${uuidv7()}`)).toEqual([]);
  });
});
