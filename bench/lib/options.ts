import { parseArgs } from 'node:util';

// RATE, IDLE, MAPSCALE and W5 run on the orchestrator after W1-W4 and W6: IDLE on a service that
// has settled, MAPSCALE after it (its maps of 1,000 items would disturb IDLE's one-at-a-time
// tasks), W5 after them because it overloads it on purpose; DRAIN last, on a service started
// again with admission control off.
export const WORKLOAD_IDS = [
  'W0',
  'W1',
  'W2',
  'W3',
  'W4',
  'W6',
  'RATE',
  'HIST',
  'IDLE',
  'MAPSCALE',
  'W5',
  'DRAIN',
  'W1U',
  'USER',
  'pg-boss',
  'graphile-worker',
  'STORM',
  'LOOP',
] as const;
export type WorkloadId = (typeof WORKLOAD_IDS)[number];

/** How long each part of a workload's measurement lasts. */
export interface PhaseTiming {
  /** Closed-loop probe that gives the capacity search its starting rate (up to twice as long for a slow system). */
  probeMs: number;
  /** One stage of the capacity search at a fixed offered rate. */
  stageMs: number;
  /** Most stages per workload, refinements included. */
  maxStages: number;
  /** Bisections between the highest passing and the lowest failing rate. */
  refinements: number;
  /** Open-loop latency phase at half the maximum rate (the costs are measured over it too). */
  latencyMs: number;
  /** W5: how long twice W1's maximum rate is offered. */
  overloadMs: number;
  /**
   * EVENTS_KEEP_AFTER_END_S the orchestrator runs with: how long a finished task's event stream
   * stays in Redis, and so how long the Redis-memory measurement around W1 waits for it to go.
   * Full mode keeps the service's default (60 s); quick mode shortens it so as not to wait a minute.
   */
  eventsKeepAfterEndS: number;
  /** RATE: how long each kind is offered at the common units-per-second rate. */
  rateMs: number;
  /** DRAIN: units (steps) submitted at once per kind. */
  drainUnits: number;
  /** The idle floor measured after each system starts: how long nothing is sent. */
  floorMs: number;
  /** MAPSCALE: cancellations of each kind (a chain, maps of 1,000 items), interleaved. */
  mapCancelRounds: number;
}

export interface BenchOptions {
  /** Fewer, shorter stages: the whole bench in about two minutes. @defaultValue false */
  quick: boolean;
  /** Workloads to run, in this order. W0 is always added: every ratio needs it. @defaultValue all */
  workloads: WorkloadId[];
  /** Complete runs; the report gives the median of each metric. @defaultValue 1 */
  runs: number;
  /** Worker processes (orchestrator workers, raw BullMQ workers, peer workers). @defaultValue 2 */
  workers: number;
  /** The orchestrator's API processes; the load generator spreads its requests over them. @defaultValue 1 */
  apis: number;
  /**
   * Tasks/s of every latency phase (and so of the costs measured in it), at most the workload's
   * max; unset: half the max. Costs per task depend on the rate (batches grow with it), so
   * configurations are compared at one rate. @defaultValue undefined
   */
  latencyRate?: number;
  /**
   * RATE: units (steps) per second every kind is offered at: W1 at this many tasks/s, W2 at a
   * third of it, W3 at a twelfth. @defaultValue 180
   */
  unitRate: number;
  /** DRAIN: concurrent HTTP connections that submit the backlog. @defaultValue 64 */
  drainConnections: number;
  /** WORKER_CONCURRENCY: jobs in flight per worker process, for every system. @defaultValue 10 */
  concurrency: number;
  /** DATABASE_POOL_SIZE: PostgreSQL connections per process. @defaultValue 10 */
  poolSize: number;
  /** Keep-alive connections of the HTTP load generator. @defaultValue 128 */
  connections: number;
  /** How far completions may fall behind arrivals in a passing stage (fraction of offered work). @defaultValue 0.05 */
  tolerance: number;
  timing: PhaseTiming;
  /** Use this Redis instead of a private redis-server (its counters then include other clients). */
  redisUrl?: string;
  /** PostgreSQL server; the bench creates and drops its own databases there. @defaultValue postgresql://postgres@127.0.0.1:5432/ */
  postgresUrl: string;
  /** Keep the databases after the run, for inspection. @defaultValue false */
  keep: boolean;
  /** Where results and logs go. @defaultValue bench/results */
  outDir: string;
}

