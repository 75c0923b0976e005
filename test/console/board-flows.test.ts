import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rootJobId } from '../../src/queue/jobs.js';
import { closeTestConnections, testTools } from '../fixtures/tools.js';
import { createHarness, type Harness, poll } from '../helpers/harness.js';
import { launchBrowser, screenshotPath } from './support.js';

/** Written by this run and committed: the README's architecture section shows them. */
const KEY = 'board-admin-key-0123456789';
const AUTH = { authorization: `Bearer ${KEY}` };

/**
 * Bull Board (/admin/queues) showing runs as BullMQ flows, in Chromium: a diamond waiting for a
 * signal, a map with items in flight and a sub-workflow, each a tree under its root in the tasks
 * queue's Waiting children.
 */
describe('Bull Board shows runs as flows', { timeout: 120_000 }, () => {
  let h: Harness;
  let browser: Browser;
  const define = async (definition: Record<string, unknown>) => expect((await h.request('POST', '/workflows', definition, AUTH)).status).toBe(201);
  const submit = async (taskType: string, params: Record<string, unknown> = {}) => {
    const answer = await h.request('POST', '/assign-task', { task_type: taskType, params }, AUTH);
    expect(answer.status).toBe(202);
    return answer.body.task_id as string;
  };
  const waitingStep = (id: string, step: string) =>
    poll(
      async () =>
        ((await h.request('GET', `/result/${id}`, undefined, AUTH)).body.steps as { id: string; status: string }[]).find((s) => s.id === step)?.status ===
        'waiting',
      {
        label: `${step} to wait`,
      },
    );

  beforeAll(async () => {
    [h, browser] = await Promise.all([createHarness({ tools: testTools, env: { API_KEYS: KEY } }), launchBrowser()]);
    await define({
      name: 'board_diamond',
      steps: [
        { id: 'a', tool: 'echo', input: { v: 1 } },
        { id: 'b', tool: 'echo', depends_on: ['a'], input: { v: 2 } },
        { id: 'approve', depends_on: ['a'], wait: { signal: 'go' } },
        { id: 'd', tool: 'echo', depends_on: ['b', 'approve'], input: { done: true } },
      ],
    });
    await define({
      name: 'board_map',
      parameters: [{ name: 'values', type: 'array', required: true }],
      steps: [
        { id: 'list', tool: 'echo', input: { values: '{{params.values}}' } },
        { id: 'each', tool: 'hang', depends_on: ['list'], for_each: '{{steps.list.output.values}}', max_parallel: 3, input: { key: 'board-{{item}}' } },
      ],
    });
    await define({ name: 'board_child', steps: [{ id: 'hold_on', wait: { signal: 'release' } }] });
    await define({
      name: 'board_parent',
      steps: [
        { id: 'first', tool: 'echo', input: { v: 1 } },
        { id: 'sub', workflow: 'board_child', depends_on: ['first'] },
        { id: 'last', tool: 'echo', depends_on: ['sub'], input: { v: 2 } },
      ],
    });
  }, 120_000);
  afterAll(async () => {
    await browser?.close();
    await h?.close();
    await closeTestConnections();
  });

  it('shows a diamond, a map and a sub-workflow as trees under their roots', async () => {
    const diamond = await submit('board_diamond');
    const map = await submit('board_map', { values: [1, 2, 3, 4, 5] });
    const parent = await submit('board_parent');
    await waitingStep(diamond, 'approve');
    await poll(
      async () => (await h.request('GET', `/result/${map}`, undefined, AUTH)).body.steps.find((s: { id: string }) => s.id === 'each')?.status === 'running',
      {
        label: 'the map to run',
      },
    );
    await poll(
      async () => (await h.request('GET', `/result/${parent}`, undefined, AUTH)).body.steps.find((s: { id: string }) => s.id === 'sub')?.status === 'running',
      {
        label: 'the sub-workflow to run',
      },
    );

    const context = await browser.newContext({ baseURL: h.url, httpCredentials: { username: 'admin', password: KEY }, viewport: { width: 1280, height: 900 } });
    try {
      const page = await context.newPage();
      await page.goto('/admin/queues/queue/tasks?status=waiting-children');
      await page.getByText(rootJobId(diamond, 1)).first().waitFor({ timeout: 30_000 });
      await page.screenshot({ path: screenshotPath('board-waiting-children.png'), fullPage: true });
      // Each root's flow view: the tree BullMQ holds (node names are job names: steps, `step[item]`, holds, child runs).
      for (const [name, id, shown] of [
        ['diamond', diamond, ['a', 'b', 'approve (hold)']],
        ['map', map, ['list', 'each[0]', 'each[1]', 'each[2]']],
        ['sub-workflow', parent, ['first', 'sub (hold)', 'board_child']],
      ] as const) {
        await page.goto(`/admin/queues/queue/tasks/${rootJobId(id, 1)}`);
        await page
          .getByRole('tab', { name: /flow/i })
          .or(page.getByRole('button', { name: /flow/i }))
          .first()
          .click({ timeout: 30_000 });
        for (const node of shown) await page.getByText(node, { exact: true }).first().waitFor({ timeout: 30_000 });
        await page.screenshot({ path: screenshotPath(`board-${name}.png`), fullPage: true });
      }
    } finally {
      await context.close();
      await h.request('POST', `/tasks/${map}/cancel`, undefined, AUTH);
      await h.request('POST', `/tasks/${diamond}/cancel`, undefined, AUTH);
      await h.request('POST', `/tasks/${parent}/cancel`, undefined, AUTH);
    }
  });
});
