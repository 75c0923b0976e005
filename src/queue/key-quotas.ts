import { randomBytes } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { Batcher, ItemFailure } from '../lib/batcher.js';
import type { Logger } from '../lib/logger.js';
import { luaScript, type RedisClient, runScript } from './redis.js';
import type { Shards } from './shards.js';

export interface KeyQuotaSettings {
  /** Unfinished tasks one client may have. 0: no limit. */
  maxTasks: number;
  /** Bytes of params of one client's unfinished tasks. 0: no limit. */
  maxBytes: number;
}

/** Which limit a reservation hit, with the figures: the setting's name, its value and what the client holds. */
export interface QuotaRefusal {
  limit: 'QUOTA_MAX_BACKLOG_PER_KEY' | 'QUOTA_MAX_BYTES_PER_KEY';
  max: number;
  held: number;
}

/** A task to count against its client, for one of its runs. */
interface Reservation {
  client: string;
  taskId: string;
  bytes: number;
  delayMs: number;
  run: number;
  claimant: string;
}

/**
 * A task a release never reached (a process killed between its end and the release) stops
 * counting this long after it could have started: a quota that leaks fails open, not shut.
 */
const LEASE_MS = 3_600_000;

/**
 * A client is near its limit in a shard once the last reply for it there showed this share of
 * either limit held (or refused it): its next reservations are answered before its tasks are
 * stored, so a client at its quota costs Redis alone, not an insert and its removal.
 */
const NEAR = 0.9;

/** Clients whose last counts a process remembers (per shard); one forgotten is taken as far from its limits. */
const REMEMBERED = 10_000;

/** This process's part of each claimant's mark: marks of two processes never meet. */
const PROCESS_MARK = randomBytes(6).toString('hex');
let claimants = 0;

/** A mark for one reservation (no spaces: the claims hash keeps them separated by spaces). */
export function newClaimant(): string {
  claimants += 1;
  return `${PROCESS_MARK}.${claimants.toString(36)}`;
}

/** A release that Redis refused is tried again this often, this many times (half a minute), before it is left to lapse. */
const RELEASE_RETRY_MS = 1_000;
const RELEASE_ATTEMPTS = 30;

// KEYS: the client's tasks (zset: id -> lease end), the task -> client hash, the task -> bytes
// hash, the client -> count hash, the client -> bytes hash, the task -> run hash (the latest run
// that reserved it), the task -> claims hash (the claimants of that run not yet undone, their
// marks separated by spaces: two retries of one task at once both reserve it). Every key shares
// the prefix's hash tag.
const DROP = `
local function drop(id)
  local client = redis.call('HGET', KEYS[2], id)
  if not client then return end
  local bytes = tonumber(redis.call('HGET', KEYS[3], id) or '0')
  redis.call('ZREM', ARGV[1] .. client, id)
  redis.call('HDEL', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id)
  redis.call('HDEL', KEYS[6], id)
  redis.call('HDEL', KEYS[7], id)
  if redis.call('HINCRBY', KEYS[4], client, -1) <= 0 then redis.call('HDEL', KEYS[4], client) end
  if redis.call('HINCRBY', KEYS[5], client, -bytes) <= 0 then redis.call('HDEL', KEYS[5], client) end
end
`;

