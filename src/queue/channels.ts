import type { RedisClient } from './redis.js';

/**
 * Redis pub/sub between processes.
 * - stop: the API tells every worker to abort the running steps of a cancelled task.
 * - events: "these tasks have new events" (see event-log.ts), so long-polls and event streams
 *   in every API process answer at once, whichever process received the task.
 */
export function stopChannel(prefix: string): string {
  return `${prefix}:stop`;
}

export function eventsChannel(prefix: string): string {
  return `${prefix}:events`;
}

export interface StopMessage {
  taskId: string;
  /** The run that was cancelled: a later run of the task (a retry) is not stopped by it. */
  run?: number;
  reason: 'cancelled';
  /** Steps of that run it does not stop: its exit handler's (on_exit), which run once the run has ended. */
  spare?: string[];
}

/** How long a stop is remembered, by workers and in Redis: a job of its task taken meanwhile is not run. */
export const STOP_REMEMBER_MS = 10 * 60_000;

/** Where a stop is kept beside its message, for a worker whose subscriber was reconnecting when it was published. */
export function stopKey(prefix: string, taskId: string): string {
  return `${prefix}:stopped:${taskId}`;
}

/**
 * Publishes the stop and keeps it for STOP_REMEMBER_MS: pub/sub delivers only to who is subscribed
 * at that moment, and a worker reads the stops of the tasks it runs each time it subscribes again.
 * One MULTI, so that no message goes out without its copy.
 */
export async function publishStop(redis: RedisClient, prefix: string, message: StopMessage): Promise<void> {
  const raw = JSON.stringify(message);
  const results = await redis.multi().set(stopKey(prefix, message.taskId), raw, 'PX', STOP_REMEMBER_MS).publish(stopChannel(prefix), raw).exec();
  const failed = results?.find(([error]) => error);
  if (failed) throw failed[0];
}

/** What the events channel carries: the tasks that have new events, and which of them ended. */
export interface EventNotice {
  tasks: string[];
  ended: string[];
}
