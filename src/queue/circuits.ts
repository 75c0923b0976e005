import type { RedisClient } from './redis.js';

/**
 * A circuit breaker per registered service, its state in Redis so that every worker shares it;
 * each transition is one Lua script (atomic under concurrent workers).
 *
 * Each caller (the API key that submitted the task) has a circuit of its own per service besides
 * the service's shared one, with the same settings: a key whose calls fail opens its own circuit,
 * which holds back its own calls only. The shared circuit, which holds back every call, opens
 * when failures come from at least `keys_to_open` distinct keys within `window_ms` (so one tenant
 * cannot open it for all, sending calls the service fails), or when the service's health check
 * fails (trip). Calls without a key (no authentication: one caller) count on the shared one only.
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
  /** Distinct keys whose calls failed within `window_ms` before the shared circuit may open (1: any one key). @defaultValue 3 */
  keys_to_open: number;
}

export const DEFAULT_CIRCUIT: Readonly<CircuitSettings> = Object.freeze({
  failure_threshold: 5,
  failure_ratio: 0.5,
  window_ms: 60_000,
  min_calls: 10,
  open_ms: 30_000,
  half_open_probes: 1,
  keys_to_open: 3,
});

export interface CircuitTransition {
  service: string;
  /** The key whose own circuit moved; absent for the shared one. */
  key?: string;
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

/** One key's own circuit of a service. */
export interface KeyCircuitView {
  key: string;
  state: CircuitState;
  since: number | null;
  open_until: number | null;
  failures_in_a_row: number;
  window: { calls: number; failures: number };
}

/** Keys' circuits shown per service: the most recently used. */
const KEYS_SHOWN = 100;

/** Whether a call may go now; when not, the time (ms since the epoch) to ask again. */
export type Admission = { ok: true; probe: boolean } | { ok: false; until: number };

const NOW = `local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)`;
const LOG = `local function log(logKey, from, to)
  redis.call('LPUSH', logKey, cjson.encode({from = from, to = to, at = now}))
  redis.call('LTRIM', logKey, 0, 19)
end`;

// Both scripts judge the shared circuit (KEYS[1], its log KEYS[2]) and, for a call with a key,
// that key's circuit (KEYS[3], KEYS[4]); KEYS[5] ranks the keys that have a circuit by their
// last call, KEYS[6] the keys that failed by their last failure.

// ARGV: open_ms, half_open_probes, probe_ttl_ms, probe_wait_ms.
// Returns {allowed (1/0), until or probe (1/0), shared transition ("" or "from>to"), key transition, now}.
const ACQUIRE = `${NOW}
${LOG}
-- Moves an open circuit whose time is up to half-open; gives up probes whose worker never reported.
local function ready(hash, logKey)
  local state = redis.call('HGET', hash, 'state') or 'closed'
  if state == 'closed' then return 'closed', '' end
  local moved = ''
  if state == 'open' then
    local untilAt = tonumber(redis.call('HGET', hash, 'open_until') or '0')
    if now < untilAt then return 'open', '' end
    redis.call('HSET', hash, 'state', 'half_open', 'since', now, 'probes', 0, 'successes', 0, 'probe_until', 0)
    log(logKey, 'open', 'half_open')
    moved = 'open>half_open'
  end
  local probes = tonumber(redis.call('HGET', hash, 'probes') or '0')
  if probes > 0 and now >= tonumber(redis.call('HGET', hash, 'probe_until') or '0') then
    redis.call('HSET', hash, 'probes', 0, 'successes', 0)
  end
  return 'half_open', moved
end
-- {1} closed, {1, 1} a probe may go, {0, until} not now.
local function judge(hash, state)
  if state == 'closed' then return 1, 0 end
  if state == 'open' then return 0, tonumber(redis.call('HGET', hash, 'open_until') or '0') end
  local probes = tonumber(redis.call('HGET', hash, 'probes') or '0')
  if probes < tonumber(ARGV[2]) then return 1, 1 end
  local probeUntil = tonumber(redis.call('HGET', hash, 'probe_until') or '0')
  return 0, math.min(probeUntil, now + tonumber(ARGV[4]))
end
local function takeProbe(hash)
  redis.call('HINCRBY', hash, 'probes', 1)
  redis.call('HSET', hash, 'probe_until', now + tonumber(ARGV[3]))
end
local sharedState, sharedMoved = ready(KEYS[1], KEYS[2])
local keyState, keyMoved = 'closed', ''
if #KEYS > 2 then keyState, keyMoved = ready(KEYS[3], KEYS[4]) end
local sharedOk, sharedProbe = judge(KEYS[1], sharedState)
local keyOk, keyProbe = 1, 0
if #KEYS > 2 then keyOk, keyProbe = judge(KEYS[3], keyState) end
if sharedOk == 0 or keyOk == 0 then
  local untilAt = 0
  if sharedOk == 0 then untilAt = sharedProbe end
  if keyOk == 0 and keyProbe > untilAt then untilAt = keyProbe end
  return {0, untilAt, sharedMoved, keyMoved, now}
end
-- A probe slot is taken only when the call may go on both circuits.
if sharedProbe == 1 then takeProbe(KEYS[1]) end
if keyProbe == 1 then takeProbe(KEYS[3]) end
local probe = 0
if sharedProbe == 1 or keyProbe == 1 then probe = 1 end
return {1, probe, sharedMoved, keyMoved, now}`;

// ARGV: failed (1/0), failure_threshold, failure_ratio, window_ms, min_calls, open_ms,
// half_open_probes, keys_to_open, key, key_ttl_ms. Returns {shared state, shared transition, key transition}.
const RECORD = `${NOW}
${LOG}
local failed = ARGV[1] == '1'
-- One call's end on one circuit; 'open' needs, when given, enough distinct failing keys as well.
local function record(hash, logKey, enoughKeys)
  local state = redis.call('HGET', hash, 'state') or 'closed'
  if state == 'open' then return state, '' end
  if state == 'half_open' then
    if failed then
      redis.call('HSET', hash, 'state', 'open', 'since', now, 'open_until', now + tonumber(ARGV[6]), 'probes', 0, 'successes', 0)
      log(logKey, 'half_open', 'open')
      return 'open', 'half_open>open'
    end
    local successes = redis.call('HINCRBY', hash, 'successes', 1)
    if successes >= tonumber(ARGV[7]) then
      redis.call('HSET', hash, 'state', 'closed', 'since', now, 'in_a_row', 0, 'calls', 0, 'failures', 0, 'window_start', now, 'probes', 0, 'successes', 0)
      log(logKey, 'half_open', 'closed')
      return 'closed', 'half_open>closed'
    end
    return state, ''
  end
  local windowStart = tonumber(redis.call('HGET', hash, 'window_start') or '0')
  if now - windowStart >= tonumber(ARGV[4]) then
    redis.call('HSET', hash, 'window_start', now, 'calls', 0, 'failures', 0)
  end
  local calls = redis.call('HINCRBY', hash, 'calls', 1)
  if not failed then
    redis.call('HSET', hash, 'in_a_row', 0)
    return 'closed', ''
  end
  local failures = redis.call('HINCRBY', hash, 'failures', 1)
  local inARow = redis.call('HINCRBY', hash, 'in_a_row', 1)
  local ratio = tonumber(ARGV[3])
  if (inARow >= tonumber(ARGV[2]) or (ratio > 0 and calls >= tonumber(ARGV[5]) and failures / calls >= ratio)) and enoughKeys() then
    redis.call('HSET', hash, 'state', 'open', 'since', now, 'open_until', now + tonumber(ARGV[6]), 'in_a_row', 0, 'calls', 0, 'failures', 0, 'window_start', now)
    log(logKey, 'closed', 'open')
    return 'open', 'closed>open'
  end
  return 'closed', ''
end
local always = function() return true end
if #KEYS == 2 then
  local state, moved = record(KEYS[1], KEYS[2], always)
  return {state, moved, ''}
end
local ttl = tonumber(ARGV[10])
local _, keyMoved = record(KEYS[3], KEYS[4], always)
redis.call('PEXPIRE', KEYS[3], ttl)
redis.call('PEXPIRE', KEYS[4], ttl)
redis.call('ZADD', KEYS[5], now, ARGV[9])
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now - ttl)
redis.call('PEXPIRE', KEYS[5], ttl)
redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now - tonumber(ARGV[4]))
if failed then
  redis.call('ZADD', KEYS[6], now, ARGV[9])
  redis.call('PEXPIRE', KEYS[6], tonumber(ARGV[4]))
end
local enoughKeys = function() return redis.call('ZCARD', KEYS[6]) >= tonumber(ARGV[8]) end
local state, moved = record(KEYS[1], KEYS[2], enoughKeys)
if moved == 'closed>open' then redis.call('DEL', KEYS[6]) end
return {state, moved, keyMoved}`;

// ARGV: open_ms. The service's health check failed: its shared circuit opens (or stays open).
// Returns the transition ("" or "from>to").
const TRIP = `${NOW}
${LOG}
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state == 'open' then return '' end
redis.call('HSET', KEYS[1], 'state', 'open', 'since', now, 'open_until', now + tonumber(ARGV[1]), 'in_a_row', 0, 'calls', 0, 'failures', 0, 'window_start', now, 'probes', 0, 'successes', 0)
log(KEYS[2], state, 'open')
return state .. '>open'`;

function parseTransition(service: string, moved: string, at: number, key?: string): CircuitTransition | undefined {
  if (!moved) return undefined;
  const [from, to] = moved.split('>') as [CircuitState, CircuitState];
  return { service, ...(key !== undefined ? { key } : {}), from, to, at };
}

/** A key's circuit is forgotten this long after its last call (it is closed by then, or its open time long over). */
function keyTtlMs(settings: CircuitSettings): number {
  return 2 * Math.max(settings.window_ms, settings.open_ms) + 600_000;
}

/** The circuits of every service, in Redis under `prefix`. */
export class Circuits {
  constructor(
    private readonly redis: RedisClient,
    private readonly prefix: string,
    /** Called for every transition this process made (metrics, logs). */
    private readonly onTransition: (transition: CircuitTransition) => void = () => undefined,
  ) {}

