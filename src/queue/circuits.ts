import type { RedisClient } from './redis.js';

/**
 * A circuit breaker per registered service, its state in Redis so that every worker shares it;
 * each transition is one Lua script (atomic under concurrent workers).
 *
 *   closed     calls go through; `failure_threshold` failures in a row, or a failure ratio of at
 *              least `failure_ratio` over `min_calls` calls or more within `window_ms`, open it.
 *   open       no call goes through until `open_ms` has passed; steps wait (reason circuit_open).
 *   half_open  `half_open_probes` calls go through as probes: all succeeding closes the circuit,
 *              one failing opens it again for `open_ms`. A probe whose worker died is given up
 *              after `probe_ttl_ms`, so the circuit cannot stay half-open for ever.
 *
 * A failure is a network error, a timeout, a 5xx, 408 or 429; a 4xx answer is a success (the
 * service answered). Results that arrive while the circuit is open (calls started before it
 * opened) change nothing.
 */

export const CIRCUIT_STATES = ['closed', 'open', 'half_open'] as const;
export type CircuitState = (typeof CIRCUIT_STATES)[number];

export interface CircuitSettings {
  /** Failures in a row that open the circuit. @defaultValue 5 */
  failure_threshold: number;
  /** A failure ratio (0-1] within `window_ms` that opens it, once `min_calls` were made; 0: off. @defaultValue 0.5 */
  failure_ratio: number;
  /** @defaultValue 60000 */
  window_ms: number;
  /** @defaultValue 10 */
  min_calls: number;
  /** How long it stays open before probes are let through. @defaultValue 30000 */
  open_ms: number;
  /** Probe calls let through while half-open. @defaultValue 1 */
  half_open_probes: number;
}

export const DEFAULT_CIRCUIT: Readonly<CircuitSettings> = Object.freeze({
  failure_threshold: 5,
  failure_ratio: 0.5,
  window_ms: 60_000,
  min_calls: 10,
  open_ms: 30_000,
  half_open_probes: 1,
});

export interface CircuitTransition {
  service: string;
  from: CircuitState;
  to: CircuitState;
  at: number;
}

export interface CircuitView {
  state: CircuitState;
  /** Since when (ms since the epoch); null when it never changed. */
  since: number | null;
  /** While open: when probes are let through. */
  open_until: number | null;
  failures_in_a_row: number;
  window: { calls: number; failures: number };
  /** The latest transitions, newest first (at most 20). */
  transitions: CircuitTransition[];
}

/** Whether a call may go now; when not, the time (ms since the epoch) to ask again. */
export type Admission = { ok: true; probe: boolean } | { ok: false; until: number };

const NOW = `local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)`;
const LOG = `local function log(from, to)
  redis.call('LPUSH', KEYS[2], cjson.encode({from = from, to = to, at = now}))
  redis.call('LTRIM', KEYS[2], 0, 19)
end`;

// KEYS: state hash, transitions list. ARGV: open_ms, half_open_probes, probe_ttl_ms, probe_wait_ms.
// Returns {allowed (1/0), until or probe (1/0), transition ("" or "from>to"), now}.
const ACQUIRE = `${NOW}
${LOG}
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state == 'closed' then return {1, 0, '', now} end
local moved = ''
if state == 'open' then
  local untilAt = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
  if now < untilAt then return {0, untilAt, '', now} end
  redis.call('HSET', KEYS[1], 'state', 'half_open', 'since', now, 'probes', 0, 'successes', 0, 'probe_until', 0)
  log('open', 'half_open')
  moved = 'open>half_open'
end
local probes = tonumber(redis.call('HGET', KEYS[1], 'probes') or '0')
local probeUntil = tonumber(redis.call('HGET', KEYS[1], 'probe_until') or '0')
if probes > 0 and now >= probeUntil then
  probes = 0
  redis.call('HSET', KEYS[1], 'probes', 0, 'successes', 0)
end
if probes < tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'probes', probes + 1, 'probe_until', now + tonumber(ARGV[3]))
  return {1, 1, moved, now}
end
return {0, math.min(probeUntil, now + tonumber(ARGV[4])), moved, now}`;

