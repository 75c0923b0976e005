import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeTestConnections, testTools } from '../fixtures/tools.js';
import { runEntry } from '../helpers/child-process.js';
import { TEST_POSTGRES_URL } from '../helpers/env.js';
import { createHarness, type Harness, poll } from '../helpers/harness.js';
import { freePort } from '../helpers/ports.js';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js';
import {
  ApiProcess,
  CHAOS_ENV,
  chaosSeed,
  checkOutcomes,
  defineChaosWorkflows,
  emptySubmitted,
  healthyAnswerMs,
  knob,
  mixedWorkload,
  report,
  seededRandom,
  sleep,
  submitPaced,
  WorkerFleet,
  waitForAllEnded,
} from './support.js';
import { sweep } from './sweep.js';

/**
 * PostgreSQL faults under load, for an API process and three worker processes that reach
 * PostgreSQL through a TCP proxy:
 * - every backend they hold is terminated (pg_terminate_backend) again and again, cutting
 *   statements and transactions in the middle;
 * - the proxy refuses every connection for a few seconds (an outage).
 * Writes are retried, no result is lost or stored twice, the API answers 503 (and stores
 * nothing) while the database cannot be reached, and every accepted task ends as meant.
 */

const ROUNDS = knob('CHAOS_PG_ROUNDS', 1, 3);
const TERMINATE_FOR_MS = knob('CHAOS_PG_TERMINATE_FOR_MS', 8_000, 20_000);
const TERMINATE_EVERY_MS = knob('CHAOS_PG_TERMINATE_EVERY_MS', 400, 250);
const OUTAGE_MS = knob('CHAOS_PG_OUTAGE_MS', 3_000, 5_000);
const SUBMIT_PER_SECOND = knob('CHAOS_PG_SUBMIT_PER_SECOND', 15, 30);
/**
 * No request may hang while the database is away: the bound on any answer, on top of the slowest
 * answer to the same request with PostgreSQL reachable under the same load, measured just before
 * the faults (a busy machine slows every answer, not only refusals: a quiet CI run on a fresh
 * clone, 2026-11-29, answered a 503 in 3,074 ms against a fixed 3,000).
 */
const ANSWER_MS = 3_000;
/** Healthy answers measured before the faults. */
const BASELINE_PROBES = 10;
/** Marks the connections of the processes under test, so the test's own are never severed. */
const APPLICATION_NAME = 'orchestrator-chaos';