  private shared(service: string): [string, string] {
    return [`${this.prefix}:circuit:${service}`, `${this.prefix}:circuit:${service}:transitions`];
  }

  /** The shared circuit's keys, then the key's own and the two rankings. `key` '' or absent: the shared circuit only. */
  private keys(service: string, key: string | undefined): string[] {
    if (!key) return this.shared(service);
    const base = `${this.prefix}:circuit:${service}`;
    return [...this.shared(service), `${base}:key:${key}`, `${base}:key:${key}:transitions`, `${base}:keys`, `${base}:failing`];
  }

  private report(service: string, moved: string, at: number, key?: string): void {
    const transition = parseTransition(service, moved, at, key);
    if (transition) this.onTransition(transition);
  }

  /** Whether a call to `service` by `key` may start now (a probe, while a circuit is half-open). */
  async acquire(service: string, settings: CircuitSettings, probeTtlMs: number, key?: string): Promise<Admission> {
    const keys = this.keys(service, key);
    const [allowed, second, sharedMoved, keyMoved, now] = (await this.redis.eval(
      ACQUIRE,
      keys.length,
      ...keys,
      settings.open_ms,
      settings.half_open_probes,
      probeTtlMs,
      Math.min(settings.open_ms, 5_000),
    )) as [number, number, string, string, number];
    this.report(service, sharedMoved, now);
    if (key) this.report(service, keyMoved, now, key);
    return allowed === 1 ? { ok: true, probe: second === 1 } : { ok: false, until: second };
  }

