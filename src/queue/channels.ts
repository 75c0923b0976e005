import type { Redis } from 'ioredis';

/**
 * Redis pub/sub between processes.
 * - stop: the API tells every worker to abort the running steps of a cancelled task.
 * - events: workers tell every API process when steps and tasks change state, so long-polls
 *   and event streams answer at once, whichever process received the task.
 */
export function stopChannel(prefix: string): string {
  return `${prefix}:stop`;
}

export function eventsChannel(prefix: string): string {
  return `${prefix}:events`;
}

export interface StopMessage {
  taskId: string;
  reason: 'cancelled';
}

export async function publishStop(redis: Redis, prefix: string, message: StopMessage): Promise<void> {
  await redis.publish(stopChannel(prefix), JSON.stringify(message));
}

/** A step or task changed state. Without `stepId` it is the task itself. */
export interface TransitionEvent {
  taskId: string;
  stepId?: string;
  status: string;
  at: string;
}

export async function publishEvents(redis: Redis, prefix: string, events: TransitionEvent[]): Promise<void> {
  if (events.length === 0) return;
  await redis.publish(eventsChannel(prefix), JSON.stringify(events));
}
