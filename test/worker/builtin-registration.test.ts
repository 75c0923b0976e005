import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { WorkerRegistration } from '../../src/fleet/protocol.js';
import { BUILT_IN_OWNER, fleetChannel, WorkerFleet } from '../../src/fleet/worker-fleet.js';
import { ConflictError } from '../../src/lib/errors.js';
import { createRedis } from '../../src/queue/redis.js';
import { defineTool, ToolRegistry } from '../../src/tools/tool.js';
import echo from '../../workers/adapters/echo.js';
import { registerBuiltIns } from '../../workers/runtime/registration.js';
import { RunningSteps, toolRegistration } from '../../workers/runtime/tool-registration.js';
import { toolRegistration as userTool, workerRegistration } from '../fixtures/worker-registration.js';
import { createHarness, type Harness, poll } from '../helpers/harness.js';

/**
 * The built-in worker's registration (workers/runtime/registration.ts) as the fleet keeps it: its
 * tools are built-in (a user's worker may not register their names, nor report on their steps),
 * its heartbeat says what it runs, a stopped or crashed one is swept once another serves its
 * tools, and a new release's first registration replaces a tool's version while the older
 * release's heartbeats are refused.
 */

const ADMIN = 'admin:builtin-registration-admin-0123456789';
const WORKER = 'worker@acme:builtin-registration-worker-0123456789';
const bearer = (entry: string) => ({ authorization: `Bearer ${entry.slice(entry.indexOf(':') + 1)}` });

interface Listed {
  worker_id: string;
  owner: string;
  pid: number;
  tools: string[];
  live: boolean;
  running: { task_id: string; step_id: string; tool: string }[];
  running_count: number;
}