// Reservations in the order asked, each as one used to be made alone. KEYS[1] unused (the clients'
// key prefix), KEYS[2..7] as DROP's, then each reservation's client's tasks; ARGV: the clients' key
// prefix, now, max tasks, max bytes, then client, task id, bytes, lease end, run, claimant per
// reservation. A claimant's mark is added once, however often its reservation runs (a command
// resent after a reconnect).
// Answers {refused, tasks, bytes} per reservation: 0 counted, 1 over max tasks, 2 over max bytes;
// then what the client holds in the shard, with this task when it was counted.
const RESERVE = luaScript(`${DROP}
local function claim(id, claimant)
  local claims = redis.call('HGET', KEYS[7], id)
  if not claims or claims == '' then
    redis.call('HSET', KEYS[7], id, claimant)
  elseif not string.find(' ' .. claims .. ' ', ' ' .. claimant .. ' ', 1, true) then
    redis.call('HSET', KEYS[7], id, claims .. ' ' .. claimant)
  end
end

local out = {}
local n = #KEYS - 7
for i = 1, n do
  local tasksKey = KEYS[7 + i]
  local at = 4 + (i - 1) * 6
  local client, id, size, run, claimant = ARGV[at + 1], ARGV[at + 2], tonumber(ARGV[at + 3]), tonumber(ARGV[at + 5]), ARGV[at + 6]
  for _, old in ipairs(redis.call('ZRANGEBYSCORE', tasksKey, '-inf', ARGV[2])) do drop(old) end
  local tasks = tonumber(redis.call('HGET', KEYS[4], client) or '0')
  local bytes = tonumber(redis.call('HGET', KEYS[5], client) or '0')
  local refused = 0
  local holder = redis.call('HGET', KEYS[2], id)
  if holder then
    -- Counted already (a retry of a task whose end's release is still on its way, or another
    -- retry of the same run): once is enough, but the count is the newest run's, so that the old
    -- run's release leaves it, and each of that run's claimants is remembered.
    local counted = tonumber(redis.call('HGET', KEYS[6], id) or '0')
    if run > counted then
      redis.call('HSET', KEYS[6], id, run)
      redis.call('HSET', KEYS[7], id, claimant)
      redis.call('ZADD', ARGV[1] .. holder, ARGV[at + 4], id)
    elseif run == counted then
      claim(id, claimant)
    end
  elseif tonumber(ARGV[3]) > 0 and tasks + 1 > tonumber(ARGV[3]) then
    refused = 1
  elseif tonumber(ARGV[4]) > 0 and bytes + size > tonumber(ARGV[4]) then
    refused = 2
  else
    redis.call('ZADD', tasksKey, ARGV[at + 4], id)
    redis.call('HSET', KEYS[2], id, client)
    redis.call('HSET', KEYS[3], id, size)
    redis.call('HSET', KEYS[6], id, run)
    redis.call('HSET', KEYS[7], id, claimant)
    tasks = redis.call('HINCRBY', KEYS[4], client, 1)
    bytes = redis.call('HINCRBY', KEYS[5], client, size)
  end
  out[#out + 1] = refused
  out[#out + 1] = tasks
  out[#out + 1] = bytes
end
return out
`);

// ARGV: the clients' key prefix, then a task id, a run and a claimant per release: '' for a run's
// end, else that claimant's undo (its run was not made). A task that a later run reserved again
// stays counted: the release is an earlier run's, late. An undo takes back its own claimant's mark
// alone (none, if its reservation never ran), and drops the task with the last mark: another
// retry of that run may still be committing.
const RELEASE = luaScript(`${DROP}
for i = 2, #ARGV, 3 do
  local id, run, claimant = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  local counted = tonumber(redis.call('HGET', KEYS[6], id) or '0')
  if claimant == '' then
    if counted <= run then drop(id) end
  elseif counted == run then
    local claims = ' ' .. (redis.call('HGET', KEYS[7], id) or '') .. ' '
    local at = string.find(claims, ' ' .. claimant .. ' ', 1, true)
    if at then
      local left = string.sub(claims, 1, at) .. string.sub(claims, at + #claimant + 2)
      left = string.sub(left, 2, -2)
      if left == '' then drop(id) else redis.call('HSET', KEYS[7], id, left) end
    end
  end
end
return 0
`);

/**
 * Quotas per client (API key, or address without keys) on its unfinished tasks and on the bytes
 * of their params, which their jobs hold in Redis; counted in Redis across every API process.
 * A task is counted from its submission until it ends (the worker or the API that ends it
 * releases it), so what one client holds in Redis is bounded whatever its tasks' delays.
 *
 * A task counts in its own queue shard, against that shard's share of each limit: with a Redis
 * Cluster the counts spread over the masters with the tasks (new ids take the shards in turn), and
 * a master that fails over refuses only its own shards' submissions, as every other write does.
 *
 * Reservations are group-committed: those a busy process asks for while a call is on its way go
 * out together in the next one, one script call per shard, each counted in the order asked, as
 * if alone. An idle process sends each at once.
 */
