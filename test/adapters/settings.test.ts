import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { loadConfig } from '../../src/lib/config.js';
import { silentLogger } from '../../src/lib/logger.js';
import { type AnyTool, defineTool, ToolRegistry } from '../../src/tools/tool.js';
import { builtinTools, createToolRegistry } from '../../workers/adapters/index.js';
import { startWorker } from '../../workers/worker.js';
import { createHarness, type Harness, submit, waitForTask } from '../helpers/harness.js';

/**
 * An adapter receives the settings it declares, read from its worker's environment (never
 * through src/lib/config.ts), and nothing else of it: no database or Redis URL, no API key, no
 * token.
 */

const env = {
  NODE_ENV: 'test',
  DATABASE_URL: 'postgresql://svc:db-password-7f3a@127.0.0.1:5432/orders',
  REDIS_URL: 'redis://:redis-password-19c2@127.0.0.1:6379',
  API_KEYS: 'api-key-0b5e61d2c9a84f7e',
  CALLBACK_SECRET: 'callback-secret-5d1e8a2b',
  METRICS_TOKEN: 'metrics-token-4c9b0e7a',
  HTTP_TOOL_ALLOWED_HOSTS: 'api.example.com, *.hooks.example.org,',
  // Empty: not set, as in the configuration: the declared default applies.
  HTTP_TOOL_PRIVATE_NAMES: '',
};
const config = loadConfig(env);
const SECRETS = [
  'db-password-7f3a',
  'redis-password-19c2',
  'api-key-0b5e61d2c9a84f7e',
  'callback-secret-5d1e8a2b',
  'metrics-token-4c9b0e7a',
  'postgresql:',
  'redis:',
];

describe('settings of the built-in adapters', () => {
  const settings = createToolRegistry().settings(config, env);

  it('are the variables each adapter declares, read from the environment', () => {
    const outbound = { HTTP_TOOL_ALLOWED_HOSTS: ['api.example.com', '*.hooks.example.org'], HTTP_TOOL_PRIVATE_NAMES: 'allow' };
    expect(Object.fromEntries(settings)).toEqual({ echo: {}, sleep: {}, http: outbound, notify: outbound, text_stats: {}, approve_batches: {} });
    expect([...settings.keys()].sort()).toEqual(builtinTools.map((tool) => tool.name).sort());
    // Not the configuration: a worker's environment says, whatever `config` holds.
    const other = createToolRegistry().settings(config, { HTTP_TOOL_ALLOWED_HOSTS: 'only.example.net', HTTP_TOOL_PRIVATE_NAMES: 'refuse' });
    expect(other.get('http')).toEqual({ HTTP_TOOL_ALLOWED_HOSTS: ['only.example.net'], HTTP_TOOL_PRIVATE_NAMES: 'refuse' });
  });

  it('stop a worker at boot when a variable does not fit, naming it', () => {
    expect(() => createToolRegistry().settings(config, { HTTP_TOOL_PRIVATE_NAMES: 'sometimes' })).toThrow(
      /the http tool's settings do not fit its declaration: .*\n.*at HTTP_TOOL_PRIVATE_NAMES/,
    );
  });

  it('hold none of the secrets of the configuration', () => {
    const seen = JSON.stringify(Object.fromEntries(settings));
    for (const secret of SECRETS) expect(seen).not.toContain(secret);
  });

  it('are frozen all the way down: steps running at once share them', () => {
    const http = settings.get('http') as { allowed_hosts: string[] };
    expect(Object.isFrozen(http) && Object.isFrozen(http.allowed_hosts)).toBe(true);
  });
});

describe('ToolRegistry.settings', () => {
  const needsToken = defineTool({
    name: 'needs_token',
    description: 'test: declares a setting',
    input: z.object({}),
    output: z.object({}),
    settings: z.object({ token: z.string().min(8) }),
    async run() {
      return {};
    },
  }) as AnyTool;
  const plain = defineTool({
    name: 'plain',
    description: 'test: declares no settings',
    input: z.object({}),
    output: z.object({}),
    async run() {
      return {};
    },
  }) as AnyTool;

  it('reads a tool’s declared variables from the environment, and only those', () => {
    const declared = defineTool({ ...needsToken, settings: z.object({ SHOP_TOKEN: z.string().min(8) }) }) as AnyTool;
    const settings = new ToolRegistry([declared]).settings(config, { ...env, SHOP_TOKEN: 'token-0123456789' });
    expect(settings.get('needs_token')).toEqual({ SHOP_TOKEN: 'token-0123456789' });
    expect(() => new ToolRegistry([declared]).settings(config, env)).toThrow(/the needs_token tool's settings do not fit its declaration: .*\n.*at SHOP_TOKEN/);
    // Settings that are not an object of variables cannot say which variables they read.
    const loose = defineTool({ ...needsToken, settings: z.record(z.string(), z.string()) }) as AnyTool;
    expect(() => new ToolRegistry([loose]).settings(config, env)).toThrow(
      "the needs_token tool's settings must be a z.object of the environment variables it reads",
    );
  });

  it('refuses settings that do not fit the declaration, naming the tool and the field', () => {
    expect(() => new ToolRegistry([needsToken], { needs_token: () => ({ token: 'short' }) }).settings(config)).toThrow(
      /the needs_token tool's settings do not fit its declaration: .*\n.*at token/,
    );
  });

  it('refuses a chooser for a tool that declares no settings', () => {
    expect(() => new ToolRegistry([plain], { plain: (all) => all }).settings(config)).toThrow(
      'the registry chooses settings for the plain tool, which declares none',
    );
  });

  it('resolves only the tools a worker runs (WORKER_TOOLS): a chooser of another tool is not needed', () => {
    const registry = new ToolRegistry([needsToken, plain]);
    expect(Object.fromEntries(registry.only(['plain']).settings(config))).toEqual({ plain: {} });
  });

  it('stops a worker at boot, before it connects to anything, when a tool’s variables are not set', async () => {
    await expect(startWorker(config, silentLogger(), new ToolRegistry([needsToken]), undefined, env)).rejects.toThrow(
      /the needs_token tool's settings do not fit its declaration: .*\n.*at token/,
    );
  });
});

describe('what a running adapter receives', () => {
  let h: Harness;
  const probe = defineTool({
    name: 'context_probe',
    description: 'test: returns what its context holds',
    input: z.object({}),
    output: z.object({ keys: z.array(z.string()), settings: z.unknown() }),
    settings: z.object({ queue_prefix: z.string() }),
    async run(_input, ctx) {
      return { keys: Object.keys(ctx).sort(), settings: ctx.settings };
    },
  }) as AnyTool;

  beforeAll(async () => {
    h = await createHarness({ tools: [probe], settings: { context_probe: (all) => ({ queue_prefix: all.QUEUE_PREFIX }) } });
  });
  afterAll(async () => {
    await h?.close();
  });

  it('is its chosen settings and the step context, never the configuration', async () => {
    const result = await waitForTask(h, await submit(h, { task_type: 'context_probe', params: {} }));
    expect(result.status).toBe('completed');
    expect(result.result).toEqual({
      keys: ['attempt', 'dependencies', 'logger', 'progress', 'settings', 'signal', 'stepId', 'taskId'],
      settings: { queue_prefix: h.config.QUEUE_PREFIX },
    });
    expect(JSON.stringify(result.result)).not.toContain(h.config.DATABASE_URL);
  });
});
