import type { Transition } from '../engine/state.js';
import { isFinished } from '../engine/status.js';
import { type EventNotice, eventsChannel } from './channels.js';
import { luaScript, type RedisClient, runScript } from './redis.js';
import type { Shards } from './shards.js';

/** Events kept per task; a task has a few per step, so this only trims pathological cases. */
const MAX_EVENTS_PER_TASK = 2_000;

/**
 * Steps of a shard's tasks finished since Redis started: admission control reads the drain rate
 * from the sum over the shards (see src/api/admission.ts).
 */
export function finishedStepsKey(prefix: string): string {
  return `${prefix}:admission:finished-steps`;
}

const STEP_ENDS = new Set(['completed', 'failed', 'cancelled', 'skipped']);

// One shard's appends. KEYS: each task's stream, then the shard's finished-steps counter. ARGV:
// the notice's channel and text, the steps finished, the streams' MAXLEN, each stream's expiry
// (seconds, in KEYS' order), then per event its stream (an index into KEYS), its number of field
// values, and the values.
const APPEND = luaScript(`
local streams = #KEYS - 1
local at = 5 + streams
while at <= #ARGV do
  local count = tonumber(ARGV[at + 1])
  redis.call('XADD', KEYS[tonumber(ARGV[at])], 'MAXLEN', '~', ARGV[4], '*', unpack(ARGV, at + 2, at + 1 + count))
  at = at + 2 + count
end
if tonumber(ARGV[3]) > 0 then redis.call('INCRBY', KEYS[#KEYS], ARGV[3]) end
for i = 1, streams do redis.call('EXPIRE', KEYS[i], ARGV[4 + i]) end
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 0
`);

/** One event of a task's live stream as clients see it (SSE `data:`), with its stream id as the SSE `id:`: a transition or a progress report. */
export interface TaskEvent {
  id: string;
  type: 'task' | 'step' | 'progress';
  task_id: string;
  step_id?: string;
  status?: string;
  /** Why a step is skipped or waiting. */
  reason?: string;
  percent?: number;
  message?: string;
  at: string;
}

/**
 * The live events of each task (its transitions and progress reports, docs/architecture.md "Words, once"), in
 * a Redis stream per task in the task's shard (so a client can resume with Last-Event-ID from any
 * API process), plus a notice on the events channel after each append.
 * A stream expires EVENTS_TTL_S after its last event, or EVENTS_KEEP_AFTER_END_S after the task
 * ended: PostgreSQL holds the history, and a client resuming later gets a snapshot from there.
 */
export class EventLog {
  constructor(
    private readonly redis: RedisClient,
    private readonly shards: Shards,
    private readonly retention: { ttlSeconds: number; afterEndSeconds: number },
  ) {}

  key(taskId: string): string {
    return `${this.shards.prefixOf(taskId)}:events:${taskId}`;
  }

  /**
   * Appends in one round trip per shard: every XADD, the expiries and the notice, in one script
   * (atomic, as a MULTI was, so that a connection lost half-way — a worker stopped hard, Redis
   * restarting — cannot leave a stream without its expiry, kept for ever). The client builds one
   * command where a MULTI built two per event: the ends of four one-tool tasks cost the worker
   * 45 µs of CPU against 145-165 (docs/performance.md). On a cluster a shard's keys share its
   * hash tag, so the script runs on one node; PUBLISH has no key and rides along (the cluster
   * forwards it to subscribers on every node).
   */
  async append(transitions: Transition[]): Promise<void> {
    const byShard = new Map<string, Transition[]>();
    for (const transition of transitions) {
      const prefix = this.shards.prefixOf(transition.taskId);
      byShard.set(prefix, [...(byShard.get(prefix) ?? []), transition]);
    }
    await Promise.all([...byShard].map(([prefix, inShard]) => this.appendInShard(prefix, inShard)));
  }

  private async appendInShard(prefix: string, transitions: Transition[]): Promise<void> {
    /** Each task's stream: its position in KEYS (from 1). */
    const streams = new Map<string, number>();
    const ended = new Set<string>();
    const events: string[] = [];
    let finishedSteps = 0;
    for (const transition of transitions) {
      let stream = streams.get(transition.taskId);
      if (stream === undefined) {
        stream = streams.size + 1;
        streams.set(transition.taskId, stream);
      }
      const fields = ['type', transition.progress ? 'progress' : transition.stepId ? 'step' : 'task', 'status', transition.status, 'at', transition.at];
      if (transition.stepId) fields.push('step_id', transition.stepId);
      if (transition.reason) fields.push('reason', transition.reason);
      if (transition.progress) {
        fields.push('percent', String(transition.progress.percent));
        if (transition.progress.message !== undefined) fields.push('message', transition.progress.message);
      }
      if (!transition.stepId && isFinished(transition.status)) ended.add(transition.taskId);
      if (transition.stepId && !transition.progress && STEP_ENDS.has(transition.status)) finishedSteps += 1;
      events.push(String(stream), String(fields.length), ...fields);
    }
    const tasks = [...streams.keys()];
    const expiries = tasks.map((task) => (ended.has(task) ? Math.min(this.retention.afterEndSeconds, this.retention.ttlSeconds) : this.retention.ttlSeconds));
    const notice: EventNotice = { tasks, ended: [...ended] };
    await runScript(this.redis, APPEND, tasks.length + 1, [
      ...tasks.map((task) => this.key(task)),
      finishedStepsKey(prefix),
      eventsChannel(this.shards.base),
      JSON.stringify(notice),
      finishedSteps,
      MAX_EVENTS_PER_TASK,
      ...expiries,
      ...events,
    ]);
  }

  /** Events after `afterId` (exclusive), oldest first. */
  async read(taskId: string, afterId = '0-0', count = 500): Promise<TaskEvent[]> {
    const entries = await this.redis.xrange(this.key(taskId), `(${afterId}`, '+', 'COUNT', count);
    return entries.map(([id, flat]) => {
      const fields: Record<string, string> = {};
      for (let i = 0; i < flat.length; i += 2) fields[flat[i]!] = flat[i + 1]!;
      return {
        id,
        type: fields.type as TaskEvent['type'],
        task_id: taskId,
        ...(fields.step_id ? { step_id: fields.step_id } : {}),
        ...(fields.reason ? { reason: fields.reason } : {}),
        ...(fields.type !== 'progress' ? { status: fields.status } : {}),
        ...(fields.percent !== undefined ? { percent: Number(fields.percent) } : {}),
        ...(fields.message !== undefined ? { message: fields.message } : {}),
        at: fields.at!,
      };
    });
  }

  /** Whether the task's history is in Redis (it expires as a whole, EVENTS_KEEP_AFTER_END_S after the task ends). */
  async exists(taskId: string): Promise<boolean> {
    return (await this.redis.exists(this.key(taskId))) === 1;
  }

  /** Id of the newest event, or "0-0" when the task has none (yet, or any more). */
  async lastId(taskId: string): Promise<string> {
    const [newest] = await this.redis.xrevrange(this.key(taskId), '+', '-', 'COUNT', 1);
    return newest?.[0] ?? '0-0';
  }
}

/** A valid stream id (what Last-Event-ID must hold). */
export function isEventId(value: string): boolean {
  return /^\d{1,20}-\d{1,20}$/.test(value);
}
