import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeTestConnections, testTools } from '../fixtures/tools.js';
import { createHarness, type Harness } from '../helpers/harness.js';
import { builtConsole, CONSOLE_KEYS, consolePage, launchBrowser } from './support.js';

describe('the console: tasks list', () => {
  let h: Harness;
  let browser: Browser;

  beforeAll(async () => {
    const dir = await builtConsole();
    [h, browser] = await Promise.all([createHarness({ tools: testTools, env: { API_KEYS: CONSOLE_KEYS, CONSOLE_DIR: dir } }), launchBrowser()]);
  }, 180_000);
  afterAll(async () => {
    await browser?.close();
    await h?.close();
    await closeTestConnections();
  });

  it('opens on the tasks list', async () => {
    const { page, errors } = await consolePage(browser, h);
    await page.goto('/console/');
    await page.getByRole('heading', { name: 'Tasks' }).waitFor();
    expect(page.url()).toMatch(/\/console\/tasks$/);
    expect(errors).toEqual([]);
  });
});
