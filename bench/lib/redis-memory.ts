import type { Redis } from 'ioredis';
import { epochNow, sleep } from './util.js';

/**
 * Redis memory per finished task, read around W1's latency phase: what a task leaves in Redis
 * right after it finished (its event stream, the completed BullMQ jobs, ...) and what is still
 * there once the events window (EVENTS_KEEP_AFTER_END_S) has passed. BullMQ keeps the last
 * QUEUE_KEEP_COMPLETED completed jobs per queue; the capacity search before the phase has filled
 * that already, so the phase sees the steady state: each new job replaces an old one.
 */

/** The target for what stays per task after the window, in bytes (0.5 kB). */
export const REDIS_BYTES_PER_TASK_TARGET = 500;

export interface MemoryReading {
  /** INFO memory used_memory: bytes the allocator has handed out. */
  usedMemory: number;
  /**
   * mem_clients_normal: the clients' buffers, part of used_memory. Not state kept per task, but it
   * moves by tens of kilobytes as connections come and go or idle: the noise of a short phase.
   */
  clientBuffers: number;
  /** Keys in every database (INFO keyspace). */
  keys: number;
  /** ms since the epoch. */
  at: number;
}

/** Keys of the service's prefix by kind: the key after the prefix, with ids as `*` (e.g. `tool.echo:*`). */
export type KeyKinds = Record<string, number>;

export interface RedisMemoryReport {
  tasks: number;
  eventsKeepAfterEndS: number;
  before: MemoryReading;
  /** Right after the phase's tasks finished. */
  finished: MemoryReading;
  /** Once the finished tasks' event streams have expired. */
  afterWindow: MemoryReading;
  /**
   * Kinds of keys whose number changed from before the phase to after the window, with both counts:
   * what stays per task (BullMQ's job hashes grow until QUEUE_KEEP_COMPLETED per queue, then hold).
   */
  keyKindsChanged: Record<string, { before: number; after: number }>;
  /** How long after `finished` the last reading was taken, and event streams of the bench's prefix still there then (0 expected). */
  waitedS: number;
  eventStreamsLeft: number;
  bytesPerTaskFinished: number;
  bytesPerTaskAfterWindow: number;
  keysPerTaskFinished: number;
  keysPerTaskAfterWindow: number;
  targetBytesPerTask: number;
  met: boolean;
}

/** INFO only: the bench's cost accounting leaves INFO out, so reading this does not count as the workload's. */
export async function readMemory(redis: Redis): Promise<MemoryReading> {
  const memory = await redis.info('memory');
  const keyspace = await redis.info('keyspace');
  const field = (name: string) => Number(new RegExp(`^${name}:(\\d+)`, 'm').exec(memory)?.[1] ?? Number.NaN);
  let keys = 0;
  for (const match of keyspace.matchAll(/^db\d+:keys=(\d+)/gm)) keys += Number(match[1]);
  return { usedMemory: field('used_memory'), clientBuffers: field('mem_clients_normal'), keys, at: epochNow() };
}

/** Every key matching `pattern`. SCAN also expires the keys it meets whose time is up, so what it sees does not lag Redis's background expiry. */
async function scanKeys(redis: Redis, pattern: string): Promise<string[]> {
  const found: string[] = [];
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    found.push(...keys);
  } while (cursor !== '0');
  return found;
}

async function countEventStreams(redis: Redis, prefix: string): Promise<number> {
  return (await scanKeys(redis, `${prefix}:events:*`)).length;
}

const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/gi;

/** Counts the prefix's keys by kind. Outside a cost measurement only (SCAN). */
export async function keyKinds(redis: Redis, prefix: string): Promise<KeyKinds> {
  const kinds: KeyKinds = {};
  for (const key of await scanKeys(redis, `${prefix}*`)) {
    const kind = key.slice(prefix.length).replace(UUID, '*').replace(/\d+/g, '*');
    kinds[kind] = (kinds[kind] ?? 0) + 1;
  }
  return kinds;
}

function changedKinds(before: KeyKinds, after: KeyKinds): Record<string, { before: number; after: number }> {
  const changed: Record<string, { before: number; after: number }> = {};
  for (const kind of new Set([...Object.keys(before), ...Object.keys(after)])) {
    const counts = { before: before[kind] ?? 0, after: after[kind] ?? 0 };
    if (counts.before !== counts.after) changed[kind] = counts;
  }
  return changed;
}

/**
 * Waits until no event stream of the service's prefix is left (every task has ended, so each
 * expires EVENTS_KEEP_AFTER_END_S after its end), or until that window and 30 s more have passed.
 * Only call it outside a cost measurement: SCAN is a Redis command like any other.
 */
export async function waitEventStreamsGone(redis: Redis, prefix: string, windowS: number): Promise<number> {
  const deadline = epochNow() + (windowS + 30) * 1000;
  for (;;) {
    const left = await countEventStreams(redis, prefix);
    if (left === 0 || epochNow() > deadline) return left;
    await sleep(1_000);
  }
}

export function memoryReport(
  tasks: number,
  eventsKeepAfterEndS: number,
  readings: { before: MemoryReading; finished: MemoryReading; afterWindow: MemoryReading },
  kinds: { before: KeyKinds; after: KeyKinds },
  eventStreamsLeft: number,
): RedisMemoryReport {
  const { before, finished, afterWindow } = readings;
  const per = (later: number, earlier: number, digits = 1) => (tasks > 0 ? Number(((later - earlier) / tasks).toFixed(digits)) : Number.NaN);
  const bytesPerTaskAfterWindow = per(afterWindow.usedMemory, before.usedMemory);
  return {
    tasks,
    eventsKeepAfterEndS,
    before,
    finished,
    afterWindow,
    waitedS: Math.round((afterWindow.at - finished.at) / 100) / 10,
    eventStreamsLeft,
    bytesPerTaskFinished: per(finished.usedMemory, before.usedMemory),
    bytesPerTaskAfterWindow,
    keysPerTaskFinished: per(finished.keys, before.keys, 3),
    keysPerTaskAfterWindow: per(afterWindow.keys, before.keys, 3),
    keyKindsChanged: changedKinds(kinds.before, kinds.after),
    targetBytesPerTask: REDIS_BYTES_PER_TASK_TARGET,
    met: bytesPerTaskAfterWindow <= REDIS_BYTES_PER_TASK_TARGET,
  };
}
