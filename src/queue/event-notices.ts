import type { Logger } from '../lib/logger.js';
import { type EventNotice, eventsChannel } from './channels.js';
import { type RedisClient, subscribeWhenReady } from './redis.js';

/**
 * `ended`: the notice says the task ended. `missed`: there was no notice; the subscription came
 * back after a loss, and notices published meanwhile never arrive: look again.
 */
type Listener = (ended: boolean, missed?: boolean) => void;

/**
 * The API side of the events channel: one subscription per API process, fanned out to the
 * requests interested in a task (event streams and long-polls), whichever process the task
 * was submitted to. A notice says only that a task has new events (and whether it ended); the
 * events themselves are read from the task's stream (EventLog).
 */
export class EventNotices {
  private readonly listeners = new Map<string, Set<Listener>>();

  constructor(
    private readonly subscriber: RedisClient,
    private readonly prefix: string,
    private readonly logger: Logger,
  ) {}

  start(): void {
    this.subscriber.on('message', (channel: string, raw: string) => {
      if (channel !== eventsChannel(this.prefix)) return;
      try {
        const notice = JSON.parse(raw) as EventNotice;
        const ended = new Set(notice.ended);
        for (const taskId of notice.tasks) {
          for (const listener of this.listeners.get(taskId) ?? []) listener(ended.has(taskId));
        }
      } catch (error) {
        this.logger.warn('ignored a malformed events notice', { error: (error as Error).message });
      }
    });
    // Not awaited: an API started while Redis is down must still listen (and answer 503); it
    // subscribes once Redis is ready, and again after every reconnect, after which every
    // listener looks again (a task that ended meanwhile would otherwise wait out its long-poll).
    subscribeWhenReady(
      this.subscriber,
      eventsChannel(this.prefix),
      (error) => this.logger.warn('events subscription failed', { error: error.message }),
      () => {
        for (const set of this.listeners.values()) for (const listener of set) listener(false, true);
      },
    );
  }

  /** Wakes every listener (the API is stopping): long-polls answer now with what they have. */
  wakeAll(): void {
    for (const set of this.listeners.values()) for (const listener of set) listener(true);
  }

  /** Calls `listener` whenever the task has new events; returns the unsubscribe function. */
  listen(taskId: string, listener: Listener): () => void {
    const set = this.listeners.get(taskId) ?? new Set();
    set.add(listener);
    this.listeners.set(taskId, set);
    return () => {
      set.delete(listener);
      if (set.size === 0) this.listeners.delete(taskId);
    };
  }

  /**
   * Resolves when the task ends, `timeoutMs` passes or `signal` fires (or had fired). `isFinished` is asked
   * once after listening starts, so an end that happened just before is not missed; `hasEnded`
   * each time the subscription comes back, for an end it missed meanwhile (without it the wait
   * then resolves, and the caller reads what there is).
   */
  async waitForEnd(
    taskId: string,
    timeoutMs: number,
    isFinished: () => Promise<boolean>,
    signal?: AbortSignal,
    hasEnded?: () => Promise<boolean>,
  ): Promise<void> {
    let wake!: () => void;
    const woken = new Promise<void>((resolve) => {
      wake = resolve;
    });
    const stop = this.listen(taskId, (ended, missed) => {
      if (ended) return wake();
      if (!missed) return;
      if (!hasEnded) return wake();
      // A look that fails leaves the wait to the task's notice or to its timeout.
      hasEnded().then(
        (yes) => yes && wake(),
        () => undefined,
      );
    });
    const timer = setTimeout(wake, timeoutMs);
    signal?.addEventListener('abort', wake, { once: true });
    // A signal that fired before the listener was added (the client went away while the request
    // was on its way here) fires no more: without this the wait held its slot until the timeout.
    if (signal?.aborted) wake();
    try {
      if (await isFinished()) return;
      await woken;
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', wake);
      stop();
    }
  }
}
