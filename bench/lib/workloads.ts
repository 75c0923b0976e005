import type { Target } from './capacity.js';
import type { IdleCase } from './idle.js';
import type { WorkloadId } from './options.js';
import type { RunningSystem, SystemKind } from './systems/system.js';

interface WorkloadBase {
  id: WorkloadId;
  title: string;
  system: SystemKind;
}

/** Max throughput, then latency and costs at half of it (W0-W4, the peers). */
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
}

/** Twice another workload's max throughput, open loop (W5). */
export interface OverloadWorkload extends WorkloadBase {
  measure: 'overload';
  stepsPerTask: number;
  /** The workload measured before whose maximum is doubled. */
  of: WorkloadId;
  target(system: RunningSystem): Promise<Target>;
}

export type Workload = CapacityWorkload | IdleWorkload | OverloadWorkload;

/** W2: three echo steps in a row, defined through the API like any user's workflow. */
const CHAIN = {
  name: 'bench_chain_3',
  description: 'Benchmark: three echo steps in a chain.',
  parameters: [{ name: 'value', type: 'string', default: 'x' }],
  steps: [
    { id: 'first', tool: 'echo', input: { value: '{{params.value}}' } },
    { id: 'second', tool: 'echo', depends_on: ['first'], input: { value: '{{steps.first.output.value}}' } },
    { id: 'third', tool: 'echo', depends_on: ['second'], input: { value: '{{steps.second.output.value}}' } },
  ],
  output: { value: '{{steps.third.output.value}}' },
};

/** The echo task of W1 and of the peers: the same body, so the same validation work. */
const echoTask = () => ({ task_type: 'echo', params: { value: 'x' } });
/** W4's body. */
const diamondTask = () => ({ task_type: 'diamond' });

async function define(system: RunningSystem, definition: unknown): Promise<void> {
  if (!system.post) throw new Error(`${system.kind} has no API to define workflows`);
  const { status, json } = await system.post('/workflows', definition);
  if (status !== 201) throw new Error(`POST /workflows answered ${status}: ${JSON.stringify(json)}`);
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
  {
    id: 'W1',
    title: 'one echo task over HTTP',
    system: 'orchestrator',
    measure: 'capacity',
    stepsPerTask: 1,
    target: async (system) => system.target(echoTask),
    redisMemory: true,
  },
  {
    id: 'W2',
    title: '3-step chain workflow',
    system: 'orchestrator',
    measure: 'capacity',
    stepsPerTask: 3,
    target: async (system) => {
      await define(system, CHAIN);
      return system.target(() => ({ task_type: CHAIN.name }));
    },
  },
  {
    id: 'W3',
    title: 'fan_out_fan_in workflow (1->10->1)',
    system: 'orchestrator',
    measure: 'capacity',
    stepsPerTask: 12,
    // Shipped with the service and loaded by the API at start.
    target: async (system) => system.target(() => ({ task_type: 'fan_out_fan_in' })),
  },
  {
    id: 'W4',
    title: 'diamond workflow (a -> b, c -> d)',
    system: 'orchestrator',
    measure: 'capacity',
    stepsPerTask: 4,
    target: async (system) => system.target(diamondTask),
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
    ],
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
