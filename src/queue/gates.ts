import { createHash } from 'node:crypto';
import type { KeyLimit } from '../engine/types.js';
import type { RedisClient } from './redis.js';

/**
 * Per-key concurrency and rate limits ("gates"), held in Redis so that they hold across every
 * worker process and queue shard. A unit of work (a run of a workflow, a tool step, a map item)
 * enters all of its gates at once or none: with room in each it takes a lease on every
 * concurrency gate and a start in every rate gate's window; without, it joins the line of the
 * first gate that has no room and no job is made for it (it holds no worker and no attempt).
 * Releasing a unit's leases lets the heads of those gates' lines in, in the order they came; a
 * rate gate's line is let in by a timer when its window moves on.
 *
 * Every key expires (a rate window after twice its length, the rest after LEASE_TTL_MS of
 * disuse), and leases after LEASE_TTL_MS at the latest; long before that, the reconciler releases
 * the leases of steps and tasks that PostgreSQL says have ended (a process that died between
 * its commit and its release). All keys share one hash tag, so one script sees them all on a
 * Redis Cluster.
 */

/** One gate a unit passes: a concurrency limit (`c`) or a rate limit (`r`) over `windowMs`. */
export interface Gate {
  /** The gate's id: kind and a hash of its key (src/engine/limits.ts). */
  id: string;
  kind: 'c' | 'r';
  limit: number;
  windowMs?: number;
}

/** A unit entering its gates; `after`: only if that unit (earlier in the same call) was let in. */
export interface GateEntry {
  taskId: string;
  unit: string;
  limits: readonly KeyLimit[];
  after?: string;
}

/** A gate's id: its kind and a hash of its key (any text a client chose, of any length). */
export function gateOf(limit: KeyLimit): Gate {
  const id = `${limit.kind}${createHash('sha256').update(limit.key).digest('hex').slice(0, 24)}`;
  return { id, kind: limit.kind, limit: limit.limit, ...(limit.windowMs ? { windowMs: limit.windowMs } : {}) };
}

/**
 * Units: a run (`r|task|run|`), a tool step (`s|task|run|step|`) or a map item
 * (`s|task|run|step|item`), so that a step's prefix names its items too.
 */
export function runUnit(taskId: string, run: number): string {
  return `r|${taskId}|${run}|`;
}

export function stepUnit(taskId: string, run: number, stepId: string, item?: number): string {
  return `s|${taskId}|${run}|${stepId}|${item ?? ''}`;
}

export function parseUnit(unit: string): { taskId: string; run: number; stepId?: string; item?: number } {
  const [kind, taskId, run, stepId, item] = unit.split('|');
  return {
    taskId: taskId!,
    run: Number(run),
    ...(kind === 's' ? { stepId: stepId! } : {}),
    ...(kind === 's' && item ? { item: Number(item) } : {}),
  };
}

/** A unit let in, or held in a line: at `gate`, until a release (concurrency) or `wakeAt` (rate). */
export type Entered = { unit: string; admitted: true } | { unit: string; admitted: false; gate: string; kind: 'c' | 'r'; wakeAt?: number };

/** What a release or a wake-up let in, and the rate gates whose lines wait for a later time. */
export interface Released {
  admitted: string[];
  wakes: { gate: string; at: number }[];
}

/** The longest a lease lives if nothing releases it (a day and an hour: longer than any step's timeout). */
export const LEASE_TTL_MS = 25 * 3_600_000;
/** Units let in per gate per call: bounds the script's work. */
const DRAIN_MAX = 100;

