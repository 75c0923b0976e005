/**
 * The capacity model: what to run for a target rate of tasks, from the per-component costs a
 * bench run measured. `npm run capacity -- [results.json] [--rates 1000,10000,50000]` prints the
 * README's table (default input: bench/results/latest.json, which `npm run bench` writes).
 *
 * The model is linear on purpose: each component's CPU per task, measured on the bench machine at
 * half of the maximum rate, times the target rate, divided by the utilisation a component should
 * run at to keep latency flat. That holds only if costs do not grow with replicas (no
 * per-replica coordination, no lost batching): `npm run bench -- --apis 2 --workers 4` checks it.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

/** Planned utilisation of every core: headroom for bursts, GC pauses and a failed-over replica. */
const UTILISATION = 0.7;

interface Costs {
  cpuPer1000: { api: number; workers: number; redis: number; postgres: number };
  pgTransactionsPerStep: number;
  redisCommandsPerStep: number;
  luaPerStep: number;
}

interface Results {
  date: string;
  revision?: string;
  machine?: { cpu?: string; cores?: number };
  runs: { workloads: { id: string; stepsPerTask: number; maxTasksPerS?: number; costs?: Costs }[] }[];
}

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};

/** Each cost's median over the runs, for one workload. */
function costsOf(results: Results, id: string): Costs & { stepsPerTask: number } {
  const found = results.runs.flatMap((run) => run.workloads.filter((workload) => workload.id === id && workload.costs));
  if (found.length === 0) throw new Error(`the results have no costs for ${id}: run npm run bench with ${id}`);
  const pick = (get: (costs: Costs) => number) => median(found.map((workload) => get(workload.costs!)));
  return {
    stepsPerTask: found[0]!.stepsPerTask,
    cpuPer1000: {
      api: pick((costs) => costs.cpuPer1000.api),
      workers: pick((costs) => costs.cpuPer1000.workers),
      redis: pick((costs) => costs.cpuPer1000.redis),
      postgres: pick((costs) => costs.cpuPer1000.postgres),
    },
    pgTransactionsPerStep: pick((costs) => costs.pgTransactionsPerStep),
    redisCommandsPerStep: pick((costs) => costs.redisCommandsPerStep),
    luaPerStep: pick((costs) => costs.luaPerStep),
  };
}

const cores = (ratePerS: number, cpuSecondsPer1000: number) => (ratePerS * cpuSecondsPer1000) / 1000 / UTILISATION;
const round = (value: number) => (value < 10 ? Math.ceil(value * 2) / 2 : Math.ceil(value));
const thousands = (value: number) => Math.round(value).toLocaleString('en-US');

export function capacityTable(results: Results, rates: number[], workload = 'W1'): string {
  const costs = costsOf(results, workload);
  const c = costs.cpuPer1000;
  const lines = [
    `| Tasks/s (${workload}) | API cores | Worker cores | Redis masters (1 core each) | PostgreSQL cores | PostgreSQL commits/s | Redis commands/s |`,
    '|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const rate of rates) {
    const steps = rate * costs.stepsPerTask;
    lines.push(
      `| ${thousands(rate)} | ${round(cores(rate, c.api))} | ${round(cores(rate, c.workers))} | ${Math.max(1, Math.ceil(cores(rate, c.redis)))} | ` +
        `${round(cores(rate, c.postgres))} | ${thousands(steps * costs.pgTransactionsPerStep)} | ${thousands(steps * costs.redisCommandsPerStep)} |`,
    );
  }
  const inputs =
    `Inputs (${workload}, ${results.date.slice(0, 10)}${results.revision ? `, ${results.revision}` : ''}): CPU per 1,000 tasks API ${c.api.toFixed(2)} s, ` +
    `workers ${c.workers.toFixed(2)} s, Redis ${c.redis.toFixed(2)} s, PostgreSQL ${c.postgres.toFixed(2)} s; ` +
    `${costs.pgTransactionsPerStep.toFixed(2)} PostgreSQL commits, ${costs.redisCommandsPerStep.toFixed(1)} Redis commands (${costs.luaPerStep.toFixed(2)} Lua) per step; ` +
    `every core planned at ${UTILISATION * 100} %.`;
  return `${lines.join('\n')}\n\n${inputs}`;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values, positionals } = parseArgs({ allowPositionals: true, options: { rates: { type: 'string' }, workload: { type: 'string' } } });
  const file = positionals[0] ?? 'bench/results/latest.json';
  const rates = (values.rates ?? '1000,10000,50000').split(',').map(Number);
  if (rates.some((rate) => !Number.isFinite(rate) || rate <= 0)) throw new Error('--rates takes positive numbers, e.g. 1000,10000');
  process.stdout.write(`${capacityTable(JSON.parse(readFileSync(file, 'utf8')) as Results, rates, values.workload ?? 'W1')}\n`);
}