describe('the built-in worker in the fleet', () => {
  let h: Harness;
  /** A fleet of this test's own on the harness's database, as another process would have one. */
  let fleet: WorkerFleet;
  let subscriber: ReturnType<typeof createRedis>;
  const workers = async () => (await h.request('GET', '/workers', undefined, bearer(ADMIN))).body.workers as Listed[];
  const harnessWorker = async () => (await workers()).find((worker) => worker.owner === BUILT_IN_OWNER && worker.pid === process.pid)!;

  beforeAll(async () => {
    h = await createHarness({ env: { API_KEYS: [ADMIN, WORKER].join(',') } });
    subscriber = createRedis(h.config, 'subscriber', 'test-fleet');
    fleet = new WorkerFleet(h.db.prisma, h.logger, { redis: h.redis, subscriber, prefix: h.config.QUEUE_PREFIX });
    await fleet.start();
  });
  afterAll(async () => {
    fleet?.stop();
    subscriber?.disconnect();
    await h?.close();
  });

  it('registers every tool it runs, as built-in; its heartbeat says which steps it runs', async () => {
    const mine = await harnessWorker();
    expect(mine).toMatchObject({ owner: BUILT_IN_OWNER, live: true, tools: h.registry.adapters().map((tool) => tool.name) });
    expect(fleet.builtIns.get('echo')).toBeDefined();
    // Users' tools only: what the /workers routes accept reports on.
    expect(fleet.get('echo')).toBeUndefined();

    const submitted = await h.request('POST', '/assign-task', { task_type: 'sleep', params: { ms: 30_000 } }, bearer(ADMIN));
    expect(submitted.status).toBe(202);
    const id = submitted.body.task_id as string;
    const running = await poll(async () => ((await harnessWorker()).running_count === 1 ? (await harnessWorker()).running : undefined), {
      label: "the built-in worker's heartbeat to show the step",
      timeoutMs: 15_000,
    });
    expect(running).toEqual([{ task_id: id, step_id: 'sleep', tool: 'sleep', since: expect.any(String) }]);
    expect((await h.request('POST', `/tasks/${id}/cancel`, undefined, bearer(ADMIN))).status).toBe(200);
  });

  it("refuses a user's worker a built-in tool's name, even asking to replace, and its reports on built-in steps", async () => {
    const echoAsUser = { ...toolRegistration(echo), description: 'my own echo' };
    const body = (replace: boolean) => workerRegistration([echoAsUser], { host: 'app', pid: 9, ...(replace ? { replace: true } : {}) });
    for (const replace of [false, true]) {
      const refused = await h.request('PUT', '/workers/app-9', body(replace), bearer(WORKER));
      expect(refused.status).toBe(409);
      expect(refused.body.error.code).toBe('tool_conflict');
    }
    // The fleet refuses it itself, as in an API that holds no adapter (whose route does not know echo is built in).
    const direct = fleet.register('app-9', 'acme', body(true) as WorkerRegistration, new Set());
    await expect(direct).rejects.toBeInstanceOf(ConflictError);
    await expect(direct).rejects.toThrow(/these names are built-in tools: echo/);
    const report = await h.request(
      'POST',
      '/workers/app-9/steps',
      { op: 'settle', task_id: '0193a0c2-7b1e-7c3a-9d4f-2a1b3c4d5e6f', run: 1, step_id: 'echo', tool: 'echo' },
      bearer(WORKER),
    );
    expect(report.status).toBe(400);
    expect((await h.db.prisma.workerTool.findUnique({ where: { name: 'echo' } }))?.description).toBe(echo.description);
  });

  it('sweeps a dead built-in worker once a live one serves its tools; one whose tool nobody serves stays, and keeps the name built-in', async () => {
    const old = new Date(Date.now() - 60_000);
    const dead = { owner: BUILT_IN_OWNER, host: 'gone', version: '0.0.1', concurrency: 1, running: [], startedAt: old, lastSeenAt: old };
    await h.db.prisma.fleetWorker.create({ data: { id: 'gone-1-covered', pid: 1, tools: ['echo', 'sleep'], ...dead } });
    await h.db.prisma.fleetWorker.create({ data: { id: 'gone-2-retired', pid: 2, tools: ['echo', 'retired_tool'], ...dead } });
    // Any built-in registration sweeps: here a second built-in worker of the same release.
    const second = await registerBuiltIns({
      fleet,
      tools: new ToolRegistry([echo]),
      config: h.config,
      logger: h.logger,
      running: new RunningSteps(),
      onRegistered: async () => undefined,
    });
    const ids = (await workers()).map((worker) => worker.worker_id);
    expect(ids).not.toContain('gone-1-covered');
    expect(ids).toContain('gone-2-retired');
    expect(ids).toContain(second.id);
    const taken = await h.request('PUT', '/workers/app-9', workerRegistration([userTool('retired_tool')], { host: 'app', pid: 9 }), bearer(WORKER));
    expect(taken.status).toBe(409);
    expect(taken.body.error.message).toMatch(/built-in tools: retired_tool/);

    // Stopping while another live built-in worker serves all its tools, it leaves the list.
    await second.close();
    expect((await workers()).map((worker) => worker.worker_id)).not.toContain(second.id);
    await h.db.prisma.fleetWorker.delete({ where: { id: 'gone-2-retired' } });
  });

  it("a new release's first registration stores a new version while the older one runs; the older one's heartbeat is then refused", async () => {
    const before = await harnessWorker();
    // Every process is told at once (Redis pub/sub), rather than at its next reload.
    const listener = createRedis(h.config, 'subscriber', 'test-fleet-notices');
    const notices: string[] = [];
    listener.on('message', (channel: string) => notices.push(channel));
    await listener.subscribe(fleetChannel(h.config.QUEUE_PREFIX));
    const changed = defineTool({ ...echo, description: 'Returns its input unchanged (a newer release).' });
    const release = await registerBuiltIns({
      fleet,
      tools: new ToolRegistry([changed]),
      config: h.config,
      logger: h.logger,
      running: new RunningSteps(),
      onRegistered: async () => undefined,
    });
    expect(await h.db.prisma.workerTool.findUnique({ where: { name: 'echo' } })).toMatchObject({ version: 2, description: changed.description });
    await poll(() => notices.length > 0, { label: 'the registration announced' });
    listener.disconnect();
    expect(notices).toEqual([fleetChannel(h.config.QUEUE_PREFIX)]);
    await poll(
      async () =>
        (await h.request('GET', '/tools', undefined, bearer(ADMIN))).body.tools.find((tool: { name: string }) => tool.name === 'echo').fleet.version === 2,
      { label: 'the API to see version 2', timeoutMs: 10_000 },
    );
    // The older worker's heartbeat (what it sends every 5 s), without replace: refused, naming the difference.
    const heartbeat = {
      host: 'test',
      pid: process.pid,
      version: '0.1.0',
      concurrency: 1,
      tools: h.registry.adapters().map(toolRegistration),
    };
    await expect(fleet.register(before.worker_id, BUILT_IN_OWNER, heartbeat, new Set())).rejects.toThrow(/echo tool differs from version 2.*description/);
    await release.close();
  });
});
