import type { Context } from '@opentelemetry/api';
import { type FlowJob, FlowProducer, type JobsOptions, Queue } from 'bullmq';
import type { Config } from '../config.js';
import type { ReadyStep } from '../engine/types.js';
import type { Logger } from '../logger.js';
import { bullmqTelemetry, jobTraceOptions } from '../observability/tracing.js';
import {
  BACKOFF_TYPE,
  CALLBACKS_QUEUE,
  type CallbackJobData,
  callbackJobId,
  type StepJobData,
  stepJobId,
  TASKS_QUEUE,
  type TaskJobData,
  taskJobId,
  toolQueueName,
} from './jobs.js';
import type { RedisClient } from './redis.js';
import { Shards, shareOf } from './shards.js';

export interface RunKey {
  taskId: string;
  run: number;
}

export interface RunRef extends RunKey {
  taskType: string;
  /**
   * A one-tool task's run: its one step is its only job, without a root (half the BullMQ work
   * of a flow). The step closes the run itself; the reconciler repairs a job that went missing.
   */
  single?: boolean;
}

/**
 * One shard's queues (see shards.ts): the tasks queue, one queue per tool and the callbacks
 * queue, all under the shard's prefix, and the flow producer that adds its tasks' flows.
 */
export class QueueShard {
  readonly tasks: Queue<TaskJobData>;
  readonly callbacks: Queue<CallbackJobData>;
  readonly flows: FlowProducer;
  private readonly toolQueues = new Map<string, Queue<StepJobData>>();

  constructor(
    readonly index: number,
    readonly prefix: string,
    connection: RedisClient,
    toolNames: Iterable<string>,
  ) {
    // With tracing on, BullMQ's producer spans join the caller's trace and every job carries it on.
    const options = { connection, prefix, ...bullmqTelemetry() };
    this.tasks = new Queue<TaskJobData>(TASKS_QUEUE, options);
    this.callbacks = new Queue<CallbackJobData>(CALLBACKS_QUEUE, options);
    for (const tool of toolNames) this.toolQueues.set(tool, new Queue<StepJobData>(toolQueueName(tool), options));
    this.flows = new FlowProducer(options);
  }

  /** Every queue of the shard. */
  all(): Queue[] {
    return [this.tasks, ...this.toolQueues.values(), this.callbacks] as Queue[];
  }

  toolQueue(tool: string): Queue<StepJobData> {
    const queue = this.toolQueues.get(tool);
    if (!queue) throw new Error(`no queue for tool ${tool}`);
    return queue;
  }

  async close(): Promise<void> {
    await Promise.all([this.flows.close(), ...this.all().map((queue) => queue.close())]);
  }
}

/**
 * The producer side of BullMQ: how a task's run maps onto jobs.
 *
 * A task's jobs all live in its shard (shardOf its id), so that a flow's scripts, which touch
 * the parent's and the children's queues at once, find them in one Redis Cluster slot.
 *
 * A workflow's run is a flow. Its root is a job in the `tasks` queue; its children are the run's
 * steps, each in its tool's queue. (A one-tool task's run is its step's job alone: `single`.) Steps whose dependencies are met when the run starts are created with
 * the flow; every other step is added as a further child of the same root at the moment its
 * last dependency commits its result (PostgreSQL decides which dependency is the last one).
 * Dependents are added before the finishing step is acknowledged, so the root always has a
 * pending child until the last step is done, and then runs to close the task.
 */
export class TaskQueues {
  /** Every shard's queues, by index. */
  readonly shards: QueueShard[];
  private readonly map: Shards;

