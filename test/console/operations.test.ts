import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BUILT_IN_OWNER } from '../../src/fleet/worker-fleet.js';
import { closeTestConnections, testTools } from '../fixtures/tools.js';
import { toolRegistration } from '../fixtures/worker-registration.js';
import { createHarness, type Harness, poll, waitForTask } from '../helpers/harness.js';
import { startServer, type TestServer } from '../helpers/http-server.js';
import { ADMIN_KEY, builtConsole, CONSOLE_KEYS, consolePage, launchBrowser, READ_KEY, seriousViolations } from './support.js';

/**
 * The console's operations pages in a real browser: the workflow editor's problems at their
 * paths, Waiting, Dead letters (replay), Schedules (pause, resume), Services (circuit state), Workers,
 * Overview; axe on each, no console errors, no action buttons for a read key, a phone's width.
 */

const admin = { authorization: `Bearer ${ADMIN_KEY}` };
const PAGES = ['workflows', 'waiting', 'dead-letters', 'schedules', 'services', 'workers', 'overview'] as const;
/** A worker of a user's own registers with it (GET /workers lists it on the Workers page). */
const WORKER_KEY = 'console-worker-key-0123456789';
const shoutTool = toolRegistration('shout', { description: 'Upper-cases a text.' });
/** The heartbeat of a user's worker that runs one step. */
const WORKER = {
  host: 'app-1',
  pid: 4242,
  version: '1.2.3',
  concurrency: 8,
  tools: [shoutTool],
  running: [{ task_id: '0193a0c2-7b1e-7c3a-9d4f-2a1b3c4d5e6f', step_id: 'loud', tool: 'shout', since: new Date().toISOString() }],
  running_count: 1,
};
/** A workflow's description of several sentences, with a long address that has no place to break. */
const LONG_DESCRIPTION = `${'Waits for a go-ahead from the operations team before anything else runs, so a person decides. '.repeat(4)}See https://wiki.example.com/operations/runbooks/console-wait-for-a-go-ahead-before-anything-else-runs`;

async function submit(h: Harness, body: Record<string, unknown>): Promise<string> {
  const response = await h.request('POST', '/assign-task', body, admin);
  expect(response.status, JSON.stringify(response.body)).toBe(202);
  return response.body.task_id;
}

/** Replaces the editor's whole text, as typing would (CodeMirror takes the inserted text as input). */
async function typeDefinition(page: Page, text: string): Promise<void> {
  await page.locator('.cm-content').click();
  await page.keyboard.press('ControlOrMeta+a');
  await page.keyboard.insertText(text);
}

