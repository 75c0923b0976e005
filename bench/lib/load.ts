import { type Dispatcher, Pool } from 'undici';
import { epochNow, sleep } from './util.js';

/**
 * The load generator.
 *
 * Open loop: request i is sent at start + i / rate whether or not earlier requests have
 * answered, so a slow server meets the same arrivals and its queueing shows in the latency.
 * autocannon (9.x) cannot do this: each of its connections sends its next request only when the
 * previous response arrived, and `overallRate` just caps requests per second and per connection
 * (a closed loop with a throttle); it "corrects" the latencies it reports afterwards instead of
 * keeping the schedule. Hence this small generator over undici's Pool, with enough connections
 * that a request never waits for a free one below saturation.
 */

/** One request of a run. Times are ms since the epoch. */
export interface Arrival {
  scheduledAt: number;
  sentAt: number;
  /** When the answer arrived (or the request failed). */
  doneAt: number;
  /** Id of what the request created (task id, job id). */
  id?: string;
  /** The server declined the work (admission control, rate limit): nothing was created. */
  refused?: { status: number; code?: string; retryAfterS?: number };
  error?: string;
}

/**
 * Thrown by a `Send` when the server said "not now" (503, 429) rather than failed: an overload
 * test counts these apart from errors, and how fast they come back is part of what it measures.
 */
export class Refused extends Error {
  constructor(
    readonly status: number,
    readonly code?: string,
    readonly retryAfterS?: number,
  ) {
    super(`HTTP ${status}${code ? ` ${code}` : ''}`);
  }
}

export interface LoadRun {
  startedAt: number;
  endedAt: number;
  arrivals: Arrival[];
  /** How late sends were against their schedule, worst case (ms): the generator's own limit. */
  maxLagMs: number;
}

/** Sends one request; resolves with the id of what it created. */
export type Send = () => Promise<string>;

async function record(send: Send, scheduledAt: number, into: Arrival[]): Promise<void> {
  const sentAt = epochNow();
  try {
    const id = await send();
    into.push({ scheduledAt, sentAt, doneAt: epochNow(), id });
  } catch (error) {
    const doneAt = epochNow();
    if (error instanceof Refused) {
      const { status, code, retryAfterS } = error;
      into.push({ scheduledAt, sentAt, doneAt, refused: { status, ...(code ? { code } : {}), ...(retryAfterS !== undefined ? { retryAfterS } : {}) } });
    } else {
      into.push({ scheduledAt, sentAt, doneAt, error: error instanceof Error ? error.message : String(error) });
    }
  }
}

/** Fixed arrival rate for `durationMs`; resolves once every request has answered or failed. */
export async function openLoop(rate: number, durationMs: number, send: Send): Promise<LoadRun> {
  const total = Math.max(1, Math.round((rate * durationMs) / 1000));
  const interval = 1000 / rate;
  const arrivals: Arrival[] = [];
  const pending: Promise<void>[] = [];
  const startedAt = epochNow() + 5;
  let maxLagMs = 0;
  let next = 0;
  while (next < total) {
    const now = epochNow();
    while (next < total && startedAt + next * interval <= now) {
      const scheduledAt = startedAt + next * interval;
      maxLagMs = Math.max(maxLagMs, now - scheduledAt);
      pending.push(record(send, scheduledAt, arrivals));
      next += 1;
    }
    if (next < total) await sleep(Math.max(1, Math.floor(startedAt + next * interval - epochNow())));
  }
  const endedAt = startedAt + total * interval;
  await Promise.all(pending);
  return { startedAt, endedAt, arrivals, maxLagMs };
}

export interface HttpAnswer {
  status: number;
  json: unknown;
  /** Retry-After in seconds, when the server sent one. */
  retryAfterS?: number;
  /** Size of the body as received, in bytes (MAPSCALE reports it). */
  bytes: number;
}

async function answer(response: Dispatcher.ResponseData): Promise<HttpAnswer> {
  const text = await response.body.text();
  let json: unknown;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = text;
  }
  const header = response.headers['retry-after'];
  const retryAfterS = typeof header === 'string' ? Number(header) : Number.NaN;
  return { status: response.statusCode, json, bytes: Buffer.byteLength(text), ...(Number.isFinite(retryAfterS) ? { retryAfterS } : {}) };
}

/**
 * POSTs JSON (and GETs) over keep-alive connections. Given several origins (API replicas), the
 * connections are split between them and requests go round robin, as a load balancer would.
 */
export class HttpClient {
  private readonly pools: Pool[];
  private next = 0;

  constructor(origins: string | string[], connections: number) {
    const list = typeof origins === 'string' ? [origins] : origins;
    const each = Math.max(1, Math.ceil(connections / list.length));
    this.pools = list.map(
      (origin) => new Pool(origin, { connections: each, pipelining: 1, keepAliveTimeout: 60_000, headersTimeout: 30_000, bodyTimeout: 30_000 }),
    );
  }

  private pool(): Pool {
    this.next = (this.next + 1) % this.pools.length;
    return this.pools[this.next]!;
  }

  async post(path: string, body: unknown): Promise<HttpAnswer> {
    return answer(await this.pool().request({ method: 'POST', path, headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }));
  }

  /** A GET; long polls (GET /result/:id?wait=10) may take as long as their wait. */
  async get(path: string): Promise<HttpAnswer> {
    return answer(await this.pool().request({ method: 'GET', path }));
  }

  async close(): Promise<void> {
    await Promise.all(this.pools.map((pool) => pool.close()));
  }
}