const SCRIPT = `
local base = KEYS[1]
local op = ARGV[1]
local now = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local payload = cjson.decode(ARGV[4])
local drainMax = tonumber(ARGV[5])

local function key(kind, id) return base .. ':' .. kind .. ':' .. id end

local function room(g, unit)
  local q = key('q', g.id)
  if g.kind == 'c' then
    local l = key('l', g.id)
    if redis.call('ZSCORE', l, unit) then return true end
    redis.call('ZREMRANGEBYSCORE', l, '-inf', now)
    if redis.call('ZCARD', l) >= g.limit then return false end
  else
    local s = key('s', g.id)
    if redis.call('ZSCORE', s, unit) then return true end
    redis.call('ZREMRANGEBYSCORE', s, '-inf', now - g.windowMs)
    if redis.call('ZCARD', s) >= g.limit then return false end
  end
  local head = redis.call('LINDEX', q, 0)
  return (not head) or head == unit
end

local function wakeAt(g)
  if g.kind ~= 'r' then return nil end
  local oldest = redis.call('ZRANGE', key('s', g.id), 0, 0, 'WITHSCORES')
  if oldest[2] then return tonumber(oldest[2]) + g.windowMs end
  return now
end

-- Lets a unit in through all its gates, or puts it in the line of the first without room.
local function enter(unit, gates, task)
  local u = key('u', unit)
  redis.call('HSET', u, 'spec', cjson.encode(gates), 'task', task)
  redis.call('PEXPIRE', u, ttl)
  redis.call('SADD', key('t', task), unit)
  redis.call('PEXPIRE', key('t', task), ttl)
  redis.call('SADD', base .. ':tasks', task)
  redis.call('PEXPIRE', base .. ':tasks', ttl)
  for _, g in ipairs(gates) do
    if not room(g, unit) then
      local line = redis.call('HGET', u, 'line')
      if line ~= g.id then
        if line and line ~= '' then redis.call('LREM', key('q', line), 0, unit) end
        redis.call('RPUSH', key('q', g.id), unit)
        redis.call('PEXPIRE', key('q', g.id), ttl)
        redis.call('HSET', u, 'line', g.id)
      end
      return { unit = unit, admitted = false, gate = g.id, kind = g.kind, wakeAt = wakeAt(g) }
    end
  end
  for _, g in ipairs(gates) do
    if g.kind == 'c' then
      redis.call('ZADD', key('l', g.id), now + ttl, unit)
      redis.call('PEXPIRE', key('l', g.id), ttl)
    else
      redis.call('ZADD', key('s', g.id), now, unit)
      redis.call('PEXPIRE', key('s', g.id), g.windowMs * 2)
    end
    local q = key('q', g.id)
    if redis.call('LINDEX', q, 0) == unit then redis.call('LPOP', q) end
  end
  redis.call('HSET', u, 'line', '')
  return { unit = unit, admitted = true }
end

-- Lets in the heads of a gate's line while they fit.
local function drain(gate, admitted, wakes)
  local q = key('q', gate)
  for _ = 1, drainMax do
    local head = redis.call('LINDEX', q, 0)
    if not head then return end
    local u = key('u', head)
    local spec = redis.call('HGET', u, 'spec')
    if not spec then
      redis.call('LPOP', q)
    else
      local result = enter(head, cjson.decode(spec), redis.call('HGET', u, 'task'))
      if result.admitted then
        table.insert(admitted, head)
      elseif result.gate == gate then
        if result.wakeAt then table.insert(wakes, { gate = gate, at = result.wakeAt }) end
        return
      end
    end
  end
end

-- Gives back a unit's leases (its rate starts stay until their window moves on) and its place in a line.
local function leave(unit, freed)
  local u = key('u', unit)
  local spec = redis.call('HGET', u, 'spec')
  if spec then
    for _, g in ipairs(cjson.decode(spec)) do
      if g.kind == 'c' and redis.call('ZREM', key('l', g.id), unit) == 1 then freed[g.id] = true end
    end
    local line = redis.call('HGET', u, 'line')
    if line and line ~= '' then redis.call('LREM', key('q', line), 0, unit) end
    local task = redis.call('HGET', u, 'task')
    if task then redis.call('SREM', key('t', task), unit) end
  end
  redis.call('DEL', u)
end

if op == 'enter' then
  local results, held = {}, {}
  for _, entry in ipairs(payload.entries) do
    local before = entry.after and held[entry.after]
    local result
    if before then
      result = { unit = entry.unit, admitted = false, gate = before.gate, kind = before.kind }
    else
      result = enter(entry.unit, entry.gates, entry.task)
    end
    if not result.admitted then held[entry.unit] = result end
    table.insert(results, result)
  end
  return cjson.encode(results)
elseif op == 'release' then
  local freed, admitted, wakes = {}, {}, {}
  for _, task in ipairs(payload.tasks) do
    local t = key('t', task.id)
    for _, unit in ipairs(redis.call('SMEMBERS', t)) do
      for _, prefix in ipairs(task.prefixes) do
        if string.sub(unit, 1, #prefix) == prefix then
          leave(unit, freed)
          break
        end
      end
    end
    if redis.call('SCARD', t) == 0 then
      redis.call('DEL', t)
      redis.call('SREM', base .. ':tasks', task.id)
    end
  end
  for gate in pairs(freed) do drain(gate, admitted, wakes) end
  return cjson.encode({ admitted = admitted, wakes = wakes })
elseif op == 'wake' then
  local admitted, wakes = {}, {}
  drain(payload.gate, admitted, wakes)
  return cjson.encode({ admitted = admitted, wakes = wakes })
elseif op == 'where' then
  local where = {}
  for _, unit in ipairs(payload.units) do
    local line = redis.call('HGET', key('u', unit), 'line')
    if not line then table.insert(where, 'none')
    elseif line == '' then table.insert(where, 'in')
    else table.insert(where, 'line') end
  end
  return cjson.encode(where)
elseif op == 'held' then
  return cjson.encode(redis.call('SMEMBERS', key('t', payload.task)))
end
return redis.error_reply('unknown gates op ' .. op)
`;