export class KeyQuotas {
  /** Ends to send: task id -> the latest run that ended. */
  private readonly ended = new Map<string, number>();
  /** Undos to send, each with its claimant's mark. */
  private undone: [taskId: string, run: number, claimant: string][] = [];
  private flushing: Promise<void> | undefined;
  private readonly reservations = new Batcher<Reservation, QuotaRefusal | undefined>((batch) => this.reserveAll(batch), { maxSize: 500 });
  /** Per shard and client, whether the last reply showed it near a limit (NEAR). */
  private readonly near = new LRUCache<string, boolean>({ max: REMEMBERED });

  constructor(
    private readonly redis: RedisClient,
    /** The queue shards: each one's prefix keeps its quota keys in its cluster slot. */
    private readonly shards: Shards,
    private readonly settings: KeyQuotaSettings,
    private readonly logger: Logger,
  ) {}

  get enabled(): boolean {
    return this.settings.maxTasks > 0 || this.settings.maxBytes > 0;
  }

  private keys(prefix: string, client: string): string[] {
    const base = `${prefix}:quota`;
    return [`${base}:tasks:${client}`, `${base}:client-of`, `${base}:bytes-of`, `${base}:count`, `${base}:bytes`, `${base}:run-of`, `${base}:claims-of`];
  }

  /** A limit's share in one shard (0 stays 0: no limit). */
  private share(limit: number): number {
    return limit > 0 ? Math.max(1, Math.ceil(limit / this.shards.count)) : 0;
  }

  /**
   * Whether the client was near a limit in the task's shard when a reservation there last
   * answered in this process (unknown: not near). A caller may store a task while the
   * reservation of a client that is not near is on its way, and remove the task if it is refused.
   */
  isNear(client: string, taskId: string): boolean {
    return this.near.get(`${this.shards.prefixOf(taskId)} ${client}`) === true;
  }

  /**
   * Counts a task's run against its client (a new task's is its first; a retry's, the run it is
   * to make) for `claimant` (newClaimant(): what undo takes back); the limit it would pass
   * instead, if any. Redis errors are thrown.
   */
  async reserve(client: string, taskId: string, bytes: number, delayMs: number, run: number, claimant: string): Promise<QuotaRefusal | undefined> {
    if (!this.enabled) return undefined;
    return this.reservations.add({ client, taskId, bytes, delayMs, run, claimant });
  }

  /**
   * One script call per shard for the reservations asked for together. A shard that does not
   * answer fails its own reservations only (a master failing over refuses its shards' submissions).
   */
  private async reserveAll(batch: readonly Reservation[]): Promise<(QuotaRefusal | undefined | ItemFailure)[]> {
    const now = Date.now();
    const maxTasks = this.share(this.settings.maxTasks);
    const maxBytes = this.share(this.settings.maxBytes);
    const byShard = new Map<string, number[]>();
    batch.forEach((reservation, index) => {
      const prefix = this.shards.prefixOf(reservation.taskId);
      byShard.set(prefix, [...(byShard.get(prefix) ?? []), index]);
    });
    const answers: (QuotaRefusal | undefined | ItemFailure)[] = new Array(batch.length);
    await Promise.all(
      [...byShard].map(async ([prefix, indexes]) => {
        const shared = this.keys(prefix, '').slice(1);
        const reservations = indexes.map((index) => batch[index]!);
        let replies: number[];
        try {
          replies = (await runScript(this.redis, RESERVE, 7 + reservations.length, [
            `${prefix}:quota:tasks:`,
            ...shared,
            ...reservations.map((reservation) => this.keys(prefix, reservation.client)[0]!),
            `${prefix}:quota:tasks:`,
            now,
            maxTasks,
            maxBytes,
            ...reservations.flatMap((reservation) => [
              reservation.client,
              reservation.taskId,
              reservation.bytes,
              now + reservation.delayMs + LEASE_MS,
              reservation.run,
              reservation.claimant,
            ]),
          ])) as number[];
        } catch (error) {
          for (const index of indexes) answers[index] = new ItemFailure(error);
          return;
        }
        indexes.forEach((index, position) => {
          const refused = Number(replies[position * 3]);
          const tasks = Number(replies[position * 3 + 1]);
          const bytes = Number(replies[position * 3 + 2]);
          this.near.set(
            `${prefix} ${batch[index]!.client}`,
            refused !== 0 || (maxTasks > 0 && tasks >= maxTasks * NEAR) || (maxBytes > 0 && bytes >= maxBytes * NEAR),
          );
          // Named as the settings: what the client holds in this shard, against this shard's share.
          answers[index] =
            refused === 1
              ? { limit: 'QUOTA_MAX_BACKLOG_PER_KEY', max: this.settings.maxTasks, held: tasks * this.shards.count }
              : refused === 2
                ? { limit: 'QUOTA_MAX_BYTES_PER_KEY', max: this.settings.maxBytes, held: bytes * this.shards.count }
                : undefined;
        });
      }),
    );
    return answers;
  }

