import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeTestConnections, testTools } from '../fixtures/tools.js';
import { createHarness, type Harness } from '../helpers/harness.js';
import {
  CHAOS_ENV,
  chaosSeed,
  checkOutcomes,
  defineChaosWorkflows,
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
 * Worker crashes: three worker processes run a mixed load (single tools and DAG workflows, some
 * steps sleeping, some failing before they succeed, a few failing for good) while a worker is
 * SIGKILLed every few seconds and replaced. Every accepted task must end as the workload
 * means it to, with every step's result stored once and quoting a call that really happened.
 */

const TASKS = knob('CHAOS_TASKS', 150, 2_000);
const WORKERS = knob('CHAOS_WORKERS', 3, 3);
const SUBMIT_PER_SECOND = knob('CHAOS_SUBMIT_PER_SECOND', 25, 60);
const KILL_EVERY_MS = knob('CHAOS_KILL_EVERY_MS', 3_000, 3_000);
/** Kills go on this long after the last task was submitted (or until every task ended). */
const KILL_AFTER_SUBMIT_MS = knob('CHAOS_KILL_AFTER_SUBMIT_MS', 6_000, 20_000);
/**
 * A killed worker's steps come back when their locks expire and a stalled check runs: CI waits
 * 10 s for that instead of the default 30 s (the full profile keeps the default). Renewed every
 * half of it, a 10 s lock holds on a busy machine, as circuit-crash's 5 s one does.
 */
const LOCK_MS = knob('CHAOS_LOCK_MS', 10_000, 30_000);
const SETTLE_MS = knob('CHAOS_SETTLE_MS', 150_000, 300_000);

describe('worker crashes under load', () => {
  let h: Harness;
  let fleet: WorkerFleet;
  const seed = chaosSeed();

  beforeAll(async () => {
    h = await createHarness({ worker: false, tools: testTools, env: { ...CHAOS_ENV, WORKER_LOCK_DURATION_MS: String(LOCK_MS) } });
    fleet = new WorkerFleet(h.env);
    await fleet.start(WORKERS);
    await defineChaosWorkflows(h);
  }, 120_000);
  afterAll(async () => {
    await fleet?.destroy();
    await h?.close();
    await closeTestConnections();
  }, 120_000);

  it(
    `ends every accepted task as meant while a worker is SIGKILLed every ${KILL_EVERY_MS} ms`,
    async () => {
      const started = Date.now();
      const random = seededRandom(seed);
      const tasks = mixedWorkload(TASKS, random);

      let submitting = true;
      const submission = submitPaced(h, tasks, { perSecond: SUBMIT_PER_SECOND, concurrency: 16 }).finally(() => (submitting = false));

      // The chaos loop: kill a random worker, start its replacement, wait a few seconds, again.
      const kills: { pid: number; at: number }[] = [];
      let submittedAt = 0;
      const chaos = (async () => {
        for (;;) {
          await sleep(KILL_EVERY_MS * (0.5 + random()));
          if (!submitting) {
            submittedAt ||= Date.now();
            if (Date.now() - submittedAt > KILL_AFTER_SUBMIT_MS) return;
            const { rows } = await h.db.pool.query<{ n: string }>(`SELECT count(*) AS n FROM tasks WHERE status IN ('queued', 'running')`);
            if (Number(rows[0]!.n) === 0) return;
          }
          const pid = await fleet.killRandom(random);
          kills.push({ pid, at: Date.now() - started });
          await fleet.add();
        }
      })();

      const submitted = await submission;
      await chaos;
      const loadMs = Date.now() - started;
      expect(submitted.unexpected, 'answers other than 202 to POST /assign-task').toEqual([]);
      expect(submitted.accepted.size).toBe(TASKS);

      await waitForAllEnded(h, SETTLE_MS, 'every accepted task to end after the crashes');
      const { problems, figures } = await checkOutcomes(h, submitted.accepted);
      const swept = await sweep(h);
      expect(fleet.crashes, 'worker processes that died without being killed').toEqual([]);
      report('worker-crash', {
        seed,
        tasks_run: submitted.accepted.size,
        ...figures,
        processes_killed: fleet.kills,
        processes_started: fleet.all.length,
        problems: problems.length,
        load_ms: loadMs,
        total_ms: Date.now() - started,
        redis_keys_after: swept.keys,
      });
      expect(problems).toEqual([]);
      expect(fleet.kills).toBeGreaterThan(0);
    },
    SETTLE_MS + 600_000,
  );
});
