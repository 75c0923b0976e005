import type { ServerResponse } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeTestConnections, testTools } from '../fixtures/tools.js';
import { createHarness, type Harness, poll, submit } from '../helpers/harness.js';
import { type RecordedRequest, startServer, type TestServer } from '../helpers/http-server.js';
import { CHAOS_ENV, knob, report, WorkerFleet, waitForAllEnded } from './support.js';
import { sweep } from './sweep.js';

/**
 * An open circuit while workers are SIGKILLed (issue 22): a real local service, described by its
 * own OpenAPI document, fails until its circuit opens. Its calls wait (reason circuit_open) in
 * delayed jobs while every worker is killed and replaced; then a half-open probe is held in flight
 * by the service while every worker is killed again, so the probe is lost and the circuit must
 * give it up; then the service recovers. Every task must complete; no step may have spent an
 * attempt on the open circuit; the service must have received nothing but the probes while the
 * circuit was open; and nothing may be left behind in Redis or PostgreSQL.
 */

const SINGLE_TASKS = knob('CHAOS_CIRCUIT_SINGLE_TASKS', 16, 200);
const WORKFLOW_TASKS = knob('CHAOS_CIRCUIT_WORKFLOW_TASKS', 8, 100);
const WORKERS = knob('CHAOS_CIRCUIT_WORKERS', 2, 3);
const OPEN_MS = 2_000;
/** A killed worker's active jobs come back when their lock expires and a stalled check runs. */
const LOCK_MS = 5_000;
/** The service's timeout: a probe whose worker died is given up after it plus 5 s (service-registry.ts). */
const TIMEOUT_MS = 2_000;
/**
 * Calls let through just before the circuit opened may reach the service just after (a busy
 * machine delays them, and the test process records their arrival late). Far less than OPEN_MS.
 */
const OPENING_MARGIN_MS = 1_000;
const SETTLE_MS = knob('CHAOS_CIRCUIT_SETTLE_MS', 120_000, 300_000);
/** Ample: only calls that reach the service (failures before it opened, failed probes) use attempts. */
const RETRY = { attempts: 50, backoff: { type: 'fixed', delay_ms: 100 } };

type Mode = 'failing' | 'hold' | 'up';

interface Transition {
  from: string;
  to: string;
  at: number;
}

const pingDocument = {
  openapi: '3.0.3',
  info: { title: 'Flaky', version: '1' },
  paths: {
    '/ping': {
      get: {
        operationId: 'ping',
        parameters: [{ name: 'tag', in: 'query', required: true, schema: { type: 'string' } }],
        responses: {
          '200': {
            description: 'pong',
            content: {
              'application/json': {
                schema: { type: 'object', properties: { ok: { type: 'boolean' }, tag: { type: 'string' } }, required: ['ok', 'tag'] },
              },
            },
          },
          '503': { description: 'down' },
        },
      },
    },
  },
};

const json = (res: ServerResponse, status: number, body: unknown) => res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));

