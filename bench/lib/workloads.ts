import type { Target } from './capacity.js';
import type { IdleCase } from './idle.js';
import type { WorkloadId } from './options.js';
import type { RunningSystem, SystemKind } from './systems/system.js';

interface WorkloadBase {
  id: WorkloadId;
  title: string;
  system: SystemKind;
  /**
   * Settings the system runs with for this workload, on top of its own; the runner restarts the
   * system when they differ from the running one's (DRAIN turns admission control off).
   */
  env?: Record<string, string>;
}

/**
 * One kind of task of the orchestrator: what W1-W4 and W6 measure, and what DRAIN and RATE
 * compare. A unit of work is one step (a W1 task is one unit; a W3 task, twelve).
 */
export interface TaskKind {
  /** A workload's id, or W1L (a RATE kind of its own). */
  id: WorkloadId | 'W1L';
  title: string;
  /** Steps (jobs) one task runs: the divisor of the per-step costs. */
  stepsPerTask: number;
  /** The request body of one task. */
  body: () => unknown;
  /** Prepares what the task needs on the running system (a workflow definition). */
  prepare?(system: RunningSystem): Promise<void>;
}

/** Max throughput, then latency and costs at half of it (W0-W4, W6, the peers). */
export interface CapacityWorkload extends WorkloadBase {
  measure: 'capacity';
  /** Steps (jobs) one task runs: the divisor of the per-step costs. */
  stepsPerTask: number;
  /** Prepares what the workload needs on the running system and returns its target. */
  target(system: RunningSystem): Promise<Target>;
  /** Also read Redis memory per finished task around the latency phase. */
  redisMemory?: boolean;
}

/** One task at a time on an idle service (IDLE). */
export interface IdleWorkload extends WorkloadBase {
  measure: 'idle';
  cases: IdleCase[];
  /** Chain cases whose medians give the added latency per level: the shortest and the longest. */
  chainLevels?: { from: { name: string; steps: number }; to: { name: string; steps: number }; targetMsPerLevel: number };
}

/** Twice another workload's max throughput, open loop (W5). */
export interface OverloadWorkload extends WorkloadBase {
  measure: 'overload';
  stepsPerTask: number;
  /** The workload measured before whose maximum is doubled. */
  of: WorkloadId;
  target(system: RunningSystem): Promise<Target>;
}

/** A backlog of the same number of units (steps) of each kind, submitted at once, drained (DRAIN). */
export interface DrainWorkload extends WorkloadBase {
  measure: 'drain';
  kinds: TaskKind[];
  /** The kind whose tasks per second every other kind's steps per second is divided by. */
  baseline: WorkloadId;
  /** The target for those ratios. */
  targetRatio: number;
}

/** The same units (steps) per second of each kind, open loop, and the CPU per unit (RATE). */
export interface RateWorkload extends WorkloadBase {
  measure: 'rate';
  kinds: TaskKind[];
  baseline: WorkloadId;
  /** The target: a step costs at most this many times a baseline task. */
  targetRatio: number;
}

/**
 * A map of 1,000 items against a finished echo task and a running chain, in the same run: GET
 * /result, the items' pages and cancelling (MAPSCALE, bench/lib/mapscale.ts).
 */
export interface MapScaleWorkload extends WorkloadBase {
  measure: 'mapscale';
  /** Items of the map: MAP_MAX_ITEMS, the most the service allows by default. */
  items: number;
  /**
   * Our targets (the issue says only "must not make /result or cancel slow"): /result of the map
   * in flight at most this many times the echo task's (p50s, same window), and cancelling a map
   * answers within this many times cancelling a running chain (medians).
   */
  targetResultRatio: number;
  targetCancelRatio: number;
}

export type Workload = CapacityWorkload | IdleWorkload | OverloadWorkload | DrainWorkload | RateWorkload | MapScaleWorkload;

/** Echo steps in a row, defined through the API like any user's workflow: each passes the previous one's value on. */
function chain(steps: number) {
  const ids = Array.from({ length: steps }, (_, index) => `s${index + 1}`);
  return {
    name: `bench_chain_${steps}`,
    description: `Benchmark: ${steps} echo step${steps > 1 ? 's' : ''} in a chain.`,
    parameters: [{ name: 'value', type: 'string', default: 'x' }],
    steps: ids.map((id, index) =>
      index === 0
        ? { id, tool: 'echo', input: { value: '{{params.value}}' } }
        : { id, tool: 'echo', depends_on: [ids[index - 1]!], input: { value: `{{steps.${ids[index - 1]!}.output.value}}` } },
    ),
    output: { value: `{{steps.${ids.at(-1)!}.output.value}}` },
  };
}

/** W2: three echo steps in a row. */
const CHAIN_3 = chain(3);

