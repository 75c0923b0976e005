import type { Target } from './capacity.js';
import type { WorkloadId } from './options.js';
import type { RunningSystem, SystemKind } from './systems/system.js';

export interface Workload {
  id: WorkloadId;
  title: string;
  system: SystemKind;
  /** Steps (jobs) one task runs: the divisor of the per-step costs. */
  stepsPerTask: number;
  /** Prepares what the workload needs on the running system and returns its target. */
  target(system: RunningSystem): Promise<Target>;
}

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
    stepsPerTask: 1,
    target: async (system) => system.target(() => undefined),
  },
  {
    id: 'W1',
    title: 'one echo task over HTTP',
    system: 'orchestrator',
    stepsPerTask: 1,
    target: async (system) => system.target(echoTask),
  },
  {
    id: 'W2',
    title: '3-step chain workflow',
    system: 'orchestrator',
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
    stepsPerTask: 12,
    // Shipped with the service and loaded by the API at start.
    target: async (system) => system.target(() => ({ task_type: 'fan_out_fan_in' })),
  },
  {
    id: 'W4',
    title: 'diamond workflow (a -> b, c -> d)',
    system: 'orchestrator',
    stepsPerTask: 4,
    target: async (system) => system.target(() => ({ task_type: 'diamond' })),
  },
  {
    id: 'pg-boss',
    title: 'peer: W1 on pg-boss 10',
    system: 'pg-boss',
    stepsPerTask: 1,
    target: async (system) => system.target(echoTask),
  },
  {
    id: 'graphile-worker',
    title: 'peer: W1 on graphile-worker 0.17',
    system: 'graphile-worker',
    stepsPerTask: 1,
    target: async (system) => system.target(echoTask),
  },
];