describe('the console: operations pages', () => {
  let h: Harness;
  let browser: Browser;
  let service: TestServer;
  let waitingTask: string;
  let deadLetter: { id: string; task_id: string; step_id: string };

  beforeAll(async () => {
    service = await startServer((request, res) => {
      res.setHeader('content-type', 'application/json');
      if (request.path === '/openapi.json') {
        return res.end(
          JSON.stringify({
            openapi: '3.1.0',
            info: { title: 'Ping', version: '1' },
            paths: {
              '/ping': {
                get: { operationId: 'ping', responses: { '200': { description: 'pong', content: { 'application/json': { schema: { type: 'object' } } } } } },
              },
            },
          }),
        );
      }
      res.end('{"ok":true}');
    });
    const dir = await builtConsole();
    [h, browser] = await Promise.all([
      createHarness({
        tools: testTools,
        env: {
          API_KEYS: `${CONSOLE_KEYS},worker@acme:${WORKER_KEY}`,
          CONSOLE_DIR: dir,
          HTTP_TOOL_ALLOWED_HOSTS: `127.0.0.1:${service.port}`,
          SERVICE_HEALTH_INTERVAL_MS: '200',
        },
      }),
      launchBrowser(),
    ]);

    // Something on every page: a schedule, a service, a dead letter, a task waiting for a signal.
    expect((await h.request('POST', '/schedules', { name: 'nightly', every_ms: 3_600_000, task_type: 'echo' }, admin)).status).toBe(201);
    const registered = await h.request(
      'POST',
      '/services',
      { name: 'ping', base_url: service.origin, openapi_url: `${service.origin}/openapi.json`, health_path: '/health' },
      admin,
    );
    expect(registered.status, JSON.stringify(registered.body)).toBe(201);
    const worker = await h.request('PUT', '/workers/app-1-4242-beef', WORKER, { authorization: `Bearer ${WORKER_KEY}` });
    expect(worker.status, JSON.stringify(worker.body)).toBe(200);
    const failed = await submit(h, { task_type: 'broken', params: {} });
    await waitForTask(h, failed, 20_000, admin);
    const letters = await h.request('GET', `/dead-letters?task_id=${failed}`, undefined, admin);
    deadLetter = letters.body.items[0];
    expect(deadLetter).toBeDefined();
    const waits = { name: 'console_wait', description: LONG_DESCRIPTION, steps: [{ id: 'go_ahead', wait: { signal: 'go' } }] };
    expect((await h.request('POST', '/workflows', waits, admin)).status).toBe(201);
    waitingTask = await submit(h, { task_type: 'console_wait', params: {} });
    await poll(async () => ((await h.request('GET', '/tasks?status=waiting', undefined, admin)).body.items.length > 0 ? true : undefined), {
      label: 'the wait step waiting',
    });
  }, 180_000);
  afterAll(async () => {
    await browser?.close();
    await h?.close();
    await service?.close();
    await closeTestConnections();
  });

  it('the workflow editor shows each problem at its path, in the list and in the text; fixed, it has none and saves', async () => {
    const { page, errors } = await consolePage(browser, h);
    await page.goto('/console/workflows?new');
    await page.getByRole('heading', { name: 'New definition' }).waitFor();
    await page.locator('.cm-content').waitFor();

    const broken = JSON.stringify(
      {
        name: 'console_flow',
        steps: [
          { id: 'fetch', tool: 'no_such_tool' },
          { id: 'report', tool: 'echo', depends_on: ['ghost'] },
        ],
      },
      null,
      2,
    );
    await typeDefinition(page, broken);
    const tool = page.locator('li[data-path="steps[0].tool"]');
    const dependency = page.locator('li[data-path="steps[1].depends_on[0]"]');
    await tool.waitFor();
    await dependency.waitFor();
    // Each at the line of its value in the text.
    const lineOf = (needle: string) => broken.slice(0, broken.indexOf(needle)).split('\n').length;
    expect(await tool.textContent()).toContain(`(line ${lineOf('"no_such_tool"')})`);
    expect(await tool.textContent()).toContain('unknown tool no_such_tool');
    expect(await dependency.textContent()).toContain(`(line ${lineOf('"ghost"')})`);
    await expect.poll(() => page.getByRole('status').filter({ hasText: 'problems' }).count()).toBe(1);
    // In the editor: the two values are marked as errors.
    await expect.poll(async () => (await page.locator('.cm-lintRange-error').allTextContents()).sort()).toEqual(['"ghost"', '"no_such_tool"']);
    // The list's entry takes the keyboard to the value.
    await dependency.getByRole('button').click();
    expect(await page.evaluate('window.getSelection()?.toString()')).toBe('"ghost"');

    // Not JSON: said where, without asking the server.
    await typeDefinition(page, '{"name": "console_flow", "steps": [');
    await page.locator('li[data-path="(JSON)"]').first().waitFor();

    await typeDefinition(
      page,
      JSON.stringify(
        {
          name: 'console_flow',
          steps: [
            { id: 'fetch', tool: 'echo' },
            { id: 'report', tool: 'echo', depends_on: ['fetch'] },
          ],
        },
        null,
        2,
      ),
    );
    await page.getByText('No problems: it can be stored.').waitFor();
    expect(await page.locator('.problems').count()).toBe(0);
    expect(await page.locator('.cm-lintRange-error').count()).toBe(0);
    // The graph previews what the editor holds.
    await page.locator('[data-step="report"]').waitFor();
    await page.getByRole('button', { name: 'Save' }).click();
    await page.getByText('Stored console_flow v1').waitFor();
    expect((await h.request('GET', '/workflows/console_flow', undefined, admin)).body.steps).toHaveLength(2);

    // The stored definition opens with its versions and graph.
    await page.getByRole('link', { name: 'console_flow v1' }).click();
    await page.getByRole('heading', { name: 'console_flow', level: 2 }).waitFor();
    await page.locator('[data-step="fetch"]').waitFor();
    expect(errors).toEqual([]);
  });

  it('pauses and resumes a schedule', async () => {
    const { page, errors } = await consolePage(browser, h);
    await page.goto('/console/schedules');
    const row = page.locator('tr[data-schedule="nightly"]');
    await row.getByText('active').waitFor();
    expect(await row.locator('time').count()).toBeGreaterThan(0);
    await page.getByRole('button', { name: 'Pause nightly' }).click();
    await row.getByText('paused').waitFor();
    const paused = await h.request('GET', '/schedules/nightly', undefined, admin);
    expect(paused.body).toMatchObject({ paused: true, next_fire_times: [] });
    expect(await row.locator('time').count()).toBe(0);
    await page.getByRole('button', { name: 'Resume nightly' }).click();
    await row.getByText('active').waitFor();
    expect((await h.request('GET', '/schedules/nightly', undefined, admin)).body.paused).toBe(false);
    expect(errors).toEqual([]);
  });

  it('replays a dead letter', async () => {
    const { page, errors } = await consolePage(browser, h);
    await page.goto('/console/dead-letters');
    const card = page.locator(`[data-dead-letter="${deadLetter.id}"]`);
    await card.locator('dd', { hasText: 'broken on purpose' }).waitFor();
    await card.getByRole('button', { name: `Replay ${deadLetter.step_id}` }).click();
    await card.getByText('Replayed: task').waitFor();
    const after = await h.request('GET', `/dead-letters?task_id=${deadLetter.task_id}`, undefined, admin);
    expect(after.body.items.find((letter: { id: string }) => letter.id === deadLetter.id).replayed_at).not.toBeNull();
    expect(errors).toEqual([]);
  });

  it("shows a service's health and circuit state", async () => {
    const { page, errors } = await consolePage(browser, h);
    await page.goto('/console/services');
    const card = page.locator('[data-service="ping"]');
    await card.locator('[data-circuit="closed"]').waitFor();
    await card.locator('[data-health="up"]').waitFor();
    expect(await card.getByRole('button', { name: 'Refresh document of ping' }).count()).toBe(1);
    expect(errors).toEqual([]);
  });

  it("shows a user's worker: its tools, what it runs, its heartbeat; a live one cannot be forgotten", async () => {
    // Its heartbeat now, as a live worker's comes every few seconds (the tests before this one may have taken longer than three).
    expect((await h.request('PUT', '/workers/app-1-4242-beef', WORKER, { authorization: `Bearer ${WORKER_KEY}` })).status).toBe(200);
    const { page, errors } = await consolePage(browser, h);
    await page.goto('/console/workers');
    const card = page.locator('[data-worker="app-1-4242-beef"]');
    await card.waitFor();
    expect(await card.getAttribute('data-live')).toBe('true');
    expect(await card.locator('[data-tools]').textContent()).toBe('shout');
    expect(await card.locator('[data-running]').textContent()).toBe('1 of 8');
    await card.getByText('Steps running now').click();
    expect(await card.getByRole('link', { name: '0193a0c2-7b1e-7c3a-9d4f-2a1b3c4d5e6f' }).getAttribute('href')).toBe(
      '/console/tasks/0193a0c2-7b1e-7c3a-9d4f-2a1b3c4d5e6f',
    );
    expect(await card.getByRole('button', { name: /Forget/ }).count()).toBe(0);

    // One silent for three heartbeats is gone: it runs nothing we know of, and an admin forgets it.
    const gone = await h.request(
      'PUT',
      '/workers/app-2-77-dead',
      { host: 'app-2', pid: 77, version: '1.2.3', concurrency: 2, tools: [shoutTool], running: [], running_count: 0 },
      { authorization: `Bearer ${WORKER_KEY}` },
    );
    expect(gone.status).toBe(200);
    await h.db.prisma.fleetWorker.update({ where: { id: 'app-2-77-dead' }, data: { lastSeenAt: new Date(Date.now() - 60_000) } });
    await page.reload();
    const dead = page.locator('[data-worker="app-2-77-dead"]');
    await dead.waitFor();
    expect(await dead.getAttribute('data-live')).toBe('false');
    await dead.getByRole('button', { name: 'Forget app-2-77-dead' }).click();
    await dead.waitFor({ state: 'detached' });
    // Beside the harness's built-in worker, which registers its tools as any worker does.
    const listed = (await h.request('GET', '/workers', undefined, admin)).body.workers as { worker_id: string; owner: string }[];
    expect(listed.filter((worker) => worker.owner !== BUILT_IN_OWNER).map((worker) => worker.worker_id)).toEqual(['app-1-4242-beef']);
    expect(listed.filter((worker) => worker.owner === BUILT_IN_OWNER)).toHaveLength(1);
    expect(errors).toEqual([]);
  });

  it('lists the waiting task with what it waits for, linking to its detail', async () => {
    const { page, errors } = await consolePage(browser, h);
    await page.goto('/console/waiting');
    const row = page.locator(`tr[data-task="${waitingTask}"]`);
    await row.locator('li[data-reason="signal"]').waitFor();
    expect(await row.textContent()).toContain('go_ahead waits for a signal');
    // The id's random end shows, not its beginning (its time, alike for a minute's tasks); the whole id is its name and tooltip.
    const link = row.getByRole('link', { name: `Task ${waitingTask}` });
    expect(await link.textContent()).toBe(`…${waitingTask.slice(-12)}`);
    expect(await link.getAttribute('title')).toBe(waitingTask);
    await link.click();
    await page.waitForURL(`**/console/tasks/${waitingTask}`);
    expect(errors).toEqual([]);
  });

  it('shows throughput and latency charts, queue depths and the links to Bull Board, the docs and the metrics', async () => {
    const { page, errors } = await consolePage(browser, h);
    await page.goto('/console/overview');
    await page.locator('figure.chart svg').nth(1).waitFor();
    expect(await page.locator('figure.chart polyline, figure.chart circle').count()).toBeGreaterThan(0);
    await page.locator('tr[data-queue="timers"]').waitFor();
    for (const [name, href] of [
      ['Bull Board', '/admin/queues'],
      ['API docs', '/docs'],
      ['Metrics', '/metrics'],
    ]) {
      expect(await page.getByRole('link', { name }).getAttribute('href')).toBe(href);
    }
    expect(errors).toEqual([]);
  });

  it("says each window's chart buckets in one round unit (per 2 min, not per 1 min 15 s)", async () => {
    const { page, errors } = await consolePage(browser, h);
    await page.goto('/console/overview');
    for (const [window, unit] of [
      ['1h', '2 min'],
      ['6h', '10 min'],
      ['24h', '30 min'],
      ['7d', '6 h'],
    ] as const) {
      await page.getByLabel('Window').selectOption(window);
      await page.locator('figure.chart figcaption strong', { hasText: `Throughput, tasks per ${unit}` }).waitFor();
    }
    expect(await page.locator('figure.chart figcaption strong').first().textContent()).toBe('Throughput, tasks per 6 h');
    expect(errors).toEqual([]);
  });

  it("wraps a workflow's long description in its column: the list's table does not scroll sideways", async () => {
    const { page, errors } = await consolePage(browser, h);
    await page.goto('/console/workflows');
    const name = page.getByRole('link', { name: 'console_wait', exact: true });
    const cell = page.locator('tr', { has: name }).locator('td.prose');
    await cell.waitFor();
    expect(await cell.textContent()).toBe(LONG_DESCRIPTION);
    // Several lines: far taller than the workflow's name, one line in the same row.
    const line = (await name.boundingBox())!.height;
    expect((await cell.boundingBox())!.height, 'the description takes several lines').toBeGreaterThan(3 * line);
    const frame = page.locator('.table-wrap', { has: cell });
    const [scrollWidth, clientWidth] = await frame.evaluate((element) => [element.scrollWidth, element.clientWidth]);
    expect(scrollWidth).toBeLessThanOrEqual(clientWidth);
    expect(errors).toEqual([]);
  });

  /** Opens each page in one tab and runs `check` once it has loaded; no console error on any. */
  async function eachPage(options: { key: string; viewport?: { width: number; height: number } }, check: (page: Page, where: string) => Promise<void>) {
    const { page, errors, context } = await consolePage(browser, h, options);
    for (const path of PAGES) {
      await page.goto(`/console/${path}`);
      await page.getByRole('heading', { level: 1 }).waitFor();
      await poll(async () => ((await page.locator('.loading').count()) === 0 ? true : undefined), { label: `${path} loaded` });
      await check(page, path);
    }
    expect(errors).toEqual([]);
    await context.close();
  }

  it('each page: no serious or critical axe violation', async () => {
    await eachPage({ key: ADMIN_KEY }, async (page, where) => expect(await seriousViolations(page), where).toEqual([]));
  }, 120_000);

  it('each page is readable on a phone (375 px): wide tables scroll in their frame, the page does not scroll sideways', async () => {
    await eachPage({ key: ADMIN_KEY, viewport: { width: 375, height: 740 } }, async (page, where) =>
      expect(await page.evaluate('document.documentElement.scrollWidth'), where).toBeLessThanOrEqual(375),
    );
  }, 120_000);

  it('a read key sees every page and no action button', async () => {
    await eachPage({ key: READ_KEY }, async (page, where) => {
      expect(await page.locator('.error-box').count(), where).toBe(0);
      expect(await page.getByRole('button', { name: /^(Save|Replay|Pause|Resume|Refresh)/ }).count(), where).toBe(0);
    });
  }, 120_000);
});