export class Gates {
  private readonly base: string;

  constructor(
    private readonly redis: RedisClient,
    prefix: string,
  ) {
    this.base = `${prefix}:{gates}`;
    if (!('gates' in this.redis)) this.redis.defineCommand('gates', { numberOfKeys: 1, lua: SCRIPT });
  }

  private async call<T>(op: string, payload: unknown): Promise<T> {
    // cjson encodes an empty Lua table as {}: an empty list comes back as an object.
    const reply = await (this.redis as unknown as GatesCommand).gates(this.base, op, Date.now(), LEASE_TTL_MS, JSON.stringify(payload), DRAIN_MAX);
    return JSON.parse(reply) as T;
  }

  /** Units enter their gates, in order (one round trip). */
  async enter(entries: readonly GateEntry[]): Promise<Entered[]> {
    if (entries.length === 0) return [];
    const payload = entries.map((entry) => ({
      task: entry.taskId,
      unit: entry.unit,
      gates: entry.limits.map(gateOf),
      ...(entry.after ? { after: entry.after } : {}),
    }));
    return list(await this.call<Entered[] | object>('enter', { entries: payload }));
  }

  /**
   * Releases the units of each task whose name starts with one of its prefixes (a unit, a step's
   * units, or '' for all of the task's), and lets in what now fits.
   */
  async release(tasks: readonly { id: string; prefixes: string[] }[]): Promise<Released> {
    if (tasks.length === 0) return { admitted: [], wakes: [] };
    return released(await this.call<Released>('release', { tasks }));
  }

  /** A rate gate's window moved on: lets in what fits now. */
  async wake(gate: string): Promise<Released> {
    return released(await this.call<Released>('wake', { gate }));
  }

  /** Where each unit is: let in (`in`), in a line (`line`), or unknown to Redis (`none`: released, or Redis lost it). */
  async where(units: readonly string[]): Promise<('in' | 'line' | 'none')[]> {
    if (units.length === 0) return [];
    return list(await this.call<('in' | 'line' | 'none')[] | object>('where', { units }));
  }

  /** Tasks that hold a lease or a place in a line (the reconciler compares them with PostgreSQL). */
  async tasks(): Promise<string[]> {
    return this.redis.smembers(`${this.base}:tasks`);
  }

  /** A task's units that Redis holds. */
  async units(taskId: string): Promise<string[]> {
    return list(await this.call<string[] | object>('held', { task: taskId }));
  }
}

interface GatesCommand {
  gates(base: string, op: string, now: number, ttl: number, payload: string, drainMax: number): Promise<string>;
}

function list<T>(value: T[] | object): T[] {
  return Array.isArray(value) ? value : [];
}

function released(value: Released): Released {
  return { admitted: list(value.admitted), wakes: list(value.wakes) };
}
