import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError, effectiveConfig, loadConfig } from '../../src/lib/config.js';
import { clusterOptions } from '../../src/queue/redis.js';
import { type NodeProcess, runEntry } from '../helpers/child-process.js';

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
      HOST: '127.0.0.1',
      QUEUE_PREFIX: '{orchestrator}',
      LOG_LEVEL: 'info',
      LOG_FORMAT: 'pretty',
      WORKER_CONCURRENCY: 10,
      WORKER_TOOLS: [],
      WORKER_SHUTDOWN_TIMEOUT_MS: 30_000,
      WORKER_LOCK_DURATION_MS: 30_000,
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

  it('reaches PostgreSQL directly over DATABASE_URL unless DATABASE_DIRECT_URL names another way', () => {
    const pooled = 'postgresql://app@pgbouncer:6432/orchestrator';
    expect(loadConfig({ DATABASE_URL: pooled }).DATABASE_DIRECT_URL).toBe(pooled);
    expect(loadConfig({ DATABASE_URL: pooled, DATABASE_DIRECT_URL: 'postgresql://app@db:5432/orchestrator' })).toMatchObject({
      DATABASE_URL: pooled,
      DATABASE_DIRECT_URL: 'postgresql://app@db:5432/orchestrator',
    });
  });

  it('treats an empty value as unset, so the default applies', () => {
    expect(loadConfig({ PORT: '', REDIS_URL: '', WORKER_CONCURRENCY: '' })).toMatchObject({
      PORT: 3000,
      REDIS_URL: 'redis://127.0.0.1:6379',
      WORKER_CONCURRENCY: 10,
    });
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
    ['DATABASE_DIRECT_URL', 'pgbouncer:6432'],
    ['QUEUE_PREFIX', 'has:colon'],
    ['LOG_LEVEL', 'loud'],
    ['NODE_ENV', 'staging'],
    ['BODY_LIMIT', 'lots'],
    ['WORKER_SHUTDOWN_TIMEOUT_MS', '-5'],
    ['WORKER_LOCK_DURATION_MS', '500'],
  ])('throws a ConfigError naming %s for %j', (name, value) => {
    const error = configError({ [name]: value });
    expect(error.name).toBe('ConfigError');
    expect(error.message).toContain(`${name}:`);
    expect(error.message).toContain(JSON.stringify(value));
  });

  it('describes a bad secret by its length and masks passwords in URLs, never printing them', () => {
    const secrets = ['short-secret', 'good-key-0123456789abcdef', 'tiny-key', 'hunter2-db-password', 'pw-of-redis'];
    const error = configError({
      CALLBACK_SECRET: 'short-secret',
      API_KEYS: 'good-key-0123456789abcdef, tiny-key',
      DATABASE_URL: 'mysql://app:hunter2-db-password@db.internal/app',
      REDIS_URL: 'http://:pw-of-redis@redis.internal:6379',
    });
    for (const secret of secrets) expect(error.message).not.toContain(secret);
    expect(error.message).toContain('CALLBACK_SECRET: use at least 16 characters (got 12 characters; secret values are not shown)');
    expect(error.message).toContain('API_KEYS: each key must be at least 16 characters (entry 2 of 2 has 8 characters; secret values are not shown)');
    expect(error.message).toContain('DATABASE_URL: Invalid URL (got "mysql://app:***@db.internal/app")');
    expect(error.message).toContain('REDIS_URL: Invalid URL (got "http://:***@redis.internal:6379")');
  });

  it('names every bad variable at once', () => {
    const error = configError({ PORT: '70000', WORKER_CONCURRENCY: 'abc', REDIS_URL: 'http://x', LOG_LEVEL: 'info' });
    for (const name of ['PORT', 'WORKER_CONCURRENCY', 'REDIS_URL']) expect(error.message).toContain(`${name}:`);
    expect(error.message).not.toContain('LOG_LEVEL');
  });

  it('bounds sizes by default (docs/configuration.md "Limits") and refuses limits out of range', () => {
    expect(loadConfig({})).toMatchObject({
      TEMPLATE_STRING_MAX_CHARS: 65_536,
      TEMPLATE_MAX_REFERENCES: 1_000,
      STEP_INPUT_MAX_BYTES: 1_048_576,
      STEP_OUTPUT_MAX_BYTES: 1_048_576,
      STEP_OUTPUT_MAX_DEPTH: 64,
      TASK_RESULT_MAX_BYTES: 4_194_304,
      JOB_INLINE_OUTPUT_MAX_BYTES: 4_096,
    });
    expect(loadConfig({ STEP_INPUT_MAX_BYTES: '2048', JOB_INLINE_OUTPUT_MAX_BYTES: '0' })).toMatchObject({
      STEP_INPUT_MAX_BYTES: 2_048,
      JOB_INLINE_OUTPUT_MAX_BYTES: 0,
    });
    const error = configError({ STEP_INPUT_MAX_BYTES: '10', STEP_OUTPUT_MAX_DEPTH: '0', TEMPLATE_MAX_REFERENCES: 'many' });
    for (const name of ['STEP_INPUT_MAX_BYTES', 'STEP_OUTPUT_MAX_DEPTH', 'TEMPLATE_MAX_REFERENCES']) expect(error.message).toContain(name);
  });
});

