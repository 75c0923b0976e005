import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHarness, type Harness, poll, submit, waitForTask } from '../helpers/harness.js';

/**
 * Approval links as a person uses them: in headless Chromium (Debian's package, driven by
 * playwright-core; .ci/run installs it), with JavaScript off, since the page must work without
 * it. A link opens the page, shows what is to be approved, takes the form and the decision once;
 * a reused, tampered or expired link gets a page that says so and changes nothing.
 */

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

type Link = { approver: string | null; url: string; expires_at: string };

describe('approval links in a browser', () => {
  let h: Harness;
  let browser: Browser;
  let page: Page;
  /** A link as the service made it, on the test server's address (PUBLIC_URL is not set here). */
  const local = (link: Link) => `${h.url}${new URL(link.url).pathname}`;
  const linksOf = (id: string, step: string) =>
    poll(
      async () => {
        const task = (await h.request('GET', `/tasks/${id}`)).body;
        const found = task.steps?.find((candidate: { id: string }) => candidate.id === step);
        return found?.status === 'waiting' ? (found.waiting_for.approval.links as Link[]) : undefined;
      },
      { label: `step ${step} of ${id} waiting` },
    );

  beforeAll(async () => {
    h = await createHarness();
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking'] });
    page = await (await browser.newContext({ javaScriptEnabled: false })).newPage();
    const defined = await h.request('POST', '/workflows', {
      name: 'pay_supplier',
      parameters: [{ name: 'amount', type: 'number', required: true }],
      steps: [
        {
          id: 'sign_off',
          wait: {
            approval: {
              approvers: ['alice', 'bob'],
              form: { type: 'object', properties: { ticket: { type: 'integer', title: 'Ticket' }, urgent: { type: 'boolean' } }, required: ['ticket'] },
              show: ['amount'],
            },
          },
          input: { amount: '{{params.amount}}', internal_note: 'not for approvers' },
        },
        {
          id: 'pay',
          tool: 'echo',
          depends_on: ['sign_off'],
          when: 'steps.sign_off.output.approved',
          input: { ticket: '{{steps.sign_off.output.fields.ticket}}' },
        },
      ],
    });
    expect(defined.status, JSON.stringify(defined.body)).toBe(201);
    const lenient = await h.request('POST', '/workflows', {
      name: 'quick_sign_off',
      steps: [{ id: 'sign_off', wait: { approval: {}, timeout_ms: 300, on_timeout: 'continue' } }],
    });
    expect(lenient.status).toBe(201);
  }, 60_000);
  afterAll(async () => {
    await browser?.close();
    await h?.close();
  });

  it('shows what is to be approved, refuses a form that does not fit, records the decision once with who made it; the other links then change nothing', async () => {
    const id = await submit(h, { task_type: 'pay_supplier', params: { amount: 1234.5 } });
    const links = await linksOf(id, 'sign_off');
    expect(links.map((link) => link.approver)).toEqual(['alice', 'bob']);
    const [alice, bob] = links as [Link, Link];

    const opened = await page.goto(local(alice));
    expect(opened?.status()).toBe(200);
    expect(await page.textContent('h1')).toContain('Approval requested: sign_off');
    const body = (await page.textContent('body')) ?? '';
    expect(body).toContain('for alice');
    expect(body).toContain('1234.5');
    expect(body).not.toContain('not for approvers');

    // A form the schema refuses (a browser keeps a number field numeric; a client need not): the page again, with the problem.
    const refused = await fetch(local(alice), {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'decision=approved&fields.ticket=abc',
    });
    expect(refused.status).toBe(400);
    expect(await refused.text()).toContain('fields.ticket');
    expect((await h.request('GET', `/tasks/${id}`)).body.status).not.toBe('completed');

    await page.fill('#field-ticket', '77');
    await page.fill('#comment', 'Invoice checked <b>twice</b>');
    const [decided] = await Promise.all([page.waitForNavigation(), page.click('button[value="approved"]')]);
    expect(decided?.status()).toBe(200);
    expect(await page.textContent('h1')).toBe('Decision recorded: approved');

    const done = await waitForTask(h, id);
    expect(done.status).toBe('completed');
    const step = done.steps.find((candidate: { id: string }) => candidate.id === 'sign_off');
    expect(step.output).toMatchObject({
      decision: 'approved',
      approved: true,
      by: 'alice',
      comment: 'Invoice checked <b>twice</b>',
      fields: { ticket: 77, urgent: false },
    });
    expect(done.steps.find((candidate: { id: string }) => candidate.id === 'pay').output).toEqual({ ticket: 77 });

    for (const link of [alice, bob]) {
      const again = await page.goto(local(link));
      expect(again?.status()).toBe(409);
      expect(await page.textContent('h1')).toBe('This approval is closed');
    }
    const reused = await fetch(local(bob), { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'decision=rejected' });
    expect(reused.status).toBe(409);
    const after = (await h.request('GET', `/tasks/${id}`)).body.steps.find((candidate: { id: string }) => candidate.id === 'sign_off');
    expect(after.output).toEqual(step.output);
  });

  it('refuses a tampered link (403) and an expired one (410) with a page that says so', async () => {
    const id = await submit(h, { task_type: 'pay_supplier', params: { amount: 5 } });
    const [alice] = (await linksOf(id, 'sign_off')) as [Link];
    const url = local(alice);
    const flipped = url.slice(0, -1) + (url.endsWith('A') ? 'B' : 'A');
    const tampered = await page.goto(flipped);
    expect(tampered?.status()).toBe(403);
    expect(await page.textContent('h1')).toBe('This link is not valid');
    // Another task's id in a payload signed for this one.
    const [payload, signature] = new URL(url).pathname.split('/').at(-1)!.split('.') as [string, string];
    const fields = JSON.parse(Buffer.from(payload, 'base64url').toString());
    fields[0] = '00000000-0000-7000-8000-000000000000';
    const forged = await page.goto(`${h.url}/approvals/${Buffer.from(JSON.stringify(fields)).toString('base64url')}.${signature}`);
    expect(forged?.status()).toBe(403);
    const garbage = await page.goto(`${h.url}/approvals/not-a-token`);
    expect(garbage?.status()).toBe(400);
    expect((await h.request('GET', `/tasks/${id}`)).body.steps[0].status).toBe('waiting');
    await h.request('POST', `/tasks/${id}/cancel`);

    const quick = await submit(h, { task_type: 'quick_sign_off' });
    const [anyone] = (await linksOf(quick, 'sign_off')) as [Link];
    expect(anyone.approver).toBeNull();
    const timedOut = await waitForTask(h, quick);
    expect(timedOut.steps[0].output).toMatchObject({ decision: 'timed_out', approved: false });
    const expired = await page.goto(local(anyone));
    expect(expired?.status()).toBe(410);
    expect(await page.textContent('h1')).toBe('This link has expired');
  });

  it('runs the shipped batch_approval example: approve_batches runs only after a person approves through the link', async () => {
    const id = await submit(h, { task_type: 'batch_approval', params: { batch_ids: [1, 'b-2'], requested_by: 'finance' } });
    const [link] = (await linksOf(id, 'review')) as [Link];
    expect((await h.request('GET', `/tasks/${id}`)).body.steps.find((step: { id: string }) => step.id === 'approve_batches').status).toBe('pending');
    await page.goto(local(link));
    expect(await page.textContent('body')).toContain('finance');
    await page.fill('#name', 'Dana');
    await page.fill('#field-ticket', 'CHG-1');
    await Promise.all([page.waitForNavigation(), page.click('button[value="approved"]')]);
    const done = await waitForTask(h, id);
    expect(done.status).toBe('completed');
    expect(done.result).toEqual({ decision: 'approved', by: 'link:Dana', processed: 2 });
    const steps = Object.fromEntries(done.steps.map((step: { id: string; status: string }) => [step.id, step.status]));
    expect(steps).toEqual({ review: 'completed', approve_batches: 'completed', report_rejection: 'skipped' });
  });
});
