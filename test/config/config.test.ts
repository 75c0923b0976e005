import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config.js';
import { clusterOptions } from '../../src/queue/redis.js';
import { runEntry, type NodeProcess } from '../helpers/child-process.js';

function configError(env: Record<string, string>): ConfigError {
  try {
    loadConfig(env);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error(`loadConfig accepted ${JSON.stringify(env)}`);
}

describe('loadConfig', () => {
  it('defaults to the local Redis and PostgreSQL of a fresh machine', () => {
    const config = loadConfig({});
    expect(config.REDIS_URL).toBe('redis://127.0.0.1:6379');
    expect(config.DATABASE_URL).toMatch(/^postgresql:\/\/postgres@127\.0\.0\.1:5432\/[a-z_]+$/);
    expect(config).toMatchObject({
      NODE_ENV: 'development',
      PORT: 3000,
      HOST: '0.0.0.0',
      QUEUE_PREFIX: '{orchestrator}',
      LOG_LEVEL: 'info',
      LOG_FORMAT: 'pretty',
      WORKER_CONCURRENCY: 10,
      WORKER_TOOLS: [],
      WORKER_SHUTDOWN_TIMEOUT_MS: 30_000,
      HTTP_TOOL_ALLOWED_HOSTS: [],
      BODY_LIMIT: '1mb',
      RESULT_WAIT_MAX_S: 30,
    });
  });

  it('returns a frozen object', () => {
    const config = loadConfig({});
    expect(Object.isFrozen(config)).toBe(true);
    expect(() => {
      (config as { PORT: number }).PORT = 1;
    }).toThrow(TypeError);
  });

  it('parses numbers, lists and the production log format', () => {
    const config = loadConfig({
      NODE_ENV: 'production',
      PORT: '8080',
      WORKER_CONCURRENCY: '3',
      WORKER_TOOLS: ' echo, ,sleep ',
      HTTP_TOOL_ALLOWED_HOSTS: 'api.example.com,*.hooks.example.com, 127.0.0.1:9000',
      REDIS_URL: 'rediss://user:pw@redis.internal:6380/2',
      DATABASE_URL: 'postgres://app@db.internal:5432/orchestrator',
    });
    expect(config).toMatchObject({
      PORT: 8080,
      WORKER_CONCURRENCY: 3,
      WORKER_TOOLS: ['echo', 'sleep'],
      HTTP_TOOL_ALLOWED_HOSTS: ['api.example.com', '*.hooks.example.com', '127.0.0.1:9000'],
      LOG_FORMAT: 'json',
    });
  });

  it('treats an empty value as unset, so the default applies', () => {
    expect(loadConfig({ PORT: '', REDIS_URL: '', WORKER_CONCURRENCY: '' })).toMatchObject({ PORT: 3000, REDIS_URL: 'redis://127.0.0.1:6379', WORKER_CONCURRENCY: 10 });
  });

  it.each([
    ['WORKER_CONCURRENCY', 'abc'],
    ['WORKER_CONCURRENCY', '0'],
    ['WORKER_CONCURRENCY', '2.5'],
    ['PORT', '70000'],
    ['PORT', '-1'],
    ['REDIS_URL', 'http://x'],
    ['REDIS_URL', 'not a url'],
    ['DATABASE_URL', 'mysql://root@127.0.0.1/app'],
    ['QUEUE_PREFIX', 'has:colon'],
    ['REDIS_CLUSTER_NODES', 'redis-1,redis-2'],
    ['LOG_LEVEL', 'loud'],
    ['NODE_ENV', 'staging'],
    ['BODY_LIMIT', 'lots'],
    ['WORKER_SHUTDOWN_TIMEOUT_MS', '-5'],
  ])('throws a ConfigError naming %s for %j', (name, value) => {
    const error = configError({ [name]: value });
    expect(error.name).toBe('ConfigError');
    expect(error.message).toContain(`${name}:`);
    expect(error.message).toContain(JSON.stringify(value));
  });

  it('names every bad variable at once', () => {
    const error = configError({ PORT: '70000', WORKER_CONCURRENCY: 'abc', REDIS_URL: 'http://x', LOG_LEVEL: 'info' });
    for (const name of ['PORT', 'WORKER_CONCURRENCY', 'REDIS_URL']) expect(error.message).toContain(`${name}:`);
    expect(error.message).not.toContain('LOG_LEVEL');
  });
});

describe('Redis Cluster settings', () => {
  it('parses the seed nodes; empty means the single Redis at REDIS_URL', () => {
    expect(loadConfig({}).REDIS_CLUSTER_NODES).toEqual([]);
    expect(loadConfig({ REDIS_CLUSTER_NODES: 'redis-1:7000, 10.0.0.2:7001,[::1]:7002' }).REDIS_CLUSTER_NODES).toEqual(['redis-1:7000', '10.0.0.2:7001', '[::1]:7002']);
  });

  it.each(['orchestrator', 'pre{}fix', '}x{', 'a{b'])('refuses QUEUE_PREFIX %j on a cluster, naming QUEUE_PREFIX', (prefix) => {
    const error = configError({ REDIS_CLUSTER_NODES: 'redis-1:7000', QUEUE_PREFIX: prefix });
    expect(error.message).toMatch(/QUEUE_PREFIX: must contain a Redis Cluster hash tag/);
    expect(error.message).toContain(JSON.stringify(prefix));
    // Without a cluster any prefix is fine.
    expect(loadConfig({ QUEUE_PREFIX: prefix }).QUEUE_PREFIX).toBe(prefix);
  });

  it.each(['{orchestrator}', 'staging{orchestrator}', '{tenant-1}.jobs'])('accepts QUEUE_PREFIX %j on a cluster', (prefix) => {
    expect(loadConfig({ REDIS_CLUSTER_NODES: 'redis-1:7000', QUEUE_PREFIX: prefix }).QUEUE_PREFIX).toBe(prefix);
  });

  it('gives every node the role options and the credentials and TLS of REDIS_URL', () => {
    const producer = clusterOptions('rediss://app:s%40cret@ignored:6379', 'producer', 'orchestrator:api');
    expect(producer.enableOfflineQueue).toBe(false);
    expect(producer.redisOptions).toMatchObject({ maxRetriesPerRequest: 1, username: 'app', password: 's@cret', tls: {}, connectionName: 'orchestrator:api' });
    const worker = clusterOptions('redis://127.0.0.1:6379', 'worker');
    expect(worker.enableOfflineQueue).toBe(true);
    expect(worker.redisOptions).toMatchObject({ maxRetriesPerRequest: null });
    expect(worker.redisOptions).not.toHaveProperty('password');
    expect(worker.redisOptions).not.toHaveProperty('tls');
  });
});

describe('a process with a bad configuration', () => {
  let child: NodeProcess | undefined;
  afterEach(async () => {
    await child?.kill();
    child = undefined;
  });

  it('stops the worker at boot with a non-zero exit code and a message naming the variable', async () => {
    // Nothing else set: it must fail on the config before it touches Redis or PostgreSQL.
    child = runEntry('workers/main.ts', { WORKER_CONCURRENCY: 'abc', DATABASE_URL: 'postgresql://postgres@127.0.0.1:1/never', REDIS_URL: 'redis://127.0.0.1:1' });
    const exit = await child.waitForExit(20_000);
    expect(exit.code).not.toBe(0);
    expect(exit.code).not.toBeNull();
    expect(child.output).toMatch(/WORKER_CONCURRENCY: .*\(got "abc"\)/);
  });
});
