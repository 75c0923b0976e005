import { FlowProducer, Queue, type FlowJob, type JobsOptions } from 'bullmq';
import type { RedisClient } from './redis.js';
import type { Config } from '../config.js';
import type { Logger } from '../logger.js';
import type { Context } from '@opentelemetry/api';
import { bullmqTelemetry, jobTraceOptions } from '../observability/tracing.js';
import {
  BACKOFF_TYPE,
  CALLBACKS_QUEUE,
  callbackJobId,
  type CallbackJobData,
  stepJobId,
  TASKS_QUEUE,
  taskJobId,
  toolQueueName,
  type StepJobData,
  type TaskJobData,
} from './jobs.js';
import type { ReadyStep } from '../engine/types.js';

export interface RunKey {
  taskId: string;
  run: number;
}

export interface RunRef extends RunKey {
  taskType: string;
}

/**
 * The producer side of BullMQ: how a task's run maps onto jobs.
 *
 * A run is a flow. Its root is a job in the `tasks` queue; its children are the run's steps, each
 * in its tool's queue. Steps whose dependencies are met when the run starts are created with
 * the flow; every other step is added as a further child of the same root at the moment its
 * last dependency commits its result (PostgreSQL decides which dependency is the last one).
 * Dependents are added before the finishing step is acknowledged, so the root always has a
 * pending child until the last step is done, and then runs to close the task.
 */
export class TaskQueues {
  readonly tasks: Queue<TaskJobData>;
  readonly callbacks: Queue<CallbackJobData>;
  private readonly toolQueues = new Map<string, Queue<StepJobData>>();
  private readonly flows: FlowProducer;

  constructor(
    private readonly connection: RedisClient,
    private readonly config: Pick<Config, 'QUEUE_PREFIX' | 'QUEUE_KEEP_COMPLETED' | 'QUEUE_KEEP_FAILED'>,
    toolNames: Iterable<string>,
    logger: Logger,
  ) {
    // With tracing on, BullMQ's producer spans join the caller's trace and every job carries it on.
    const options = { connection, prefix: config.QUEUE_PREFIX, ...bullmqTelemetry() };
    this.tasks = new Queue<TaskJobData>(TASKS_QUEUE, options);
    this.callbacks = new Queue<CallbackJobData>(CALLBACKS_QUEUE, options);
    for (const tool of toolNames) this.toolQueues.set(tool, new Queue<StepJobData>(toolQueueName(tool), options));
    this.flows = new FlowProducer(options);
    // Connection errors also fail the calls that meet them; without a listener BullMQ prints
    // every reconnect attempt to stderr.
    const onError = (error: Error) => logger.debug('queue connection error', { error: error.message });
    this.flows.on('error', onError);
    for (const queue of this.all()) queue.on('error', onError);
  }

  /** Every queue, for Bull Board and metrics. */
  all(): Queue[] {
    return [this.tasks, ...this.toolQueues.values(), this.callbacks] as Queue[];
  }

  toolQueue(tool: string): Queue<StepJobData> {
    const queue = this.toolQueues.get(tool);
    if (!queue) throw new Error(`no queue for tool ${tool}`);
    return queue;
  }

  private keep() {
    return {
      removeOnComplete: { count: this.config.QUEUE_KEEP_COMPLETED },
      removeOnFail: { count: this.config.QUEUE_KEEP_FAILED },
    };
  }

  private stepOptions(ref: RunKey, step: ReadyStep): JobsOptions {
    return {
      jobId: stepJobId(ref.taskId, ref.run, step.stepId),
      attempts: step.retry.attempts,
      backoff: { type: BACKOFF_TYPE },
      ...(step.priority ? { priority: step.priority } : {}),
      ...(step.delayMs ? { delay: step.delayMs } : {}),
      // A failed step must not hold the root in waiting-children forever: its failure is
      // recorded in PostgreSQL, and the root still runs once the other children are done.
      ignoreDependencyOnFailure: true,
      ...this.keep(),
    };
  }

  private stepData(ref: RunKey, step: ReadyStep): StepJobData {
    return {
      taskId: ref.taskId,
      run: ref.run,
      stepId: step.stepId,
      tool: step.tool,
      input: step.input,
      ...(step.inputError ? { inputError: step.inputError } : {}),
      retry: step.retry,
      timeoutMs: step.timeoutMs,
      dependencies: step.dependencies,
    };
  }

