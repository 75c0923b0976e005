import net from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { toolRegistration, workerRegistration } from '../fixtures/worker-registration.js';
import { type NodeProcess, runEntry } from '../helpers/child-process.js';
import { createHarness, type Harness, poll, waitForTask } from '../helpers/harness.js';
import { freePort } from '../helpers/ports.js';

/**
 * A worker of a user's own (issue 30): a process with the SDK (workers/sdk) and one tool of its
 * own, started with REDIS_URL, ORCHESTRATOR_URL and a `worker` key only, never DATABASE_URL. It
 * registers its tool with the API, takes its jobs from Redis, and its results reach PostgreSQL
 * through the API (POST /workers/{id}/steps).
 */

const ADMIN = 'admin:user-worker-admin-key-0123456789';
const WORKER = 'worker@acme:user-worker-worker-key-0123456789';
const CLIENT = 'client@alice:user-worker-client-key-0123456789';
/** Another team's worker key: it may not forget acme's workers. */
const OTHER_WORKER = 'worker@zeta:user-worker-other-key-0123456789';
const bearer = (entry: string) => ({ authorization: `Bearer ${entry.slice(entry.indexOf(':') + 1)}` });

describe('a worker of a user’s own', () => {
  let h: Harness;
  const children: NodeProcess[] = [];
  const startUserWorker = async (env: Record<string, string> = {}, started = true) => {
    const child = runEntry('test/fixtures/user-worker.ts', {
      REDIS_URL: h.config.REDIS_URL,
      ORCHESTRATOR_URL: h.url,
      ORCHESTRATOR_API_KEY: WORKER.slice(WORKER.indexOf(':') + 1),
      LOG_LEVEL: 'info',
      // Every worker of the file alike, as in a deployment: a dead worker's job is taken back after
      // 2 s. BullMQ lets one worker per stalled interval look for stalled jobs (a key with that
      // interval's TTL), so a worker with the default 30 s would hold the SIGKILL test's rescuer
      // back for up to 30 s.
      WORKER_LOCK_DURATION_MS: '2000',
      ...env,
    });
    children.push(child);
    if (started) await child.waitForOutput(/worker started/);
    return child;
  };
  beforeAll(async () => {
    h = await createHarness({
      env: {
        API_KEYS: [ADMIN, WORKER, CLIENT, OTHER_WORKER].join(','),
        // One test submits 200 tasks at once from one key: the front door's cap of requests in
        // flight per key (64 by default; test/api/quotas.test.ts tests it) refused one in a CI run.
        ADMISSION_MAX_IN_FLIGHT_PER_KEY: '0',
      },
    });
  });
  afterEach(async () => {
    for (const child of children.splice(0)) await child.kill();
  });
  afterAll(async () => {
    await h?.close();
  });

  it('runs its tool without DATABASE_URL; the API validates params with the registered schema; a workflow mixes it with a built-in tool', async () => {
    const child = await startUserWorker({ SHOUT_PREFIX: '>' });
    expect(child.output).not.toContain(h.config.DATABASE_URL);
    // What the API hands a worker names no database.
    const registration = await h.request('PUT', '/workers/probe-1', workerRegistration([toolRegistration('probe_tool')], { host: 'probe' }), bearer(WORKER));
    expect(registration.status, JSON.stringify(registration.body)).toBe(200);
    const answer = JSON.stringify(registration.body);
    expect(answer).not.toContain(new URL(h.config.DATABASE_URL).host);
    expect(answer).not.toMatch(/postgres/i);

    const submitted = await h.request('POST', '/assign-task', { task_type: 'shout', params: { text: 'hello' } }, bearer(CLIENT));
    expect(submitted.status, JSON.stringify(submitted.body)).toBe(202);
    const task = await waitForTask(h, submitted.body.task_id, 30_000, bearer(ADMIN));
    expect(task).toMatchObject({ status: 'completed', result: { text: '>HELLO', pid: child.child.pid } });
    const step = await h.db.prisma.step.findFirst({ where: { taskId: submitted.body.task_id } });
    expect(step).toMatchObject({ status: 'completed', output: { text: '>HELLO', pid: child.child.pid } });

    // What the tool logged is kept with its attempt, secret-named fields redacted; not in the history.
    const logs = await h.request('GET', `/tasks/${submitted.body.task_id}/steps/shout/logs`, undefined, bearer(CLIENT));
    expect(logs.status, JSON.stringify(logs.body)).toBe(200);
    expect(logs.body.attempts).toEqual([
      expect.objectContaining({
        attempt: 1,
        dropped: 0,
        lines: [expect.objectContaining({ level: 'info', message: 'shouting', fields: { length: 5, api_token: '[redacted]' } })],
      }),
    ]);
    const history = await h.request('GET', `/tasks/${submitted.body.task_id}/history`, undefined, bearer(CLIENT));
    expect(history.body.events.map((event: { type: string }) => event.type)).not.toContain('attempt_logs');
    expect((await h.request('GET', `/tasks/${submitted.body.task_id}/steps/nope/logs`, undefined, bearer(CLIENT))).status).toBe(404);

    // Params that do not fit the registered JSON Schema: 400, nothing stored.
    const wrong = await h.request('POST', '/assign-task', { task_type: 'shout', params: { text: 42 } }, bearer(CLIENT));
    expect(wrong.status).toBe(400);
    expect(JSON.stringify(wrong.body.error)).toMatch(/text/);

    const workflow = await h.request(
      'POST',
      '/workflows',
      {
        name: 'echo_then_shout',
        parameters: [{ name: 'text', type: 'string', required: true }],
        steps: [
          { id: 'say', tool: 'echo', input: { text: '{{params.text}}' } },
          { id: 'loud', tool: 'shout', depends_on: ['say'], input: { text: '{{steps.say.output.text}}' } },
        ],
      },
      bearer(ADMIN),
    );
    expect(workflow.status, JSON.stringify(workflow.body)).toBe(201);
    const run = await h.request('POST', '/assign-task', { task_type: 'echo_then_shout', params: { text: 'mixed' } }, bearer(CLIENT));
    expect(run.status, JSON.stringify(run.body)).toBe(202);
    expect(await waitForTask(h, run.body.task_id, 30_000, bearer(ADMIN))).toMatchObject({ status: 'completed', result: { loud: { text: '>MIXED' } } });
  });

  it('is listed by GET /workers and deregisters as it stops; its tool outlives it: tasks queue until a worker returns', async () => {
    const first = await startUserWorker();
    const listed = await h.request('GET', '/workers', undefined, bearer(ADMIN));
    expect(listed.status).toBe(200);
    const mine = listed.body.workers.find((worker: { pid: number }) => worker.pid === first.child.pid);
    expect(mine).toMatchObject({ owner: 'acme', tools: ['shout'], live: true });
    // A worker key may do nothing else.
    expect((await h.request('GET', '/tasks', undefined, bearer(WORKER))).status).toBe(403);
    expect((await h.request('POST', '/assign-task', { task_type: 'echo', params: {} }, bearer(WORKER))).status).toBe(403);

    const served = async () => (await h.request('GET', '/tools', undefined, bearer(ADMIN))).body.tools.find((tool: { name: string }) => tool.name === 'shout');
    // Live by heartbeat: the first test's worker, killed a moment ago, may still count.
    expect((await served()).fleet.live_workers).toBeGreaterThanOrEqual(1);
    expect((await first.signal('SIGTERM')).code).toBe(0);
    // Stopped, it forgot itself (DELETE /workers/{id} with its own key); its tool is still known.
    const ids = async () =>
      (await h.request('GET', '/workers', undefined, bearer(ADMIN))).body.workers.map((worker: { worker_id: string }) => worker.worker_id);
    expect(await ids()).not.toContain(mine.worker_id);
    // With the limits its definition declares (test/fixtures/user-worker.ts), which its workers apply.
    expect(await served()).toMatchObject({ name: 'shout', fleet: { version: 1 }, concurrency: 4, rate_limit: { max: 1_000, duration_ms: 1_000 } });
    const queued = await h.request('POST', '/assign-task', { task_type: 'shout', params: { text: 'later' } }, bearer(CLIENT));
    expect(queued.status, JSON.stringify(queued.body)).toBe(202);
    expect((await h.request('GET', `/result/${queued.body.task_id}`, undefined, bearer(ADMIN))).body.status).toBe('queued');
    const second = await startUserWorker();
    expect(await waitForTask(h, queued.body.task_id, 30_000, bearer(ADMIN))).toMatchObject({
      status: 'completed',
      result: { text: 'LATER', pid: second.child.pid },
    });

    // Another team's worker key may not forget it; an admin key may.
    const secondId = (await h.request('GET', '/workers', undefined, bearer(ADMIN))).body.workers.find(
      (worker: { pid: number }) => worker.pid === second.child.pid,
    ).worker_id;
    const forget = (entry: string) => h.request('DELETE', `/workers/${encodeURIComponent(secondId)}`, undefined, bearer(entry));
    expect((await forget(OTHER_WORKER)).status).toBe(404);
    expect(await ids()).toContain(secondId);
    expect((await forget(ADMIN)).status).toBe(200);
    expect((await forget(ADMIN)).status).toBe(404);
    expect(await ids()).not.toContain(secondId);
  });

  it('loses nothing when a worker is SIGKILLed mid-step: the step is delivered again, to another worker, and recorded once', { timeout: 60_000 }, async () => {
    const doomed = await startUserWorker({ SHOUT_HANG: '1' });
    const submitted = await h.request('POST', '/assign-task', { task_type: 'shout', params: { text: 'hang' } }, bearer(CLIENT));
    expect(submitted.status).toBe(202);
    const id = submitted.body.task_id;
    await poll(async () => (await h.request('GET', `/result/${id}`, undefined, bearer(ADMIN))).body.steps?.[0]?.status === 'running', {
      label: 'the step to run in the doomed worker',
      timeoutMs: 30_000,
    });
    // Its next heartbeat says what it runs (GET /workers, the console's Workers page).
    const running = await poll(
      async () => {
        const listed = await h.request('GET', '/workers', undefined, bearer(ADMIN));
        const worker = listed.body.workers.find((candidate: { pid: number }) => candidate.pid === doomed.child.pid);
        return worker?.running_count === 1 ? worker.running : undefined;
      },
      { label: "the doomed worker's heartbeat to show the step", timeoutMs: 15_000 },
    );
    expect(running).toEqual([{ task_id: id, step_id: 'shout', tool: 'shout', since: expect.any(String) }]);
    doomed.child.kill('SIGKILL');
    await doomed.exited;
    const rescuer = await startUserWorker();
    const task = await waitForTask(h, id, 60_000, bearer(ADMIN));
    expect(task).toMatchObject({ status: 'completed', result: { text: 'HANG', pid: rescuer.child.pid } });
    const step = await h.db.prisma.step.findFirst({ where: { taskId: id } });
    expect(step).toMatchObject({ status: 'completed', attempts: 2 });
    expect(await h.db.prisma.task.count({ where: { id } })).toBe(1);
  });

  it('runs 200 tasks submitted at once, each recorded once (its reports group-sent to the API)', { timeout: 90_000 }, async () => {
    await startUserWorker();
    const ids = await Promise.all(
      Array.from({ length: 200 }, async (_, index) => {
        const answer = await h.request('POST', '/assign-task', { task_type: 'shout', params: { text: `n${index}` } }, bearer(CLIENT));
        expect(answer.status).toBe(202);
        return answer.body.task_id as string;
      }),
    );
    await poll(async () => (await h.db.prisma.task.count({ where: { id: { in: ids }, status: 'completed' } })) === ids.length || undefined, {
      label: '200 tasks completed',
      timeoutMs: 60_000,
    });
    const steps = await h.db.prisma.step.findMany({ where: { taskId: { in: ids } }, select: { status: true, attempts: true, output: true } });
    expect(steps).toHaveLength(200);
    expect(steps.every((step) => step.status === 'completed' && step.attempts === 1)).toBe(true);
    expect(new Set(steps.map((step) => (step.output as { text: string }).text)).size).toBe(200);
    // A batch is checked whole: one report of a tool not registered through /workers refuses it all.
    const report = (tool: string) => ({ op: 'settle', task_id: ids[0], run: 1, step_id: tool, tool });
    const mixed = await h.request('POST', '/workers/other-3/steps', { reports: [report('shout'), report('echo')] }, bearer(WORKER));
    expect(mixed.status).toBe(400);
    const tooMany = await h.request('POST', '/workers/other-3/steps', { reports: Array.from({ length: 101 }, () => report('shout')) }, bearer(WORKER));
    expect(tooMany.status).toBe(400);
  });

  it('registers a new tool from eight workers at once: each 200, one version', async () => {
    const tool = toolRegistration('brand_new');
    const answers = await Promise.all(
      Array.from({ length: 8 }, (_, index) =>
        h.request('PUT', `/workers/many-${index}`, workerRegistration([tool], { host: 'many', pid: index }), bearer(WORKER)),
      ),
    );
    expect(answers.map((answer) => answer.status)).toEqual(Array(8).fill(200));
    expect(new Set(answers.map((answer) => answer.body.tools[0].version))).toEqual(new Set([1]));
    expect(answers.filter((answer) => answer.body.tools[0].changed)).toHaveLength(1);
  });

  it('started before the API answers, keeps registering until it does', async () => {
    // Nothing listens on the port at first: the worker retries; then a relay to the API opens there.
    const port = await freePort();
    const child = await startUserWorker({ ORCHESTRATOR_URL: `http://127.0.0.1:${port}` }, false);
    await child.waitForOutput(/registration failed, trying again/);
    const target = new URL(h.url);
    const relay = net.createServer((socket) => {
      const upstream = net.connect(Number(target.port), target.hostname);
      socket.pipe(upstream).pipe(socket);
      socket.on('error', () => upstream.destroy());
      upstream.on('error', () => socket.destroy());
    });
    await new Promise<void>((resolve) => relay.listen(port, '127.0.0.1', resolve));
    try {
      await child.waitForOutput(/worker started/);
      const task = await h.request('POST', '/assign-task', { task_type: 'shout', params: { text: 'patient' } }, bearer(CLIENT));
      expect(await waitForTask(h, task.body.task_id, 30_000, bearer(ADMIN))).toMatchObject({ status: 'completed', result: { text: 'PATIENT' } });
    } finally {
      await child.kill();
      await new Promise((resolve) => relay.close(resolve));
    }
  });

  it('refuses a different schema for a tool that a live worker serves, naming the difference', async () => {
    await startUserWorker();
    const tool = toolRegistration('shout', {
      description: 'Upper-cases a text, differently.',
      input_schema: { type: 'object', properties: { words: { type: 'array' } } },
    });
    const body = workerRegistration([tool], { host: 'other', pid: 2 });
    const refused = await h.request('PUT', '/workers/other-2', body, bearer(WORKER));
    expect(refused.status).toBe(409);
    expect(refused.body.error).toMatchObject({
      code: 'tool_conflict',
      details: { tool: 'shout', differs_in: expect.arrayContaining(['description', 'input']) },
    });
    // A built-in tool's name is not a user's.
    const builtIn = await h.request('PUT', '/workers/other-2', { ...body, tools: [{ ...tool, name: 'echo' }] }, bearer(WORKER));
    expect(builtIn.status).toBe(409);
    // Reports on steps of tools not registered through /workers are refused.
    const report = await h.request(
      'POST',
      '/workers/other-2/steps',
      { op: 'settle', task_id: '0193a0c2-7b1e-7c3a-9d4f-2a1b3c4d5e6f', run: 1, step_id: 'echo', tool: 'echo' },
      bearer(WORKER),
    );
    expect(report.status).toBe(400);
  });
});
