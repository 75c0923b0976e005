import { createHash } from 'node:crypto';
import { Cluster, type ClusterNode, type ClusterOptions, Redis, type RedisOptions } from 'ioredis';
import type { Config } from '../lib/config.js';

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

/** A connection to Redis: one server (REDIS_URL) or a cluster (REDIS_CLUSTER_NODES). */
export type RedisClient = Redis | Cluster;

export function isCluster(redis: RedisClient): redis is Cluster {
  return redis instanceof Cluster;
}

/** The connections that hold keys: the server itself, or every master of a cluster. */
export function masters(redis: RedisClient): Redis[] {
  return isCluster(redis) ? redis.nodes('master') : [redis];
}

function clusterNode(entry: string): ClusterNode {
  const url = new URL(`redis://${entry}`);
  return { host: url.hostname.replace(/^\[(.*)\]$/, '$1'), port: Number(url.port) };
}

/** How many redirections or retries a producer's command gets on a cluster (see clusterOptions). */
const PRODUCER_MAX_REDIRECTIONS = 5;

/** The options of a cluster connection: per-node options from the role, credentials and TLS from REDIS_URL. */
export function clusterOptions(redisUrl: string, role: RedisRole, connectionName?: string): ClusterOptions {
  // ioredis gives node connections no reconnects of their own (a lost node is found again by a
  // slot refresh) and always an offline queue, so the role's reconnect and offline-queue
  // settings belong to the cluster as a whole.
  const { retryStrategy, enableOfflineQueue, ...perNode } = redisOptions(role);
  const url = new URL(redisUrl);
  return {
    clusterRetryStrategy: retryStrategy,
    enableOfflineQueue: enableOfflineQueue ?? true,
    // A command to a master that died is retried after a slot refresh every retryDelayOnFailover
    // (100 ms) up to maxRedirections times. Inside an HTTP request that would hold the answer
    // through the failover; a producer gives up after a few (about half a second), and the API
    // answers 503 for the shards of that master only. Workers keep the default 16, and wait.
    ...(role === 'producer' ? { maxRedirections: PRODUCER_MAX_REDIRECTIONS } : {}),
    redisOptions: {
      ...perNode,
      connectionName,
      ...(url.username ? { username: decodeURIComponent(url.username) } : {}),
      ...(url.password ? { password: decodeURIComponent(url.password) } : {}),
      ...(url.protocol === 'rediss:' ? { tls: {} } : {}),
    },
  };
}

export function createRedis(config: Pick<Config, 'REDIS_URL' | 'REDIS_CLUSTER_NODES'>, role: RedisRole, name?: string): RedisClient {
  const connectionName = name ? `orchestrator:${name}` : undefined;
  const redis =
    config.REDIS_CLUSTER_NODES.length > 0
      ? new Cluster(config.REDIS_CLUSTER_NODES.map(clusterNode), clusterOptions(config.REDIS_URL, role, connectionName))
      : new Redis(config.REDIS_URL, { ...redisOptions(role), connectionName });
  // Errors also surface on the commands that hit them; without a listener ioredis logs each
  // reconnect failure to stderr.
  redis.on('error', () => undefined);
  return redis;
}

/**
 * Sends a raw command (for libraries that speak Redis through a callback). A cluster routes it
 * by its keys; SCRIPT LOAD has none, so it goes to every master, and EVALSHA finds the script
 * on whichever master holds its keys.
 */
export async function sendCommand(redis: RedisClient, command: string, ...args: string[]): Promise<unknown> {
  if (isCluster(redis) && command.toUpperCase() === 'SCRIPT' && args[0]?.toUpperCase() === 'LOAD') {
    const nodes = redis.nodes('master');
    if (nodes.length > 0) return (await Promise.all(nodes.map((node) => node.call(command, ...args))))[0];
  }
  return redis.call(command, ...args);
}

/** A Lua script and its SHA1, to be run with runScript. */
export interface LuaScript {
  text: string;
  sha: string;
}

export function luaScript(text: string): LuaScript {
  return { text, sha: createHash('sha1').update(text).digest('hex') };
}

/**
 * Runs a script by its SHA (EVALSHA), sending its text (EVAL) only when Redis does not know it
 * yet: a script called per request costs its arguments on the wire, not its text each time. A
 * cluster routes it by its keys.
 */
export async function runScript(redis: RedisClient, script: LuaScript, numKeys: number, args: (string | number)[]): Promise<unknown> {
  try {
    return await redis.evalsha(script.sha, numKeys, ...args);
  } catch (error) {
    if (!(error instanceof Error) || !error.message.startsWith('NOSCRIPT')) throw error;
    return redis.eval(script.text, numKeys, ...args);
  }
}

/**
 * Subscribes to `channel` each time the connection becomes ready (at start and after every
 * reconnect; subscribing twice is harmless). Asked before that, ioredis writes SUBSCRIBE in the
 * middle of the connection handshake: the connection turns into subscriber mode, its ready check
 * (INFO) is refused, it reconnects, and the subscription is silently gone. `onSubscribed` runs
 * after each subscription: what was published while there was none (before the first, during an
 * outage) never arrives, so a reader of a change feed reads again there.
 */
export function subscribeWhenReady(subscriber: RedisClient, channel: string, onError: (error: Error) => void, onSubscribed?: () => void): void {
  const subscribe = () => {
    // What onSubscribed throws is reported too, not left an unhandled rejection (which ends the process).
    subscriber
      .subscribe(channel)
      .then(() => onSubscribed?.())
      .catch(onError);
  };
  subscriber.on('ready', subscribe);
  if (subscriber.status === 'ready') subscribe();
}

/** Resolves once the connection is ready, or rejects after `timeoutMs`. */
export async function waitForRedis(redis: RedisClient, timeoutMs = 5_000): Promise<void> {
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

// `ECONNREFUSED \S*:6379` rather than `ECONNREFUSED.*6379`: `.*` rescans the rest of the message
// from every ECONNREFUSED in it, quadratic on a message that repeats the word.
// The last ones are a Redis Cluster's while a master fails over: the slots are unserved
// (CLUSTERDOWN, TRYAGAIN) or the client has not found the new master yet.
const REDIS_DOWN =
  /Stream isn't writeable|enableOfflineQueue|Connection is closed|Command timed out|ECONNREFUSED \S*:6379|Reached the max retries per request|connect ETIMEDOUT|^CLUSTERDOWN|^TRYAGAIN|Failed to refresh slots cache|Too many Cluster redirections|None of startup nodes is available/i;

/** Whether an error says Redis cannot be reached (the API then answers 503). */
export function isRedisUnavailable(error: unknown): boolean {
  return error instanceof Error && (REDIS_DOWN.test(error.message) || error.name === 'MaxRetriesPerRequestError');
}

const SOCKET_ERRORS = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN']);

/**
 * Whether an error is a connection's failing to reach Redis (on any port), as BullMQ's workers
 * and queues repeat them for each reconnect attempt: RedisOutage says those once.
 */
export function isConnectionError(error: unknown): boolean {
  return isRedisUnavailable(error) || (error instanceof Error && SOCKET_ERRORS.has((error as NodeJS.ErrnoException).code ?? ''));
}
