import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { BUILT_IN_OWNER } from '../../src/fleet/worker-fleet.js';
import { PACKAGE } from '../../src/lib/package-root.js';
import { dropDatabase } from '../../src/persistence/database.js';
import { EXAMPLES_DIR } from '../../src/workflows/workflow-service.js';
import { createToolRegistry } from '../../workers/adapters/index.js';
import { type NodeProcess, runEntry } from '../helpers/child-process.js';
import { databaseUrl, TEST_REDIS_URL } from '../helpers/env.js';
import { poll, uniqueName } from '../helpers/harness.js';

/**
 * The production entry points as `npm run api` and `npm run worker` start them (src/api/main.ts,
 * workers/main.ts), on a fresh database: the API imports no adapter, so it knows no tool until
 * the built-in worker registers its own, as any worker does. Then echo runs, GET /tools and GET
 * /workers show the built-in worker, params are checked against the registered JSON Schemas, and
 * the shipped example workflows are loaded. Its tools outlive it: a task waits for it to return.
 */

const KEY = 'builtin-worker-admin-key-0123456789';
const BUILT_IN = ['approve_batches', 'echo', 'http', 'notify', 'sleep', 'text_stats'];

describe('the built-in worker registers its tools with an API that imports none', () => {
  const children: NodeProcess[] = [];
  const url = databaseUrl(uniqueName('orch_builtin'));
  const env = {
    DATABASE_URL: url,
    REDIS_URL: TEST_REDIS_URL,
    QUEUE_PREFIX: `{${uniqueName('builtin')}}`,
    API_KEYS: KEY,
    HOST: '127.0.0.1',
    LOG_FORMAT: 'json',
    LOG_LEVEL: 'info',
    WORKER_CONCURRENCY: '7',
  };
  const start = (entry: string, extra: Record<string, string> = {}) => {
    const child = runEntry(entry, { ...env, ...extra });
    children.push(child);
    return child;
  };
  afterEach(async () => {
    await Promise.all(children.splice(0).map((child) => child.kill()));
  });
  afterAll(async () => {
    await dropDatabase(url);
  });

  it('on a fresh database: no tools before the worker; then echo runs, GET /tools and GET /workers show it, params are checked, examples load', {
    // Four processes start (tsx): minutes on a busy machine.
    timeout: 300_000,
  }, async () => {
    const api = start('src/api/main.ts', { PORT: '0' });
    await api.waitForOutput(/"message":"API listening"/);
    const base = /"url":"(http:\/\/[^"]+)"/.exec(api.output)![1]!;
    const call = async (method: string, path: string, body?: unknown) => {
      const response = await fetch(`${base}${path}`, {
        method,
        headers: { authorization: `Bearer ${KEY}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
      return { status: response.status, body: (await response.json()) as any };
    };
    const tools = async () =>
      (await call('GET', '/tools')).body.tools as {
        name: string;
        fleet?: { version: number; live_workers: number };
        concurrency: number | null;
        rate_limit: { max: number; duration_ms: number } | null;
      }[];

    // Before the worker: the API knows no tool, a task of one is unknown, and the examples wait (no warning).
    expect(await tools()).toEqual([]);
    const early = await call('POST', '/assign-task', { task_type: 'echo', params: {} });
    expect(early.status).toBe(404);
    expect(early.body.error).toMatchObject({ code: 'unknown_task_type', details: { tools: [] } });
    expect(api.output).toMatch(/"message":"example workflows wait for their tools/);
    expect(api.output).not.toMatch(/"level":"(warn|error)"/);
    expect((await call('GET', '/workflows')).body.workflows).toEqual([]);

    const worker = start('workers/main.ts');
    await worker.waitForOutput(/"message":"worker started"/);
    expect(worker.output).toMatch(/"message":"built-in tools registered"/);
    const listed = await poll(
      async () => {
        const now = await tools();
        return BUILT_IN.every((name) => now.some((tool) => tool.name === name)) ? now : undefined;
      },
      // Announced: at once on a quiet machine, within the API's 5 s reload at worst.
      { label: 'the API to know the built-in tools', timeoutMs: 15_000 },
    );
    expect(listed.map((tool) => tool.name)).toEqual(BUILT_IN);
    for (const tool of listed) expect(tool.fleet, tool.name).toEqual({ version: 1, live_workers: 1 });
    // The limits each adapter declares, registered with it: the API shows what the worker applies.
    const adapters = createToolRegistry();
    for (const tool of listed) {
      const adapter = adapters.get(tool.name)!;
      expect({ concurrency: tool.concurrency, rate_limit: tool.rate_limit }, tool.name).toEqual({
        concurrency: adapter.concurrency ?? null,
        rate_limit: adapter.rate_limit ?? null,
      });
    }
    expect(listed.find((tool) => tool.name === 'approve_batches')).toMatchObject({ concurrency: 5, rate_limit: { max: 100, duration_ms: 1_000 } });
    // Bull Board shows their queues before any task of them, though the API started knowing none.
    const board = (await call('GET', '/admin/queues/api/queues')).body.queues as { name: string }[];
    for (const name of BUILT_IN) expect(board.map((queue) => queue.name)).toContain(`tool.${name}`);

    const workers = (await call('GET', '/workers')).body.workers;
    expect(workers).toEqual([
      expect.objectContaining({
        owner: BUILT_IN_OWNER,
        pid: worker.child.pid,
        version: PACKAGE.version,
        concurrency: 7,
        tools: BUILT_IN,
        live: true,
        worker_id: expect.stringMatching(new RegExp(`-${worker.child.pid}-[0-9a-f]{6}$`)),
      }),
    ]);
    expect(worker.output).toContain(workers[0].worker_id);

    const submitted = await call('POST', '/assign-task', { task_type: 'echo', params: { hello: 'world', n: 1 } });
    expect(submitted.status, JSON.stringify(submitted.body)).toBe(202);
    const done = await call('GET', `/result/${submitted.body.task_id}?wait=20`);
    expect(done.body).toMatchObject({ status: 'completed', result: { hello: 'world', n: 1 } });

    // Params are checked against the registered JSON Schema, before anything is stored: the contract's 400, one entry per problem.
    const wrong = await call('POST', '/assign-task', { task_type: 'sleep', params: { ms: -5, extra: true } });
    expect(wrong.status).toBe(400);
    expect(wrong.body.error).toMatchObject({ code: 'invalid_params', message: "params do not fit the input schema of tool 'sleep'" });
    expect(wrong.body.error.details).toEqual([{ path: 'params.ms', message: expect.stringMatching(/0/) }]);
    const missing = await call('POST', '/assign-task', { task_type: 'http', params: { method: 'FETCH' } });
    expect(missing.status).toBe(400);
    expect(missing.body.error.details.map((problem: { path: string }) => problem.path).sort()).toEqual(['params.method', 'params.url']);
    // What the adapters' zod refinements check, their JSON Schemas say too (workers/adapters/http.ts, notify.ts).
    const problems = async (tool: string, params: unknown) => {
      const answer = await call('POST', '/assign-task', { task_type: tool, params });
      expect(answer.status, JSON.stringify(answer.body)).toBe(400);
      return answer.body.error.details.map((problem: { path: string }) => problem.path);
    };
    expect(await problems('http', { url: 'ftp://example.com/file' })).toEqual(['params.url']);
    expect(await problems('http', { url: 'https://example.com/', headers: { 'x-note': 'one\r\nHost: elsewhere' } })).toEqual(['params.headers["x-note"]']);
    // What of `then` failed, alone: not also the interpreter's 'does not match "then" schema' at params.
    expect(await problems('notify', { channel: 'webhook', message: 'hi' })).toEqual(['params.url']);
    expect((await call('POST', '/assign-task', { task_type: 'notify', params: { message: 'logged' } })).status).toBe(202);
    // A URL's scheme in capitals fits the pattern as it fits zod's check (a workflow's literal input is checked against the schema when it is stored).
    const capitals = await call('POST', '/workflows', { name: 'capital_scheme', steps: [{ id: 'get', tool: 'http', input: { url: 'HTTPS://example.com/' } }] });
    expect(capitals.status, JSON.stringify(capitals.body)).toBe(201);

    // The built-in worker loaded the examples once it had registered their tools.
    const files = (await readdir(EXAMPLES_DIR)).filter((file) => file.endsWith('.json'));
    const examples = await poll(
      async () => {
        const stored = ((await call('GET', '/workflows')).body.workflows as { name: string }[]).filter((workflow) => workflow.name !== 'capital_scheme');
        return stored.length === files.length ? stored : undefined;
      },
      { label: 'every example workflow stored', timeoutMs: 30_000 },
    );
    expect(examples).toHaveLength(files.length);
    expect(worker.output).toMatch(/"message":"loaded example workflows"/);
    // The worker checked them with its adapters' zod types; the API, with the registered JSON Schemas, finds them as sound.
    for (const file of files) {
      const stored = await call('POST', '/workflows', JSON.parse(await readFile(path.join(EXAMPLES_DIR, file), 'utf8')));
      expect(stored.status, `${file}: ${JSON.stringify(stored.body)}`).toBe(201);
    }
    expect(worker.output).not.toMatch(/"level":"(warn|error)"/);
    const diamond = await call('POST', '/workflows/diamond/execute', { parameters: {} });
    expect(diamond.status, JSON.stringify(diamond.body)).toBe(202);
    expect((await call('GET', `/result/${diamond.body.task_id}?wait=20`)).body.status).toBe('completed');

    // Its tools outlive it: stopped, echo stays known and its task queues until a built-in worker returns.
    expect((await worker.signal('SIGTERM')).code).toBe(0);
    expect((await tools()).map((tool) => tool.name)).toEqual(BUILT_IN);
    // Its row stays (the last to serve these tools), and says at once that it is not live, not three heartbeats later.
    expect((await call('GET', '/workers')).body.workers).toEqual([
      expect.objectContaining({ worker_id: workers[0].worker_id, live: false, running: [], running_count: 0 }),
    ]);
    for (const tool of await tools()) expect(tool.fleet, tool.name).toEqual({ version: 1, live_workers: 0 });
    const queued = await call('POST', '/assign-task', { task_type: 'echo', params: { later: true } });
    expect(queued.status).toBe(202);
    expect((await call('GET', `/result/${queued.body.task_id}`)).body.status).toBe('queued');
    const again = start('workers/main.ts');
    expect((await call('GET', `/result/${queued.body.task_id}?wait=30`)).body).toMatchObject({ status: 'completed', result: { later: true } });
    // The stopped worker's row goes once a live one serves its tools: the new one's first registration removes it
    // (it used to wait until the stopped one was past three heartbeats).
    await poll(
      async () => {
        const now = (await call('GET', '/workers')).body.workers as { pid: number; live: boolean }[];
        return now.length === 1 && now[0]!.pid === again.child.pid && now[0]!.live;
      },
      { label: 'only the new built-in worker listed', timeoutMs: 60_000 },
    );
    expect((await tools()).find((tool) => tool.name === 'echo')?.fleet).toEqual({ version: 1, live_workers: 1 });
    expect(api.output).not.toMatch(/"level":"(warn|error)"/);
  });
});