  constructor(
    connection: RedisClient,
    private readonly config: Pick<Config, 'QUEUE_PREFIX' | 'QUEUE_SHARDS' | 'QUEUE_KEEP_COMPLETED' | 'QUEUE_KEEP_FAILED'>,
    toolNames: Iterable<string>,
    logger: Logger,
  ) {
    const tools = [...toolNames];
    this.map = Shards.of(config);
    this.shards = this.map.prefixes.map((prefix, index) => new QueueShard(index, prefix, connection, tools));
    // Connection errors also fail the calls that meet them; without a listener BullMQ prints
    // every reconnect attempt to stderr.
    const onError = (error: Error) => logger.debug('queue connection error', { error: error.message });
    for (const shard of this.shards) {
      shard.flows.on('error', onError);
      for (const queue of shard.all()) queue.on('error', onError);
    }
  }

  /** A new task's id, in the next shard for its type (see Shards.newTaskId). */
  newTaskId(at: Date, taskType: string): string {
    return this.map.newTaskId(at, taskType);
  }

  /** The shard that holds a task's jobs. */
  shardOf(taskId: string): QueueShard {
    return this.shards[this.map.indexOf(taskId)]!;
  }

  /** Every queue of every shard, for Bull Board and metrics. */
  all(): Queue[] {
    return this.shards.flatMap((shard) => shard.all());
  }

  /** The queue of `tool` in the shard of `taskId`. */
  toolQueue(taskId: string, tool: string): Queue<StepJobData> {
    return this.shardOf(taskId).toolQueue(tool);
  }

  /** Finished jobs kept per queue: the configured number over all shards together. */
  private keep(taskId: string) {
    const { index } = this.shardOf(taskId);
    const shards = this.shards.length;
    return {
      removeOnComplete: { count: shareOf(this.config.QUEUE_KEEP_COMPLETED, index, shards) },
      removeOnFail: { count: shareOf(this.config.QUEUE_KEEP_FAILED, index, shards) },
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
      ...this.keep(ref.taskId),
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
      opts: { jobId: taskJobId(ref.taskId, ref.run), attempts: 5, backoff: { type: 'exponential', delay: 1000 }, ...this.keep(ref.taskId), ...traced },
      children: steps.map((step) => ({
        name: step.stepId,
        queueName: toolQueueName(step.tool),
        data: this.stepData(ref, step),
        opts: { ...this.stepOptions(ref, step), ...traced },
      })),
    };
  }

  /** Creates the run's jobs: a flow (the root and the steps ready now), or a single run's one job. */
  async startRun(ref: RunRef, steps: ReadyStep[], trace?: Context): Promise<void> {
    const [refused] = (await this.startRuns([{ ref, steps, trace }])).values();
    if (refused !== undefined) throw refused;
  }

  /**
   * Creates several runs' jobs: per shard, the flows in one round trip (each flow is still
   * atomic) and the single runs' jobs in one round trip per tool queue. Shards are written apart,
   * so a shard that refuses (its master failing over) fails its own runs only: resolves with the
   * error of each run that may not have been created, by task id.
   */
  async startRuns(runs: { ref: RunRef; steps: ReadyStep[]; trace?: Context }[]): Promise<Map<string, unknown>> {
    const byShard = new Map<QueueShard, typeof runs>();
    for (const run of runs) {
      const shard = this.shardOf(run.ref.taskId);
      byShard.set(shard, [...(byShard.get(shard) ?? []), run]);
    }
    const refused = new Map<string, unknown>();
    await Promise.all(
      [...byShard].map(async ([shard, shardRuns]) => {
        try {
          await this.startShardRuns(shard, shardRuns);
        } catch (error) {
          for (const { ref } of shardRuns) refused.set(ref.taskId, error);
        }
      }),
    );
    return refused;
  }