// KEYS: state hash, transitions list. ARGV: failed (1/0), failure_threshold, failure_ratio,
// window_ms, min_calls, open_ms, half_open_probes. Returns {state, transition}.
const RECORD = `${NOW}
${LOG}
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
local failed = ARGV[1] == '1'
if state == 'open' then return {state, ''} end
if state == 'half_open' then
  if failed then
    redis.call('HSET', KEYS[1], 'state', 'open', 'since', now, 'open_until', now + tonumber(ARGV[6]), 'probes', 0, 'successes', 0)
    log('half_open', 'open')
    return {'open', 'half_open>open'}
  end
  local successes = redis.call('HINCRBY', KEYS[1], 'successes', 1)
  if successes >= tonumber(ARGV[7]) then
    redis.call('HSET', KEYS[1], 'state', 'closed', 'since', now, 'in_a_row', 0, 'calls', 0, 'failures', 0, 'window_start', now, 'probes', 0, 'successes', 0)
    log('half_open', 'closed')
    return {'closed', 'half_open>closed'}
  end
  return {state, ''}
end
local windowStart = tonumber(redis.call('HGET', KEYS[1], 'window_start') or '0')
if now - windowStart >= tonumber(ARGV[4]) then
  redis.call('HSET', KEYS[1], 'window_start', now, 'calls', 0, 'failures', 0)
end
local calls = redis.call('HINCRBY', KEYS[1], 'calls', 1)
if not failed then
  redis.call('HSET', KEYS[1], 'in_a_row', 0)
  return {'closed', ''}
end
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local inARow = redis.call('HINCRBY', KEYS[1], 'in_a_row', 1)
local ratio = tonumber(ARGV[3])
if inARow >= tonumber(ARGV[2]) or (ratio > 0 and calls >= tonumber(ARGV[5]) and failures / calls >= ratio) then
  redis.call('HSET', KEYS[1], 'state', 'open', 'since', now, 'open_until', now + tonumber(ARGV[6]), 'in_a_row', 0, 'calls', 0, 'failures', 0, 'window_start', now)
  log('closed', 'open')
  return {'open', 'closed>open'}
end
return {'closed', ''}`;

function parseTransition(service: string, moved: string, at: number): CircuitTransition | undefined {
  if (!moved) return undefined;
  const [from, to] = moved.split('>') as [CircuitState, CircuitState];
  return { service, from, to, at };
}

/** The circuits of every service, in Redis under `prefix`. */
export class Circuits {
  constructor(
    private readonly redis: RedisClient,
    private readonly prefix: string,
    /** Called for every transition this process made (metrics, logs). */
    private readonly onTransition: (transition: CircuitTransition) => void = () => undefined,
  ) {}

  private keys(service: string): [string, string] {
    return [`${this.prefix}:circuit:${service}`, `${this.prefix}:circuit:${service}:transitions`];
  }

  /** Whether a call to `service` may start now (a probe, while half-open). */
  async acquire(service: string, settings: CircuitSettings, probeTtlMs: number): Promise<Admission> {
    const [allowed, second, moved, now] = (await this.redis.eval(
      ACQUIRE,
      2,
      ...this.keys(service),
      settings.open_ms,
      settings.half_open_probes,
      probeTtlMs,
      Math.min(settings.open_ms, 5_000),
    )) as [number, number, string, number];
    const transition = parseTransition(service, moved, now);
    if (transition) this.onTransition(transition);
    return allowed === 1 ? { ok: true, probe: second === 1 } : { ok: false, until: second };
  }

  /** How a call ended. */
  async record(service: string, settings: CircuitSettings, failed: boolean): Promise<CircuitState> {
    const [state, moved] = (await this.redis.eval(
      RECORD,
      2,
      ...this.keys(service),
      failed ? 1 : 0,
      settings.failure_threshold,
      settings.failure_ratio,
      settings.window_ms,
      settings.min_calls,
      settings.open_ms,
      settings.half_open_probes,
    )) as [CircuitState, string];
    const transition = parseTransition(service, moved, Date.now());
    if (transition) this.onTransition(transition);
    return state;
  }

  async view(service: string): Promise<CircuitView> {
    const [stateKey, logKey] = this.keys(service);
    const [fields, log] = await Promise.all([this.redis.hgetall(stateKey), this.redis.lrange(logKey, 0, 19)]);
    const number = (value: string | undefined) => (value === undefined ? 0 : Number(value));
    const state = (fields.state as CircuitState | undefined) ?? 'closed';
    return {
      state,
      since: fields.since !== undefined ? Number(fields.since) : null,
      open_until: state === 'open' ? number(fields.open_until) : null,
      failures_in_a_row: number(fields.in_a_row),
      window: { calls: number(fields.calls), failures: number(fields.failures) },
      transitions: log.map((entry) => ({ service, ...(JSON.parse(entry) as { from: CircuitState; to: CircuitState; at: number }) })),
    };
  }

  /** Forgets a service's circuit (the service was deleted). */
  async forget(service: string): Promise<void> {
    await this.redis.del(...this.keys(service));
  }
}
