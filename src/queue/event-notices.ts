import type { Logger } from '../lib/logger.js';
import { type EventNotice, eventsChannel } from './channels.js';
import { type RedisClient, subscribeWhenReady } from './redis.js';

/**
 * `ended`: the notice says the task ended. `missed`: there was no notice; the subscription came
 * back after a loss, and notices published meanwhile never arrive: look again.
 */
type Listener = (ended: boolean, missed?: boolean) => void;

/**
 * How long a task submitted through this process is taken to be unfinished, and whose it is,
 * without asking PostgreSQL (its end's notice forgets it sooner); and how many such tasks are
 * remembered at most, oldest forgotten first.
 */
const SUBMITTED_KNOWN_MS = 60_000;
export const SUBMITTED_MAX = 10_000;

/**
 * The API side of the events channel: one subscription per API process, fanned out to the
 * requests interested in a task (event streams and long-polls), whichever process the task
 * was submitted to. A notice says only that a task has new events (and whether it ended); the
 * events themselves are read from the task's stream (EventLog).
 */
export class EventNotices {
  private readonly listeners = new Map<string, Set<Listener>>();
  /** Tasks submitted through this process whose end no notice has told yet: their owner and when (insertion order is age). */
  private readonly submitted = new Map<string, { owner: string; at: number }>();
  /** Whether the subscription is up now: only then can a notice of a task's end be relied on to arrive. */
  private subscribed = false;

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
        for (const taskId of notice.ended) this.submitted.delete(taskId);
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
        this.subscribed = true;
        for (const set of this.listeners.values()) for (const listener of set) listener(false, true);
      },
    );
    // Notices published from now until the next subscription never arrive: what was known of
    // the tasks submitted here is forgotten (their long-polls read PostgreSQL first again).
    this.subscriber.on('close', () => {
      this.subscribed = false;
      this.submitted.clear();
    });
  }

  /**
   * A task this process is submitting: until its end's notice (or for SUBMITTED_KNOWN_MS), a
   * long-poll of it knows whose it is and that it has not ended, without asking PostgreSQL. Told
   * before its job is added, so that its end cannot be heard first. Nothing is remembered while
   * the subscription is down.
   */
  submitting(taskId: string, owner: string): void {
    if (!this.subscribed) return;
    const now = Date.now();
    this.submitted.set(taskId, { owner, at: now });
    for (const [id, entry] of this.submitted) {
      if (this.submitted.size <= SUBMITTED_MAX && now - entry.at < SUBMITTED_KNOWN_MS) break;
      this.submitted.delete(id);
    }
  }

  /** A submission that stored no task (refused, or a replay of an idempotency key): nothing to remember. */
  forget(taskId: string): void {
    this.submitted.delete(taskId);
  }

  /** The owner of a task submitted here whose end no notice has told; undefined: not known here (ask PostgreSQL). */
  unfinishedHere(taskId: string): string | undefined {
    const entry = this.submitted.get(taskId);
    if (entry && Date.now() - entry.at < SUBMITTED_KNOWN_MS) return entry.owner;
    if (entry) this.submitted.delete(taskId);
    return undefined;
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
   * then resolves, and the caller reads what there is), and once `lookAfterMs` into the wait
   * when given (a wait that began without reading the task: an end whose notice was lost is
   * answered then, not at the timeout).
   */
  async waitForEnd(
    taskId: string,
    timeoutMs: number,
    isFinished: () => Promise<boolean>,
    signal?: AbortSignal,
    hasEnded?: () => Promise<boolean>,
    lookAfterMs?: number,
  ): Promise<void> {
    let wake!: () => void;
    const woken = new Promise<void>((resolve) => {
      wake = resolve;
    });
    // A look that fails leaves the wait to the task's notice or to its timeout.
    const look = (ask: () => Promise<boolean>): void => {
      void ask().then(
        (yes) => yes && wake(),
        () => undefined,
      );
    };
    const stop = this.listen(taskId, (ended, missed) => {
      if (ended) return wake();
      if (!missed) return;
      if (!hasEnded) return wake();
      look(hasEnded);
    });
    const timer = setTimeout(wake, timeoutMs);
    const lookTimer = hasEnded && lookAfterMs !== undefined && lookAfterMs < timeoutMs ? setTimeout(() => look(hasEnded), lookAfterMs) : undefined;
    signal?.addEventListener('abort', wake, { once: true });
    // A signal that fired before the listener was added (the client went away while the request
    // was on its way here) fires no more: without this the wait held its slot until the timeout.
    if (signal?.aborted) wake();
    try {
      if (await isFinished()) return;
      await woken;
    } finally {
      clearTimeout(timer);
      clearTimeout(lookTimer);
      signal?.removeEventListener('abort', wake);
      stop();
    }
  }
}