describe('an open circuit while workers are SIGKILLed', () => {
  let h: Harness;
  let fleet: WorkerFleet;
  let service: TestServer;
  let mode: Mode = 'failing';
  /** Calls held in flight (mode hold): never answered; their worker dies with them. */
  const held: ServerResponse[] = [];

  beforeAll(async () => {
    service = await startServer((request: RecordedRequest, res) => {
      const url = new URL(request.path, 'http://x');
      if (url.pathname === '/openapi.json') return json(res, 200, pingDocument);
      if (mode === 'hold') return void held.push(res);
      if (mode === 'failing') return json(res, 503, { error: 'down' });
      return json(res, 200, { ok: true, tag: url.searchParams.get('tag') });
    });
    h = await createHarness({
      worker: false,
      tools: testTools,
      env: {
        ...CHAOS_ENV,
        HTTP_TOOL_ALLOWED_HOSTS: `127.0.0.1:${service.port}`,
        SERVICES_RELOAD_MS: '500',
        // No health checks: every request the service receives is a step's call.
        SERVICE_HEALTH_INTERVAL_MS: '0',
        WORKER_LOCK_DURATION_MS: String(LOCK_MS),
      },
    });
    // Registered before the workers start: they read the registry when they start.
    const registered = await h.request('POST', '/services', {
      name: 'flaky',
      base_url: service.origin,
      openapi_url: `${service.origin}/openapi.json`,
      timeout_ms: TIMEOUT_MS,
      circuit: { failure_threshold: 3, failure_ratio: 0, open_ms: OPEN_MS, half_open_probes: 1 },
    });
    expect(registered.status, JSON.stringify(registered.body)).toBe(201);
    const workflow = await h.request('POST', '/workflows', {
      name: 'flaky_pair',
      parameters: [{ name: 'tag', type: 'string', required: true }],
      steps: [
        { id: 'a', tool: 'flaky.ping', input: { query: { tag: '{{params.tag}}-a' } }, retry: RETRY },
        { id: 'b', tool: 'flaky.ping', depends_on: ['a'], input: { query: { tag: '{{params.tag}}-b' } }, retry: RETRY },
      ],
      output: { a: '{{steps.a.output.tag}}', b: '{{steps.b.output.tag}}' },
    });
    expect(workflow.status, JSON.stringify(workflow.body)).toBe(201);
    fleet = new WorkerFleet(h.env);
    await fleet.start(WORKERS);
  }, 120_000);
  afterAll(async () => {
    await fleet?.destroy();
    await h?.close();
    await service?.close();
    await closeTestConnections();
  }, 120_000);

  /** Every transition of the circuit, gathered from GET /services/flaky (it shows the latest 20). */
  const transitions = new Map<string, Transition>();
  async function readCircuit(): Promise<{ state: string; transitions: Transition[] }> {
    const { status, body } = await h.request('GET', '/services/flaky');
    if (status !== 200) throw new Error(`GET /services/flaky answered ${status}`);
    for (const transition of body.circuit_state.transitions as { from: string; to: string; at: string }[]) {
      const at = Date.parse(transition.at);
      transitions.set(`${at}/${transition.from}/${transition.to}`, { from: transition.from, to: transition.to, at });
    }
    return { state: body.circuit_state.state, transitions: [...transitions.values()].sort((a, b) => a.at - b.at) };
  }
  const lastTransition = async () => (await readCircuit()).transitions.at(-1);

  async function killAll(): Promise<number> {
    let killed = 0;
    while (fleet.live.length > 0) {
      await fleet.killRandom(() => 0);
      killed += 1;
    }
    return killed;
  }

  it('completes every task, spends no attempt on the open circuit, lets only probes through while open, and leaves nothing behind', async () => {
    const started = Date.now();
    const watching = { on: true };
    // Transitions come and go from the list of 20 while the test runs: gather them all.
    const watcher = (async () => {
      while (watching.on) {
        await readCircuit().catch(() => undefined);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    })();

    const tags = new Map<string, string[]>(); // task id -> the tags its steps call with
    const ids: string[] = [];
    for (let n = 0; n < SINGLE_TASKS; n += 1) {
      const tag = `single-${n}`;
      const id = await submit(h, { task_type: 'flaky.ping', params: { query: { tag } }, retry: RETRY });
      ids.push(id);
      tags.set(id, [tag]);
    }
    for (let n = 0; n < WORKFLOW_TASKS; n += 1) {
      const tag = `pair-${n}`;
      const { status, body } = await h.request('POST', '/workflows/flaky_pair/execute', { parameters: { tag } });
      expect(status, JSON.stringify(body)).toBe(202);
      ids.push(body.task_id);
      tags.set(body.task_id, [`${tag}-a`, `${tag}-b`]);
    }

    // 1. The service fails until its circuit opens; steps wait for it.
    await poll(
      async () => {
        const { rows } = await h.db.pool.query<{ n: string }>(`SELECT count(*) AS n FROM steps WHERE status = 'waiting' AND reason = 'circuit_open'`);
        return Number(rows[0]!.n) >= 3;
      },
      { label: 'steps waiting for the open circuit', timeoutMs: 60_000, intervalMs: 50 },
    );
    const rounds: string[] = [];
    // 2. Every worker is SIGKILLed while the circuit is open, and replaced.
    let kills = await killAll();
    rounds.push(`open:${(await readCircuit()).state}`);
    await fleet.start(WORKERS);

    // 3. A probe is held in flight by the service, and every worker is killed again: the probe is lost.
    mode = 'hold';
    await poll(() => held.length > 0, { label: 'a probe in flight', timeoutMs: 60_000, intervalMs: 20 });
    kills += await killAll();
    rounds.push(`probe:${(await readCircuit()).state}`);
    mode = 'failing';
    await fleet.start(WORKERS);
    // The lost probe is given up; a later probe fails and opens the circuit again.
    await poll(async () => (await readCircuit()).transitions.some((t) => t.at > started && t.from === 'half_open' && t.to === 'open'), {
      label: 'a failed probe after the lost one',
      timeoutMs: 60_000,
    });

    // 4. The service recovers.
    mode = 'up';
    await waitForAllEnded(h, SETTLE_MS, 'every task to end after the service recovered');
    const recoveredAt = Date.now();
    await poll(async () => ((await lastTransition())?.to === 'closed' ? true : undefined), { label: 'the circuit to close', timeoutMs: 10_000 });
    watching.on = false;
    await watcher;
    const { transitions: all } = await readCircuit();

    // Every task completed, each step once, with its own call's answer.
    const problems: string[] = [];
    const { rows: tasks } = await h.db.pool.query<{ id: string; status: string; error: unknown }>(
      `SELECT id::text AS id, status::text AS status, error FROM tasks WHERE id = ANY($1::uuid[])`,
      [ids],
    );
    const { rows: steps } = await h.db.pool.query<{ task_id: string; step_id: string; status: string; attempts: number; output: any }>(
      `SELECT task_id::text AS task_id, step_id, status::text AS status, attempts, output FROM steps WHERE task_id = ANY($1::uuid[]) ORDER BY step_id`,
      [ids],
    );
    expect(tasks).toHaveLength(ids.length);
    for (const task of tasks) if (task.status !== 'completed') problems.push(`task ${task.id} ended ${task.status}: ${JSON.stringify(task.error)}`);
    const calls = service.received('/ping');
    const callsOf = (tag: string) => calls.filter((call) => new URL(call.path, 'http://x').searchParams.get('tag') === tag).length;
    let attemptsSpent = 0;
    for (const step of steps) {
      const tag = tags.get(step.task_id)![step.step_id === 'b' ? 1 : 0]!;
      const where = `task ${step.task_id} step ${step.step_id} (${tag})`;
      if (step.status !== 'completed') problems.push(`${where}: ${step.status}`);
      else if (step.output?.tag !== tag) problems.push(`${where}: output ${JSON.stringify(step.output)}`);
      // An attempt is a call that reached the service, or a delivery whose worker was killed
      // before its call went out (at most one per round of kills). A delivery held back by the
      // open circuit is neither.
      const made = callsOf(tag);
      attemptsSpent += step.attempts;
      if (step.attempts < 1 || step.attempts > made + 2) problems.push(`${where}: ${step.attempts} attempts for ${made} call(s) received`);
    }
    expect(problems).toEqual([]);

    // While open, the service received nothing; each half-open period let its one probe through
    // (a second one after the lost probe was given up).
    expect(all.map((t) => `${t.from}>${t.to}`).slice(0, 2)).toEqual(['closed>open', 'open>half_open']);
    expect(all.at(-1)).toMatchObject({ from: 'half_open', to: 'closed' });
    const opened = all[0]!.at;
    let whileOpen = 0;
    let probes = 0;
    for (const [index, transition] of all.entries()) {
      const end = all[index + 1]?.at ?? recoveredAt;
      if (transition.to === 'open') {
        const from = transition.at + (transition.from === 'closed' ? OPENING_MARGIN_MS : 5);
        const during = calls.filter((call) => call.at > from && call.at < end);
        expect(
          during.map((call) => call.path),
          `calls while open from ${new Date(transition.at).toISOString()}`,
        ).toEqual([]);
        whileOpen += during.length;
      } else if (transition.to === 'half_open') {
        const during = calls.filter((call) => call.at >= transition.at - 5 && call.at <= end + 5);
        expect(during.length, `probes of the half-open period from ${new Date(transition.at).toISOString()}`).toBeLessThanOrEqual(2);
        probes += during.length;
      }
    }
    const halfOpens = all.filter((t) => t.to === 'half_open').length;
    // From the opening (after its margin) until it closed: probes only, one per half-open period plus the lost one.
    const closedAt = all.at(-1)!.at;
    const afterOpening = calls.filter((call) => call.at > opened + OPENING_MARGIN_MS && call.at <= closedAt + 5).length;
    expect(afterOpening).toBeLessThanOrEqual(halfOpens + 1);

    const swept = await sweep(h);
    expect(fleet.crashes, 'worker processes that died without being killed').toEqual([]);
    report('circuit-crash', {
      tasks: ids.length,
      steps: steps.length,
      calls: calls.length,
      attempts: attemptsSpent,
      calls_while_open: whileOpen,
      probes,
      half_open_periods: halfOpens,
      calls_after_opening: afterOpening,
      transitions: all.length,
      rounds,
      processes_killed: kills,
      processes_started: fleet.all.length,
      total_ms: Date.now() - started,
      redis_keys_after: swept.keys,
    });
  }, 600_000);
});
