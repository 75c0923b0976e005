import type { Redis } from 'ioredis';
import { type CountingClient, cpuSeconds, LUA_COMMANDS, type PgAdmin, type PostgresCluster, redisCommandCalls, redisReads } from './metrics.js';
import { epochNow, sleep } from './util.js';

/** Processes whose CPU time is charged to a workload, by kind. */
export interface ProcessKinds {
  api: number[];
  workers: number[];
}

/** What a cost measurement reads: the system's processes, Redis, PostgreSQL, and (if it has one) its database. */
export interface CostSources {
  redis: Redis;
  redisPid: number;
  admin: PgAdmin;
  /** The PostgreSQL server's processes, when this machine can see them. */
  cluster?: PostgresCluster;
  processes: ProcessKinds;
  database?: string;
  /** The bench's own connection to `database`; its transactions and its backend's CPU are not the workload's. */
  benchClient?: CountingClient;
}

interface Snapshot {
  at: number;
  redisCalls: Map<string, number>;
  redisReads: number;
  cpu: { api: number; workers: number; redis: number };
  /** The bench process itself: the load generator (and W0's producer). */
  generator: NodeJS.CpuUsage;
  /** Every process of the PostgreSQL server, and the part of it that the bench's own connections spent. */
  postgres?: { cluster: number; bench: number; processes: number };
  /** CPU of each client backend of the system's database (the cross-check below). */
  ownBackends?: Map<number, number>;
  transactions?: number;
  benchTransactions: number;
  pgTime?: Date;
}

export interface Costs {
  tasks: number;
  steps: number;
  /** From the first reading to the last, seconds. */
  durationS: number;
  /** EVALSHA + EVAL (and read-only variants, functions) per step. */
  luaPerStep: number;
  /** Every other Redis command per step; INFO commandstats also counts the commands that scripts run. */
  redisCommandsPerStep: number;
  /** The most frequent Redis commands, calls per step. */
  redisTop: Record<string, number>;
  /**
   * Round trips to Redis per task, every client's (Redis's total_reads_processed), idle traffic
   * included (workers' blocking fetches, stalled checks): compare it between builds, at one rate.
   */
  redisRoundTripsPerTask: number;
  /** Transactions in the system's database per step; absent without PostgreSQL. */
  pgTransactionsPerStep?: number;
  /** Raw transaction count, and the connection start-ups taken out of it. */
  pgTransactions?: number;
  pgNewConnections?: number;
  /**
   * PostgreSQL's CPU seconds over the phase, every process of the server (see PostgresCluster),
   * the bench's own connections already taken out; `pgBenchCpuS` is what was taken out, and
   * `pgProcesses` how many server processes were alive at the end.
   */
  pgCpuS?: number;
  pgBenchCpuS?: number;
  pgProcesses?: number;
  /**
   * A cross-check for shared servers: the CPU of the system's own database's client backends
   * alone, those alive at the start or the end (a backend that came and went in between, or that
   * exited before the end, is missed: a lower bound); no background process, no other database.
   */
  pgOwnBackendsCpuS?: number;
  /** CPU seconds per 1,000 tasks, by process kind; `generator` is the bench process (load generator, W0's producer). */
  cpuPer1000: { api?: number; workers: number; redis: number; postgres?: number; generator: number };
}

function sumCpu(pids: number[]): number {
  return pids.reduce((total, pid) => total + (cpuSeconds(pid) ?? 0), 0);
}

/** CPU seconds of each client backend of the system's database, by pid. */
async function ownBackends(sources: CostSources): Promise<Map<number, number> | undefined> {
  if (!sources.database) return undefined;
  const cpu = new Map<number, number>();
  for (const pid of await sources.admin.backendPids(sources.database)) cpu.set(pid, cpuSeconds(pid) ?? 0);
  return cpu;
}

