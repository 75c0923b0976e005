import { TaskStoppedError } from '../../src/lib/errors.js';
import type { Logger } from '../../src/lib/logger.js';
import { type StopMessage, stopChannel } from '../../src/queue/channels.js';
import { type RedisClient, subscribeWhenReady } from '../../src/queue/redis.js';

/** How long a stopped task is remembered: a job of it taken after the stop message came is not run. */
const REMEMBER_MS = 10 * 60_000;

/**
 * Aborts the steps this process is running when their task is cancelled through any API
 * process: the API publishes on the stop channel; every worker listens and fires the
 * AbortSignal of each matching step it holds. It remembers the tasks stopped lately, so that a
 * step claimed when it was made ready, whose job a worker takes after the stop, never starts.
 */
export class StopSignals {
  /** The steps this process runs, by task: each one's abort controller, with its step. */
  private readonly running = new Map<string, Map<AbortController, string>>();
  /** Tasks stopped lately: the run stopped, the steps spared, and when it is forgotten (insertion order is expiry order). */
  private readonly stopped = new Map<string, { run: number; spare: ReadonlySet<string>; until: number }>();

  constructor(
    private readonly subscriber: RedisClient,
    private readonly prefix: string,
    private readonly logger: Logger,
  ) {}

  async start(): Promise<void> {
    this.subscriber.on('message', (channel: string, raw: string) => {
      if (channel !== stopChannel(this.prefix)) return;
      try {
        const message = JSON.parse(raw) as StopMessage;
        const spare = new Set(message.spare ?? []);
        this.remember(message.taskId, message.run ?? Number.MAX_SAFE_INTEGER, spare);
        const controllers = [...(this.running.get(message.taskId) ?? [])].filter(([, stepId]) => !spare.has(stepId));
        if (controllers.length === 0) return;
        this.logger.info('aborting running steps of a stopped task', { task_id: message.taskId, steps: controllers.length });
        for (const [controller] of controllers) controller.abort(new TaskStoppedError(message.reason));
      } catch (error) {
        this.logger.warn('ignored a malformed stop message', { error: (error as Error).message });
      }
    });
    // Not awaited: while Redis is down the subscription waits for it; it subscribes once Redis is
    // ready, and again after every reconnect.
    subscribeWhenReady(this.subscriber, stopChannel(this.prefix), (error) => this.logger.warn('stop channel subscription failed', { error: error.message }));
  }

  private remember(taskId: string, run: number, spare: ReadonlySet<string>): void {
    const now = Date.now();
    for (const [id, { until }] of this.stopped) {
      if (until > now) break;
      this.stopped.delete(id);
    }
    this.stopped.delete(taskId);
    this.stopped.set(taskId, { run, spare, until: now + REMEMBER_MS });
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
  track(taskId: string, stepId: string, controller: AbortController): () => void {
    let set = this.running.get(taskId);
    if (!set) {
      set = new Map();
      this.running.set(taskId, set);
    }
    set.set(controller, stepId);
    return () => {
      set.delete(controller);
      if (set.size === 0) this.running.delete(taskId);
    };
  }
}