describe('the policy service', () => {
  it("takes seed 003's POLICY_ENGINE_URL: POLICY_URL is it + /v1/evaluate, however the base ends; POLICY_URL wins when both are set", () => {
    expect(loadConfig({}).POLICY_URL).toBeUndefined();
    expect(loadConfig({ POLICY_ENGINE_URL: 'http://opa.internal:8181' }).POLICY_URL).toBe('http://opa.internal:8181/v1/evaluate');
    expect(loadConfig({ POLICY_ENGINE_URL: 'https://policy.example.com/base/' }).POLICY_URL).toBe('https://policy.example.com/base/v1/evaluate');
    expect(loadConfig({ POLICY_ENGINE_URL: 'https://policy.example.com/base///' }).POLICY_URL).toBe('https://policy.example.com/base/v1/evaluate');
    expect(loadConfig({ POLICY_ENGINE_URL: 'http://opa.internal:8181', POLICY_URL: 'http://gate.internal/decide' }).POLICY_URL).toBe(
      'http://gate.internal/decide',
    );
    // An empty value is unset, as for every variable.
    expect(loadConfig({ POLICY_ENGINE_URL: '', POLICY_URL: '' }).POLICY_URL).toBeUndefined();
    expect(configError({ POLICY_ENGINE_URL: 'ftp://opa.internal' }).message).toMatch(/POLICY_ENGINE_URL/);
  });

  it('a base of many slashes is joined in time linear in its length', () => {
    const base = `http://opa.internal/${'/'.repeat(100_000)}`;
    const started = performance.now();
    expect(loadConfig({ POLICY_ENGINE_URL: base }).POLICY_URL).toBe('http://opa.internal/v1/evaluate');
    expect(performance.now() - started).toBeLessThan(1_000);
  });
});

describe('the settings in effect (GET /config/effective)', () => {
  it('lists every setting, set or not; secrets only as set or not set; passwords in URLs masked', () => {
    const shown = effectiveConfig(
      loadConfig({
        API_KEYS: 'admin:effective-admin-key-0123456789',
        DATABASE_URL: 'postgresql://orch:hunter2-password@db.internal:5432/orch',
        METRICS_TOKEN: 'effective-metrics-token-0123456789',
      }),
    );
    expect(shown).toMatchObject({
      API_KEYS: 'set',
      METRICS_TOKEN: 'set',
      CALLBACK_SECRET: 'not set',
      AUTH_JWT_SECRET: 'not set',
      DATABASE_URL: 'postgresql://orch:***@db.internal:5432/orch',
      POLICY_URL: null,
      // A number is a setting, though its name ends like a key's.
      QUOTA_MAX_BACKLOG_PER_KEY: expect.any(Number),
      WORKER_CONCURRENCY: 10,
    });
    const text = JSON.stringify(shown);
    for (const secret of ['effective-admin-key', 'hunter2', 'effective-metrics-token']) expect(text).not.toContain(secret);
    expect(Object.keys(shown)).toEqual([...Object.keys(shown)].sort());
  });
});