  private async startShardRuns(shard: QueueShard, runs: { ref: RunRef; steps: ReadyStep[]; trace?: Context }[]): Promise<void> {
    const isSingle = ({ ref, steps }: (typeof runs)[number]) => ref.single === true && steps.length === 1;
    const singles = runs.filter(isSingle);
    const flows = runs.filter((run) => !isSingle(run));
    const byTool = new Map<string, { name: string; data: StepJobData; opts: JobsOptions }[]>();
    for (const {
      ref,
      steps: [step],
      trace,
    } of singles) {
      const jobs = byTool.get(step!.tool) ?? [];
      jobs.push({
        name: step!.stepId,
        data: { ...this.stepData(ref, step!), single: true },
        opts: { ...this.stepOptions(ref, step!), ...jobTraceOptions(trace) },
      });
      byTool.set(step!.tool, jobs);
    }
    await Promise.all([
      ...[...byTool].map(([tool, jobs]) => shard.toolQueue(tool).addBulk(jobs)),
      flows.length === 1 ? shard.flows.add(this.flow(flows[0]!.ref, flows[0]!.steps, flows[0]!.trace)) : undefined,
      flows.length > 1 ? shard.flows.addBulk(flows.map(({ ref, steps, trace }) => this.flow(ref, steps, trace))) : undefined,
    ]);
  }

  /** Adds steps that just became ready as further children of the run's root. */
  async addSteps(ref: RunKey, steps: ReadyStep[]): Promise<void> {
    const shard = this.shardOf(ref.taskId);
    const parent = { id: taskJobId(ref.taskId, ref.run), queue: `${shard.prefix}:${TASKS_QUEUE}` };
    const byTool = new Map<string, ReadyStep[]>();
    for (const step of steps) byTool.set(step.tool, [...(byTool.get(step.tool) ?? []), step]);
    await Promise.all(
      [...byTool].map(([tool, group]) =>
        shard.toolQueue(tool).addBulk(
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
    await this.shardOf(ref.taskId).callbacks.add(
      'deliver',
      { taskId: ref.taskId, run: ref.run },
      {
        jobId: callbackJobId(ref.taskId, ref.run),
        attempts: maxAttempts,
        // The callback worker computes the delay (callbackRetryDelay): Retry-After counts.
        backoff: { type: BACKOFF_TYPE },
        ...this.keep(ref.taskId),
      },
    );
  }

  /**
   * The step jobs of a cancelled or failed run that have not run yet (waiting, or delayed by a
   * backoff or a postponement) are removed, so that the run closes now. A parked job is kept: its
   * step ran and its result is still to be written. An active job is left to finish (remove
   * refuses it). `single`: the run is a one-tool task's, whose one job is its step's.
   */
  async dropUnstartedSteps(ref: RunKey & { single?: { tool: string; stepId: string } }): Promise<void> {
    const shard = this.shardOf(ref.taskId);
    if (ref.single) {
      await this.dropIfUnstarted(await shard.toolQueue(ref.single.tool).getJob(stepJobId(ref.taskId, ref.run, ref.single.stepId)));
      return;
    }
    const root = await shard.tasks.getJob(taskJobId(ref.taskId, ref.run));
    if (!root) return;
    const { unprocessed = [] } = await root.getDependencies({ unprocessed: { count: 1_000 } });
    const prefix = `${shard.prefix}:`;
    await Promise.all(
      unprocessed.map(async (key) => {
        // A child's key is "<prefix>:<queue>:<job id>"; job ids hold no ":".
        if (!key.startsWith(prefix)) return;
        const cut = key.lastIndexOf(':');
        const queueName = key.slice(prefix.length, cut);
        const queue = shard.all().find((candidate) => candidate.name === queueName);
        await this.dropIfUnstarted(await queue?.getJob(key.slice(cut + 1)));
      }),
    );
  }

  private async dropIfUnstarted(job: Awaited<ReturnType<Queue['getJob']>>): Promise<void> {
    if (!job || (job.data as StepJobData).parked) return;
    const state = await job.getState();
    if (state !== 'waiting' && state !== 'delayed' && state !== 'prioritized') return;
    await job.remove().catch(() => undefined); // taken by a worker meanwhile: it finishes or is refused
  }

  async close(): Promise<void> {
    await Promise.all(this.shards.map((shard) => shard.close()));
  }
}
