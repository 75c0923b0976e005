import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { closeTestConnections, testTools } from '../fixtures/tools.js';
import { createHarness, type Harness, uniqueName, waitForTask } from '../helpers/harness.js';
import {
  ADMIN_KEY,
  builtConsole,
  CLIENT_KEY,
  CONSOLE_KEYS,
  type ConsolePage,
  consolePage,
  launchBrowser,
  READ_KEY,
  screenshotPath,
  seriousViolations,
} from './support.js';

/** Written by this run and committed: the README shows them. */
const AUTH = { authorization: `Bearer ${ADMIN_KEY}` };

/** The step's node in the graph, by step id. */
const node = (page: Page, step: string) => page.locator(`.dag-node[data-step="${step}"]`);

async function submit(h: Harness, body: Record<string, unknown>, key = ADMIN_KEY): Promise<string> {
  const answer = await h.request('POST', '/assign-task', body, { authorization: `Bearer ${key}` });
  expect(answer.status, JSON.stringify(answer.body)).toBe(202);
  return answer.body.task_id as string;
}

/**
 * The console's task pages in headless Chromium against a real API and worker: submit through the
 * form, watch the graph turn, cancel, retry, approve; the read key sees no actions; axe on each page.
 */
// Browser steps take seconds apiece when the machine is busy.
describe('the console: submit and task detail', { timeout: 120_000 }, () => {
  let h: Harness;
  let browser: Browser;
  let tab: ConsolePage;

  beforeAll(async () => {
    const dir = await builtConsole();
    [h, browser] = await Promise.all([createHarness({ tools: testTools, env: { API_KEYS: CONSOLE_KEYS, CONSOLE_DIR: dir } }), launchBrowser()]);
    tab = await consolePage(browser, h);
    const workflows = [
      {
        name: 'sign_off',
        steps: [
          { id: 'review', wait: { approval: {} }, input: { note: 'pay the supplier' } },
          { id: 'pay', tool: 'echo', depends_on: ['review'], input: { decision: '{{steps.review.output.decision}}' } },
        ],
      },
      {
        // A map over three items, then a sub-workflow: the console shows items done out of total and links parent and child.
        name: 'map_then_child',
        steps: [
          { id: 'each', tool: 'echo', for_each: '{{params.items}}', input: { item: '{{item}}' } },
          { id: 'child', workflow: 'diamond', depends_on: ['each'], input: { value: 'nested' } },
          { id: 'again', tool: 'echo', depends_on: ['each'], input: { n: '{{iteration}}' }, repeat: { until: 'output.n >= 1.0', max_iterations: 3 } },
        ],
        parameters: [{ name: 'items', type: 'array', required: true }],
      },
      {
        name: 'await_go',
        steps: [
          { id: 'hold', wait: { signal: 'go', schema: { type: 'object', properties: { speed: { type: 'integer' } }, required: ['speed'] } } },
          { id: 'run', tool: 'echo', depends_on: ['hold'], input: { speed: '{{steps.hold.output.speed}}' } },
        ],
      },
      {
        // Fails on its first call and succeeds on the next: a retry of the failed task completes.
        name: 'second_time_lucky',
        parameters: [{ name: 'key', type: 'string', required: true }],
        steps: [
          { id: 'prepare', tool: 'echo', input: { ok: true } },
          {
            id: 'call',
            tool: 'flaky',
            depends_on: ['prepare'],
            retry: { attempts: 1 },
            input: { succeed_on: 2, count: 'calls', key: '{{params.key}}' },
          },
        ],
      },
    ];
    for (const workflow of workflows) expect((await h.request('POST', '/workflows', workflow, AUTH)).status).toBe(201);
  }, 180_000);
  // Each test answers for the errors of its own pages.
  beforeEach(() => {
    if (tab) tab.errors.length = 0;
  });
  afterAll(async () => {
    await browser?.close();
    await h?.close();
    await closeTestConnections();
  });

  it('submits the diamond through the form and shows its four steps turn completed in the graph, live', async () => {
    const { page, errors } = tab;
    await page.goto('/console/submit');
    await page.getByLabel('Tool or workflow').selectOption('diamond');
    const value = page.getByLabel(/^value/);
    await expect.poll(() => value.inputValue()).toBe('x');
    await value.fill('from the console');
    expect(await seriousViolations(page)).toEqual([]);
    await page.getByRole('button', { name: 'Submit diamond' }).click();
    await page.waitForURL(/\/console\/tasks\/[0-9a-f-]{36}$/);
    for (const step of ['a', 'b', 'c', 'd']) await node(page, step).and(page.locator('[data-status="completed"]')).waitFor({ timeout: 20_000 });
    await page
      .getByRole('heading', { name: /diamond/ })
      .getByText('completed')
      .waitFor();
    const id = page.url().split('/').at(-1)!;
    expect((await waitForTask(h, id, 20_000, AUTH)).result).toEqual({ joined: 'from the console-b+from the console-c' });
    // Each step's attempt is on the timeline; a step's input and output open from the table.
    await page.locator('.timeline-row', { hasText: 'd' }).locator('.bar.attempt.status-completed').first().waitFor();
    await page.getByRole('button', { name: 'd', exact: true }).click();
    await expect.poll(() => page.getByLabel('Output').textContent()).toContain('from the console-b+from the console-c');
    expect(await seriousViolations(page)).toEqual([]);
    await page.screenshot({ path: screenshotPath('task-detail.png'), fullPage: true });
    expect(errors).toEqual([]);
  });

  it('shows the API validation errors at their fields', async () => {
    const { page, errors } = tab;
    await page.goto('/console/submit?type=second_time_lucky');
    await page.getByRole('button', { name: 'Submit second_time_lucky' }).click();
    const field = page.locator('[data-field="key"]');
    await field.locator('.field-error').waitFor();
    expect(await field.locator('.field-error').textContent()).toMatch(/params\.key/);
    expect(await field.getByRole('textbox').getAttribute('aria-invalid')).toBe('true');
    expect(page.url()).toMatch(/\/submit\?type=second_time_lucky$/);
    // The browser reports the refused request itself; nothing else went wrong.
    expect(errors.filter((error) => !/status of 400 .*\/assign-task/.test(error))).toEqual([]);
  });

  it('cancels a long sleep', async () => {
    const { page, errors } = tab;
    const id = await submit(h, { task_type: 'sleep', params: { ms: 600_000 } });
    await page.goto(`/console/tasks/${id}`);
    await node(page, 'sleep').and(page.locator('[data-status="running"]')).waitFor({ timeout: 20_000 });
    page.once('dialog', (dialog) => void dialog.accept());
    await page.getByRole('button', { name: 'Cancel task' }).click();
    await page.getByRole('heading', { name: /sleep/ }).getByText('cancelled').waitFor({ timeout: 20_000 });
    expect((await waitForTask(h, id, 20_000, AUTH)).status).toBe('cancelled');
    await node(page, 'sleep').and(page.locator('[data-status="cancelled"]')).waitFor();
    expect(await page.getByRole('button', { name: 'Cancel task' }).count()).toBe(0);
    expect(errors).toEqual([]);
  });

  it('retries a failed task: the failed step runs again and the task completes', async () => {
    const { page, errors } = tab;
    const key = uniqueName('lucky');
    const id = await submit(h, { task_type: 'second_time_lucky', params: { key } });
    expect((await waitForTask(h, id, 20_000, AUTH)).status).toBe('failed');
    await page.goto(`/console/tasks/${id}`);
    await node(page, 'call').and(page.locator('[data-status="failed"]')).waitFor();
    await page.getByRole('button', { name: 'Retry task' }).click();
    await node(page, 'call').and(page.locator('[data-status="completed"]')).waitFor({ timeout: 20_000 });
    await page
      .getByRole('heading', { name: /second_time_lucky/ })
      .getByText('completed')
      .waitFor();
    const task = await waitForTask(h, id, 20_000, AUTH);
    expect(task.status).toBe('completed');
    expect(task.run).toBe(2);
    // The task's params, on its page.
    expect(await page.locator('details.params').textContent()).toContain(key);
    // The step panel shows what the tool logged, attempt by attempt: run 1's failing call logged a
    // warning; run 2's call logged nothing, so it has no block.
    await page.getByRole('button', { name: 'call', exact: true }).click();
    const logs = page.getByRole('region', { name: 'Logs' });
    await logs.locator('figure[data-attempt]').first().waitFor();
    expect(await logs.locator('figcaption').allTextContents()).toEqual([expect.stringMatching(/^Attempt 1 · ended /)]);
    expect(await logs.locator('li[data-level="warn"]').allTextContents()).toEqual([expect.stringMatching(/ warn failing on purpose \{.*"attempt":1\b/)]);
    expect(await seriousViolations(page)).toEqual([]);
    expect(errors).toEqual([]);
  });

  it("approves a waiting task from the top of its page, where a person's decision is asked", async () => {
    const { page, errors } = tab;
    // A client submits it; the admin signed in to the console decides it (the submitter's key may not).
    const id = await submit(h, { task_type: 'sign_off', params: {} }, CLIENT_KEY);
    await page.goto(`/console/tasks/${id}`);
    await node(page, 'review').and(page.locator('[data-status="waiting"]')).waitFor({ timeout: 20_000 });
    // Waiting for a person, not running: the state the lists and filters use, at the top of the page.
    expect(await page.getByRole('heading', { level: 1 }).locator('.badge').textContent()).toBe('waiting');
    // The workflow and its version, and the whole id with a button that copies it.
    expect(await page.locator('dl.facts dt:text-is("Workflow") + dd').textContent()).toBe('sign_off v1');
    expect(await page.locator('dl.facts dt:text-is("Task") + dd .mono').textContent()).toBe(id);
    await tab.context.grantPermissions(['clipboard-read', 'clipboard-write']);
    await page.getByRole('button', { name: 'Copy the task id' }).click();
    await page.getByRole('status').filter({ hasText: 'Copied' }).waitFor();
    expect(await page.evaluate('navigator.clipboard.readText()')).toBe(id);
    // Asked at the top without selecting the step; the step's panel points there.
    await page.getByRole('heading', { name: 'Waiting for an approval' }).waitFor();
    await page.getByRole('button', { name: 'review', exact: true }).click();
    await page.getByText('Waiting for an approval: decide it at the top of the page.').waitFor();
    expect(await page.getByRole('button', { name: 'Approve' }).count()).toBe(1);
    // The wait is on the timeline as a wait, not an attempt.
    await page.locator('.timeline-row', { hasText: 'review' }).locator('.bar.wait').first().waitFor();
    expect(await seriousViolations(page)).toEqual([]);
    await page.getByRole('button', { name: 'Approve' }).click();
    await node(page, 'pay').and(page.locator('[data-status="completed"]')).waitFor({ timeout: 20_000 });
    await page.getByRole('heading', { level: 1 }).locator('.badge', { hasText: 'completed' }).waitFor();
    const task = await waitForTask(h, id, 20_000, AUTH);
    expect(task.status).toBe('completed');
    expect(task.steps.find((step: { id: string }) => step.id === 'review').output).toMatchObject({ decision: 'approved' });
    expect(errors).toEqual([]);
  });

  it('sends a signal with a JSON payload: text that is not JSON is caught at the field, a payload off the schema refused by the API', async () => {
    const { page, errors } = tab;
    const id = await submit(h, { task_type: 'await_go', params: {} });
    await page.goto(`/console/tasks/${id}`);
    await node(page, 'hold').and(page.locator('[data-status="waiting"]')).waitFor({ timeout: 20_000 });
    await page.getByRole('button', { name: 'hold', exact: true }).click();
    const payload = page.getByLabel('Payload (JSON)');
    await payload.fill('{speed: fast');
    await page.getByRole('button', { name: 'Send signal' }).click();
    expect(await payload.getAttribute('aria-invalid')).toBe('true');
    await payload.fill('{"speed": "fast"}');
    await page.getByRole('button', { name: 'Send signal' }).click();
    await page.getByText('The signal was refused').waitFor();
    await payload.fill('{"speed": 7}');
    await page.getByRole('button', { name: 'Send signal' }).click();
    await node(page, 'run').and(page.locator('[data-status="completed"]')).waitFor({ timeout: 20_000 });
    expect((await waitForTask(h, id, 20_000, AUTH)).result).toMatchObject({ run: { speed: 7 } });
    expect(errors.filter((error) => !/status of 400 .*\/signals\/go/.test(error))).toEqual([]);
  });

  it("shows a for_each step's items done out of total, a repeat's iterations, and links a sub-workflow's child task and its parent", async () => {
    const { page, errors } = tab;
    const id = await submit(h, { task_type: 'map_then_child', params: { items: ['x', 'y', 'z'] } });
    expect((await waitForTask(h, id, 30_000, AUTH)).status).toBe('completed');
    await page.goto(`/console/tasks/${id}`);
    await node(page, 'each').getByText('3/3 items').waitFor();
    await page.getByRole('row', { name: /each/ }).getByText('3/3 items').waitFor();
    await node(page, 'again').getByText('2 iterations').waitFor();
    await page.getByRole('row', { name: /again/ }).getByText('2 iterations').waitFor();
    await page.getByRole('link', { name: 'workflow (child task)' }).click();
    await page.getByRole('heading', { name: /diamond/ }).waitFor();
    await node(page, 'd').and(page.locator('[data-status="completed"]')).waitFor();
    await page.getByRole('link', { name: id }).click();
    await page.waitForURL(new RegExp(`/console/tasks/${id}$`));
    await node(page, 'child').and(page.locator('[data-status="completed"]')).waitFor();
    expect(errors).toEqual([]);
  });

  it('shows a read key no action buttons', async () => {
    const reader = await consolePage(browser, h, { key: READ_KEY });
    try {
      const id = await submit(h, { task_type: 'sign_off', params: {} });
      await reader.page.goto(`/console/tasks/${id}`);
      await node(reader.page, 'review').and(reader.page.locator('[data-status="waiting"]')).waitFor({ timeout: 20_000 });
      await reader.page.getByRole('button', { name: 'review', exact: true }).click();
      await reader.page.getByText('Waiting for the signal review.').waitFor();
      expect(await reader.page.getByRole('button', { name: /Cancel task|Retry task|Approve|Reject|Send signal/ }).count()).toBe(0);
      expect(await reader.page.getByRole('link', { name: 'Submit' }).count()).toBe(1);
      await reader.page.goto('/console/submit');
      await reader.page.getByText('This key may not submit tasks').waitFor();
      expect(reader.errors).toEqual([]);
    } finally {
      await reader.context.close();
    }
  });
});
