import type { Redis } from 'ioredis';

/** Commands a Redis node has run since it started (the sum of INFO commandstats' calls). */
export async function commandsRun(node: Redis): Promise<number> {
  const info = await node.info('commandstats');
  let calls = 0;
  for (const match of info.matchAll(/^cmdstat_[^:]+:calls=(\d+)/gm)) calls += Number(match[1]);
  return calls;
}

/** Labelled counts as "label: count (share%)", for a test's report line. */
export function describeShares(counts: Map<string, number>): string {
  const total = [...counts.values()].reduce((sum, count) => sum + count, 0);
  return [...counts].map(([label, count]) => `${label}: ${count} (${((100 * count) / total).toFixed(1)}%)`).join(', ');
}
