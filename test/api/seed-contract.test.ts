import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeTestConnections, testTools } from '../fixtures/tools.js';
import { createHarness, type Harness, poll, submit } from '../helpers/harness.js';

/**
 * The request examples of the Celery-style orchestrator's contract that this service replaces,
 * sent exactly as that contract writes them (trailing slash, integer ids, bytes as written), to a
 * service configured as a default install: frontends written against it must keep working.
 */
const SEED_ASSIGN_BODY = '{"task_type": "approve_batches", "params": {"batch_ids": [1, 2, 3], "auto_approve": true}}';

describe("the seed contract's examples", () => {
  let h: Harness;

  beforeAll(async () => {
    h = await createHarness({ tools: testTools });
  });
  afterAll(async () => {
    await h?.close();
    await closeTestConnections();
  });

  it('POST /assign-task/ with the approve_batches example completes, and GET /result/<id> shows its result', async () => {
    const assigned = await fetch(`${h.url}/assign-task/`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: SEED_ASSIGN_BODY });
    expect(assigned.status).toBe(202);
    const body = (await assigned.json()) as Record<string, string>;
    expect(body).toMatchObject({
      task_id: expect.any(String),
      status: 'assigned',
      message: "Task 'approve_batches' successfully assigned",
      timestamp: expect.any(String),
    });

    // Polled as the seed's clients do: plain GET /result/<id>, no ?wait.
    const result = await poll(
      async () => {
        const response = await fetch(`${h.url}/result/${body.task_id}`);
        expect(response.status).toBe(200);
        const view = (await response.json()) as Record<string, any>;
        return view.status === 'queued' || view.status === 'running' ? undefined : view;
      },
      { label: 'the approve_batches task to end' },
    );
    expect(result).toMatchObject({ task_id: body.task_id, task_type: 'approve_batches', status: 'completed', progress: { completed: 1, total: 1 } });
    // Integer ids come back as integers.
    expect(result.result).toEqual({ processed_batches: 3, approved: [1, 2, 3], rejected: [] });
    expect(result).not.toHaveProperty('error');
    expect(result).not.toHaveProperty('error_message');
  });

  it("a failed task's result carries its error as text too, as the seed's clients print it", async () => {
    const id = await submit(h, { task_type: 'broken', params: { message: 'Connection timeout to ESC system' } });
    const failed = await poll(
      async () => {
        const view = (await (await fetch(`${h.url}/result/${id}`)).json()) as Record<string, any>;
        return view.status === 'failed' ? view : undefined;
      },
      { label: 'the broken task to fail' },
    );
    expect(failed.error).toMatchObject({ name: 'NonRetryableError', message: 'Connection timeout to ESC system' });
    expect(failed.error_message).toEqual(expect.stringContaining('Connection timeout to ESC system'));
  });

  it("GET /result carries the task's params only when asked (?include=params); anything else there is a 400", async () => {
    const id = await submit(h, { task_type: 'echo', params: { order: 42, tags: ['a'] } });
    const plain = (await (await fetch(`${h.url}/result/${id}`)).json()) as Record<string, unknown>;
    expect(plain).not.toHaveProperty('params');
    const withParams = (await (await fetch(`${h.url}/result/${id}?include=params`)).json()) as Record<string, unknown>;
    expect(withParams.params).toEqual({ order: 42, tags: ['a'] });
    expect((await fetch(`${h.url}/result/${id}?include=secrets`)).status).toBe(400);
  });

  it('GET /redoc answers an HTML page that loads the ReDoc bundle from this server, and the bundle is served', async () => {
    const page = await fetch(`${h.url}/redoc`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/^text\/html/);
    const html = await page.text();
    const src = /<script\b[^>]*\bsrc="([^"]+)"/.exec(html)?.[1];
    expect(src).toBe('/redoc/redoc.standalone.js');
    const bundle = await fetch(new URL(src!, h.url));
    expect(bundle.status).toBe(200);
    expect(bundle.headers.get('content-type')).toMatch(/javascript/);
    expect(await bundle.text()).toContain('Redoc');
  });
});
