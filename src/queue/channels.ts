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

export async function publishStop(redis: RedisClient, prefix: string, message: StopMessage): Promise<void> {
  await redis.publish(stopChannel(prefix), JSON.stringify(message));
}

/** What the events channel carries: the tasks that have new events, and which of them ended. */
export interface EventNotice {
  tasks: string[];
  ended: string[];
}
