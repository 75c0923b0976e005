import type { Logger } from '../lib/logger.js';
import type { RedisClient } from './redis.js';
import type { Shards } from './shards.js';

export interface KeyQuotaSettings {
  /** Unfinished tasks one client may have. 0: no limit. */
  maxTasks: number;
  /** Bytes of params of one client's unfinished tasks. 0: no limit. */
  maxBytes: number;
}

/** Which limit a reservation hit, with the figures: the setting's name, its value and what the client holds. */
export interface QuotaRefusal {
  limit: 'QUOTA_MAX_BACKLOG_PER_KEY' | 'QUOTA_MAX_BYTES_PER_KEY';
  max: number;
  held: number;
}

/**
 * A task a release never reached (a process killed between its end and the release) stops
 * counting this long after it could have started: a quota that leaks fails open, not shut.
 */
const LEASE_MS = 3_600_000;

/** A release that Redis refused is tried again this often, this many times (half a minute), before it is left to lapse. */
const RELEASE_RETRY_MS = 1_000;
const RELEASE_ATTEMPTS = 30;

// KEYS: the client's tasks (zset: id -> lease end), the task -> client hash, the task -> bytes
// hash, the client -> count hash, the client -> bytes hash. Every key shares the prefix's hash tag.
const DROP = `
local function drop(id)
  local client = redis.call('HGET', KEYS[2], id)
  if not client then return end
  local bytes = tonumber(redis.call('HGET', KEYS[3], id) or '0')
  redis.call('ZREM', ARGV[1] .. client, id)
  redis.call('HDEL', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id)
  if redis.call('HINCRBY', KEYS[4], client, -1) <= 0 then redis.call('HDEL', KEYS[4], client) end
  if redis.call('HINCRBY', KEYS[5], client, -bytes) <= 0 then redis.call('HDEL', KEYS[5], client) end
end
`;

// ARGV: the clients' key prefix, now, client, task id, bytes, lease end, max tasks, max bytes.
const RESERVE = `${DROP}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])) do drop(id) end
-- Counted already (a retry of a task whose end was not released yet): once is enough.
if redis.call('HEXISTS', KEYS[2], ARGV[4]) == 1 then return {0, 0} end
local tasks = tonumber(redis.call('HGET', KEYS[4], ARGV[3]) or '0')
local bytes = tonumber(redis.call('HGET', KEYS[5], ARGV[3]) or '0')
if tonumber(ARGV[7]) > 0 and tasks + 1 > tonumber(ARGV[7]) then return {1, tasks} end
if tonumber(ARGV[8]) > 0 and bytes + tonumber(ARGV[5]) > tonumber(ARGV[8]) then return {2, bytes} end
redis.call('ZADD', KEYS[1], ARGV[6], ARGV[4])
redis.call('HSET', KEYS[2], ARGV[4], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[4], ARGV[5])
redis.call('HINCRBY', KEYS[4], ARGV[3], 1)
redis.call('HINCRBY', KEYS[5], ARGV[3], ARGV[5])
return {0, 0}
`;

// ARGV: the clients' key prefix, then task ids.
const RELEASE = `${DROP}
for i = 2, #ARGV do drop(ARGV[i]) end
return 0
`;

/**
 * Quotas per client (API key, or address without keys) on its unfinished tasks and on the bytes
 * of their params, which their jobs hold in Redis; counted in Redis across every API process.
 * A task is counted from its submission until it ends (the worker or the API that ends it
 * releases it), so what one client holds in Redis is bounded whatever its tasks' delays.
 *
 * A task counts in its own queue shard, against that shard's share of each limit: with a Redis
 * Cluster the counts spread over the masters with the tasks (new ids take the shards in turn), and
 * a master that fails over refuses only its own shards' submissions, as every other write does.
 */
export class KeyQuotas {
  private readonly pending = new Set<string>();
  private flushing: Promise<void> | undefined;

  constructor(
    private readonly redis: RedisClient,
    /** The queue shards: each one's prefix keeps its quota keys in its cluster slot. */
    private readonly shards: Shards,
    private readonly settings: KeyQuotaSettings,
    private readonly logger: Logger,
  ) {}

