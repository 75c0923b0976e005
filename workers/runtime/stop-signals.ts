import { TaskStoppedError } from '../../src/lib/errors.js';
import type { Logger } from '../../src/lib/logger.js';
import { STOP_REMEMBER_MS, type StopMessage, stopChannel, stopKey } from '../../src/queue/channels.js';
import { type RedisClient, subscribeWhenReady } from '../../src/queue/redis.js';

/**
 * Aborts the steps this process is running when their task is cancelled through any API
 * process: the API publishes on the stop channel; every worker listens and fires the
 * AbortSignal of each matching step it holds. It remembers the tasks stopped lately, so that a
 * step claimed when it was made ready, whose job a worker takes after the stop, never starts.
 * A message published while its subscriber was reconnecting never arrives: each time it has
 * subscribed again, it reads the stops Redis keeps (publishStop) of the tasks it runs.
 */
export class StopSignals {
  /** The steps this process runs, by task: each one's abort controller, with its step and run. */
  private readonly running = new Map<string, Map<AbortController, { stepId: string; run: number }>>();
  /** Tasks stopped lately: the run stopped, the steps spared, and when it is forgotten (insertion order is expiry order). */
  private readonly stopped = new Map<string, { run: number; spare: ReadonlySet<string>; until: number }>();

  constructor(
    private readonly subscriber: RedisClient,
    /** A connection for commands (a subscribed one takes none), to read the stops kept. */
    private readonly redis: RedisClient,
    private readonly prefix: string,
    private readonly logger: Logger,
  ) {}

  async start(): Promise<void> {
    this.subscriber.on('message', (channel: string, raw: string) => {
      if (channel === stopChannel(this.prefix)) this.apply(raw);
    });
    // Not awaited: while Redis is down the subscription waits for it; it subscribes once Redis is
    // ready, and again after every reconnect, and then reads what it may have missed meanwhile.
    subscribeWhenReady(
      this.subscriber,
      stopChannel(this.prefix),
      (error) => this.logger.warn('stop channel subscription failed', { error: error.message }),
      () => this.readMissed(),
    );
  }

  /** The stops kept of the tasks this process runs (none on the first subscription: it runs nothing yet). */
  private async readMissed(): Promise<void> {
    const tasks = [...this.running.keys()];
    if (tasks.length === 0) return;
    // One GET each rather than an MGET: on a cluster the keys may be in different slots.
    const kept = await Promise.all(tasks.map((taskId) => this.redis.get(stopKey(this.prefix, taskId))));
    for (const raw of kept) if (raw !== null) this.apply(raw);
  }

  /** Remembers a stop, and aborts its task's running steps but those it spares. */
  private apply(raw: string): void {
    try {
      const message = JSON.parse(raw) as StopMessage;
      const spare = new Set(message.spare ?? []);
      const stoppedRun = message.run ?? Number.MAX_SAFE_INTEGER;
      this.remember(message.taskId, stoppedRun, spare);
      // A stop read again after a reconnect may be older than a retry's run: that run goes on.
      const controllers = [...(this.running.get(message.taskId) ?? [])].filter(
        ([controller, step]) => step.run <= stoppedRun && !spare.has(step.stepId) && !controller.signal.aborted,
      );
      if (controllers.length === 0) return;
      this.logger.info('aborting running steps of a stopped task', { task_id: message.taskId, steps: controllers.length });
      for (const [controller] of controllers) controller.abort(new TaskStoppedError(message.reason));
    } catch (error) {
      this.logger.warn('ignored a malformed stop message', { error: (error as Error).message });
    }
  }

  private remember(taskId: string, run: number, spare: ReadonlySet<string>): void {
    const now = Date.now();
    for (const [id, { until }] of this.stopped) {
      if (until > now) break;
      this.stopped.delete(id);
    }
    this.stopped.delete(taskId);
    this.stopped.set(taskId, { run, spare, until: now + STOP_REMEMBER_MS });
  }

  /** Whether this run of the task was stopped lately (its steps must not start, but for those spared; a retry's run may). */
  wasStopped(taskId: string, run: number, stepId: string): boolean {
    const stopped = this.stopped.get(taskId);
    return stopped !== undefined && stopped.until > Date.now() && run <= stopped.run && !stopped.spare.has(stepId);
  }

  /** Aborts every step this process runs (a forced shutdown). */
  abortAll(reason: Error): void {
    for (const controllers of this.running.values()) for (const controller of controllers.keys()) controller.abort(reason);
  }

  /** Registers a running step; call the returned function when it ends. */
  track(taskId: string, run: number, stepId: string, controller: AbortController): () => void {
    let set = this.running.get(taskId);
    if (!set) {
      set = new Map();
      this.running.set(taskId, set);
    }
    set.set(controller, { stepId, run });
    return () => {
      set.delete(controller);
      if (set.size === 0) this.running.delete(taskId);
    };
  }
}
