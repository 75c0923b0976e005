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
  /**
   * A one-tool task's run: its one step is its only job, without a root (half the BullMQ work
   * of a flow). The step closes the run itself; the reconciler repairs a job that went missing.
   */
  single?: boolean;
}

/**
 * The producer side of BullMQ: how a task's run maps onto jobs.
 *
 * A workflow's run is a flow. Its root is a job in the `tasks` queue; its children are the run's
 * steps, each in its tool's queue. (A one-tool task's run is its step's job alone: `single`.) Steps whose dependencies are met when the run starts are created with
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
    connection: RedisClient,
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

  /** Creates the run's jobs: a flow (the root and the steps ready now), or a single run's one job. */
  async startRun(ref: RunRef, steps: ReadyStep[], trace?: Context): Promise<void> {
    await this.startRuns([{ ref, steps, trace }]);
  }

  /**
   * Creates several runs' jobs: the flows in one round trip (each flow is still atomic), the
   * single runs' jobs in one round trip per tool queue.
   */
  async startRuns(runs: { ref: RunRef; steps: ReadyStep[]; trace?: Context }[]): Promise<void> {
    const isSingle = ({ ref, steps }: (typeof runs)[number]) => ref.single === true && steps.length === 1;
    const singles = runs.filter(isSingle);
    const flows = runs.filter((run) => !isSingle(run));
    const byTool = new Map<string, { name: string; data: StepJobData; opts: JobsOptions }[]>();
    for (const { ref, steps: [step], trace } of singles) {
      const jobs = byTool.get(step!.tool) ?? [];
      jobs.push({ name: step!.stepId, data: { ...this.stepData(ref, step!), single: true }, opts: { ...this.stepOptions(ref, step!), ...jobTraceOptions(trace) } });
      byTool.set(step!.tool, jobs);
    }
    await Promise.all([
      ...[...byTool].map(([tool, jobs]) => this.toolQueue(tool).addBulk(jobs)),
      flows.length === 1 ? this.flows.add(this.flow(flows[0]!.ref, flows[0]!.steps, flows[0]!.trace)) : undefined,
      flows.length > 1 ? this.flows.addBulk(flows.map(({ ref, steps, trace }) => this.flow(ref, steps, trace))) : undefined,
    ]);
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

  /**
   * The step jobs of a cancelled or failed run that have not run yet (waiting, or delayed by a
   * backoff or a postponement) are removed, so that the run closes now. A parked job is kept: its
   * step ran and its result is still to be written. An active job is left to finish (remove
   * refuses it). `single`: the run is a one-tool task's, whose one job is its step's.
   */
  async dropUnstartedSteps(ref: RunKey & { single?: { tool: string; stepId: string } }): Promise<void> {
    if (ref.single) {
      await this.dropIfUnstarted(await this.toolQueue(ref.single.tool).getJob(stepJobId(ref.taskId, ref.run, ref.single.stepId)));
      return;
    }
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
    await Promise.all([this.flows.close(), ...this.all().map((queue) => queue.close())]);
  }
}