/**
 * W6: a map of 100 items, one `for_each` step (the workflow engine v2's syntax, accepted since it
 * landed). A first echo step returns the list; the map step runs echo once per item, at most 20
 * at once. Should POST /workflows refuse the definition, W6 fails with the API's 400 body and
 * the other workloads go on.
 */
const MAP_ITEMS = 100;
const MAP = {
  name: 'bench_map_100',
  description: 'Benchmark: one for_each step over 100 items (echo per item).',
  parameters: [{ name: 'items', type: 'array', required: true }],
  steps: [
    { id: 'list', tool: 'echo', input: { items: '{{params.items}}' } },
    {
      id: 'each',
      tool: 'echo',
      depends_on: ['list'],
      for_each: '{{steps.list.output.items}}',
      input: { value: '{{item}}', index: '{{index}}' },
      max_parallel: 20,
    },
  ],
  output: { count: '{{steps.each.output}}' },
};
const MAP_BODY = { task_type: MAP.name, params: { items: Array.from({ length: MAP_ITEMS }, (_, index) => index) } };

/** The echo task of W1 and of the peers: the same body, so the same validation work. */
const echoTask = () => ({ task_type: 'echo', params: { value: 'x' } });
/** W1L's body: W1 under a concurrency limit per key, 100 keys in turn, a limit that never binds: what passing a gate costs. */
let tenant = 0;
const limitedEchoTask = () => {
  tenant = (tenant + 1) % 100;
  return { task_type: 'echo', params: { value: 'x', tenant: `t${tenant}` }, concurrency: { key: 'bench-{{params.tenant}}', limit: 10_000 } };
};
/** W4's body. */
const diamondTask = () => ({ task_type: 'diamond' });

/** POST /workflows refused a definition: nothing ran, the system is as it was. */
export class DefinitionRefused extends Error {}

async function define(system: RunningSystem, definition: unknown): Promise<void> {
  if (!system.post) throw new Error(`${system.kind} has no API to define workflows`);
  const { status, json } = await system.post('/workflows', definition);
  if (status !== 201) throw new DefinitionRefused(`POST /workflows answered ${status}: ${JSON.stringify(json)}`);
}

/** The orchestrator's task kinds, by workload id. */
export const KINDS = {
  W1: { id: 'W1', title: 'one echo task over HTTP', stepsPerTask: 1, body: echoTask },
  W1L: { id: 'W1L', title: 'W1 under a concurrency limit per key (100 keys)', stepsPerTask: 1, body: limitedEchoTask },
  // W1 on a tool of a user's own (bench/user-worker.mjs): its results reach PostgreSQL through the API.
  W1U: {
    id: 'W1U',
    title: "W1 on a user's own worker (@orchestrator/worker)",
    stepsPerTask: 1,
    body: () => ({ task_type: 'user_echo', params: { value: 'x' } }),
    prepare: (system) => {
      if (!system.startUserWorkers) throw new Error(`${system.kind} cannot run workers of a user's own`);
      return system.startUserWorkers();
    },
  },
  W2: {
    id: 'W2',
    title: '3-step chain workflow',
    stepsPerTask: 3,
    body: () => ({ task_type: CHAIN_3.name }),
    prepare: (system) => define(system, CHAIN_3),
  },
  // Shipped with the service and loaded by the API at start.
  W3: { id: 'W3', title: 'fan_out_fan_in workflow (1->10->1)', stepsPerTask: 12, body: () => ({ task_type: 'fan_out_fan_in' }) },
  W4: { id: 'W4', title: 'diamond workflow (a -> b, c -> d)', stepsPerTask: 4, body: diamondTask },
  W6: {
    id: 'W6',
    title: 'map of 100 items (one for_each step after one echo step)',
    stepsPerTask: 1 + MAP_ITEMS,
    body: () => MAP_BODY,
    prepare: (system) => define(system, MAP),
  },
} satisfies Record<string, TaskKind>;

function capacityOf(kind: TaskKind & { id: WorkloadId }, extra: Partial<CapacityWorkload> = {}): CapacityWorkload {
  return {
    id: kind.id,
    title: kind.title,
    system: 'orchestrator',
    measure: 'capacity',
    stepsPerTask: kind.stepsPerTask,
    target: async (system) => {
      await kind.prepare?.(system);
      return system.target(kind.body);
    },
    ...extra,
  };
}

