import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Gates, stepUnit } from '../../src/queue/gates.js';
import { WorkerFleet } from '../chaos/support.js';
import { closeTestConnections, observationKey, testTools } from '../fixtures/tools.js';
import { createHarness, type Harness, poll, submit, waitForTask } from '../helpers/harness.js';

/**
 * Limits per key (docs/workflows.md "Limits per key"): concurrency and rate limits on a one-tool task, a
 * workflow and a step, held in Redis across every worker process; work over a limit waits
 * (status waiting, with its reason) holding no worker; leases go back on completion, cancel,
 * a worker's SIGKILL, and through the reconciler when their release was lost.
 */

interface Call {
  started: number;
  ended: number;
  token: string;
}

/**
 * How much later than its admission a rate-limited step's tool may record its start. The limiter
 * admits by the worker's clock when it calls the gates' script; `started` is taken by the tool after
 * its worker's claim, not the same delay for every start. With every core busy that delay has
 * differed by 133 ms between two starts (CI, 2026-11-25) and by 478 ms (CI, 2026-11-29: four starts
 * of the map at 3/s within 522 ms). Without the limit four starts land within tens of ms (21 ms
 * with the map's limit removed, 2026-11-29), so a second less this still tells the two apart.
 */
const START_JITTER_MS = 600;

async function calls(h: Harness, key: string): Promise<Call[]> {
  const raw = await h.redis.lrange(observationKey(h.config.QUEUE_PREFIX, key), 0, -1);
  return raw.map((entry) => JSON.parse(entry) as Call);
}

async function maxAtOnce(h: Harness, key: string): Promise<number> {
  return Number((await h.redis.get(`${observationKey(h.config.QUEUE_PREFIX, key)}:max`)) ?? 0);
}

/** The most intervals that overlap at any moment. */
function overlap(intervals: { start: number; end: number }[]): number {
  const points = intervals.flatMap(({ start, end }) => [
    { at: start, delta: 1 },
    { at: end, delta: -1 },
  ]);
  // An end at the same moment as a start comes first: touching is not overlapping.
  points.sort((a, b) => a.at - b.at || a.delta - b.delta);
  let now = 0;
  let most = 0;
  for (const point of points) {
    now += point.delta;
    most = Math.max(most, now);
  }
  return most;
}