const FULL: PhaseTiming = {
  probeMs: 4_000,
  stageMs: 8_000,
  maxStages: 9,
  refinements: 3,
  latencyMs: 30_000,
  overloadMs: 30_000,
  eventsKeepAfterEndS: 60,
  rateMs: 20_000,
  drainUnits: 3_600,
  floorMs: 10_000,
  mapCancelRounds: 5,
};
const QUICK: PhaseTiming = {
  probeMs: 1_500,
  stageMs: 1_500,
  maxStages: 4,
  refinements: 1,
  latencyMs: 2_500,
  overloadMs: 10_000,
  eventsKeepAfterEndS: 5,
  rateMs: 4_000,
  drainUnits: 900,
  floorMs: 2_000,
  mapCancelRounds: 3,
};

export const USAGE = `npm run bench -- [options]

  --quick                 fewer, shorter stages (about three minutes)
  --workloads W1,W3       run only these (W0, W1, W2, W3, W4, W6, RATE, HIST, IDLE, MAPSCALE, W5, DRAIN,
                          W1U, USER, pg-boss, graphile-worker, STORM, LOOP); W0 is always run, and W1
                          too with W5 (W5 offers twice W1's maximum) and W1U (compared with it). W1U:
                          W1 on a user's own worker (bench/user-worker.mjs); USER: its CPU per task
                          against W1's at the same rate. STORM: W5 under a retry storm on
                          npm start's build (bench/storm.ts: W5 closed loop, W5 fair, the cost
                          of a refusal), after the other workloads; not in --quick unless named.
                          LOOP: the card's closed loop (submit, long-poll the result) at 1, 8 and
                          32 clients against a naive baseline (bench/loop.ts), after the others
  --runs N                N complete runs; the table shows the median of each metric (default 1)
  --workers N             worker processes per system (default 2)
  --apis N                the orchestrator's API processes, requests spread over them (default 1)
  --latency-rate R        tasks/s of the latency phases, where costs are measured (default: half the max)
  --unit-rate R           RATE: units (steps) per second of every kind: W1 at R tasks/s, W2 at R/3,
                          W3 at R/12 (default 180)
  --rate-seconds S        RATE: how long each kind is offered (default 20, quick 4)
  --drain-units N         DRAIN: steps submitted at once per kind (default 3600, quick 900)
  --drain-connections N   DRAIN: concurrent HTTP connections submitting them (default 64)
  --floor-seconds S       idle floor after each system starts: CPU per second with no load (default 10, quick 2)
  --concurrency N         jobs in flight per worker process, WORKER_CONCURRENCY (default 10)
  --pool-size N           PostgreSQL connections per process, DATABASE_POOL_SIZE (default 10)
  --connections N         HTTP connections of the load generator (default 128)
  --tolerance F           backlog growth allowed in a passing stage, fraction of offered work (default 0.05)
  --stage-seconds S       length of one capacity stage (default 8, quick 1.5)
  --latency-seconds S     length of the latency phase (default 30, quick 2.5)
  --overload-seconds S    length of W5's overload (default 30, quick 10)
  --redis-url URL         use this Redis instead of a private redis-server
  --postgres-url URL      PostgreSQL server (default postgresql://postgres@127.0.0.1:5432/)
  --keep                  keep the bench databases afterwards
  --out DIR               results directory (default bench/results)
`;

function positiveInt(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < 1) throw new Error(`--${name} must be a positive integer (got ${JSON.stringify(value)})`);
  return parsed;
}

function positiveNumber(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const parsed = Number(value);
  if (!Number.isFinite(parsed) || parsed <= 0) throw new Error(`--${name} must be a positive number (got ${JSON.stringify(value)})`);
  return parsed;
}

