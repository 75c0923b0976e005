import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isCluster } from '../../src/queue/redis.js';
import { createHarness, type Harness, poll, submit } from '../helpers/harness.js';
import { commandsRun, describeShares } from './helpers.js';
import { type RedisCluster, startRedisCluster } from './redis-cluster.js';

/**
 * Proves that a Redis Cluster shares the work: a mixed run (one-tool tasks, a workflow over
 * several tools, the diamond) spreads the Redis commands over the three masters. The cluster is
 * this file's own, so that INFO commandstats counts this run alone and not the project's other
 * files running meanwhile.
 */

const ECHO_TASKS = 300;
const MIXED_TASKS = 60;
const DIAMOND_TASKS = 30;
/** Most a master's share of the commands may differ from the mean share. */
const TOLERANCE = 0.25;

describe('Redis Cluster sharding', () => {
  let cluster: RedisCluster;
  let h: Harness;
  beforeAll(async () => {
    cluster = await startRedisCluster({ masters: 3 });
    h = await createHarness({ env: { REDIS_CLUSTER_NODES: cluster.seeds } });
  });
  afterAll(async () => {
    // The nodes are stopped even when closing the harness fails: they would outlive the run.
    try {
      await h?.close();
    } finally {
      await cluster?.stop();
    }
  });

  it('spreads the commands of a mixed run over the masters within ±25% of the mean', async () => {
    if (!isCluster(h.redis)) throw new Error('the harness did not connect to the Redis Cluster');
    const defined = await h.request('POST', '/workflows', {
      name: 'mixed_tools',
      parameters: [{ name: 'value', type: 'string', required: true }],
      steps: [
        { id: 'a', tool: 'echo', input: { value: '{{params.value}}' } },
        { id: 'b', tool: 'sleep', depends_on: ['a'], input: { ms: 1 } },
        { id: 'c', tool: 'notify', depends_on: ['a'], input: { message: 'step c of {{params.value}}' } },
        { id: 'd', tool: 'echo', depends_on: ['b', 'c'], input: { slept: '{{steps.b.output.slept_ms}}', told: '{{steps.c.output.delivered}}' } },
      ],
    });
    expect(defined.status).toBe(201);
    const masters = h.redis.nodes('master');
    expect(masters).toHaveLength(3);
    const label = (node: (typeof masters)[number]) => `${node.options.host}:${node.options.port}`;
    const before = new Map(await Promise.all(masters.map(async (node) => [label(node), await commandsRun(node)] as const)));

    const bodies = [
      ...Array.from({ length: ECHO_TASKS }, (_, i) => ({ task_type: 'echo', params: { i } })),
      ...Array.from({ length: MIXED_TASKS }, (_, i) => ({ task_type: 'mixed_tools', params: { value: `m${i}` } })),
      ...Array.from({ length: DIAMOND_TASKS }, (_, i) => ({ task_type: 'diamond', params: { value: `d${i}` } })),
    ];
    const ids: string[] = [];
    for (let i = 0; i < bodies.length; i += 30) ids.push(...(await Promise.all(bodies.slice(i, i + 30).map((body) => submit(h, body)))));
    // PostgreSQL says when they are done: waiting through the API would add its own commands.
    await poll(async () => (await h.db.prisma.task.count({ where: { id: { in: ids }, status: 'completed' } })) === ids.length, {
      label: `all ${ids.length} tasks to complete`,
      timeoutMs: 60_000,
      intervalMs: 250,
    });

    const run = new Map(await Promise.all(masters.map(async (node) => [label(node), (await commandsRun(node)) - before.get(label(node))!] as const)));
    const mean = [...run.values()].reduce((sum, count) => sum + count, 0) / run.size;
    console.info(`commands per master for ${ids.length} tasks: ${describeShares(run)}; mean ${Math.round(mean)}`);
    for (const [master, count] of run) expect(Math.abs(count - mean) / mean, `${master}: ${describeShares(run)}`).toBeLessThanOrEqual(TOLERANCE);
  });
});
