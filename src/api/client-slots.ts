import { randomUUID } from 'node:crypto';
import type { Request } from 'express';
import { ipKeyGenerator } from 'express-rate-limit';
import type { Logger } from '../lib/logger.js';
import type { RedisClient } from '../queue/redis.js';
import { errorBody } from './http.js';

/** Seconds a client over one of its slot limits is asked to wait. */
const SLOTS_RETRY_AFTER_S = 5;

/** The 429 a client gets when all its slots of a kind are taken: nothing was opened. */
export function slotsFull(code: string, message: string) {
  return { status: 429 as const, headers: { 'retry-after': String(SLOTS_RETRY_AFTER_S) }, body: errorBody(code, message) };
}

/** Who holds a slot: the API key, or the client address when the API runs without keys. */
export function clientOf(req: Request): string {
  // ipKeyGenerator groups an IPv6 client's whole /56, which it could otherwise rotate through.
  return req.apiKeyId ? `key:${req.apiKeyId}` : `ip:${ipKeyGenerator(req.ip ?? '0.0.0.0')}`;
}

export interface ClientSlotsOptions {
  redis: RedisClient;
  logger: Logger;
  /** The deployment's key prefix (QUEUE_PREFIX): its hash tag keeps a cluster's keys in one slot. */
  prefix: string;
  /** What is counted, part of the Redis key: `streams`, `long-polls`. */
  kind: string;
  /** Slots per client; 0 means no limit. */
  max: number;
  /** Longest a request may hold its slot: a slot its process never released (a crash) lapses after this. */
  leaseMs: number;
}

/**
 * Concurrent long-lived requests (event streams, long-polls) per client, counted across every
 * API process in Redis: one sorted set per client, whose members are the open requests scored by
 * when their lease ends. When Redis does not answer, requests pass uncounted (the endpoints that
 * need Redis answer 503 themselves).
 */
export class ClientSlots {
  constructor(private readonly options: ClientSlotsOptions) {}

  /** Takes a slot: the function that gives it back, or undefined when the client holds `max` already. */
  async acquire(client: string): Promise<(() => void) | undefined> {
    const { redis, max, leaseMs } = this.options;
    if (max === 0) return () => undefined;
    const key = `${this.options.prefix}:slots:${this.options.kind}:${client}`;
    const member = randomUUID();
    const now = Date.now();
    try {
      const replies = await redis
        .multi()
        .zremrangebyscore(key, '-inf', now)
        .zadd(key, now + leaseMs, member)
        .zcard(key)
        .pexpire(key, leaseMs)
        .exec();
      const [error, held] = replies?.[2] ?? [new Error('the transaction was discarded'), 0];
      if (error) throw error;
      if (Number(held) > max) {
        await redis.zrem(key, member);
        return undefined;
      }
    } catch (error) {
      this.options.logger.warn('could not count open requests; letting this one through', { kind: this.options.kind, error: (error as Error).message });
      return () => undefined;
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      redis
        .zrem(key, member)
        .catch((error: Error) => this.options.logger.warn('could not release a request slot', { kind: this.options.kind, error: error.message }));
    };
  }
}