  /**
   * Stops counting a task whose `run` ended; batched, in the background. A task that was never
   * counted is ignored, and so is one a later run reserved again (a retry made before this
   * release arrived): the count is that run's.
   */
  release(taskId: string, run: number): void {
    if (!this.enabled) return;
    this.ended.set(taskId, Math.max(run, this.ended.get(taskId) ?? 0));
    this.flushing ??= Promise.resolve().then(() => this.flush());
  }

  /**
   * Takes back `claimant`'s reservation of a task's `run` that was not made after all (a
   * submission or a retry that failed, a reservation left unanswered). The task stops counting
   * once every claimant of that run has taken its reservation back, or when the run ends: two
   * retries of one task at once both reserve its next run, and the one that fails must not
   * uncount the one that is committing it. A claimant's reservation counts once however often it
   * ran, and an undo takes back nothing if it never ran. Batched, in the background, as release.
   */
  undo(taskId: string, run: number, claimant: string): void {
    if (!this.enabled) return;
    this.undone.push([taskId, run, claimant]);
    this.flushing ??= Promise.resolve().then(() => this.flush());
  }

  /** Resolves once every release asked for so far is written (or given up on). */
  async settled(): Promise<void> {
    for (let flushing = this.flushing; flushing !== undefined; flushing = this.flushing) await flushing;
  }

  private async flush(): Promise<void> {
    while (this.ended.size > 0 || this.undone.length > 0) {
      const ends = [...this.ended].slice(0, 500);
      for (const [id] of ends) this.ended.delete(id);
      const undos = this.undone.splice(0, 500);
      const byShard = new Map<string, (string | number)[]>();
      // An end is sent with no claimant.
      for (const [id, run, claimant] of [...ends.map(([id, run]) => [id, run, ''] as const), ...undos]) {
        const prefix = this.shards.prefixOf(id);
        const shard = byShard.get(prefix) ?? [];
        shard.push(id, run, claimant);
        byShard.set(prefix, shard);
      }
      await Promise.all(
        [...byShard].map(async ([prefix, shardReleases]) => {
          const [, ...keys] = this.keys(prefix, '');
          // Redis away (a restart, a failover) is waited out for a while: a release lost would hold
          // the client's count up until its lease lapses.
          for (let attempt = 1; ; attempt += 1) {
            try {
              await runScript(this.redis, RELEASE, 7, [`${prefix}:quota:tasks:`, ...keys, `${prefix}:quota:tasks:`, ...shardReleases]);
              return;
            } catch (error) {
              if (attempt >= RELEASE_ATTEMPTS) {
                this.logger.warn('could not release tasks from their quota; they lapse later', {
                  error: (error as Error).message,
                  tasks: shardReleases.length / 3,
                });
                return;
              }
              await new Promise((resolve) => setTimeout(resolve, RELEASE_RETRY_MS));
            }
          }
        }),
      );
    }
    this.flushing = undefined;
  }

  /** Unfinished tasks per client, summed over the shards, for admission's fair share. */
  async counts(): Promise<Map<string, number>> {
    const counts = new Map<string, number>();
    for (const prefix of this.shards.prefixes) {
      for (const [client, count] of Object.entries(await this.redis.hgetall(`${prefix}:quota:count`)))
        counts.set(client, (counts.get(client) ?? 0) + Number(count));
    }
    return counts;
  }
}
