import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHarness, type Harness } from '../helpers/harness.js';

/**
 * /docs (Swagger UI) and /redoc (ReDoc) in headless Chromium, as a person opens them on an API
 * with keys: the browser asks for credentials (basic auth, the key as password), the pages load
 * the API description, and Swagger UI's "Try it out" calls the API with that key.
 */

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const ADMIN_KEY = 'docs-admin-key-0123456789';
const CLIENT_KEY = 'docs-client-key-0123456789';

interface DocsTab {
  page: Page;
  context: BrowserContext;
  /** Console errors, uncaught exceptions and CSP violations the page has had so far. */
  errors: string[];
}

describe('the documentation pages with keys, in a browser', () => {
  let h: Harness;
  let browser: Browser;
  const tabs: DocsTab[] = [];

  async function open(path: string, key: string): Promise<DocsTab> {
    const context = await browser.newContext({ baseURL: h.url, httpCredentials: { username: 'reader', password: key } });
    const page = await context.newPage();
    const errors: string[] = [];
    page.on('console', (message) => {
      if (message.type() === 'error') errors.push(`${message.text()} (${message.location().url})`);
    });
    page.on('pageerror', (error) => errors.push(`uncaught: ${error.message}`));
    const tab = { page, context, errors };
    tabs.push(tab);
    const response = await page.goto(path);
    expect(response?.status()).toBe(200);
    return tab;
  }

  beforeAll(async () => {
    h = await createHarness({ env: { API_KEYS: `admin:${ADMIN_KEY},client@docs-reader:${CLIENT_KEY}` } });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking'] });
  }, 120_000);
  afterAll(async () => {
    for (const tab of tabs) await tab.context.close();
    await browser?.close();
    await h?.close();
  });

  it('Swagger UI loads the description and lists the operations; "Try it out" submits a task with the key as a bearer key', async () => {
    const { page, errors } = await open('/docs', CLIENT_KEY);
    // Every operation of the document, once it loaded (instead of "Failed to load API definition"):
    // Swagger UI shows an operation under each of its tags (seed 001's aliases of the workflow
    // routes are under both theirs and the workflows').
    const operations = Object.values((await h.request('GET', '/openapi.json', undefined, { authorization: `Bearer ${ADMIN_KEY}` })).body.paths)
      .flatMap((methods) => Object.values(methods as Record<string, { tags: string[] }>))
      .reduce((sum, operation) => sum + operation.tags.length, 0);
    await page.locator('#operations-tasks-assignTask').waitFor({ timeout: 60_000 });
    expect(await page.locator('.opblock').count()).toBe(operations);
    expect(await page.locator('.swagger-ui .errors-wrapper').count()).toBe(0);
    // The key is preauthorized: the Authorize button shows it as applied.
    expect(await page.locator('.auth-wrapper .authorize.locked').count()).toBe(1);

    const operation = page.locator('#operations-tasks-assignTask');
    await operation.locator('.opblock-summary').click();
    await operation.getByRole('button', { name: 'Try it out' }).click();
    const [response] = await Promise.all([
      page.waitForResponse((candidate) => new URL(candidate.url()).pathname === '/assign-task'),
      operation.getByRole('button', { name: 'Execute' }).click(),
    ]);
    expect(response.request().headers().authorization).toBe(`Bearer ${CLIENT_KEY}`);
    expect(response.status()).toBe(202);
    const { task_id: taskId } = (await response.json()) as { task_id: string };
    // The page shows the answer, and the task is the client key's own.
    await operation.locator('.live-responses-table .response-col_status', { hasText: '202' }).waitFor();
    const task = await h.db.prisma.task.findFirstOrThrow({ where: { id: taskId } });
    expect(task.ownerKey).toBe('docs-reader');
    expect(errors.filter((error) => !error.includes('/favicon.ico'))).toEqual([]);
  }, 120_000);

  it('ReDoc loads the description and shows the operations', async () => {
    const { page, errors } = await open('/redoc', ADMIN_KEY);
    await page.getByRole('heading', { name: 'Submit a task' }).first().waitFor({ timeout: 60_000 });
    expect(await page.getByText('Something went wrong').count()).toBe(0);
    expect(await page.locator('[data-section-id^="operation/"]').count()).toBeGreaterThan(20);
    // ReDoc's logo, which the bundle fetches from Redocly's CDN, is blocked by the page's CSP on purpose.
    expect(errors.filter((error) => !error.includes('/favicon.ico') && !error.includes('https://cdn.redoc.ly/'))).toEqual([]);
  }, 120_000);
});
