import { afterAll, describe, expect, it } from 'vitest';
import { Circuits, type CircuitTransition, DEFAULT_CIRCUIT } from '../../src/queue/circuits.js';
import { createRedis } from '../../src/queue/redis.js';
import { operationsOf } from '../../src/tools/openapi-operations.js';
import { runtimeType, serviceLimits } from '../../src/tools/openapi-tools.js';
import { TEST_REDIS_URL } from '../helpers/env.js';
import { uniqueName } from '../helpers/harness.js';

const redis = createRedis({ REDIS_URL: TEST_REDIS_URL, REDIS_CLUSTER_NODES: [] }, 'worker', 'test');
const prefix = `{${uniqueName('circuits')}}`;

afterAll(async () => {
  const keys = await redis.keys(`${prefix}:*`);
  if (keys.length > 0) await redis.del(...keys);
  redis.disconnect();
});

describe('a circuit breaker (Redis, Lua)', () => {
  const seen: CircuitTransition[] = [];
  const circuits = new Circuits(redis, prefix, (transition) => seen.push(transition));
  const settings = { ...DEFAULT_CIRCUIT, failure_threshold: 100, failure_ratio: 0.5, min_calls: 4, window_ms: 60_000, open_ms: 200, half_open_probes: 2 };

  it('opens on a failure ratio over min_calls in the window, not before', async () => {
    expect(await circuits.record('ratio', settings, true)).toBe('closed');
    expect(await circuits.record('ratio', settings, false)).toBe('closed');
    expect(await circuits.record('ratio', settings, false)).toBe('closed');
    // 2 failures of 4 calls: 0.5.
    expect(await circuits.record('ratio', settings, true)).toBe('open');
    expect(seen.map((transition) => `${transition.from}>${transition.to}`)).toEqual(['closed>open']);
    const refused = await circuits.acquire('ratio', settings, 1_000);
    expect(refused.ok).toBe(false);
    expect((await circuits.view('ratio')).state).toBe('open');
  });

  it('half-opens after open_ms with half_open_probes probes; all succeeding close it', async () => {
    await new Promise((resolve) => setTimeout(resolve, 250));
    const admissions = await Promise.all([1, 2, 3].map(() => circuits.acquire('ratio', settings, 1_000)));
    expect(admissions.filter((admission) => admission.ok)).toEqual([
      { ok: true, probe: true },
      { ok: true, probe: true },
    ]);
    expect(await circuits.record('ratio', settings, false)).toBe('half_open');
    expect(await circuits.record('ratio', settings, false)).toBe('closed');
    const view = await circuits.view('ratio');
    expect(view.transitions.map((transition) => `${transition.from}>${transition.to}`)).toEqual(['half_open>closed', 'open>half_open', 'closed>open']);
    expect((await circuits.acquire('ratio', settings, 1_000)).ok).toBe(true);
  });

  it('gives up a probe whose worker never reported after probe_ttl, so the circuit cannot stay half-open', async () => {
    const one = { ...settings, failure_threshold: 1, half_open_probes: 1 };
    expect(await circuits.record('lost', one, true)).toBe('open');
    await new Promise((resolve) => setTimeout(resolve, 250));
    expect(await circuits.acquire('lost', one, 100)).toEqual({ ok: true, probe: true });
    expect((await circuits.acquire('lost', one, 100)).ok).toBe(false);
    await new Promise((resolve) => setTimeout(resolve, 150));
    expect(await circuits.acquire('lost', one, 100)).toEqual({ ok: true, probe: true });
    await circuits.forget('lost');
    expect((await circuits.view('lost')).state).toBe('closed');
  });
});