describe('limits per key, in one worker process', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness({ tools: testTools, env: { WORKER_CONCURRENCY: '20', RECONCILE_INTERVAL_MS: '0', RECONCILE_AFTER_MS: '0' } });
  });
  afterAll(async () => {
    await h.close();
    await closeTestConnections();
  });

  it('runs 3 keys x 50 tasks with limit 2: never more than 2 of a key at once, and no key waits twice as long as another', async () => {
    const keys = ['k1', 'k2', 'k3'].map((key) => `${key}-${Date.now()}`);
    const started = Date.now();
    const ids = new Map<string, string[]>(keys.map((key) => [key, []]));
    // Three clients sending at once, interleaved.
    const bodies = Array.from({ length: 50 }, (_, n) => keys.map((key) => ({ key, n }))).flat();
    for (let at = 0; at < bodies.length; at += 30) {
      const sent = await Promise.all(
        bodies
          .slice(at, at + 30)
          .map(({ key, n }) => submit(h, { task_type: 'concurrent', params: { key, ms: 40, value: n }, concurrency: { key: '{{params.key}}', limit: 2 } })),
      );
      for (const [index, { key }] of bodies.slice(at, at + 30).entries()) ids.get(key)!.push(sent[index]!);
    }
    // Some wait their turn, and say why.
    const all = [...ids.values()].flat();
    const waiting = await poll(
      async () => {
        const { rows } = await h.db.pool.query<{ reason: string }>(`SELECT reason FROM steps WHERE task_id = ANY($1::uuid[]) AND status = 'waiting' LIMIT 1`, [
          all,
        ]);
        return rows[0];
      },
      { label: 'a task over its limit to wait' },
    );
    expect(waiting.reason).toBe('concurrency');
    const finished = new Map<string, number>();
    for (const key of keys) {
      for (const id of ids.get(key)!) {
        const task = await waitForTask(h, id, 60_000);
        expect(task.status).toBe('completed');
        expect(task.steps[0].attempts).toBe(1);
        finished.set(key, Math.max(finished.get(key) ?? 0, Date.parse(task.finished_at) - started));
      }
      expect(await maxAtOnce(h, key), `tasks of ${key} at once`).toBeLessThanOrEqual(2);
      expect(await maxAtOnce(h, key), `tasks of ${key} at once`).toBe(2);
    }
    const spans = [...finished.values()];
    expect(Math.max(...spans) / Math.min(...spans)).toBeLessThanOrEqual(2);
  }, 120_000);

  it("limits a workflow's runs per key: with limit 1, runs of one tenant never overlap, and another tenant's go on", async () => {
    const name = `tenant_runs_${Date.now()}`;
    const defined = await h.request('POST', '/workflows', {
      name,
      parameters: [
        { name: 'tenant', type: 'string', required: true },
        { name: 'n', type: 'integer', required: true },
      ],
      concurrency: { key: 'tenant-{{params.tenant}}', limit: 1 },
      steps: [
        { id: 'a', tool: 'concurrent', input: { key: 'runs-{{params.tenant}}-a', ms: 60 } },
        { id: 'b', tool: 'concurrent', depends_on: ['a'], input: { key: 'runs-{{params.tenant}}-b', ms: 60 } },
      ],
    });
    expect(defined.status).toBe(201);
    const tenant = `t${Date.now()}`;
    const ours: string[] = [];
    for (let n = 0; n < 4; n += 1) ours.push(await submit(h, { task_type: name, params: { tenant, n } }));
    const other = await submit(h, { task_type: name, params: { tenant: `${tenant}-other`, n: 0 } });
    const held = await poll(
      async () => {
        const task = (await h.request('GET', `/result/${ours.at(-1)}`)).body;
        return task.steps[0].status === 'waiting' ? task : undefined;
      },
      { label: 'the last run to wait before its first step' },
    );
    expect(held.status).toBe('queued');
    expect(held.steps[0].reason).toBe('concurrency');
    expect((await waitForTask(h, other, 30_000)).status).toBe('completed');
    const runs = [];
    for (const id of ours) {
      const task = await waitForTask(h, id, 60_000);
      expect(task.status).toBe('completed');
      runs.push({ start: Date.parse(task.steps[0].started_at), end: Date.parse(task.steps[1].finished_at) });
    }
    expect(overlap(runs)).toBe(1);
  }, 90_000);

  it('limits a step of a map per key: its items start at most per_second per second, and the map completes in order', async () => {
    const name = `rated_map_${Date.now()}`;
    const key = `rated-${Date.now()}`;
    const defined = await h.request('POST', '/workflows', {
      name,
      steps: [
        {
          id: 'each',
          tool: 'record',
          for_each: [0, 1, 2, 3, 4, 5, 6, 7, 8],
          input: { key },
          rate_limit: { key: 'map-rate', per_second: 3 },
        },
      ],
      output: '{{steps.each.output}}',
    });
    expect(defined.status).toBe(201);
    const id = await submit(h, { task_type: name });
    const task = await waitForTask(h, id, 30_000);
    expect(task.status).toBe('completed');
    expect(task.result).toHaveLength(9);
    const starts = (await calls(h, key)).map((call) => call.started).sort((a, b) => a - b);
    expect(starts).toHaveLength(9);
    // Any three starts apart: the fourth after the first is a second later, less START_JITTER_MS.
    for (let i = 3; i < starts.length; i += 1) expect(starts[i]! - starts[i - 3]!).toBeGreaterThanOrEqual(1_000 - START_JITTER_MS);
  }, 60_000);

  it('gives a slot back when a task is cancelled: the next task of the key runs', async () => {
    const key = `cancel-${Date.now()}`;
    const first = await submit(h, { task_type: 'hang', params: { key }, concurrency: { key, limit: 1 } });
    const second = await submit(h, { task_type: 'concurrent', params: { key, ms: 10 }, concurrency: { key, limit: 1 } });
    await poll(async () => (await h.request('GET', `/result/${second}`)).body.steps[0].status === 'waiting', { label: 'the second task to wait' });
    expect((await h.request('POST', `/tasks/${first}/cancel`)).status).toBe(200);
    const task = await waitForTask(h, second, 30_000);
    expect(task.status).toBe('completed');
  }, 60_000);

  it('the reconciler gives back a lease whose release was lost, and lets the waiting task in', async () => {
    const key = `leak-${Date.now()}`;
    const done = await submit(h, { task_type: 'concurrent', params: { key, ms: 1 } });
    expect((await waitForTask(h, done)).status).toBe('completed');
    // A worker died between the commit of `done`'s result and the release of its lease.
    const gates = new Gates(h.redis, h.config.QUEUE_PREFIX);
    const [entered] = await gates.enter([{ taskId: done, unit: stepUnit(done, 1, 'concurrent'), limits: [{ kind: 'c', key: `user:${key}`, limit: 1 }] }]);
    expect(entered!.admitted).toBe(true);
    const waiting = await submit(h, { task_type: 'concurrent', params: { key, ms: 1 }, concurrency: { key, limit: 1 } });
    await poll(async () => (await h.request('GET', `/result/${waiting}`)).body.steps[0].status === 'waiting', { label: 'the task to wait' });
    const sweep = await h.worker!.runtime.reconciler.sweep();
    expect(sweep.released).toBeGreaterThanOrEqual(1);
    expect((await waitForTask(h, waiting)).status).toBe('completed');
  }, 60_000);

  it('checks limit keys: when stored, with their paths, and when submitted, against the params', async () => {
    const bad = await h.request('POST', '/workflows', {
      name: `bad_limits_${Date.now()}`,
      parameters: [{ name: 'customer', type: 'object' }],
      concurrency: { key: '{{steps.a.output.x}}', limit: 1 },
      steps: [
        { id: 'a', tool: 'echo', input: {}, rate_limit: { key: '{{params.nobody}}', per_minute: 5 } },
        { id: 'nap', sleep: { ms: 1 }, concurrency: { key: 'x', limit: 1 } },
      ],
    });
    expect(bad.status, JSON.stringify(bad.body)).toBe(400);
    const paths = bad.body.error.details.map((problem: { path: string }) => problem.path);
    expect(paths).toEqual(expect.arrayContaining(['concurrency.key', 'steps[0].rate_limit.key', 'steps[1].concurrency']));
    const both = await h.request('POST', '/assign-task', { task_type: 'echo', params: {}, rate_limit: { key: 'x', per_minute: 1, per_second: 1 } });
    expect(both.status).toBe(400);

    const name = `object_key_${Date.now()}`;
    expect(
      (
        await h.request('POST', '/workflows', {
          name,
          parameters: [{ name: 'customer', type: 'object' }],
          steps: [{ id: 'a', tool: 'echo', input: {}, concurrency: { key: '{{params.customer}}', limit: 1 } }],
        })
      ).status,
    ).toBe(201);
    const objectKey = await h.request('POST', '/assign-task', { task_type: name, params: { customer: { id: 1 } } });
    expect(objectKey.status).toBe(400);
    expect(objectKey.body.error.details[0].path).toBe('params.customer');
    const plain = `plain_${Date.now()}`;
    expect((await h.request('POST', '/workflows', { name: plain, steps: [{ id: 'a', tool: 'echo', input: {} }] })).status).toBe(201);
    const onWorkflow = await h.request('POST', '/assign-task', { task_type: plain, params: {}, concurrency: { key: 'x', limit: 1 } });
    expect(onWorkflow.status).toBe(400);
    expect(onWorkflow.body.error.details[0].path).toBe('concurrency');
    const missing = await h.request('POST', '/assign-task', { task_type: 'echo', params: {}, concurrency: { key: '{{params.customer}}', limit: 1 } });
    expect(missing.status).toBe(400);
    expect(await h.db.prisma.task.count({ where: { taskType: { in: [name, plain] } } })).toBe(0);
  });
});

