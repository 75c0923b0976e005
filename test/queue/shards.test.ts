import { randomUUID } from 'node:crypto';
import calculateSlot from 'cluster-key-slot';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/lib/config.js';
import { uuidv7Time } from '../../src/lib/uuid7.js';
import { CLUSTER_SLOTS, Shards, shardLimiter, shareOf } from '../../src/queue/shards.js';

describe('queue shards', () => {
  it('keeps QUEUE_PREFIX itself with one shard, the default on one Redis', () => {
    const config = loadConfig({});
    expect(config.QUEUE_SHARDS).toBe(1);
    const shards = Shards.of(config);
    expect(shards.prefixes).toEqual(['{orchestrator}']);
    expect(shards.prefixOf(randomUUID())).toBe('{orchestrator}');
  });

  it('defaults to six shards on a cluster, and QUEUE_SHARDS overrides it', () => {
    expect(loadConfig({ REDIS_CLUSTER_NODES: 'a:7000' }).QUEUE_SHARDS).toBe(6);
    expect(loadConfig({ REDIS_CLUSTER_NODES: 'a:7000', QUEUE_SHARDS: '12' }).QUEUE_SHARDS).toBe(12);
    expect(() => loadConfig({ QUEUE_SHARDS: '0' })).toThrow(/QUEUE_SHARDS/);
  });

  it.each([2, 3, 6, 12, 16])("puts shard i of %i near the middle of the i-th equal slot range, whatever the prefix's tag", (count) => {
    for (const base of ['{orchestrator}', '{t_0a1b2c3d4e}', 'app:{jobs}:x']) {
      const { prefixes } = new Shards(base, count);
      expect(new Set(prefixes).size).toBe(count);
      for (const [index, prefix] of prefixes.entries()) {
        expect(prefix.startsWith(base.slice(0, base.indexOf('{') + 1))).toBe(true);
        const middle = ((index + 0.5) * CLUSTER_SLOTS) / count;
        expect(Math.abs(calculateSlot(prefix) - middle)).toBeLessThanOrEqual(9);
      }
    }
  });

  it('adds the shard number to a prefix without a hash tag (one Redis)', () => {
    expect(new Shards('orch', 3).prefixes).toEqual(['orch.0', 'orch.1', 'orch.2']);
  });

  it('gives a task the same shard every time, and spreads tasks evenly', () => {
    const shards = new Shards('{orchestrator}', 3);
    const counts = [0, 0, 0];
    for (let i = 0; i < 30_000; i += 1) {
      const id = randomUUID();
      expect(shards.indexOf(id)).toBe(shards.indexOf(id));
      counts[shards.indexOf(id)]! += 1;
    }
    for (const count of counts) expect(Math.abs(count - 10_000)).toBeLessThan(500);
  });

  it('makes new task ids round the shards for each task type, ids of their creation time', () => {
    const shards = new Shards('{orchestrator}', 3);
    const at = new Date('2026-11-22T12:00:00.000Z');
    const echo = Array.from({ length: 6 }, () => shards.newTaskId(at, 'echo'));
    const diamond = Array.from({ length: 3 }, () => shards.newTaskId(at, 'diamond'));
    expect(echo.map((id) => shards.indexOf(id))).toEqual([0, 1, 2, 0, 1, 2]);
    expect(diamond.map((id) => shards.indexOf(id))).toEqual([0, 1, 2]);
    for (const id of [...echo, ...diamond]) expect(uuidv7Time(id)).toEqual(at);
    expect(new Set(echo).size).toBe(6);
  });

  it('splits a budget over the shards so that together they keep it', () => {
    expect([0, 1, 2].map((shard) => shareOf(10, shard, 3))).toEqual([4, 3, 3]);
    expect([0, 1, 2].map((shard) => shareOf(1, shard, 3))).toEqual([1, 0, 0]);
    expect(shareOf(7, 0, 1)).toBe(7);
  });

  it("splits a tool's rate limit so that the shards together keep its rate", () => {
    expect([0, 1, 2].map((shard) => shardLimiter({ max: 10, duration_ms: 1_000 }, shard, 3))).toEqual([
      { max: 4, duration: 1_000 },
      { max: 3, duration: 1_000 },
      { max: 3, duration: 1_000 },
    ]);
    // Fewer jobs per duration than shards: each shard waits longer instead.
    expect(shardLimiter({ max: 2, duration_ms: 1_000 }, 0, 6)).toEqual({ max: 1, duration: 3_000 });
  });
});
