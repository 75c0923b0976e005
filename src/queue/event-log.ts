import type { Transition } from '../engine/state.js';
import { isFinished } from '../engine/status.js';
import { type EventNotice, eventsChannel } from './channels.js';
import type { RedisClient } from './redis.js';
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
   * Appends in one round trip per shard: every XADD, the expiries and the notice, in one MULTI so
   * that a connection lost half-way (a worker stopped hard, Redis restarting) cannot leave a
   * stream without its expiry, kept for ever. On a cluster a shard's keys share its hash tag, so
   * the transaction goes to one node; PUBLISH has no key and rides along (the cluster forwards
   * it to subscribers on every node).
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
    const pipeline = this.redis.multi();
    const tasks = new Set<string>();
    const ended = new Set<string>();
    for (const transition of transitions) {
      tasks.add(transition.taskId);
      const fields = ['type', transition.progress ? 'progress' : transition.stepId ? 'step' : 'task', 'status', transition.status, 'at', transition.at];
      if (transition.stepId) fields.push('step_id', transition.stepId);
      if (transition.reason) fields.push('reason', transition.reason);
      if (transition.progress) {
        fields.push('percent', String(transition.progress.percent));
        if (transition.progress.message !== undefined) fields.push('message', transition.progress.message);
      }
      if (!transition.stepId && isFinished(transition.status)) ended.add(transition.taskId);
      pipeline.xadd(this.key(transition.taskId), 'MAXLEN', '~', String(MAX_EVENTS_PER_TASK), '*', ...fields);
    }
    const finishedSteps = transitions.filter((transition) => transition.stepId && !transition.progress && STEP_ENDS.has(transition.status)).length;
    if (finishedSteps > 0) pipeline.incrby(finishedStepsKey(prefix), finishedSteps);
    for (const task of tasks)
      pipeline.expire(this.key(task), ended.has(task) ? Math.min(this.retention.afterEndSeconds, this.retention.ttlSeconds) : this.retention.ttlSeconds);
    const notice: EventNotice = { tasks: [...tasks], ended: [...ended] };
    pipeline.publish(eventsChannel(this.shards.base), JSON.stringify(notice));
    const results = await pipeline.exec();
    const failed = results?.find(([error]) => error);
    if (failed) throw failed[0];
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
