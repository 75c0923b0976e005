import { Queue } from 'bullmq';
import type { Logger } from '../lib/logger.js';
import { bullmqTelemetry } from '../observability/tracing.js';
import type { RedisClient } from './redis.js';

/**
 * Schedules' ticks (docs/workflows.md "Schedules"): one BullMQ job scheduler per schedule fires `tick` jobs;
 * `catch-up` jobs decide the ticks a pause or a stop missed; `drain` jobs start a buffered tick
 * once the schedule's running task ended. All in the first shard's prefix.
 */
export const SCHEDULES_QUEUE = 'schedules';

export type ScheduleJobName = 'tick' | 'catch-up' | 'drain';

export interface ScheduleJobData {
  scheduleId: string;
}

/** How a schedule fires, for its job scheduler. */
export type Repeat = { pattern: string; tz: string } | { every: number };

/** The job scheduler id of a schedule: its row's id, which a recreated schedule of the same name does not share. */
export function schedulerId(scheduleId: string): string {
  return `schedule-${scheduleId}`;
}

/** A tick job's time: BullMQ names a job scheduler's jobs `repeat:<scheduler id>:<time in ms>`. */
export function tickTime(jobId: string | undefined): Date | undefined {
  const millis = Number(jobId?.match(/^repeat:.+:(\d+)$/)?.[1]);
  return Number.isFinite(millis) && millis > 0 ? new Date(millis) : undefined;
}

const JOB_OPTIONS = {
  attempts: 10,
  backoff: { type: 'exponential', delay: 500 },
  removeOnComplete: { count: 1000 },
  removeOnFail: { count: 1000 },
} as const;

export class ScheduleQueue {
  readonly queue: Queue<ScheduleJobData, unknown, string>;

  constructor(
    private readonly connection: RedisClient,
    readonly prefix: string,
    logger?: Logger,
  ) {
    this.queue = new Queue<ScheduleJobData, unknown, string>(SCHEDULES_QUEUE, { connection, prefix, ...bullmqTelemetry() });
    // Connection errors also fail the calls that meet them; without a listener BullMQ prints every reconnect attempt.
    this.queue.on('error', (error) => logger?.debug('queue connection error', { queue: SCHEDULES_QUEUE, error: error.message }));
  }

  /** Whether the connection is up (a producer's commands fail at once while it is not). */
  connected(): boolean {
    return this.connection.status === 'ready';
  }

  /** Creates or replaces a schedule's job scheduler. An interval starts at its next multiple since the epoch, as the schedule's own tick times. */
  async install(scheduleId: string, repeat: Repeat): Promise<void> {
    const timing = 'every' in repeat ? { every: repeat.every, startDate: Math.ceil(Date.now() / repeat.every) * repeat.every } : repeat;
    await this.queue.upsertJobScheduler(schedulerId(scheduleId), timing, { name: 'tick' as const, data: { scheduleId }, opts: JOB_OPTIONS });
  }

  async uninstall(scheduleId: string): Promise<void> {
    await this.queue.removeJobScheduler(schedulerId(scheduleId));
  }

  /** The schedule ids that have a job scheduler. */
  async installed(): Promise<string[]> {
    const schedulers = await this.queue.getJobSchedulers();
    return schedulers
      .map((scheduler) => scheduler.key)
      .filter((key) => key.startsWith('schedule-'))
      .map((key) => key.slice('schedule-'.length));
  }

  /** Asks a worker to decide the ticks a schedule missed (after a pause, or at a worker start). */
  async catchUp(scheduleId: string): Promise<void> {
    await this.queue.add('catch-up', { scheduleId }, { ...JOB_OPTIONS, jobId: `catch-up-${scheduleId}-${Date.now()}` });
  }

  /** Asks a worker to start the schedule's buffered tick once its running task ended; one such job per schedule at a time. */
  async drainLater(scheduleId: string, delayMs: number): Promise<void> {
    await this.queue.add('drain', { scheduleId }, { ...JOB_OPTIONS, jobId: `drain-${scheduleId}`, delay: delayMs, removeOnComplete: true, removeOnFail: true });
  }

  close(): Promise<void> {
    return this.queue.close();
  }
}
