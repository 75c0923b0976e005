import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type NodeProcess, runEntry } from '../helpers/child-process.js';
import { createHarness, type Harness } from '../helpers/harness.js';

/**
 * RATE_LIMIT_PER_MINUTE is one budget per key (per client address without keys) for the whole
 * deployment: two API processes on the same Redis and prefix spend it together. A budget kept
 * in each process would let twice as many requests through.
 */

const KEY_A = 'rate-limit-key-a-0123456789';
const KEY_B = 'rate-limit-key-b-0123456789';
const LIMIT = 6;

/** The in-process API of the harness, and a second API in a process of its own with the same settings. */
async function twoApis(env: Record<string, string>): Promise<{ h: Harness; other: NodeProcess; urls: [string, string] }> {
  const h = await createHarness({ worker: false, env });
  const other = runEntry('test/fixtures/api-entry.ts', h.env);
  await other.waitForOutput(/^listening /m);
  const otherUrl = /^listening (\S+)$/m.exec(other.output)![1]!;
  return { h, other, urls: [h.url, otherUrl] };
}

async function statusOf(url: string, key?: string): Promise<number> {
  const response = await fetch(`${url}/tools`, { headers: key ? { authorization: `Bearer ${key}` } : {} });
  await response.arrayBuffer();
  return response.status;
}

/** `count` requests, alternating between the two APIs, one after another. */
async function alternate(urls: [string, string], count: number, key?: string): Promise<number[]> {
  const statuses: number[] = [];
  for (let i = 0; i < count; i += 1) statuses.push(await statusOf(urls[i % 2]!, key));
  return statuses;
}

describe('the per-key request budget across two API processes', () => {
  let h: Harness;
  let other: NodeProcess;
  let urls: [string, string];
  beforeAll(async () => {
    ({ h, other, urls } = await twoApis({ API_KEYS: `${KEY_A},${KEY_B}`, RATE_LIMIT_PER_MINUTE: String(LIMIT) }));
  });
  afterAll(async () => {
    await other?.kill();
    await h?.close();
  });

  it('is spent by requests to either process, and each key has its own', async () => {
    expect(await alternate(urls, LIMIT + 2, KEY_A)).toEqual([...Array(LIMIT).fill(200), 429, 429]);
    // Refused by both processes now, not only by the one that counted the last request.
    expect(await statusOf(urls[0], KEY_A)).toBe(429);
    expect(await statusOf(urls[1], KEY_A)).toBe(429);
    expect(await alternate(urls, LIMIT + 1, KEY_B)).toEqual([...Array(LIMIT).fill(200), 429]);
  });
});

describe('the per-address request budget across two API processes (no keys)', () => {
  let h: Harness;
  let other: NodeProcess;
  let urls: [string, string];
  beforeAll(async () => {
    ({ h, other, urls } = await twoApis({ RATE_LIMIT_PER_MINUTE: String(LIMIT) }));
  });
  afterAll(async () => {
    await other?.kill();
    await h?.close();
  });

  it('is spent by requests to either process', async () => {
    expect(await alternate(urls, LIMIT + 2)).toEqual([...Array(LIMIT).fill(200), 429, 429]);
    // Health checks stay out of the budget on both.
    for (const url of urls) expect((await fetch(`${url}/health`)).status).toBe(200);
  });
});