  /** `trace`: the trace the run's jobs continue, when they are added outside it (a batch). */
  private flow(ref: RunRef, steps: ReadyStep[], trace?: Context): FlowJob {
    const traced = jobTraceOptions(trace);
    return {
      name: ref.taskType,
      queueName: TASKS_QUEUE,
      data: { taskId: ref.taskId, run: ref.run },
      opts: { jobId: taskJobId(ref.taskId, ref.run), attempts: 5, backoff: { type: 'exponential', delay: 1000 }, ...this.keep(), ...traced },
      children: steps.map((step) => ({
        name: step.stepId,
        queueName: toolQueueName(step.tool),
        data: this.stepData(ref, step),
        opts: { ...this.stepOptions(ref, step), ...traced },
      })),
    };
  }

  /** Creates the run's flow atomically: the root and the steps ready now. */
  async startRun(ref: RunRef, steps: ReadyStep[], trace?: Context): Promise<void> {
    await this.flows.add(this.flow(ref, steps, trace));
  }

  /** Creates several runs' flows in one round trip (each flow is still atomic). */
  async startRuns(runs: { ref: RunRef; steps: ReadyStep[]; trace?: Context }[]): Promise<void> {
    if (runs.length === 1) return this.startRun(runs[0]!.ref, runs[0]!.steps, runs[0]!.trace);
    await this.flows.addBulk(runs.map(({ ref, steps, trace }) => this.flow(ref, steps, trace)));
  }

  /** Adds steps that just became ready as further children of the run's root. */
  async addSteps(ref: RunKey, steps: ReadyStep[]): Promise<void> {
    const parent = { id: taskJobId(ref.taskId, ref.run), queue: `${this.config.QUEUE_PREFIX}:${TASKS_QUEUE}` };
    const byTool = new Map<string, ReadyStep[]>();
    for (const step of steps) byTool.set(step.tool, [...(byTool.get(step.tool) ?? []), step]);
    await Promise.all(
      [...byTool].map(([tool, group]) =>
        this.toolQueue(tool).addBulk(
          group.map((step) => ({
            name: step.stepId,
            data: this.stepData(ref, step),
            opts: { ...this.stepOptions(ref, step), parent },
          })),
        ),
      ),
    );
  }

  /** Schedules the delivery of a finished run's result to its callback_url (once per run). */
  async enqueueCallback(ref: RunKey, maxAttempts: number): Promise<void> {
    await this.callbacks.add(
      'deliver',
      { taskId: ref.taskId, run: ref.run },
      {
        jobId: callbackJobId(ref.taskId, ref.run),
        attempts: maxAttempts,
        // The callback worker computes the delay (callbackRetryDelay): Retry-After counts.
        backoff: { type: BACKOFF_TYPE },
        ...this.keep(),
      },
    );
  }

  /** Removes the run's steps that have not started (cancel, or a failed task). */
  /**
   * A failed task's step jobs that have not run yet (waiting, or delayed by a backoff or a
   * postponement) are removed, so that the run closes now. A parked job is kept: its step ran
   * and its result is still to be written. An active job is left to finish (remove refuses it).
   */
  async dropUnstartedSteps(ref: RunKey): Promise<void> {
    const root = await this.tasks.getJob(taskJobId(ref.taskId, ref.run));
    if (!root) return;
    const { unprocessed = [] } = await root.getDependencies({ unprocessed: { count: 1_000 } });
    const prefix = `${this.config.QUEUE_PREFIX}:`;
    await Promise.all(
      unprocessed.map(async (key) => {
        // A child's key is "<prefix>:<queue>:<job id>"; job ids hold no ":".
        if (!key.startsWith(prefix)) return;
        const cut = key.lastIndexOf(':');
        const queueName = key.slice(prefix.length, cut);
        const queue = this.all().find((candidate) => candidate.name === queueName);
        const job = await queue?.getJob(key.slice(cut + 1));
        if (!job || (job.data as StepJobData).parked) return;
        const state = await job.getState();
        if (state !== 'waiting' && state !== 'delayed' && state !== 'prioritized') return;
        await job.remove().catch(() => undefined); // taken by a worker meanwhile: it finishes or is refused
      }),
    );
  }

  async close(): Promise<void> {
    await Promise.all([this.flows.close(), ...this.all().map((queue) => queue.close())]);
  }
}