  /** How a call by `key` ended; the shared circuit's state after it. */
  async record(service: string, settings: CircuitSettings, failed: boolean, key?: string): Promise<CircuitState> {
    const keys = this.keys(service, key);
    const [state, sharedMoved, keyMoved] = (await this.redis.eval(
      RECORD,
      keys.length,
      ...keys,
      failed ? 1 : 0,
      settings.failure_threshold,
      settings.failure_ratio,
      settings.window_ms,
      settings.min_calls,
      settings.open_ms,
      settings.half_open_probes,
      settings.keys_to_open,
      key ?? '',
      keyTtlMs(settings),
    )) as [CircuitState, string, string];
    const now = Date.now();
    this.report(service, sharedMoved, now);
    if (key) this.report(service, keyMoved, now, key);
    return state;
  }

  /** The service's health check failed: its shared circuit opens for `open_ms` (probes then close it once it answers). */
  async trip(service: string, settings: CircuitSettings): Promise<void> {
    const moved = (await this.redis.eval(TRIP, 2, ...this.shared(service), settings.open_ms)) as string;
    this.report(service, moved, Date.now());
  }

  async view(service: string): Promise<CircuitView> {
    const [stateKey, logKey] = this.shared(service);
    const [fields, log] = await Promise.all([this.redis.hgetall(stateKey), this.redis.lrange(logKey, 0, 19)]);
    return {
      ...circuitFields(fields),
      transitions: log.map((entry) => ({ service, ...(JSON.parse(entry) as { from: CircuitState; to: CircuitState; at: number }) })),
    };
  }

  /** The circuits of the keys that called `service` most recently (at most 100), newest first. */
  async keyViews(service: string): Promise<KeyCircuitView[]> {
    const base = `${this.prefix}:circuit:${service}`;
    const keys = await this.redis.zrevrange(`${base}:keys`, 0, KEYS_SHOWN - 1);
    const states = await Promise.all(keys.map((key) => this.redis.hgetall(`${base}:key:${key}`)));
    return keys.flatMap((key, index) => (Object.keys(states[index]!).length > 0 ? [{ key, ...circuitFields(states[index]!) }] : []));
  }

  /** Forgets a service's circuits, its keys' too (the service was deleted). */
  async forget(service: string): Promise<void> {
    const base = `${this.prefix}:circuit:${service}`;
    const keys = await this.redis.zrange(`${base}:keys`, 0, -1);
    await this.redis.del(...this.shared(service), `${base}:keys`, `${base}:failing`);
    for (const key of keys) await this.redis.del(`${base}:key:${key}`, `${base}:key:${key}:transitions`);
  }
}

function circuitFields(fields: Record<string, string>): Omit<CircuitView, 'transitions'> {
  const number = (value: string | undefined) => (value === undefined ? 0 : Number(value));
  const state = (fields.state as CircuitState | undefined) ?? 'closed';
  return {
    state,
    since: fields.since !== undefined ? Number(fields.since) : null,
    open_until: state === 'open' ? number(fields.open_until) : null,
    failures_in_a_row: number(fields.in_a_row),
    window: { calls: number(fields.calls), failures: number(fields.failures) },
  };
}