  get enabled(): boolean {
    return this.settings.maxTasks > 0 || this.settings.maxBytes > 0;
  }

  private keys(prefix: string, client: string): string[] {
    const base = `${prefix}:quota`;
    return [`${base}:tasks:${client}`, `${base}:client-of`, `${base}:bytes-of`, `${base}:count`, `${base}:bytes`];
  }

  /** A limit's share in one shard (0 stays 0: no limit). */
  private share(limit: number): number {
    return limit > 0 ? Math.max(1, Math.ceil(limit / this.shards.count)) : 0;
  }

  /** Counts a new task against its client; the limit it would pass instead, if any. Redis errors are thrown. */
  async reserve(client: string, taskId: string, bytes: number, delayMs: number, now = Date.now()): Promise<QuotaRefusal | undefined> {
    if (!this.enabled) return undefined;
    const prefix = this.shards.prefixOf(taskId);
    const maxTasks = this.share(this.settings.maxTasks);
    const maxBytes = this.share(this.settings.maxBytes);
    const [refused, held] = (await this.redis.eval(
      RESERVE,
      5,
      ...this.keys(prefix, client),
      `${prefix}:quota:tasks:`,
      now,
      client,
      taskId,
      bytes,
      now + delayMs + LEASE_MS,
      maxTasks,
      maxBytes,
    )) as [number, number];
    // Named as the settings: what the client holds in this shard, against this shard's share.
    if (refused === 1) return { limit: 'QUOTA_MAX_BACKLOG_PER_KEY', max: this.settings.maxTasks, held: held * this.shards.count };
    if (refused === 2) return { limit: 'QUOTA_MAX_BYTES_PER_KEY', max: this.settings.maxBytes, held: held * this.shards.count };
    return undefined;
  }

  /** Stops counting ended (or never created) tasks; batched, in the background. A task that was never counted is ignored. */
  release(taskId: string): void {
    if (!this.enabled) return;
    this.pending.add(taskId);
    this.flushing ??= Promise.resolve().then(() => this.flush());
  }

  /** Resolves once every release asked for so far is written (or given up on). */
  async settled(): Promise<void> {
    for (let flushing = this.flushing; flushing !== undefined; flushing = this.flushing) await flushing;
  }

  private async flush(): Promise<void> {
    while (this.pending.size > 0) {
      const ids = [...this.pending].slice(0, 500);
      for (const id of ids) this.pending.delete(id);
      const byShard = new Map<string, string[]>();
      for (const id of ids) byShard.set(this.shards.prefixOf(id), [...(byShard.get(this.shards.prefixOf(id)) ?? []), id]);
      await Promise.all(
        [...byShard].map(async ([prefix, shardIds]) => {
          const [, ...keys] = this.keys(prefix, '');
          // Redis away (a restart, a failover) is waited out for a while: a release lost would hold
          // the client's count up until its lease lapses.
          for (let attempt = 1; ; attempt += 1) {
            try {
              await this.redis.eval(RELEASE, 5, `${prefix}:quota:tasks:`, ...keys, `${prefix}:quota:tasks:`, ...shardIds);
              return;
            } catch (error) {
              if (attempt >= RELEASE_ATTEMPTS) {
                this.logger.warn('could not release tasks from their quota; they lapse later', { error: (error as Error).message, tasks: shardIds.length });
                return;
              }
              await new Promise((resolve) => setTimeout(resolve, RELEASE_RETRY_MS));
            }
          }
        }),
      );
    }
    this.flushing = undefined;
  }

  /** Unfinished tasks per client, summed over the shards, for admission's fair share. */
  async counts(): Promise<Map<string, number>> {
    const counts = new Map<string, number>();
    for (const prefix of this.shards.prefixes) {
      for (const [client, count] of Object.entries(await this.redis.hgetall(`${prefix}:quota:count`)))
        counts.set(client, (counts.get(client) ?? 0) + Number(count));
    }
    return counts;
  }
}
