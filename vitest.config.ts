import { configDefaults, defineConfig } from 'vitest/config';
import ChaosSpreadSequencer from './test/sequencer.js';

/**
 * The core and workflow tests that run a second time against a private three-master Redis
 * Cluster (test/cluster/global-setup.ts): what puts keys of one task in several slots or talks
 * across nodes (submission and idempotency, pub/sub for events and cross-process cancel, flows
 * whose children live in other queues, random DAGs of every step kind). Tests that only make
 * sense on one Redis (a proxy in front of it, REDIS_URL pointing elsewhere) stay out, and so do
 * the shipped examples: their step kinds are among the random DAGs' (busy machine, 2026-11-23:
 * 13 s of the project's 256 s).
 */
const CLUSTER_FILES = [
  'test/api/assign-task.test.ts',
  'test/api/events.test.ts',
  'test/workflows/execution.test.ts',
  'test/workflows/random-dags.test.ts',
  'test/workflows/cancel.test.ts',
];

/**
 * The tests that run again with the service's DATABASE_URL through a private PgBouncer in
 * transaction mode (test/pgbouncer/global-setup.ts), and DATABASE_DIRECT_URL to PostgreSQL
 * itself: those whose database work differs in how it uses a connection, where transaction
 * pooling could break it — the submission's transaction and its idempotency race (assign-task),
 * the engine's interactive transactions with row locks, from the API and from another worker
 * process (execution, cancel), the transaction-level advisory lock of workflow versions, taken
 * by concurrent posts and by processes starting together (definitions, versions), sub-workflows,
 * maps and durable timers (kinds), first-decision-wins on waits and the callback's transaction
 * (waits), and test/pgbouncer itself (every transaction through PgBouncer, 100 tasks on its
 * server connections, PostgreSQL unreachable behind it).
 * Not rerun, since their queries are the same as those files' and what they add is elsewhere:
 * events (its streams and long-polls wait on Redis), random-dags, history and examples (DAG
 * semantics), approval-links (a browser on the waits' pages), cancel-map (bulk statements, one
 * transaction), per-key-limits (its state is in Redis), compensation-dags (DAG semantics). Busy
 * machine, 2026-11-23: the first six took 163 s of the project's 356 s of test files. A new test
 * file joins this list when it uses a database connection in a way the kept files do not.
 */
const PGBOUNCER_FILES = [
  'test/api/assign-task.test.ts',
  'test/workflows/execution.test.ts',
  'test/workflows/cancel.test.ts',
  'test/workflows/definitions.test.ts',
  'test/workflows/versions.test.ts',
  'test/workflows/kinds.test.ts',
  'test/workflows/waits.test.ts',
  'test/pgbouncer/**/*.test.ts',
];
/**
 * The PostgreSQL-fault chaos file, in the pgbouncer project too: connections severed and
 * PostgreSQL unreachable behind PgBouncer. Those that restart Redis stay out (they test Redis, not
 * the database's connections), and so does worker-crash: what it kills is a worker process, whose
 * client connection then closes, and PgBouncer in transaction mode rolls back a server connection
 * whose client went away mid-transaction (its documented behaviour) just as PostgreSQL does; the
 * queries that recover are those of the default run. Its rerun took 59 s of a loaded CI run
 * (2026-11-25).
 */
const PGBOUNCER_CHAOS_FILES = ['test/chaos/postgres-faults.test.ts'];
/**
 * What times the service against a bound of tens of milliseconds over an idle baseline (a
 * pathological input against its benign twin, GET /health polled throughout): it runs after
 * every other file, with none beside it. Among them, the other files' bursts (a browser
 * starting, a cluster forming) stalled it for 300-1,300 ms where alone, beside two busy loops,
 * it stays within the bounds (loaded CI on a fresh clone, 2026-11-29: two failures in one run,
 * its /health 665 ms against a 353 ms bound in each of three runs of an input, 44 ms alone).
 */
const ALONE_FILES = ['test/fuzz/pathological.test.ts'];

