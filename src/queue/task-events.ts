import type { Redis } from 'ioredis';
import type { Logger } from '../logger.js';
import { eventsChannel, type TransitionEvent } from './channels.js';

const FINISHED = new Set(['completed', 'failed', 'cancelled']);

/**
 * The API side of the events channel: wakes requests waiting for a task to end. One
 * subscription per API process, whichever process the task was submitted to.
 */
export class TaskEvents {
  private readonly waiters = new Map<string, Set<() => void>>();

  constructor(
    private readonly subscriber: Redis,
    private readonly prefix: string,
    private readonly logger: Logger,
  ) {}

  async start(): Promise<void> {
    this.subscriber.on('message', (channel: string, raw: string) => {
      if (channel !== eventsChannel(this.prefix)) return;
      try {
        for (const event of JSON.parse(raw) as TransitionEvent[]) {
          if (event.stepId === undefined && FINISHED.has(event.status)) this.wake(event.taskId);
        }
      } catch (error) {
        this.logger.warn('ignored a malformed task event', { error: (error as Error).message });
      }
    });
    // Not awaited: an API started while Redis is down must still listen (and answer 503);
    // ioredis subscribes once Redis is back, and again after every reconnect.
    this.subscriber.subscribe(eventsChannel(this.prefix)).catch((error: Error) => this.logger.warn('events subscription failed', { error: error.message }));
  }

  private wake(taskId: string): void {
    const set = this.waiters.get(taskId);
    if (!set) return;
    this.waiters.delete(taskId);
    for (const wake of set) wake();
  }

  /**
   * Resolves when the task ends, `timeoutMs` passes or `signal` fires. `isFinished` is asked
   * once after subscribing, so an end that happened just before is not missed.
   */
  async waitForEnd(taskId: string, timeoutMs: number, isFinished: () => Promise<boolean>, signal?: AbortSignal): Promise<void> {
    let wake!: () => void;
    const woken = new Promise<void>((resolve) => {
      wake = resolve;
    });
    const set = this.waiters.get(taskId) ?? new Set();
    set.add(wake);
    this.waiters.set(taskId, set);
    const timer = setTimeout(wake, timeoutMs);
    signal?.addEventListener('abort', wake, { once: true });
    try {
      if (await isFinished()) return;
      await woken;
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', wake);
      const current = this.waiters.get(taskId);
      current?.delete(wake);
      if (current?.size === 0) this.waiters.delete(taskId);
    }
  }
}