export const WORKLOADS: Workload[] = [
  {
    id: 'W0',
    title: 'raw BullMQ no-op job (baseline)',
    system: 'raw-bullmq',
    measure: 'capacity',
    stepsPerTask: 1,
    target: async (system) => system.target(() => undefined),
  },
  capacityOf(KINDS.W1, { redisMemory: true }),
  capacityOf(KINDS.W2),
  capacityOf(KINDS.W3),
  capacityOf(KINDS.W4),
  capacityOf(KINDS.W6),
  {
    id: 'RATE',
    title: 'CPU per unit at the same units per second (W1 tasks, W2 and W3 steps)',
    system: 'orchestrator',
    measure: 'rate',
    // W1L: what a limit per key adds to a W1 task (issue 20 asks for the cost; it sets no target).
    kinds: [KINDS.W1, KINDS.W2, KINDS.W3, KINDS.W1L],
    baseline: 'W1',
    // The target: a workflow step costs at most 1.2 times a W1 task, at the same rate.
    targetRatio: 1.2,
  },
  {
    // What the durable history costs (docs/workflows.md "History"): RATE's W1 and W3 on a service without it.
    id: 'HIST',
    title: "RATE's W1 and W3 with TASK_HISTORY=off",
    system: 'orchestrator',
    env: { TASK_HISTORY: 'off' },
    measure: 'rate',
    kinds: [KINDS.W1, KINDS.W3],
    baseline: 'W1',
    targetRatio: 1.2,
  },
  {
    id: 'IDLE',
    title: 'idle latency: one task at a time',
    system: 'orchestrator',
    measure: 'idle',
    // The targets for the median, created -> finished.
    cases: [
      { name: 'echo', body: echoTask, targetMedianMs: 3, stepAlone: true },
      { name: 'diamond', body: diamondTask, targetMedianMs: 12, stepAlone: false },
      { name: 'chain of 1', body: () => ({ task_type: chain(1).name }), prepare: (system) => define(system, chain(1)), stepAlone: false },
      { name: 'chain of 5', body: () => ({ task_type: chain(5).name }), prepare: (system) => define(system, chain(5)), stepAlone: false },
    ],
    // Each level of a chain adds at most 3 ms when idle: (median of 5 steps - median of 1) / 4.
    chainLevels: { from: { name: 'chain of 1', steps: 1 }, to: { name: 'chain of 5', steps: 5 }, targetMsPerLevel: 3 },
  },
  {
    id: 'MAPSCALE',
    title: 'a map of 1,000 items: GET /result, its items pages and cancel, against an echo task and a chain',
    system: 'orchestrator',
    measure: 'mapscale',
    items: 1_000,
    targetResultRatio: 2,
    targetCancelRatio: 2,
  },
  {
    id: 'W5',
    title: "overload: twice W1's max, open loop",
    system: 'orchestrator',
    measure: 'overload',
    stepsPerTask: 1,
    of: 'W1',
    // A flood from many clients: enough connections that the generator never queues a request
    // itself, so the service sees all of the excess and must refuse it (with the default 128,
    // the excess waited in the generator and the service never saw it).
    target: async (system) => system.target(echoTask, { connections: 1_024 }),
  },
  {
    id: 'DRAIN',
    title: 'capacity draining a backlog: the same number of steps of each kind, submitted at once',
    system: 'orchestrator',
    // The backlog is the point: admission control would refuse most of it (it admits what the
    // workers finish in ADMISSION_MAX_WAIT_MS, at least ADMISSION_MIN_BACKLOG = 1,000 step jobs).
    // Off for this phase only, on a service started for it; W5 measures the defaults.
    env: { ADMISSION_MAX_WAIT_MS: '0', ADMISSION_MAX_IN_FLIGHT: '0' },
    measure: 'drain',
    kinds: [KINDS.W1, KINDS.W2, KINDS.W3, KINDS.W4],
    baseline: 'W1',
    // The target: a workflow drains at least 0.7 times as many steps per second as W1 tasks.
    targetRatio: 0.7,
  },
  // Last on the orchestrator: the user's workers, once started, stay (and count) with the service.
  capacityOf(KINDS.W1U),
  {
    id: 'USER',
    title: "CPU per task at the same rate: W1 on the built-in worker, W1U on a user's own",
    system: 'orchestrator',
    measure: 'rate',
    kinds: [KINDS.W1, KINDS.W1U],
    baseline: 'W1',
    // Issue 30's target: a user's worker adds at most 1.2 times the CPU of a built-in step, summed over all processes.
    targetRatio: 1.2,
  },
  {
    id: 'pg-boss',
    title: 'peer: W1 on pg-boss 10',
    system: 'pg-boss',
    measure: 'capacity',
    stepsPerTask: 1,
    target: async (system) => system.target(echoTask),
  },
  {
    id: 'graphile-worker',
    title: 'peer: W1 on graphile-worker 0.17',
    system: 'graphile-worker',
    measure: 'capacity',
    stepsPerTask: 1,
    target: async (system) => system.target(echoTask),
  },
];