async function postgresCpu(sources: CostSources): Promise<Snapshot['postgres']> {
  if (!sources.cluster) return undefined;
  // The bench's own backends: the admin connection (counters, flushes) and the connection that
  // reads results (closed before each reading, so its backend's CPU is in closedBackendCpuS).
  const bench = (await sources.admin.ownCpuSeconds()) + (sources.benchClient?.closedBackendCpuS ?? 0);
  const { total, processes } = sources.cluster.cpu();
  return { cluster: total, bench, processes };
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
  const postgres = await postgresCpu(sources);
  const own = await ownBackends(sources);
  return {
    at: epochNow(),
    ...(own ? { ownBackends: own } : {}),
    redisCalls: await redisCommandCalls(sources.redis),
    redisReads: await redisReads(sources.redis),
    cpu: { api: sumCpu(sources.processes.api), workers: sumCpu(sources.processes.workers), redis: cpuSeconds(sources.redisPid) ?? 0 },
    ...(postgres ? { postgres } : {}),
    generator: process.cpuUsage(),
    ...(transactions !== undefined ? { transactions } : {}),
    ...(pgTime ? { pgTime } : {}),
    benchTransactions: sources.benchClient?.transactions ?? 0,
  };
}

/** What every counter moved by since `start`, in seconds of CPU and in calls. */
interface Deltas {
  durationS: number;
  cpu: {
    api: number;
    workers: number;
    redis: number;
    generator: number;
    postgres?: number;
    postgresBench?: number;
    postgresProcesses?: number;
    postgresOwnBackends?: number;
  };
  /** Redis commands and their calls, most frequent first (the bench's own INFO and CONFIG left out). */
  redis: [string, number][];
  /** Reads Redis processed (round trips), less the bench's own two INFO calls. */
  reads: number;
  transactions?: number;
  newConnections?: number;
}

async function readDeltas(sources: CostSources, start: Snapshot): Promise<Deltas> {
  await sources.benchClient?.close();
  const cpu = { api: sumCpu(sources.processes.api), workers: sumCpu(sources.processes.workers), redis: cpuSeconds(sources.redisPid) ?? 0 };
  const generator = process.cpuUsage(start.generator);
  const postgres = await postgresCpu(sources);
  const own = await ownBackends(sources);
  const redisCalls = await redisCommandCalls(sources.redis);
  const reads = (await redisReads(sources.redis)) - start.redisReads - 2;
  const durationS = (epochNow() - start.at) / 1000;
  let ownBackendsCpu: number | undefined;
  if (own && start.ownBackends) {
    ownBackendsCpu = 0;
    for (const [pid, seconds] of own) ownBackendsCpu += seconds - (start.ownBackends.get(pid) ?? 0);
  }

  let transactions: number | undefined;
  let newConnections: number | undefined;
  if (sources.database && start.transactions !== undefined && start.pgTime) {
    newConnections = await sources.admin.newConnectionsSince(sources.database, start.pgTime);
    await sources.admin.flush(sources.database);
    const raw = (await sources.admin.transactions(sources.database)) - start.transactions;
    const bench = (sources.benchClient?.transactions ?? 0) - start.benchTransactions;
    transactions = raw - bench;
  }
  const redis: [string, number][] = [];
  for (const [command, calls] of redisCalls) {
    // The bench's own INFO and CONFIG calls are not the workload's.
    if (command === 'info' || command.startsWith('config')) continue;
    const delta = calls - (start.redisCalls.get(command) ?? 0);
    if (delta > 0) redis.push([command, delta]);
  }
  redis.sort((a, b) => b[1] - a[1]);
  const pg =
    postgres && start.postgres
      ? {
          postgresBench: postgres.bench - start.postgres.bench,
          postgres: postgres.cluster - start.postgres.cluster - (postgres.bench - start.postgres.bench),
          postgresProcesses: postgres.processes,
        }
      : {};
  return {
    durationS,
    cpu: {
      api: cpu.api - start.cpu.api,
      workers: cpu.workers - start.cpu.workers,
      redis: cpu.redis - start.cpu.redis,
      generator: (generator.user + generator.system) / 1e6,
      ...pg,
      ...(ownBackendsCpu !== undefined ? { postgresOwnBackends: ownBackendsCpu } : {}),
    },
    redis,
    reads,
    ...(transactions !== undefined ? { transactions } : {}),
    ...(newConnections !== undefined ? { newConnections } : {}),
  };
}

