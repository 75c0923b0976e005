import type { Config } from '../lib/config.js';
import type { Logger } from '../lib/logger.js';
import type { RedisClient } from './redis.js';

export interface RedisOutageOptions {
  /** How often a process says again that Redis is still away. @defaultValue 60 000 ms */
  remindEveryMs?: number;
  /** @defaultValue Date.now */
  now?: () => number;
}

/** Where Redis is, for log lines: host and port (or a cluster's nodes), never credentials. */
export function redisAddress(config: Pick<Config, 'REDIS_URL' | 'REDIS_CLUSTER_NODES'>): string {
  if (config.REDIS_CLUSTER_NODES.length > 0) return config.REDIS_CLUSTER_NODES.join(',');
  const url = new URL(config.REDIS_URL);
  return `${url.hostname}:${url.port || '6379'}`;
}

/**
 * What one process says about Redis being away, from the connections it watches: one warning
 * when the first of them fails, one a minute while any still fails (with how long the outage has
 * lasted), and one line when every one of them is back. ioredis reports each reconnect attempt
 * as an error (every 2 s, on every connection) and BullMQ repeats them on each of its workers: said
 * as they come, an outage fills the log (660 lines a minute from one worker).
 */
export class RedisOutage {
  private readonly failing = new Set<RedisClient>();
  private since: number | undefined;
  private remindedAt = 0;
  private readonly remindEveryMs: number;
  private readonly now: () => number;

  constructor(
    private readonly logger: Logger,
    private readonly address: string,
    options: RedisOutageOptions = {},
  ) {
    this.remindEveryMs = options.remindEveryMs ?? 60_000;
    this.now = options.now ?? Date.now;
  }

  /** Whether Redis is away, as this process's connections last saw it. */
  get down(): boolean {
    return this.since !== undefined;
  }

  /** Follows a connection's failures and reconnects. Returns the connection. */
  watch<T extends RedisClient>(redis: T): T {
    redis.on('error', (error: Error) => this.failed(redis, error));
    redis.on('ready', () => this.recovered(redis));
    // Closed on purpose: it no longer says anything about Redis.
    redis.on('end', () => this.failing.delete(redis));
    return redis;
  }

  private failed(redis: RedisClient, error: Error): void {
    this.failing.add(redis);
    const now = this.now();
    if (this.since === undefined) {
      this.since = now;
      this.remindedAt = now;
      this.logger.warn('Redis unreachable: retrying; said again once a minute while it lasts', { redis: this.address, error: error.message });
      return;
    }
    if (now - this.remindedAt < this.remindEveryMs) return;
    this.remindedAt = now;
    this.logger.warn('Redis still unreachable', { redis: this.address, down_ms: now - this.since, error: error.message });
  }

  private recovered(redis: RedisClient): void {
    this.failing.delete(redis);
    if (this.since === undefined || this.failing.size > 0) return;
    this.logger.info('Redis reachable again', { redis: this.address, down_ms: this.now() - this.since });
    this.since = undefined;
  }
}
