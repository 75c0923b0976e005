import { randomUUID } from 'node:crypto';
import type { Request } from 'express';
import { ipKeyGenerator } from 'express-rate-limit';
import type { Logger } from '../lib/logger.js';
import { luaScript, type RedisClient, runScript } from '../queue/redis.js';
import { errorBody } from './http.js';

/** Seconds a client over one of its slot limits is asked to wait. */
const SLOTS_RETRY_AFTER_S = 5;

/** The 429 a client gets when all its slots of a kind are taken: nothing was opened. */
export function slotsFull(code: string, message: string) {
  return { status: 429 as const, headers: { 'retry-after': String(SLOTS_RETRY_AFTER_S) }, body: errorBody(code, message) };
}

/** Who holds a slot: the API key, or the client address when the API runs without keys. */
export function clientOf(req: Request): string {
  // ipKeyGenerator groups an IPv6 client's whole /56, which it could otherwise rotate through.
  return req.apiKeyId ? `key:${req.apiKeyId}` : `ip:${ipKeyGenerator(req.ip ?? '0.0.0.0')}`;
}

export interface ClientSlotsOptions {
  redis: RedisClient;
  logger: Logger;
  /** The deployment's key prefix (QUEUE_PREFIX): its hash tag keeps a cluster's keys in one slot. */
  prefix: string;
  /** What is counted, part of the Redis key: `streams`, `long-polls`. */
  kind: string;
  /** Slots per client; 0 means no limit. */
  max: number;
  /** Longest a request may hold its slot: a slot its process never released (a crash) lapses after this. */
  leaseMs: number;
}

/**
 * Takes and gives back slots in one step (KEYS: the clients' sorted sets, one per operation;
 * ARGV: now, the lease, the limit, then one operation per key, `a:<member>` to take a slot or
 * `r:<member>` to give one back), in the order they were asked for. Answers one figure per
 * operation: 1 taken, 0 refused (a give-back answers 1).
 */
const SLOTS = luaScript(`
local now = tonumber(ARGV[1])
local lease = tonumber(ARGV[2])
local max = tonumber(ARGV[3])
local out = {}
for i, key in ipairs(KEYS) do
  local op = ARGV[i + 3]
  local member = string.sub(op, 3)
  if string.sub(op, 1, 1) == 'r' then
    redis.call('ZREM', key, member)
    out[i] = 1
  else
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    redis.call('ZADD', key, now + lease, member)
    local held = redis.call('ZCARD', key)
    redis.call('PEXPIRE', key, lease)
    if held > max then
      redis.call('ZREM', key, member)
      out[i] = 0
    else
      out[i] = 1
    end
  end
end
return out
`);

/** Most operations one call of the script carries; more wait for the next call. */
const SLOTS_BATCH_MAX = 500;

interface SlotOperation {
  key: string;
  member: string;
  /** Undefined for a give-back (nobody waits for it). */
  taken?: (taken: boolean | Error) => void;
}

/**
 * Concurrent long-lived requests (event streams, long-polls) per client, counted across every
 * API process in Redis: one sorted set per client, whose members are the open requests scored by
 * when their lease ends. When Redis does not answer, requests pass uncounted (the endpoints that
 * need Redis answer 503 themselves).
 *
 * Takes and give-backs are batched (group commit, as the submissions are): what the process asks
 * for while a call is on its way goes out together in the next one, one script call for all of
 * them, in the order asked. An idle process sends each at once; a busy one pays one round trip
 * for many requests instead of two per request.
 */
export class ClientSlots {
  private pending: SlotOperation[] = [];
  private flushing = false;
  private scheduled = false;

  constructor(private readonly options: ClientSlotsOptions) {}

  private keyOf(client: string): string {
    return `${this.options.prefix}:slots:${this.options.kind}:${client}`;
  }

  /** Takes a slot: the function that gives it back, or undefined when the client holds `max` already. */
  async acquire(client: string): Promise<(() => void) | undefined> {
    const { max } = this.options;
    if (max === 0) return () => undefined;
    const key = this.keyOf(client);
    const member = randomUUID();
    const taken = await new Promise<boolean | Error>((resolve) => this.enqueue({ key, member, taken: resolve }));
    if (taken instanceof Error) {
      this.options.logger.warn('could not count open requests; letting this one through', { kind: this.options.kind, error: taken.message });
      return () => undefined;
    }
    if (!taken) return undefined;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.enqueue({ key, member });
    };
  }

  private enqueue(operation: SlotOperation): void {
    this.pending.push(operation);
    if (this.flushing || this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      void this.flush();
    });
  }

  private async flush(): Promise<void> {
    if (this.flushing) return;
    this.flushing = true;
    try {
      while (this.pending.length > 0) {
        const batch = this.pending.splice(0, SLOTS_BATCH_MAX);
        let answers: number[] | Error;
        try {
          answers = await this.run(batch);
        } catch (error) {
          answers = error instanceof Error ? error : new Error(String(error));
        }
        if (answers instanceof Error && batch.some((operation) => !operation.taken)) {
          this.options.logger.warn('could not release a request slot', { kind: this.options.kind, error: answers.message });
        }
        batch.forEach((operation, index) => {
          operation.taken?.(answers instanceof Error ? answers : Number(answers[index]) === 1);
        });
      }
    } finally {
      this.flushing = false;
    }
  }

  /** One call of the script for `batch`. */
  private async run(batch: readonly SlotOperation[]): Promise<number[]> {
    const { redis, leaseMs, max } = this.options;
    const args = [
      ...batch.map((operation) => operation.key),
      Date.now(),
      leaseMs,
      max,
      ...batch.map((operation) => `${operation.taken ? 'a' : 'r'}:${operation.member}`),
    ];
    return (await runScript(redis, SLOTS, batch.length, args)) as number[];
  }
}