/** Ends a measurement started by `beginCosts`, once every task of it has finished. */
export async function endCosts(sources: CostSources, start: Snapshot, tasks: number, stepsPerTask: number): Promise<Costs> {
  const deltas = await readDeltas(sources, start);
  const steps = tasks * stepsPerTask;
  const perStep = (value: number) => (steps > 0 ? value / steps : 0);
  const per1000 = (seconds: number) => (tasks > 0 ? (seconds * 1000) / tasks : 0);
  let lua = 0;
  let other = 0;
  for (const [command, delta] of deltas.redis) {
    if (LUA_COMMANDS.includes(command)) lua += delta;
    else other += delta;
  }
  const { cpu, transactions, newConnections } = deltas;
  return {
    tasks,
    steps,
    durationS: round3(deltas.durationS),
    luaPerStep: perStep(lua),
    redisCommandsPerStep: perStep(other),
    redisTop: Object.fromEntries(deltas.redis.slice(0, 8).map(([command, delta]) => [command, Math.round(perStep(delta) * 100) / 100])),
    redisRoundTripsPerTask: tasks > 0 ? deltas.reads / tasks : 0,
    ...(transactions !== undefined
      ? { pgTransactionsPerStep: perStep(transactions - (newConnections ?? 0)), pgTransactions: transactions, pgNewConnections: newConnections ?? 0 }
      : {}),
    ...(cpu.postgres !== undefined ? { pgCpuS: round3(cpu.postgres), pgBenchCpuS: round3(cpu.postgresBench ?? 0), pgProcesses: cpu.postgresProcesses } : {}),
    ...(cpu.postgresOwnBackends !== undefined ? { pgOwnBackendsCpuS: round3(cpu.postgresOwnBackends) } : {}),
    cpuPer1000: {
      ...(sources.processes.api.length > 0 ? { api: per1000(cpu.api) } : {}),
      workers: per1000(cpu.workers),
      redis: per1000(cpu.redis),
      // A system without a database of its own (W0) is not charged for PostgreSQL's background work.
      ...(sources.database && cpu.postgres !== undefined ? { postgres: per1000(cpu.postgres) } : {}),
      generator: per1000(cpu.generator),
    },
  };
}

/** CPU milliseconds per second with no load, by process kind: the floor under every phase's figures. */
export interface IdleFloor {
  system: string;
  seconds: number;
  cpuMsPerS: { api?: number; workers: number; redis: number; postgres?: number; generator: number };
  /** PostgreSQL CPU ms per second of the bench's own connections, taken out of `postgres` (as in every phase). */
  postgresBenchMsPerS?: number;
  /** PostgreSQL server processes alive at the end. */
  postgresProcesses?: number;
  /** Redis commands per second (the bench's INFO left out), and PostgreSQL transactions per second in the system's database. */
  redisCommandsPerS: number;
  pgTransactionsPerS?: number;
}

const round3 = (value: number) => Math.round(value * 1000) / 1000;

/**
 * The same readings as a phase (the same flushes, the same counters), around `ms` of doing
 * nothing: what the system, PostgreSQL's background processes and the bench's own monitoring
 * cost when there is no load.
 */
export async function measureFloor(system: string, sources: CostSources, ms: number): Promise<IdleFloor> {
  const start = await beginCosts(sources);
  await sleep(ms);
  const deltas = await readDeltas(sources, start);
  const perS = (seconds: number) => round3((seconds * 1000) / deltas.durationS);
  const { cpu } = deltas;
  return {
    system,
    seconds: round3(deltas.durationS),
    cpuMsPerS: {
      ...(sources.processes.api.length > 0 ? { api: perS(cpu.api) } : {}),
      workers: perS(cpu.workers),
      redis: perS(cpu.redis),
      ...(cpu.postgres !== undefined ? { postgres: perS(cpu.postgres) } : {}),
      generator: perS(cpu.generator),
    },
    ...(cpu.postgresBench !== undefined ? { postgresBenchMsPerS: perS(cpu.postgresBench), postgresProcesses: cpu.postgresProcesses } : {}),
    redisCommandsPerS: round3(deltas.redis.reduce((sum, [, calls]) => sum + calls, 0) / deltas.durationS),
    ...(deltas.transactions !== undefined ? { pgTransactionsPerS: round3((deltas.transactions - (deltas.newConnections ?? 0)) / deltas.durationS) } : {}),
  };
}