describe('the default limit per API key (KEY_CONCURRENCY)', () => {
  const BUSY = 'client@busy:busy-key-0123456789abcdef';
  const QUIET = 'client@quiet:quiet-key-0123456789abcdef';
  const auth = (entry: string) => ({ authorization: `Bearer ${entry.slice(entry.indexOf(':') + 1)}` });
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness({ tools: testTools, env: { API_KEYS: `${BUSY},${QUIET}`, KEY_CONCURRENCY: '1', WORKER_CONCURRENCY: '10' } });
  });
  afterAll(async () => {
    await h.close();
    await closeTestConnections();
  });

  it("runs one step at a time per API key: a busy key's backlog does not hold back another key's task", async () => {
    const key = `busy-${Date.now()}`;
    const busy: string[] = [];
    for (let n = 0; n < 6; n += 1) {
      const response = await h.request('POST', '/assign-task', { task_type: 'concurrent', params: { key, ms: 300 } }, auth(BUSY));
      expect(response.status).toBe(202);
      busy.push(response.body.task_id);
    }
    const quiet = await h.request('POST', '/assign-task', { task_type: 'concurrent', params: { key: `${key}-quiet`, ms: 1 } }, auth(QUIET));
    expect(quiet.status).toBe(202);
    const quietTask = await waitForTask(h, quiet.body.task_id, 30_000, auth(QUIET));
    expect(quietTask.status).toBe('completed');
    const busyTasks = [];
    for (const id of busy) busyTasks.push(await waitForTask(h, id, 60_000, auth(BUSY)));
    expect(busyTasks.every((task) => task.status === 'completed')).toBe(true);
    // The quiet key's task finished while the busy key's backlog still ran.
    expect(Date.parse(quietTask.finished_at)).toBeLessThan(Math.max(...busyTasks.map((task) => Date.parse(task.finished_at))));
    expect(await maxAtOnce(h, key)).toBe(1);
  }, 90_000);
});

