import type { Redis } from 'ioredis';
import { type CountingClient, cpuSeconds, LUA_COMMANDS, type PgAdmin, redisCommandCalls } from './metrics.js';

/** Processes whose CPU time is charged to a workload, by kind. */
export interface ProcessKinds {
  api: number[];
  workers: number[];
}

/** What a cost measurement reads: the system's processes, Redis, and (if it has one) its database. */
export interface CostSources {
  redis: Redis;
  redisPid: number;
  admin: PgAdmin;
  processes: ProcessKinds;
  database?: string;
  /** The bench's own connection to `database`; its transactions are not the workload's. */
  benchClient?: CountingClient;
}

interface Snapshot {
  redisCalls: Map<string, number>;
  cpu: { api: number; workers: number; redis: number };
  /** The bench process itself: the load generator (and W0's producer). */
  generator: NodeJS.CpuUsage;
  postgresCpu: Map<number, number>;
  transactions?: number;
  benchTransactions: number;
  pgTime?: Date;
}

export interface Costs {
  tasks: number;
  steps: number;
  /** EVALSHA + EVAL (and read-only variants, functions) per step. */
  luaPerStep: number;
  /** Every other Redis command per step; INFO commandstats also counts the commands that scripts run. */
  redisCommandsPerStep: number;
  /** The most frequent Redis commands, calls per step. */
  redisTop: Record<string, number>;
  /** Transactions in the system's database per step; absent without PostgreSQL. */
  pgTransactionsPerStep?: number;
  /** Raw transaction count, and the connection start-ups taken out of it. */
  pgTransactions?: number;
  pgNewConnections?: number;
  /** CPU seconds per 1,000 tasks, by process kind; `generator` is the bench process (load generator, W0's producer). */
  cpuPer1000: { api?: number; workers: number; redis: number; postgres?: number; generator: number };
}

function sumCpu(pids: number[]): number {
  return pids.reduce((total, pid) => total + (cpuSeconds(pid) ?? 0), 0);
}

async function postgresCpu(sources: CostSources): Promise<Map<number, number>> {
  const cpu = new Map<number, number>();
  if (!sources.database) return cpu;
  for (const pid of await sources.admin.backendPids(sources.database)) cpu.set(pid, cpuSeconds(pid) ?? 0);
  return cpu;
}

/** Starts a measurement: publishes pending PostgreSQL counters, then reads every counter. */
export async function beginCosts(sources: CostSources): Promise<Snapshot> {
  await sources.benchClient?.close();
  let transactions: number | undefined;
  let pgTime: Date | undefined;
  if (sources.database) {
    await sources.admin.flush(sources.database);
    transactions = await sources.admin.transactions(sources.database);
    pgTime = await sources.admin.now();
  }
  return {
    redisCalls: await redisCommandCalls(sources.redis),
    cpu: { api: sumCpu(sources.processes.api), workers: sumCpu(sources.processes.workers), redis: cpuSeconds(sources.redisPid) ?? 0 },
    postgresCpu: await postgresCpu(sources),
    generator: process.cpuUsage(),
    ...(transactions !== undefined ? { transactions } : {}),
    ...(pgTime ? { pgTime } : {}),
    benchTransactions: sources.benchClient?.transactions ?? 0,
  };
}

/** Ends a measurement started by `beginCosts`, once every task of it has finished. */
export async function endCosts(sources: CostSources, start: Snapshot, tasks: number, stepsPerTask: number): Promise<Costs> {
  await sources.benchClient?.close();
  const cpu = { api: sumCpu(sources.processes.api), workers: sumCpu(sources.processes.workers), redis: cpuSeconds(sources.redisPid) ?? 0 };
  const generator = process.cpuUsage(start.generator);
  const pgCpu = await postgresCpu(sources);
  const redisCalls = await redisCommandCalls(sources.redis);

  let transactions: number | undefined;
  let newConnections: number | undefined;
  if (sources.database && start.transactions !== undefined && start.pgTime) {
    newConnections = await sources.admin.newConnectionsSince(sources.database, start.pgTime);
    await sources.admin.flush(sources.database);
    const raw = (await sources.admin.transactions(sources.database)) - start.transactions;
    const bench = (sources.benchClient?.transactions ?? 0) - start.benchTransactions;
    transactions = raw - bench;
  }

  const steps = tasks * stepsPerTask;
  const perStep = (value: number) => (steps > 0 ? value / steps : 0);
  const per1000 = (seconds: number) => (tasks > 0 ? (seconds * 1000) / tasks : 0);
  let lua = 0;
  let other = 0;
  const deltas: [string, number][] = [];
  for (const [command, calls] of redisCalls) {
    // The bench's own INFO and CONFIG calls are not the workload's.
    if (command === 'info' || command.startsWith('config')) continue;
    const delta = calls - (start.redisCalls.get(command) ?? 0);
    if (delta <= 0) continue;
    deltas.push([command, delta]);
    if (LUA_COMMANDS.includes(command)) lua += delta;
    else other += delta;
  }
  deltas.sort((a, b) => b[1] - a[1]);
  let postgres = 0;
  for (const [pid, seconds] of pgCpu) postgres += seconds - (start.postgresCpu.get(pid) ?? 0);

  return {
    tasks,
    steps,
    luaPerStep: perStep(lua),
    redisCommandsPerStep: perStep(other),
    redisTop: Object.fromEntries(deltas.slice(0, 8).map(([command, delta]) => [command, Math.round(perStep(delta) * 100) / 100])),
    ...(transactions !== undefined
      ? { pgTransactionsPerStep: perStep(transactions - (newConnections ?? 0)), pgTransactions: transactions, pgNewConnections: newConnections ?? 0 }
      : {}),
    cpuPer1000: {
      ...(sources.processes.api.length > 0 ? { api: per1000(cpu.api - start.cpu.api) } : {}),
      workers: per1000(cpu.workers - start.cpu.workers),
      redis: per1000(cpu.redis - start.cpu.redis),
      ...(sources.database ? { postgres: per1000(postgres) } : {}),
      generator: per1000((generator.user + generator.system) / 1e6),
    },
  };
}