export default defineConfig({
  test: {
    // Each file gets its own database and queue prefix, so files run in parallel safely. Three at
    // once on two cores: most files mostly wait (on processes they start, timers, polls), and
    // beside two busy loops more of them take a larger share of the cores. CI on a fresh clone
    // with two busy loops, 2026-11-28: 992 s at two (tests 907 s), 792 s at three (tests 725 s);
    // quiet, 604 s at two. Three failed once before (2026-11-25, test/fuzz/pathological's /health
    // bound, 279-314 ms against 249), when each input ran once; it now keeps the best of three
    // runs of each, and passed (its slowest /health 63 ms against a 309 ms bound).
    pool: 'forks',
    maxWorkers: 3,
    // The projects one after another, each project's chaos files spread through it (test/sequencer.ts).
    sequence: { sequencer: ChaosSpreadSequencer },
    // A worker process keeps the modules it imported from one file to the next (every project).
    // Every file imports the whole service, and importing it again was 310 s of a loaded CI run's
    // 801 s of default project (123 files); without it the project took 540 s (2026-11-25, two
    // busy loops, with coverage); the chaos suite's seven files, one after another, 2 min 52 s
    // isolated against 2 min 29 s (2026-11-26, quiet). It is safe because each file builds its own
    // service (createHarness: its own database, queue prefix, config and registries) and closes
    // it; no test mocks modules.
    isolate: false,
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // expect.poll's own default (1 s) is shorter than a console page's fetch can take beside two
    // busy loops: CI on a fresh clone failed once (2026-11-28, test/console/tasks' param search
    // still showing the unfiltered list after 1 s). Playwright's own waits allow 30 s; a poll
    // that can never pass still fails, only later.
    expect: { poll: { timeout: 15_000 } },
    restoreMocks: true,
    // Off unless asked for (`npm test -- --coverage`; .ci/run asks for it on the default project).
    // Only code that runs inside vitest's own processes is counted: the API and worker processes
    // some tests spawn are not.
    coverage: {
      provider: 'v8',
      include: ['src/**/*.ts', 'workers/**/*.ts'],
      // Tests, bench and scripts lie outside include; the Prisma client is generated.
      // The console (src/console) runs in a browser, not in vitest: test/console drives it in Chromium.
      exclude: ['src/generated/**', '**/*.d.ts', 'src/console/**'],
      reporter: ['text-summary', 'json-summary', 'html'],
      reportsDirectory: 'coverage',
      // The figures of a run with a failed test still say what the rest covered.
      reportOnFailure: true,
      // Three points under the default project's figures on 2026-11-22 (lines 94.2%, statements
      // 91.8%, functions 92.5%, branches 87.8%), so a change that leaves code untested fails CI.
      thresholds: { lines: 91, statements: 88, functions: 89, branches: 84 },
    },
    projects: [
      {
        // With the chaos suites, which kill processes, restart a private Redis and sever
        // PostgreSQL connections (sizes: CHAOS_PROFILE=full, `npm run test:chaos`, one file at a
        // time, or the knobs in test/chaos/support.ts). They ran after the other files, one at a
        // time, until 2026-11-27, when most of that phase was waiting with a core idle; beside the
        // others their bounds hold (test/sequencer.ts). `npx vitest run` beside two busy loops:
        // 1,311 s that way (the last 277 s one file at a time), 1,151 s spread.
        extends: true,
        test: {
          name: 'default',
          include: ['test/**/*.test.ts'],
          exclude: [...configDefaults.exclude, 'test/cluster/**', 'test/pgbouncer/**', ...ALONE_FILES],
          globalSetup: ['test/global-setup.ts'],
        },
      },
      {
        extends: true,
        test: {
          name: 'alone',
          include: ALONE_FILES,
          globalSetup: ['test/global-setup.ts'],
          // Its group starts when every project of group 0 (the others) has ended.
          sequence: { groupOrder: 1 },
          fileParallelism: false,
        },
      },
      {
        extends: true,
        test: {
          name: 'cluster',
          include: [...CLUSTER_FILES, 'test/cluster/**/*.test.ts'],
          globalSetup: ['test/global-setup.ts', 'test/cluster/global-setup.ts'],
        },
      },
      {
        extends: true,
        test: {
          name: 'pgbouncer',
          include: [...PGBOUNCER_FILES, ...PGBOUNCER_CHAOS_FILES],
          globalSetup: ['test/global-setup.ts', 'test/pgbouncer/global-setup.ts'],
        },
      },
    ],
  },
});