describe('limits per key across worker processes', () => {
  let h: Harness;
  let fleet: WorkerFleet;
  beforeAll(async () => {
    // Workers in processes of their own; a killed one's steps come back after a short lock.
    h = await createHarness({ worker: false, tools: testTools, env: { WORKER_LOCK_DURATION_MS: '2000' } });
    fleet = new WorkerFleet(h.env);
    await fleet.start(2);
  }, 120_000);
  afterAll(async () => {
    await fleet?.destroy();
    await h?.close();
    await closeTestConnections();
  }, 60_000);

  it('holds a rate limit across two worker processes', async () => {
    const key = `rate2-${Date.now()}`;
    const ids: string[] = [];
    for (let n = 0; n < 12; n += 1) ids.push(await submit(h, { task_type: 'record', params: { key }, rate_limit: { key, per_second: 4 } }));
    for (const id of ids) expect((await waitForTask(h, id, 30_000)).status).toBe('completed');
    const recorded = await calls(h, key);
    expect(new Set(recorded.map((call) => (call as unknown as { pid: number }).pid)).size).toBe(2);
    const starts = recorded.map((call) => call.started).sort((a, b) => a - b);
    // Any four starts apart: the fifth after the first is a second later, less START_JITTER_MS.
    for (let i = 4; i < starts.length; i += 1) expect(starts[i]! - starts[i - 4]!).toBeGreaterThanOrEqual(1_000 - START_JITTER_MS);
  }, 60_000);

  it('keeps a slot held through a SIGKILL of its worker: the step comes back with its lease, then gives it back', async () => {
    const key = `kill-${Date.now()}`;
    const ids: string[] = [];
    for (let n = 0; n < 3; n += 1) ids.push(await submit(h, { task_type: 'concurrent', params: { key, ms: 1_500 }, concurrency: { key, limit: 1 } }));
    // The first runs somewhere: kill both workers, and start a fresh one.
    await poll(async () => (await h.request('GET', `/result/${ids[0]}`)).body.steps[0].status === 'running', { label: 'the first task to run' });
    for (const child of [...fleet.live]) {
      fleet.release(child);
      await child.kill();
    }
    await fleet.add();
    for (const id of ids) expect((await waitForTask(h, id, 60_000)).status).toBe('completed');
    // The killed run's counter stayed up: at most that one and the next overlapped.
    expect(await maxAtOnce(h, key)).toBeLessThanOrEqual(2);
    const finished = await Promise.all(ids.map(async (id) => (await h.request('GET', `/result/${id}`)).body));
    const intervals = finished.map((task) => ({ start: Date.parse(task.steps[0].started_at), end: Date.parse(task.steps[0].finished_at) }));
    expect(overlap(intervals)).toBe(1);
  }, 90_000);
});
