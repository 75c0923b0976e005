import calculateSlot from 'cluster-key-slot';
import { uuidv7 } from '../lib/uuid7.js';

/** Redis Cluster's hash slots. */
export const CLUSTER_SLOTS = 16_384;

/** How far from its target slot a shard's tag may land (see shardPrefixes). */
const SLOT_TOLERANCE = 8;

/** The parts of a key prefix around its hash tag: `a{tag}b` -> a, tag, b. */
function splitHashTag(prefix: string): { before: string; tag: string; after: string } | undefined {
  const match = /^([^{]*)\{([^}]+)\}(.*)$/s.exec(prefix);
  return match ? { before: match[1]!, tag: match[2]!, after: match[3]! } : undefined;
}

/**
 * The key prefix of each of the deployment's `shards` (QUEUE_SHARDS). Each shard holds a full
 * set of queues (tasks, every tool, callbacks) and the event streams of its tasks under its own
 * prefix, so every key one task touches (its flow's parent and children) shares that shard's
 * hash tag and slot, while tasks spread over the shards.
 *
 * One shard is QUEUE_PREFIX itself: the key names of a deployment that never sharded.
 * With several, shard i's tag is QUEUE_PREFIX's tag plus `.i.k`, where k is the first number
 * that puts the tag's slot within a few slots of the middle of the i-th of `shards` equal
 * slot ranges. A cluster whose masters own equal contiguous ranges (what `redis-cli --cluster
 * create` makes) then holds shards / masters shards on every master when the number of masters
 * divides `shards`, whatever the prefix, instead of wherever CRC16 happens to put `{tag.i}`.
 * Without a hash tag (one Redis, where slots do not matter) shard i is QUEUE_PREFIX plus `.i`.
 */
function shardPrefixes(prefix: string, shards: number): string[] {
  if (shards === 1) return [prefix];
  const parts = splitHashTag(prefix);
  return Array.from({ length: shards }, (_, shard) => {
    if (!parts) return `${prefix}.${shard}`;
    const target = Math.floor(((shard + 0.5) * CLUSTER_SLOTS) / shards);
    // About CLUSTER_SLOTS / (2 * SLOT_TOLERANCE + 1) ~ 1,000 tries on average; CRC16 reaches every slot.
    for (let k = 0; ; k += 1) {
      const tag = `${parts.tag}.${shard}.${k}`;
      if (Math.abs(calculateSlot(tag) - target) <= SLOT_TOLERANCE) return `${parts.before}{${tag}}${parts.after}`;
    }
  });
}

/**
 * The deployment's queue shards (QUEUE_PREFIX, QUEUE_SHARDS): the one place that says which
 * shard holds a task. `base` (QUEUE_PREFIX) keeps what belongs to no task: the pub/sub
 * channels, locks, rate-limit and client-slot counters.
 */
export class Shards {
  /** Each shard's key prefix, by index. */
  readonly prefixes: readonly string[];
  /** The shard of the next new task, per task type (newTaskId); the types are the registered tools and workflows. */
  private readonly turns = new Map<string, number>();

  constructor(
    readonly base: string,
    count: number,
  ) {
    this.prefixes = Object.freeze(shardPrefixes(base, count));
  }

  static of(config: { QUEUE_PREFIX: string; QUEUE_SHARDS: number }): Shards {
    return new Shards(config.QUEUE_PREFIX, config.QUEUE_SHARDS);
  }

  get count(): number {
    return this.prefixes.length;
  }

  /** The shard of a task: every job and event of the task lives there. Stable for a given count. */
  indexOf(taskId: string): number {
    // CRC16 spreads ids evenly; its 16,384 values favour a shard by at most 1 in 16,384.
    return this.count === 1 ? 0 : calculateSlot(taskId) % this.count;
  }

  prefixOf(taskId: string): string {
    return this.prefixes[this.indexOf(taskId)]!;
  }

  /**
   * A new task id (UUIDv7 of `at`) whose shard is the next one for its task type. The shard
   * still follows from the id alone (indexOf); choosing the id spreads each process's tasks of
   * each type evenly over the shards at once, where ids left to chance spread a few hundred
   * workflows (which weigh far more in Redis than one-tool tasks) to within 15% only. About
   * `count` UUIDs are made per id. `shard` pins the id to a shard instead (a sub-workflow's child
   * lives in its parent's, so that the child's flow can hang under the parent's: one hash slot).
   */
  newTaskId(at: Date, taskType: string, shard?: number): string {
    if (this.count === 1) return uuidv7(at);
    let turn = shard;
    if (turn === undefined) {
      turn = this.turns.get(taskType) ?? 0;
      this.turns.set(taskType, (turn + 1) % this.count);
    }
    for (;;) {
      const id = uuidv7(at);
      if (this.indexOf(id) === turn) return id;
    }
  }
}

/**
 * Splits a budget (a process's concurrency, a rate limit's max, the jobs a queue keeps) over the
 * shards so that together they keep it: the first `total % shards` shards get one more.
 */
export function shareOf(total: number, shard: number, shards: number): number {
  return Math.floor(total / shards) + (shard < total % shards ? 1 : 0);
}

/**
 * A shard's share of a tool's rate limit (max per duration), so that the shards together keep
 * the tool's rate. With fewer than one job per shard per duration, each shard's duration
 * stretches instead.
 */
export function shardLimiter(limit: { max: number; duration_ms: number }, shard: number, shards: number): { max: number; duration: number } {
  if (limit.max >= shards) return { max: shareOf(limit.max, shard, shards), duration: limit.duration_ms };
  return { max: 1, duration: Math.ceil((limit.duration_ms * shards) / limit.max) };
}
