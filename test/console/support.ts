import { mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core';
import { buildConsole } from '../../scripts/build-console.mjs';
import type { Harness } from '../helpers/harness.js';

/** The console in a real browser: the build the API serves, headless Chromium, axe, the page's errors. */

export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
export const ADMIN_KEY = 'console-admin-key-0123456789';
export const READ_KEY = 'console-read-key-0123456789';
/** A client key: it submits the tasks whose approvals the admin decides in the console (the submitter's own key may not: four eyes). */
export const CLIENT_KEY = 'console-client-key-0123456789';
/** API_KEYS for a harness the console signs in to: an admin key, a read key and a client key. */
export const CONSOLE_KEYS = `admin:${ADMIN_KEY},read:${READ_KEY},client@shop:${CLIENT_KEY}`;

/**
 * The console built as `npm start` builds it (dist/console), once for all test files: a build
 * from the same inputs is reused. Returns the directory, for the harness's CONSOLE_DIR.
 */
export async function builtConsole(): Promise<string> {
  return (await buildConsole()).outDir;
}

/**
 * Where a test saves its screenshot `name`: the pictures the docs show (test/console/screenshots)
 * with UPDATE_SCREENSHOTS=1, else a temporary folder, so that a test run leaves the checkout as it was.
 */
export function screenshotPath(name: string): string {
  const folder =
    process.env.UPDATE_SCREENSHOTS === '1' ? fileURLToPath(new URL('./screenshots/', import.meta.url)) : path.join(tmpdir(), 'orchestrator-screenshots');
  mkdirSync(folder, { recursive: true });
  return path.join(folder, name);
}

export function launchBrowser(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking'] });
}

export interface ConsolePage {
  page: Page;
  context: BrowserContext;
  /** Console errors and uncaught exceptions the page has had so far. */
  errors: string[];
}

/**
 * A tab of the console, signed in with `key` (its sessionStorage set before the page runs, as the
 * sign-in form sets it; `signedIn: false` leaves the form to the test); the browser's basic
 * credentials open /console itself, as a person's do.
 */
export async function consolePage(
  browser: Browser,
  h: Harness,
  options: { key?: string; viewport?: { width: number; height: number }; signedIn?: boolean } = {},
): Promise<ConsolePage> {
  const key = options.key ?? ADMIN_KEY;
  const context = await browser.newContext({
    baseURL: h.url,
    viewport: options.viewport ?? { width: 1280, height: 900 },
    httpCredentials: { username: 'console', password: key },
  });
  // A script as text: it runs in the page, whose globals (sessionStorage) this file's types do not know.
  if (options.signedIn !== false) await context.addInitScript({ content: `sessionStorage.setItem('orchestrator.console.apiKey', ${JSON.stringify(key)})` });
  const page = await context.newPage();
  const errors: string[] = [];
  page.on('console', (message) => {
    if (message.type() === 'error') errors.push(`${message.text()} (${message.location().url})`);
  });
  page.on('pageerror', (error) => errors.push(`uncaught: ${error.message}`));
  return { page, context, errors };
}

const AXE_SOURCE = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

export interface AxeViolation {
  id: string;
  impact: string | null;
  help: string;
  nodes: { target: string[]; failureSummary?: string }[];
}

/** axe-core's serious and critical violations on the page as it is now (WCAG 2 A and AA rules). */
export async function seriousViolations(page: Page): Promise<AxeViolation[]> {
  // Evaluated, not a <script>: the console's CSP (script-src 'self') refuses inline scripts, as it should.
  await page.evaluate(AXE_SOURCE);
  // Run in the page (a string: its globals are the browser's).
  const violations = (await page.evaluate(`(async () => {
    const result = await axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] } });
    return result.violations.map((violation) => ({
      id: violation.id,
      impact: violation.impact,
      help: violation.help,
      nodes: violation.nodes.slice(0, 3).map((node) => ({ target: node.target, failureSummary: node.failureSummary })),
    }));
  })()`)) as AxeViolation[];
  return violations.filter((violation) => violation.impact === 'serious' || violation.impact === 'critical');
}
