import type { Redis } from 'ioredis';
import type { Completion, Target } from '../capacity.js';
import type { ProcessKinds } from '../costs.js';
import { type HttpAnswer, type HttpClient, Refused } from '../load.js';
import type { CountingClient, PgAdmin, PostgresCluster } from '../metrics.js';
import type { BenchOptions } from '../options.js';
import type { Releasers } from '../releasers.js';

export type SystemKind = 'raw-bullmq' | 'orchestrator' | 'pg-boss' | 'graphile-worker';

/** What every system of one run shares. */
export interface RunContext {
  options: BenchOptions;
  /** Short and unique per run: database names and queue prefixes. */
  runId: string;
  redisUrl: string;
  /** The bench's own Redis connection (counters, and the W0 producer). */
  redis: Redis;
  admin: PgAdmin;
  /** Every process of the PostgreSQL server, for its CPU; undefined when this machine cannot see them. */
  cluster?: PostgresCluster;
  /** The Redis server's process (its CPU is charged to every system). */
  redisPid: number;
  logDir: string;
  releasers: Releasers;
  log(line: string): void;
}

/** A started system under test: its processes, its database, and how to load it. */
export interface RunningSystem {
  kind: SystemKind;
  processes: ProcessKinds;
  /** Its PostgreSQL database, when it has one. */
  database?: string;
  /** The bench's connection to that database, for reading results. */
  benchClient?: CountingClient;
  /**
   * A target that sends `body(tag)` per task (raw BullMQ ignores it and adds a no-op job).
   * `connections`: HTTP connections of its own, where the system's shared pool has too few.
   */
  target(body: (tag: string) => unknown, options?: { connections?: number }): Target;
  /** POSTs to the system's HTTP API (for definitions made before measuring). */
  post?(path: string, body: unknown): Promise<HttpAnswer>;
  /** GETs from the system's HTTP API (the idle-latency workload's long polls). */
  get?(path: string): Promise<HttpAnswer>;
  /** The Redis key prefix of its queues and event streams (QUEUE_PREFIX), when it has one. */
  queuePrefix?: string;
  /** Settings it was started with on top of its own (see Workload.env). */
  env?: Record<string, string>;
  /**
   * Pauses every BullMQ queue its workers take jobs from (BullMQ's Queue.pause: workers finish
   * what they hold and fetch nothing more) until `resume`. DRAIN builds its backlog this way.
   */
  pauseQueues?(): Promise<{ names: string[]; resume(): Promise<void> }>;
  /**
   * Starts workers of a user's own (bench/user-worker.mjs, on the packaged SDK) beside the service,
   * once: as many processes as the service's workers, counted among them from then on (W1U).
   */
  startUserWorkers?(): Promise<void>;
  stop(): Promise<void>;
}

/** Where an HTTP system records that a task finished. */
export interface ResultRecords {
  unfinished(ids: string[]): Promise<string[]>;
  completions(ids: string[]): Promise<Completion[]>;
}

/** Tasks sent as POST /assign-task; the answer (202) carries `task_id`. */
export class HttpTarget implements Target {
  constructor(
    private readonly http: HttpClient,
    private readonly body: (tag: string) => unknown,
    private readonly records: ResultRecords,
  ) {}

  async submit(tag: string): Promise<string> {
    const { status, json, retryAfterS } = await this.http.post('/assign-task', this.body(tag));
    const taskId = (json as { task_id?: unknown } | undefined)?.task_id;
    if (status !== 202 || typeof taskId !== 'string') {
      const code = (json as { error?: { code?: string } } | undefined)?.error?.code;
      // 503 (admission control's `overloaded`, or a dependency down) and 429 create nothing and
      // ask the client to come back: refusals, which W5 counts apart from errors.
      if (status === 503 || status === 429) throw new Refused(status, code, retryAfterS);
      throw new Error(`HTTP ${status}${code ? ` ${code}` : ''}`);
    }
    return taskId;
  }

  unfinished(_tag: string, ids: string[]): Promise<string[]> {
    return this.records.unfinished(ids);
  }

  completions(_tag: string, ids: string[]): Promise<Completion[]> {
    return this.records.completions(ids);
  }
}

/** Runs `query` over `ids` in chunks (very long arrays make slow statements). */
export async function inChunks<T>(ids: string[], query: (chunk: string[]) => Promise<T[]>, size = 5_000): Promise<T[]> {
  const out: T[] = [];
  for (let start = 0; start < ids.length; start += size) out.push(...(await query(ids.slice(start, start + size))));
  return out;
}

/** Deletes every key under `prefix` (only needed on a Redis the bench did not start). */
export async function deleteKeys(redis: Redis, prefix: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length > 0) await redis.unlink(...keys);
  } while (cursor !== '0');
}
