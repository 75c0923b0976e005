import type { Cluster } from 'ioredis';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { CLUSTER_DEFAULT_SHARDS } from '../../src/lib/config.js';
import { isCluster } from '../../src/queue/redis.js';
import { Shards } from '../../src/queue/shards.js';
import { createHarness, type Harness, poll, submit, waitForTask } from '../helpers/harness.js';

/**
 * Proves that the cluster project really runs against a Redis Cluster: three masters that share
 * the slots, the service connected to it, its queue shards spread over the masters, and every
 * key of a task in its shard's slot.
 */

const MASTERS = 3;

function cluster(h: Harness): Cluster {
  if (!isCluster(h.redis)) throw new Error('the harness did not connect to the Redis Cluster');
  return h.redis;
}

/** Every key that matches `pattern`, by the master that holds it. */
async function keysByMaster(h: Harness, pattern: string): Promise<Map<string, string[]>> {
  const byMaster = new Map<string, string[]>();
  for (const node of cluster(h).nodes('master')) {
    const keys: string[] = [];
    let cursor = '0';
    do {
      const [next, batch] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
      keys.push(...batch);
      cursor = next;
    } while (cursor !== '0');
    if (keys.length > 0) byMaster.set(`${node.options.host}:${node.options.port}`, keys);
  }
  return byMaster;
}

/** `host:port` of the master that serves `slot`. */
async function masterOfSlot(h: Harness, slot: number): Promise<string> {
  const range = (await cluster(h).cluster('SLOTS')).find(([from, to]) => slot >= from && slot <= to);
  const master = range?.[2];
  if (!master) throw new Error(`no master serves slot ${slot}`);
  return `${master[0]}:${master[1]}`;
}

describe('Redis Cluster', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness();
  });
  afterAll(async () => {
    await h.close();
  });

  it('has three masters that share the slots, and the service uses it', async () => {
    const nodes = inject('redisClusterNodes')!.split(',');
    expect(nodes).toHaveLength(MASTERS);
    expect(h.env.REDIS_CLUSTER_NODES).toBe(inject('redisClusterNodes'));
    const masters = cluster(h).nodes('master');
    expect(masters).toHaveLength(MASTERS);
    for (const node of masters) {
      const info = String(await node.cluster('INFO'));
      expect(info).toMatch(/cluster_state:ok/);
      expect(info).toMatch(/cluster_size:3\b/);
      expect(info).toMatch(/cluster_slots_assigned:16384\b/);
    }
    const health = await h.request('GET', '/health');
    expect(health.body).toMatchObject({ status: 'ok', checks: { redis: 'up', database: 'up' } });
  });

  it('spreads the queue shards evenly over the masters', async () => {
    const shards = Shards.of(h.config);
    expect(shards.count).toBe(CLUSTER_DEFAULT_SHARDS);
    const perMaster = new Map<string, number>();
    for (const prefix of shards.prefixes) {
      const master = await masterOfSlot(h, Number(await cluster(h).cluster('KEYSLOT', prefix)));
      perMaster.set(master, (perMaster.get(master) ?? 0) + 1);
    }
    expect([...perMaster.values()]).toEqual(Array(MASTERS).fill(CLUSTER_DEFAULT_SHARDS / MASTERS));
  });

  it("keeps every key of a finished task (BullMQ jobs, queues and the events stream) in its shard's slot", async () => {
    const id = await submit(h, { task_type: 'diamond', params: { value: 'v' } });
    const task = await waitForTask(h, id);
    expect(task.status).toBe('completed');
    expect(task.result).toEqual({ joined: 'v-b+v-c' });
    const prefix = Shards.of(h.config).prefixOf(id);
    // The last step's job completes in BullMQ just after the task is closed in PostgreSQL.
    await poll(async () => (await h.redis.zscore(`${prefix}:tool.echo:completed`, `${id}.1.d`)) !== null, { label: 'the last step job to complete in BullMQ' });

    const byMaster = await keysByMaster(h, `${prefix}:*`);
    expect(byMaster.size, `keys on ${[...byMaster.keys()].join(', ')}`).toBe(1);
    const keys = [...byMaster.values()][0]!;
    expect(keys).toEqual(expect.arrayContaining([`${prefix}:events:${id}`, `${prefix}:tool.echo:completed`]));
    expect(keys.filter((key) => key.startsWith(`${prefix}:tool.echo:`) && key.includes(id)).length).toBeGreaterThanOrEqual(4);
    const slots = new Set(await Promise.all(keys.map((key) => cluster(h).cluster('KEYSLOT', key))));
    expect([...slots]).toEqual([await cluster(h).cluster('KEYSLOT', prefix)]);
    // Nothing of the task lives outside its shard.
    const elsewhere = [...(await keysByMaster(h, `*${id}*`)).values()].flat().filter((key) => !key.startsWith(`${prefix}:`));
    expect(elsewhere).toEqual([]);

    // The events stream was written through the cluster connection and reads back in order.
    const events = await h.request('GET', `/tasks/${id}/events`);
    expect(events.status).toBe(200);
    expect(String(events.body)).toMatch(/"status":"completed"/);
  });
});

describe('Redis Cluster rate limit', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness({ worker: false, env: { RATE_LIMIT_PER_MINUTE: '3' } });
  });
  afterAll(async () => {
    await h.close();
  });

  it('counts requests in the cluster (its scripts reach the master that holds the counters)', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 5; i += 1) statuses.push((await h.request('GET', '/tools')).status);
    expect(statuses).toEqual([200, 200, 200, 429, 429]);
  });
});
