import { Redis, type RedisOptions } from 'ioredis';
import type { Config } from '../config.js';

/**
 * `worker`: BullMQ workers; commands wait through a reconnect instead of failing
 * (BullMQ requires maxRetriesPerRequest: null).
 * `producer`: used inside HTTP requests; a command fails at once while Redis is unreachable,
 * so the API answers 503 instead of hanging.
 * `subscriber`: pub/sub; reconnects and resubscribes on its own.
 */
export type RedisRole = 'worker' | 'producer' | 'subscriber';

export function redisOptions(role: RedisRole): RedisOptions {
  const common: RedisOptions = {
    // Reconnect quickly but not in a tight loop: 50 ms, 100 ms, ... capped at 2 s.
    retryStrategy: (times) => Math.min(times * 50, 2_000),
    connectTimeout: 2_000,
  };
  if (role === 'producer') {
    return { ...common, enableOfflineQueue: false, maxRetriesPerRequest: 1, commandTimeout: 2_000 };
  }
  return { ...common, maxRetriesPerRequest: null };
}

export function createRedis(config: Pick<Config, 'REDIS_URL'>, role: RedisRole, name?: string): Redis {
  const redis = new Redis(config.REDIS_URL, { ...redisOptions(role), connectionName: name ? `orchestrator:${name}` : undefined });
  // Errors also surface on the commands that hit them; without a listener ioredis logs each
  // reconnect failure to stderr.
  redis.on('error', () => undefined);
  return redis;
}

/** Resolves once the connection is ready, or rejects after `timeoutMs`. */
export async function waitForRedis(redis: Redis, timeoutMs = 5_000): Promise<void> {
  if (redis.status === 'ready') return;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`Redis not ready after ${timeoutMs} ms`));
    }, timeoutMs);
    const onReady = () => {
      cleanup();
      resolve();
    };
    const cleanup = () => {
      clearTimeout(timer);
      redis.off('ready', onReady);
    };
    redis.on('ready', onReady);
  });
}
