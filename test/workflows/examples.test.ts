import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHarness, type Harness, submit, waitForTask } from '../helpers/harness.js';

describe('example workflows shipped with the service', () => {
  let h: Harness;
  let server: http.Server;
  let port: number;
  /** What the booking service was asked (method and path), and the notices it took. */
  let trips: string[];
  let notices: { message: string; data: Record<string, unknown> }[];
  beforeAll(async () => {
    // A job that is done on its third status request, and an API of three pages.
    let polls = 0;
    trips = [];
    notices = [];
    const pages: Record<string, { items: number[]; next?: string }> = { '': { items: [1, 2], next: 'c2' }, c2: { items: [3], next: 'c3' }, c3: { items: [4] } };
    server = http.createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://localhost');
      const json = (body: unknown) => {
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify(body));
      };
      if (req.method === 'POST' && url.pathname === '/jobs') return json({ id: 'j1', status_url: `http://127.0.0.1:${port}/jobs/j1` });
      // The trip bookings: a hotel, a flight and a car are booked (a car for a trip named no-car-… is refused), cancelled by DELETE; the notices kept.
      const booking = /^\/(hotels|flights|cars)(?:\/([\w-]+))?$/.exec(url.pathname);
      if (booking || url.pathname === '/notices') {
        const chunks: Buffer[] = [];
        req.on('data', (chunk: Buffer) => chunks.push(chunk));
        req.on('end', () => {
          const body = chunks.length > 0 ? JSON.parse(Buffer.concat(chunks).toString('utf8')) : {};
          if (url.pathname === '/notices') {
            notices.push(body);
            return json({ ok: true });
          }
          trips.push(`${req.method} ${url.pathname}`);
          if (req.method === 'POST' && booking![1] === 'cars' && String(body.trip).startsWith('no-car')) {
            res.statusCode = 409;
            return json({ error: 'no car left' });
          }
          return json({ id: `${booking![1]}-${String(body.trip ?? booking![2])}` });
        });
        return;
      }
      if (url.pathname === '/jobs/j1') {
        polls += 1;
        return json(polls >= 3 ? { state: 'done', polls } : { state: 'running', polls });
      }
      if (url.pathname === '/pages') return json(pages[url.searchParams.get('cursor') ?? ''] ?? { items: [] });
      if (req.url === '/missing') {
        res.statusCode = 404;
        res.end('no such page');
        return;
      }
      res.setHeader('content-type', 'text/plain');
      res.end('The quick brown fox jumps over the lazy dog. The fox runs! Brown foxes everywhere.');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
    h = await createHarness({ env: { HTTP_TOOL_ALLOWED_HOSTS: `127.0.0.1:${port}` } });
  });
  afterAll(async () => {
    await h.close();
    await new Promise((resolve) => server.close(resolve));
  });

  it('are loaded on start', async () => {
    const { status, body } = await h.request('GET', '/workflows');
    expect(status).toBe(200);
    expect(body.workflows.map((w: { name: string }) => w.name).sort()).toEqual([
      'batch_approval',
      'book_trip',
      'diamond',
      'document_analysis',
      'enrich_customer',
      'fan_out_enrich',
      'fan_out_fan_in',
      'fetch_urls',
      'order_approval',
      'order_with_profile',
      'paginate_api',
      'poll_until_done',
    ]);
  });

  it('runs the saga with an exit handler: booked, the traveller told; a refused car undoes the flight and the hotel, then the notice says why', async () => {
    const params = (trip: string) => ({ trip_id: trip, base_url: `http://127.0.0.1:${port}`, notify_url: `http://127.0.0.1:${port}/notices` });
    const booked = await waitForTask(h, await submit(h, { task_type: 'book_trip', params: params('t-1') }));
    expect(booked).toMatchObject({ status: 'completed', result: { hotel: 'hotels-t-1', flight: 'flights-t-1', car: 'cars-t-1' } });
    expect(notices.find((notice) => notice.data.trip === 't-1')).toMatchObject({
      message: 'trip t-1 completed',
      data: { status: 'completed', reason: null, booked: { hotel: 'completed', flight: 'completed', car: 'completed' } },
    });

    const refused = await waitForTask(h, await submit(h, { task_type: 'book_trip', params: params('no-car-2') }));
    // The saga's own outcome: failed at the car, compensated; the notice did not change it.
    expect(refused).toMatchObject({ status: 'failed', compensated: true, error: { step: 'car' } });
    // Undone in reverse order, once each.
    const undone = trips.filter((call) => call.startsWith('DELETE') && call.endsWith('no-car-2'));
    expect(undone).toEqual(['DELETE /flights/flights-no-car-2', 'DELETE /hotels/hotels-no-car-2']);
    expect(notices.filter((notice) => notice.data.trip === 'no-car-2')).toEqual([
      expect.objectContaining({
        message: 'trip no-car-2 failed',
        data: expect.objectContaining({
          status: 'failed',
          reason: expect.stringContaining('409'),
          booked: { hotel: 'completed', flight: 'completed', car: 'failed' },
        }),
      }),
    ]);
    // After the compensations: the exit step started once both had finished.
    const steps = Object.fromEntries(refused.steps.map((step: { id: string }) => [step.id, step])) as Record<
      string,
      { started_at: string; finished_at: string }
    >;
    expect(Date.parse(steps.tell_traveller!.started_at)).toBeGreaterThanOrEqual(Date.parse(steps['hotel.compensate']!.finished_at));
  });

  it('runs the diamond: every step once, d after b and c', async () => {
    const id = await submit(h, { task_type: 'diamond', params: { value: 'v' } });
    const task = await waitForTask(h, id);
    expect(task.status).toBe('completed');
    expect(task.result).toEqual({ joined: 'v-b+v-c' });
    const at = Object.fromEntries(task.steps.map((s: any) => [s.id, s]));
    expect(Date.parse(at.d.started_at)).toBeGreaterThanOrEqual(Date.parse(at.b.finished_at));
    expect(Date.parse(at.d.started_at)).toBeGreaterThanOrEqual(Date.parse(at.c.finished_at));
    for (const step of task.steps) expect(step.attempts).toBe(1);
  });

  it('runs fan-out/fan-in 1 -> 10 -> 1 through /workflows/:name/execute', async () => {
    const { status, body } = await h.request('POST', '/workflows/fan_out_fan_in/execute', {
      parameters: { items: ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j'] },
    });
    expect(status).toBe(202);
    const task = await waitForTask(h, body.task_id);
    expect(task.status).toBe('completed');
    expect(task.result).toEqual({ values: ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j'] });
    expect(task.progress).toEqual({ completed: 12, total: 12 });
  });

  it('runs the document analysis against a local server', async () => {
    const id = await submit(h, { task_type: 'document_analysis', params: { url: `http://127.0.0.1:${port}/doc` } });
    const task = await waitForTask(h, id);
    expect(task.status).toBe('completed');
    expect(task.result).toMatchObject({ http_status: 200, words: 15 });
    expect(task.result.top_words[0]).toEqual({ word: 'brown', count: 2 });
  });

  it('runs the order approval: a small order takes the policy branch, a large one the review branch, and the join records either', async () => {
    const small = await waitForTask(h, await submit(h, { task_type: 'order_approval', params: { order_id: 'o-1', amount: 120 } }));
    expect(small).toMatchObject({ status: 'completed', result: { order_id: 'o-1', decision: 'approved', sent_to_review: 'skipped' } });
    const large = await waitForTask(h, await submit(h, { task_type: 'order_approval', params: { order_id: 'o-2', amount: 12_000 } }));
    expect(large).toMatchObject({ status: 'completed', result: { order_id: 'o-2', decision: null, sent_to_review: 'completed' } });
    const steps = Object.fromEntries(large.steps.map((s: any) => [s.id, s]));
    expect(steps.auto_approve).toMatchObject({ status: 'skipped', reason: 'condition' });
    expect(steps.record).toMatchObject({ status: 'completed', output: { order_id: 'o-2', auto: 'skipped', review: 'completed' } });
  });

  it('runs the map over URLs: each fetched once, in order, a failing one reported in its place', async () => {
    const urls = [1, 2, 3, 4, 5, 6, 7].map((n) => `http://127.0.0.1:${port}/page-${n}`);
    const task = await waitForTask(h, await submit(h, { task_type: 'fetch_urls', params: { urls: [...urls, `http://127.0.0.1:${port}/missing`] } }), 30_000);
    expect(task.status).toBe('completed');
    expect(task.result.pages).toHaveLength(8);
    expect(task.result.pages.slice(0, 7).map((page: { status: number }) => page.status)).toEqual(Array(7).fill(200));
    expect(task.result.pages[7]).toEqual({ error: expect.objectContaining({ name: 'NonRetryableError' }) });
  });

  it('runs the parent with a sub-workflow: the child is a task of its own, and its result prices the order', async () => {
    const task = await waitForTask(h, await submit(h, { task_type: 'order_with_profile', params: { order_id: 'o-3', customer_id: 'c-9' } }));
    expect(task).toMatchObject({
      status: 'completed',
      result: { order_id: 'o-3', customer: { customer_id: 'c-9', tier: 'gold', score: 87 }, price: { order_id: 'o-3', tier: 'gold', discount: 87 } },
    });
    const child = task.steps.find((step: { id: string }) => step.id === 'enrich').child_task_id;
    expect((await h.request('GET', `/result/${child}`)).body).toMatchObject({
      task_type: 'enrich_customer',
      status: 'completed',
      parent: { task_id: task.task_id },
    });
  });

  it('polls a job until it is done: three status requests, a second apart, then its final status', async () => {
    const task = await waitForTask(h, await submit(h, { task_type: 'poll_until_done', params: { start_url: `http://127.0.0.1:${port}/jobs` } }), 30_000);
    expect(task.status).toBe('completed');
    expect(task.result).toEqual({ job: 'j1', status: { state: 'done', polls: 3 } });
    const poll = task.steps.find((step: { id: string }) => step.id === 'poll');
    expect(poll.iterations).toBe(3);
    expect(Date.parse(poll.finished_at) - Date.parse(poll.started_at)).toBeGreaterThanOrEqual(2_000);
  });

  it('reads every page of an API, each request with the cursor the page before gave, until a page has none', async () => {
    const id = await submit(h, { task_type: 'paginate_api', params: { url: `http://127.0.0.1:${port}/pages` } });
    const task = await waitForTask(h, id, 30_000);
    expect(task.status).toBe('completed');
    expect(task.result).toEqual({ last_page: { items: [4] } });
    const pages = (await h.request('GET', `/tasks/${id}/steps/page/items`)).body.items as { input: { url: string }; output: { body: unknown } }[];
    expect(pages.map((page) => [page.input.url.replace(/^.*\/pages/, '/pages'), page.output.body])).toEqual([
      ['/pages', { items: [1, 2], next: 'c2' }],
      ['/pages?cursor=c2', { items: [3], next: 'c3' }],
      ['/pages?cursor=c3', { items: [4] }],
    ]);
  });
  type Item = {
    item: number;
    status: string;
    input: unknown;
    output?: unknown;
    error?: unknown;
    child_task_id: string;
    started_at: string;
    finished_at: string;
  };
  const itemsOf = async (id: string, step: string) => (await h.request('GET', `/tasks/${id}/steps/${step}/items?limit=100`)).body.items as Item[];

  it('fans enrich_customer out over the ids, a child task each and at most five at once, and joins their results in the order of the ids', async () => {
    const ids = ['c-1', 'c-2', 'c-3', 'c-4', 'c-5', 'c-6', 'c-7'];
    const id = await submit(h, { task_type: 'fan_out_enrich', params: { ids } });
    const task = await waitForTask(h, id, 30_000);
    expect(task.status).toBe('completed');
    const customers = ids.map((customer_id) => ({ customer_id, tier: 'gold', score: 87 }));
    expect(task.result).toEqual({ customers, enriched: 7, failed: 0, results: customers });
    expect(task.steps.find((step: { id: string }) => step.id === 'enrich')).toMatchObject({
      kind: 'workflow',
      status: 'completed',
      items: { total: 7, done: 7, failed: 0, running: 0 },
    });

    // Each item ran a child of its own with its id, and its result is the child's.
    const items = await itemsOf(id, 'enrich');
    expect(items.map((item) => [item.item, item.status, item.input, item.output])).toEqual(
      customers.map((customer, n) => [n, 'completed', { customer_id: ids[n] }, customer]),
    );
    const children = items.map((item) => item.child_task_id);
    expect(new Set(children).size).toBe(7);
    for (const [n, child] of children.entries()) {
      expect((await h.request('GET', `/result/${child}`)).body).toMatchObject({
        task_type: 'enrich_customer',
        status: 'completed',
        result: customers[n],
        parent: { task_id: id, step_id: 'enrich' },
      });
    }
    const listed = (await h.request('GET', `/tasks?parent=${id}&limit=50`)).body.items as { task_id: string; task_type: string; parent_task_id: string }[];
    expect(listed.map((child) => child.task_id).sort()).toEqual([...children].sort());
    expect(new Set(listed.map((child) => `${child.task_type} ${child.parent_task_id}`))).toEqual(new Set([`enrich_customer ${id}`]));

    // At most five children ran at once: the sixth and seventh started once others had ended.
    const running = (at: number) => items.filter((item) => Date.parse(item.started_at) <= at && at < Date.parse(item.finished_at)).length;
    for (const item of items) expect(running(Date.parse(item.started_at))).toBeLessThanOrEqual(5);
    const firstEnd = Math.min(...items.map((item) => Date.parse(item.finished_at)));
    expect(items.filter((item) => Date.parse(item.started_at) < firstEnd)).toHaveLength(5);
  });

  it('fans out with a failing child: its place in the results is its error, the join keeps the others, and the task completes', async () => {
    // 42 is no string: enrich_customer's customer_id refuses it, so that child cannot start.
    const id = await submit(h, { task_type: 'fan_out_enrich', params: { ids: ['c-1', 42, 'c-3'] } });
    const task = await waitForTask(h, id, 30_000);
    expect(task.status).toBe('completed');
    const [first, third] = ['c-1', 'c-3'].map((customer_id) => ({ customer_id, tier: 'gold', score: 87 }));
    const error = {
      name: 'SubWorkflowFailed',
      message: expect.stringMatching(/^the child task could not start: params do not fit the parameters of workflow 'enrich_customer'/),
      retryable: false,
      details: {
        error: expect.objectContaining({
          name: 'InvalidChildParams',
          details: [{ path: 'input.customer_id', message: expect.stringContaining('expected string') }],
        }),
      },
    };
    expect(task.result).toEqual({ customers: [first, third], enriched: 2, failed: 1, results: [first, { error }, third] });
    expect(task.steps.find((step: { id: string }) => step.id === 'enrich')).toMatchObject({ status: 'completed', items: { total: 3, done: 3, failed: 1 } });

    const items = await itemsOf(id, 'enrich');
    expect(items.map((item) => item.status)).toEqual(['completed', 'failed', 'completed']);
    expect(items[1]).toMatchObject({ input: { customer_id: 42 }, error });
    // The failed item's child was never made: it names none, and the parent lists the other two.
    expect(items[1]!.child_task_id).toBeUndefined();
    const listed = (await h.request('GET', `/tasks?parent=${id}&limit=50`)).body.items as { task_id: string; status: string }[];
    expect(listed.map((child) => child.task_id).sort()).toEqual([items[0]!.child_task_id, items[2]!.child_task_id].sort());
  });
});