describe('Redis Cluster settings', () => {
  it('parses the seed nodes; empty means the single Redis at REDIS_URL', () => {
    expect(loadConfig({}).REDIS_CLUSTER_NODES).toEqual([]);
    expect(loadConfig({ REDIS_CLUSTER_NODES: 'redis-1:7000, 10.0.0.2:7001,[::1]:7002' }).REDIS_CLUSTER_NODES).toEqual([
      'redis-1:7000',
      '10.0.0.2:7001',
      '[::1]:7002',
    ]);
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

describe('a process with a bad configuration', { timeout: 90_000 }, () => {
  let child: NodeProcess | undefined;
  afterEach(async () => {
    await child?.kill();
    child = undefined;
  });

  it('stops the worker at boot with a non-zero exit code and a message naming the variable', async () => {
    // Nothing else set: it must fail on the config before it touches Redis or PostgreSQL.
    child = runEntry('workers/main.ts', {
      WORKER_CONCURRENCY: 'abc',
      DATABASE_URL: 'postgresql://postgres@127.0.0.1:1/never',
      REDIS_URL: 'redis://127.0.0.1:1',
    });
    const exit = await child.waitForExit(20_000);
    expect(exit.code).not.toBe(0);
    expect(exit.code).not.toBeNull();
    expect(child.output).toMatch(/WORKER_CONCURRENCY: .*\(got "abc"\)/);
  });
});

describe('API key settings', () => {
  it('reads KEY as an admin key, SCOPE:KEY and SCOPE@NAME:KEY with their scope; only the first ":" separates', () => {
    const config = loadConfig({
      API_KEYS: 'plain-admin-key-0123456, read:reader-key-0123456789,client@web.app-1:client-key-012345678,admin:with:colon-0123456789',
    });
    expect(config.API_KEYS).toEqual([
      { scope: 'admin', key: 'plain-admin-key-0123456' },
      { scope: 'read', key: 'reader-key-0123456789' },
      { scope: 'client', name: 'web.app-1', key: 'client-key-012345678' },
      { scope: 'admin', key: 'with:colon-0123456789' },
    ]);
  });

  it.each([
    [
      'an unknown scope (never taken as part of an admin key)',
      'clinet:secret-value-0123456789',
      /the text before the first ":" is not a scope.*\(entry 2 of 2 has 30 characters; secret values are not shown\)/,
    ],
    ['a short key', 'read:short-secret', /each key must be at least 16 characters \(entry 2 of 2 has 17 characters; secret values are not shown\)/],
    [
      'a bad name',
      'client@no spaces:secret-value-0123456789',
      /the text before the first ":" is not a scope.*\(entry 2 of 2 has 40 characters; secret values are not shown\)/,
    ],
  ])('refuses %s, naming the entry but never its text', (_what, entry, message) => {
    const error = configError({ API_KEYS: `fine-admin-key-0123456789,${entry}` });
    expect(error.message).toMatch(/API_KEYS: /);
    expect(error.message).toMatch(message);
    expect(error.message).not.toContain('secret-value');
    expect(error.message).not.toContain('short-secret');
    expect(error.message).not.toContain('fine-admin-key');
    expect(error.message).not.toContain('clinet');
  });

  it('listens on 127.0.0.1 outside production and on every interface in production, unless HOST says', () => {
    expect(loadConfig({ NODE_ENV: 'test' }).HOST).toBe('127.0.0.1');
    expect(loadConfig({ NODE_ENV: 'production', AUTH_DISABLED: 'true' }).HOST).toBe('0.0.0.0');
    expect(loadConfig({ HOST: '0.0.0.0' }).HOST).toBe('0.0.0.0');
    expect(loadConfig({ NODE_ENV: 'production', HOST: '10.0.0.7' }).HOST).toBe('10.0.0.7');
  });

  it('never shows REDIS_CLUSTER_NODES in an error: a mistaken entry may carry a password', () => {
    for (const value of ['redis-1,redis-2', 'default:hunter2-secret@redis-1:7000', 'redis://:hunter2-secret@redis-1:7000']) {
      const error = configError({ REDIS_CLUSTER_NODES: value });
      expect(error.message).toMatch(/REDIS_CLUSTER_NODES: each node must be host:port \(the value is not shown: it may hold a password\)/);
      expect(error.message).not.toContain('hunter2');
      expect(error.message).not.toContain('redis-1');
    }
  });

  it('never repeats the value of CALLBACK_SECRET in an error either', () => {
    const error = configError({ CALLBACK_SECRET: 'tiny-secret' });
    expect(error.message).toMatch(/CALLBACK_SECRET: use at least 16 characters \(got 11 characters; secret values are not shown\)/);
    expect(error.message).not.toContain('tiny-secret');
  });

  it('takes AUTH_DISABLED as true or false only, and not together with keys', () => {
    expect(loadConfig({}).AUTH_DISABLED).toBe(false);
    expect(loadConfig({ AUTH_DISABLED: 'true' }).AUTH_DISABLED).toBe(true);
    expect(configError({ AUTH_DISABLED: 'yes' }).message).toMatch(/AUTH_DISABLED: use true or false/);
    for (const keys of [{ API_KEYS: 'some-admin-key-0123456789' }, { API_KEYS_FILE: '/run/secrets/keys' }] as Record<string, string>[]) {
      expect(configError({ AUTH_DISABLED: 'true', ...keys }).message).toMatch(/AUTH_DISABLED: true contradicts API_KEYS/);
    }
  });
});

describe('closed by default', { timeout: 90_000 }, () => {
  const children: NodeProcess[] = [];
  afterEach(async () => {
    await Promise.all(children.splice(0).map((child) => child.kill()));
  });
  // Nothing answers here: a process that gets past the key check fails on PostgreSQL instead.
  const unreachable = { DATABASE_URL: 'postgresql://postgres@127.0.0.1:1/never', REDIS_URL: 'redis://127.0.0.1:1', LOG_FORMAT: 'json' };
  const start = (entry: string, env: Record<string, string>) => {
    const child = runEntry(entry, { ...unreachable, ...env });
    children.push(child);
    return child;
  };
  const lines = (output: string) => output.split('\n').filter((line) => line.trim() !== '');

  it.each(['src/api/main.ts', 'src/main.ts'])('%s in production without keys exits 1 with one line naming what to set', async (entry) => {
    const child = start(entry, { NODE_ENV: 'production' });
    expect((await child.waitForExit()).code).toBe(1);
    expect(lines(child.output)).toHaveLength(1);
    expect(child.output).toMatch(/could not start: NODE_ENV=production needs API keys: set API_KEYS \(or API_KEYS_FILE\), or set AUTH_DISABLED=true/);
  });

  it('starts in production without keys when AUTH_DISABLED=true, with a warning', async () => {
    const child = start('src/api/main.ts', { NODE_ENV: 'production', AUTH_DISABLED: 'true' });
    expect((await child.waitForExit()).code).toBe(1);
    expect(child.output).toMatch(/authentication is disabled \(AUTH_DISABLED=true\)/);
    expect(child.output).not.toMatch(/needs API keys/);
    // It got as far as PostgreSQL.
    expect(child.output).toMatch(/could not start: .*(ECONNREFUSED|connect)/);
  });

  it('warns once at boot in development when no keys are set', async () => {
    const child = start('src/api/main.ts', { NODE_ENV: 'development' });
    await child.waitForExit();
    expect(child.output.match(/authentication is off/g)).toHaveLength(1);
    expect(child.output).toMatch(/could not start: .*(ECONNREFUSED|connect)/);
  });

  it('stops at boot, naming the file, when API_KEYS_FILE cannot be read', async () => {
    const child = start('src/api/main.ts', { NODE_ENV: 'production', API_KEYS_FILE: '/nonexistent/orchestrator-keys' });
    expect((await child.waitForExit()).code).toBe(1);
    expect(lines(child.output)).toEqual(['api could not start: API_KEYS_FILE /nonexistent/orchestrator-keys cannot be read (ENOENT)']);
  });
});