describe('OpenAPI operations as tools', () => {
  const document = {
    openapi: '3.0.3',
    paths: {
      '/nodes/{id}': {
        parameters: [{ name: 'id', in: 'path', required: true, schema: { type: 'integer' } }],
        get: {
          operationId: 'getNode',
          parameters: [{ $ref: '#/components/parameters/Trace' }],
          responses: { '200': { description: 'a node', content: { 'application/json': { schema: { $ref: '#/components/schemas/Node' } } } } },
        },
        delete: { operationId: 'drop node', responses: { '204': { description: 'gone' } } },
      },
    },
    components: {
      parameters: { Trace: { name: 'X-Trace', in: 'header', schema: { type: 'string', pattern: '^(a+)+$' } } },
      schemas: {
        Node: {
          type: 'object',
          properties: { name: { type: 'string', nullable: true, pattern: '^(a+)+$' }, parent: { $ref: '#/components/schemas/Node' } },
        },
      },
    },
  };

  const budget = { maxNodes: 50_000, maxBytes: 800_000 };

  it('reads parameters by where they go, keeps references as $defs (a recursive one too) and nullable, and skips what makes no tool name', () => {
    const { operations, skipped } = operationsOf('graph', document, budget);
    expect(skipped).toEqual([{ where: 'DELETE /nodes/{id}', reason: expect.stringContaining('drop node') }]);
    const [node] = operations;
    expect(node).toMatchObject({ tool: 'graph.getNode', method: 'GET', path: '/nodes/{id}' });
    expect(node!.inputSchema).toMatchObject({
      properties: { path: { properties: { id: { type: 'integer' } }, required: ['id'] }, headers: { properties: { 'X-Trace': { type: 'string' } } } },
      required: ['path'],
      additionalProperties: false,
    });
    // The root shows the referred shape; the recursion is a reference into its $defs.
    expect(node!.outputSchema).toMatchObject({ properties: { name: { type: ['string', 'null'] } } });
    expect((node!.outputSchema.properties as Record<string, unknown>).parent).toEqual({ $ref: '#/$defs/Node' });
    expect(node!.outputSchema.$defs).toMatchObject({ Node: { properties: { parent: { $ref: '#/$defs/Node' } } } });
    const output = runtimeType(node!.outputSchema);
    expect(output.safeParse({ name: 'a', parent: { name: null, parent: { name: 'aaa' } } }).success).toBe(true);
    const deep = output.safeParse({ name: 'a', parent: { parent: { name: 7 } } });
    expect(deep.success).toBe(false);
    expect(deep.error!.issues.map((issue) => issue.path)).toEqual([['parent', 'parent', 'name']]);
    // A reference to nowhere allows anything, as before.
    const nowhere = operationsOf(
      'graph',
      {
        ...document,
        paths: {
          '/x': { get: { operationId: 'x', responses: { '200': { description: 'x', content: { 'application/json': { schema: { $ref: '#/nowhere' } } } } } } },
        },
      },
      budget,
    );
    expect(nowhere.operations[0]!.outputSchema).toEqual({});
  });

  it("checks the document's regular expressions at run time on RE2, in linear time even on their worst input", () => {
    const { operations } = operationsOf('graph', document, budget);
    const output = runtimeType(operations[0]!.outputSchema);
    // `^(a+)+$` backtracks exponentially on this in a backtracking engine: RE2 answers at once.
    const started = performance.now();
    const worst = output.safeParse({ name: `${'a'.repeat(100_000)}!`, extra: 1 });
    expect(performance.now() - started).toBeLessThan(2_000);
    expect(worst.success).toBe(false);
    expect(worst.error!.issues).toEqual([expect.objectContaining({ path: ['name'], message: 'does not match the pattern "^(a+)+$"' })]);
    expect(output.safeParse({ name: 'aaaa', extra: 1 }).success).toBe(true);
    expect(output.safeParse({ name: 7 }).success).toBe(false);
    // In a parameter too (a header here), and through a reference of the recursion.
    const input = runtimeType(operations[0]!.inputSchema);
    expect(input.safeParse({ path: { id: 1 }, headers: { 'X-Trace': 'ab' } }).error!.issues.map((issue) => issue.path)).toEqual([['headers', 'X-Trace']]);
    expect(output.safeParse({ name: 'a', parent: { name: 'b' } }).error!.issues.map((issue) => issue.path)).toEqual([['parent', 'name']]);
    expect(runtimeType(operations[0]!.inputSchema).safeParse({ path: { id: 'x' } }).success).toBe(false);
  });

  it("makes a service's concurrency and rate limit limits per key", () => {
    expect(serviceLimits({ name: 'graph', baseUrl: 'http://x', headers: {}, timeoutMs: 1, concurrency: 2, rateLimit: { per_minute: 30 } })).toEqual([
      { kind: 'c', key: 'service:graph', limit: 2 },
      { kind: 'r', key: 'service:graph', limit: 30, windowMs: 60_000 },
    ]);
  });
});