function workloadList(value: string | undefined): WorkloadId[] {
  if (value === undefined) return [...WORKLOAD_IDS];
  const wanted = value
    .split(',')
    .map((entry) => entry.trim())
    .filter(Boolean);
  const unknown = wanted.filter((entry) => !(WORKLOAD_IDS as readonly string[]).includes(entry));
  if (unknown.length > 0) throw new Error(`--workloads: unknown ${unknown.join(', ')} (known: ${WORKLOAD_IDS.join(', ')})`);
  // Always in the canonical order, W0 first: the baseline is measured before what is compared to
  // it, and W1 before W5, whose offered rate is twice W1's maximum.
  const needed = new Set<string>(['W0', ...wanted, ...(wanted.includes('W5') || wanted.includes('W1U') ? ['W1'] : [])]);
  return WORKLOAD_IDS.filter((id) => needed.has(id));
}

/** Parses the command line; returns undefined after printing the usage for --help. */
export function parseOptions(argv: string[]): BenchOptions | undefined {
  const { values } = parseArgs({
    args: argv,
    options: {
      help: { type: 'boolean', short: 'h' },
      quick: { type: 'boolean' },
      workloads: { type: 'string' },
      runs: { type: 'string' },
      workers: { type: 'string' },
      apis: { type: 'string' },
      'latency-rate': { type: 'string' },
      'unit-rate': { type: 'string' },
      'rate-seconds': { type: 'string' },
      'drain-units': { type: 'string' },
      'drain-connections': { type: 'string' },
      'floor-seconds': { type: 'string' },
      concurrency: { type: 'string' },
      'pool-size': { type: 'string' },
      connections: { type: 'string' },
      tolerance: { type: 'string' },
      'stage-seconds': { type: 'string' },
      'latency-seconds': { type: 'string' },
      'overload-seconds': { type: 'string' },
      'redis-url': { type: 'string' },
      'postgres-url': { type: 'string' },
      keep: { type: 'boolean' },
      out: { type: 'string' },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return undefined;
  }
  const quick = values.quick ?? false;
  const stageSeconds = positiveNumber('stage-seconds', values['stage-seconds']);
  const latencySeconds = positiveNumber('latency-seconds', values['latency-seconds']);
  const overloadSeconds = positiveNumber('overload-seconds', values['overload-seconds']);
  const rateSeconds = positiveNumber('rate-seconds', values['rate-seconds']);
  const floorSeconds = positiveNumber('floor-seconds', values['floor-seconds']);
  const drainUnits = values['drain-units'] === undefined ? undefined : positiveInt('drain-units', values['drain-units'], 1);
  const tolerance = positiveNumber('tolerance', values.tolerance) ?? 0.05;
  if (tolerance >= 1) throw new Error('--tolerance must be below 1');
  return {
    quick,
    // The storm takes minutes of its own: quick runs have it only when it is named.
    workloads: workloadList(values.workloads).filter((id) => id !== 'STORM' || !quick || values.workloads !== undefined),
    runs: positiveInt('runs', values.runs, 1),
    workers: positiveInt('workers', values.workers, 2),
    apis: positiveInt('apis', values.apis, 1),
    ...(values['latency-rate'] ? { latencyRate: positiveNumber('latency-rate', values['latency-rate']) } : {}),
    unitRate: positiveNumber('unit-rate', values['unit-rate']) ?? 180,
    drainConnections: positiveInt('drain-connections', values['drain-connections'], 64),
    concurrency: positiveInt('concurrency', values.concurrency, 10),
    poolSize: positiveInt('pool-size', values['pool-size'], 10),
    connections: positiveInt('connections', values.connections, 128),
    tolerance,
    timing: {
      ...(quick ? QUICK : FULL),
      ...(stageSeconds ? { stageMs: stageSeconds * 1000 } : {}),
      ...(latencySeconds ? { latencyMs: latencySeconds * 1000 } : {}),
      ...(overloadSeconds ? { overloadMs: overloadSeconds * 1000 } : {}),
      ...(rateSeconds ? { rateMs: rateSeconds * 1000 } : {}),
      ...(floorSeconds ? { floorMs: floorSeconds * 1000 } : {}),
      ...(drainUnits ? { drainUnits } : {}),
    },
    ...(values['redis-url'] ? { redisUrl: values['redis-url'] } : {}),
    postgresUrl: values['postgres-url'] ?? 'postgresql://postgres@127.0.0.1:5432/',
    keep: values.keep ?? false,
    outDir: values.out ?? 'bench/results',
  };
}
