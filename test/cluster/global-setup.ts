import type { TestProject } from 'vitest/node';
import { startRedisCluster } from './redis-cluster.js';

/**
 * Starts the cluster project's private Redis Cluster of three masters (no replicas) and
 * provides its node list as `redisClusterNodes`. Teardown stops the nodes and removes their files.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const cluster = await startRedisCluster({ masters: 3 });
  project.provide('redisClusterNodes', cluster.seeds);
  return cluster.stop;
}