describe('PostgreSQL connections severed and PostgreSQL unreachable under load', () => {
  let proxy: TcpProxy;
  let h: Harness;
  let api: ApiProcess;
  let fleet: WorkerFleet;
  let admin: pg.Client;
  const seed = chaosSeed();

  beforeAll(async () => {
    // The harness itself (assertions) talks to PostgreSQL directly; the API and the workers go
    // through the proxy, in front of what their DATABASE_URL names: PostgreSQL, or PgBouncer in
    // the pgbouncer project (where the outage is PgBouncer's; test/pgbouncer stages
    // PostgreSQL's behind it).
    h = await createHarness({ api: false, worker: false, tools: testTools, env: CHAOS_ENV });
    proxy = await startTcpProxy({ port: Number(new URL(h.config.DATABASE_URL).port || 5432) });
    const proxied = new URL(h.config.DATABASE_URL);
    proxied.port = String(proxy.port);
    proxied.searchParams.set('application_name', APPLICATION_NAME);
    const env = { ...h.env, DATABASE_URL: proxied.toString() };
    api = new ApiProcess(env, await freePort());
    await api.start();
    h.url = api.url;
    fleet = new WorkerFleet(env);
    await fleet.start(3);
    await defineChaosWorkflows(h);
    admin = new pg.Client({ connectionString: TEST_POSTGRES_URL });
    await admin.connect();
  }, 120_000);
  afterAll(async () => {
    proxy?.resume();
    await fleet?.destroy();
    await api?.destroy();
    await admin?.end().catch(() => undefined);
    await h?.close();
    await proxy?.close();
    await closeTestConnections();
  }, 120_000);

  /** Terminates every backend the API and the workers hold; resolves with how many. */
  async function terminateAll(): Promise<number> {
    const { rows } = await admin.query<{ ok: boolean }>(
      `SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity
        WHERE datname = $1 AND pid <> pg_backend_pid() AND application_name = $2`,
      [new URL(h.config.DATABASE_URL).pathname.slice(1), APPLICATION_NAME],
    );
    return rows.filter((row) => row.ok).length;
  }

  it(`loses and duplicates nothing through ${ROUNDS} round(s) of severed connections and an outage`, async () => {
    const started = Date.now();
    const random = seededRandom(seed);
    let done = false;
    const submitted = emptySubmitted();
    const submission = submitPaced(h, mixedWorkload(100_000, random), {
      perSecond: SUBMIT_PER_SECOND,
      concurrency: 8,
      into: submitted,
      shouldStop: () => done,
    });

    let terminated = 0;
    let sweeps = 0;
    const probes = { answered: 0, unanswered: 0, slowestMs: 0, healthySlowestMs: 0, notUnavailable: [] as { status: number; body: unknown }[] };
    // The baseline: the same request as the probes below, answered with PostgreSQL reachable.
    probes.healthySlowestMs = await healthyAnswerMs(h, submitted, BASELINE_PROBES, 'postgres');
    for (let round = 1; round <= ROUNDS; round += 1) {
      // Severed connections: statements and transactions of the API and the workers cut mid-way.
      const until = Date.now() + TERMINATE_FOR_MS;
      while (Date.now() < until) {
        terminated += await terminateAll();
        sweeps += 1;
        await sleep(TERMINATE_EVERY_MS * (0.5 + random()));
      }
      // An outage: nobody reaches PostgreSQL through the proxy.
      await poll(
        async () => {
          const { rows } = await h.db.pool.query<{ n: string }>(`SELECT count(*) AS n FROM tasks WHERE status = 'running'`);
          return Number(rows[0]!.n) > 0;
        },
        { label: 'tasks running before the outage', timeoutMs: 60_000 },
      );
      await poll(async () => (await h.request('GET', '/health')).status === 200, { label: 'the API to answer before the outage', timeoutMs: 60_000 });
      proxy.pause();
      const downUntil = Date.now() + OUTAGE_MS;
      while (Date.now() < downUntil) {
        const sent = Date.now();
        try {
          const response = await h.request('POST', '/assign-task', { task_type: 'echo', params: { probe: probes.answered } });
          probes.answered += 1;
          probes.slowestMs = Math.max(probes.slowestMs, Date.now() - sent);
          if (response.status !== 503 || response.body?.error?.code !== 'service_unavailable')
            probes.notUnavailable.push({ status: response.status, body: response.body });
        } catch {
          probes.unanswered += 1; // no answer at all: the API process died or hung up
        }
        await sleep(100);
      }
      proxy.resume();
      await poll(async () => (await h.request('GET', '/ready')).status === 200, { label: 'the API to be ready after the outage', timeoutMs: 30_000 });
      await sleep(2_000);
    }
    done = true;
    await submission;

    expect(probes.notUnavailable, 'answers to POST /assign-task while PostgreSQL was unreachable').toEqual([]);
    expect(probes.unanswered, 'probes that got no answer while PostgreSQL was unreachable').toBe(0);
    expect(probes.answered, 'probes answered while PostgreSQL was unreachable').toBeGreaterThan(0);
    expect(probes.slowestMs, 'slowest answer while PostgreSQL was unreachable').toBeLessThan(ANSWER_MS + probes.healthySlowestMs);
    expect(submitted.unexpected, 'answers other than 202 or 503').toEqual([]);
    expect(submitted.slowest503Ms, 'slowest 503 of a request caught by the faults').toBeLessThan(ANSWER_MS + probes.healthySlowestMs);

    const loadMs = Date.now() - started;
    await waitForAllEnded(h, 300_000, 'every accepted task to end after the PostgreSQL faults');
    const settleMs = Date.now() - started - loadMs;
    const { problems, figures } = await checkOutcomes(h, submitted.accepted);
    const swept = await sweep(h);
    report('postgres-faults', {
      seed,
      tasks_run: submitted.accepted.size,
      ...figures,
      backends_terminated: terminated,
      termination_sweeps: sweeps,
      outages_survived: ROUNDS,
      refused_503: submitted.unavailable + probes.answered,
      slowest_503_ms: Math.max(probes.slowestMs, submitted.slowest503Ms),
      slowest_healthy_ms: probes.healthySlowestMs,
      worker_crashes: fleet.crashes.length,
      api_crashes: api.crashes.length,
      problems: problems.length,
      load_ms: loadMs,
      settle_ms: settleMs,
      total_ms: Date.now() - started,
      redis_keys_after: swept.keys,
    });
    expect(problems).toEqual([]);
    // Duplicates: one task per accepted request (idempotency keys), one dead letter per failed step.
    const { rows: twice } = await h.db.pool.query(
      `SELECT idempotency_key, count(*) AS n FROM tasks WHERE idempotency_key IS NOT NULL GROUP BY idempotency_key HAVING count(*) > 1`,
    );
    expect(twice, 'idempotency keys that created more than one task').toEqual([]);
    expect(figures.tasks, 'tasks stored').toBe(submitted.accepted.size);
    expect(figures.deadLetters, 'dead letters (one per task meant to fail)').toBe(figures.failedAsMeant);
    expect(terminated).toBeGreaterThan(0);
    expect(fleet.crashes, 'worker processes that died').toEqual([]);
    expect(api.crashes, 'API processes that died').toEqual([]);
  }, 900_000);
});

describe('a process whose PostgreSQL connections are terminated', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness({ api: false, worker: false });
  });
  afterAll(async () => {
    await h?.close();
  });

  // Regression: a pg client checked out of the pool had no 'error' listener, so a backend
  // terminated between two reads crashed the process (fixed in src/persistence/database.ts).
  it('survives its backends being terminated while queries and transactions run', async () => {
    const url = new URL(h.config.DATABASE_URL);
    url.searchParams.set('application_name', `churn-${process.pid}`);
    const child = runEntry('test/fixtures/pg-connection-churn.ts', { DATABASE_URL: url.toString(), ROUNDS: '150' });
    try {
      const exit = await child.waitForExit(60_000);
      expect(exit.code).toBe(0);
      const survived = /^survived (\d+) rounds, (\d+) backends terminated \((\d+) queries failed/m.exec(child.output);
      expect(survived, child.output).not.toBeNull();
      // The faults really happened: backends of the pool were terminated under its queries.
      expect(Number(survived![2])).toBeGreaterThan(0);
      expect(Number(survived![3])).toBeGreaterThan(0);
    } finally {
      await child.kill();
    }
  }, 90_000);
});
