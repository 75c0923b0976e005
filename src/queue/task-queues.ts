import type { Context } from '@opentelemetry/api';
import { type FlowJob, FlowProducer, type JobsOptions, type ParentOptions, Queue, type QueueOptions } from 'bullmq';
import type { JobRef } from '../engine/state.js';
import type { ReadyStep } from '../engine/types.js';
import type { Config } from '../lib/config.js';
import type { Logger } from '../lib/logger.js';
import { bullmqTelemetry, jobTraceOptions } from '../observability/tracing.js';
import {
  BACKOFF_TYPE,
  CALLBACKS_QUEUE,
  type CallbackJobData,
  callbackJobId,
  type GateTimerData,
  type HoldJobData,
  holdJobId,
  type RootJobData,
  rootJobId,
  SERVICES_QUEUE,
  type StepJobData,
  stepJobId,
  TASKS_QUEUE,
  TIMERS_QUEUE,
  type TimerJobData,
  timerJobId,
  toolQueueName,
} from './jobs.js';
import type { RedisClient } from './redis.js';
import { Shards, shareOf } from './shards.js';

export interface RunKey {
  taskId: string;
  run: number;
}

/**
 * How long a hold waits before it looks again whether its step still waits (workers/runtime/
 * run-roots.ts). A hold whose drop was lost (Redis away at that moment, or its worker killed
 * after the commit) is dropped by the reconciler's next pass, or else by this recheck.
 */
export const HOLD_RECHECK_MS = 10 * 60_000;
/** Ids of delayed timers read at a time when the reconciler looks for holds. */
const HOLDS_PAGE = 1_000;

/** One shard's queues (see shards.ts): the runs' roots, one per tool adapter, one for services' tools, the timers and the callbacks, all under the shard's prefix. */
export class QueueShard {
  readonly tasks: Queue<RootJobData>;
  readonly timers: Queue<TimerJobData | GateTimerData | HoldJobData>;
  readonly callbacks: Queue<CallbackJobData>;
  /** Adds a run's root with its first children in one MULTI (a flow). */
  readonly flows: FlowProducer;
  private readonly toolQueues = new Map<string, Queue<StepJobData>>();
  private readonly options: QueueOptions;

  constructor(
    readonly index: number,
    readonly prefix: string,
    /** The shard's Redis connection (the one its queues use), for reads of its keys. */
    readonly connection: RedisClient,
    toolNames: Iterable<string>,
  ) {
    // With tracing on, BullMQ's producer spans join the caller's trace and every job carries it on.
    const options = { connection, prefix, ...bullmqTelemetry() };
    this.options = options;
    this.tasks = new Queue<RootJobData>(TASKS_QUEUE, options);
    this.timers = new Queue<TimerJobData | GateTimerData | HoldJobData>(TIMERS_QUEUE, options);
    this.callbacks = new Queue<CallbackJobData>(CALLBACKS_QUEUE, options);
    this.flows = new FlowProducer(options);
    for (const name of new Set([...toolNames].map(toolQueueName)).add(SERVICES_QUEUE)) this.toolQueues.set(name, new Queue<StepJobData>(name, options));
  }

  /** Every queue of the shard. */
  all(): Queue[] {
    return [this.tasks, ...this.toolQueues.values(), this.timers, this.callbacks] as Queue[];
  }

  /** Where a run's children point: its root job, in this shard's tasks queue. */
  rootOf(run: RunKey): ParentOptions {
    return { id: rootJobId(run.taskId, run.run), queue: this.tasks.qualifiedName };
  }

  /** A tool's queue; a tool that workers registered after this process started (src/fleet) gets its queue at its first job. */
  toolQueue(tool: string): Queue<StepJobData> {
    const name = toolQueueName(tool);
    let queue = this.toolQueues.get(name);
    if (!queue) {
      queue = new Queue<StepJobData>(name, this.options);
      this.toolQueues.set(name, queue);
    }
    return queue;
  }

  async close(): Promise<void> {
    await Promise.all([...this.all().map((queue) => queue.close()), this.flows.close()]);
  }
}

/** A step's job to add, and how: a one-tool task's step, a first delay, the trace it continues. */
export interface NewJob {
  step: ReadyStep;
  single?: boolean;
  /** The job is a child of its run's root (a workflow's run is a flow; a one-tool task is not). */
  flow?: boolean;
  /** Its failure does not fail the task (on_failure continue): see StepJobData.continues. */
  continues?: boolean;
  /** The trace the job continues, when it is added outside it (a batch). */
  trace?: Context;
}

/** A durable sleep's wake-up, or a wait's timeout: a delayed job in the timers queue. */
export interface NewTimer {
  taskId: string;
  run: number;
  stepId: string;
  at: Date;
}

/** A step (or map item) that waits with no job of its own: its run's root gets a hold in its place. */
export interface HoldRef {
  taskId: string;
  run: number;
  stepId: string;
  item?: number;
}

/**
 * A workflow run to start as a flow: its root, with the children its first decision makes (jobs,
 * timers, holds). A sub-workflow's run names its parent's: its root is a child of that root.
 */
export interface NewRun {
  taskId: string;
  run: number;
  taskType: string;
  jobs: readonly NewJob[];
  timers: readonly NewTimer[];
  holds: readonly HoldRef[];
  parent?: RunKey;
  trace?: Context;
}

/** A child's add that BullMQ refused because its run's root is gone (Redis lost it). */
export class MissingRootError extends Error {
  override name = 'MissingRootError';
  constructor(readonly runs: RunKey[]) {
    super(`the root job of ${runs.length === 1 ? `run ${runs[0]!.run} of task ${runs[0]!.taskId}` : `${runs.length} runs`} is gone`);
  }
}

/** The states of BullMQ jobs a queue's depth is counted in (Queue.getJobCounts). */
export const QUEUE_STATES = ['wait', 'prioritized', 'active', 'delayed', 'waiting-children', 'failed', 'completed'] as const;
export type QueueState = (typeof QUEUE_STATES)[number];

/**
 * The producer side of BullMQ: how a task's run maps onto jobs (src/queue/jobs.ts). Every step
 * (and map item) is a job of its own in its tool's queue, made when the engine decides the step
 * is ready; a sleep's wake-up is a delayed job in the timers queue; a workflow's run is a flow,
 * whose root (TASKS_QUEUE) has those jobs as children. A task's jobs all live in its shard
 * (shardOf its id), and a sub-workflow's child task in its parent's, so that a flow's keys share
 * one hash slot while a Redis Cluster spreads tasks over its masters.
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
    for (const shard of this.shards) for (const queue of shard.all()) queue.on('error', onError);
  }

  /** A new task's id, in the next shard for its type (see Shards.newTaskId); a sub-workflow's child in its parent's shard, so that its root can be a child of its parent's root. */
  newTaskId(at: Date, taskType: string, parentTaskId?: string): string {
    return this.map.newTaskId(at, taskType, parentTaskId === undefined ? undefined : this.map.indexOf(parentTaskId));
  }

  /** The shard that holds a task's jobs. */
  shardOf(taskId: string): QueueShard {
    return this.shards[this.map.indexOf(taskId)]!;
  }

  /** Every queue of every shard, for Bull Board and metrics. */
  all(): Queue[] {
    return this.shards.flatMap((shard) => shard.all());
  }

  /**
   * How many jobs each queue holds in each state, summed over the shards (a queue's name is the
   * same in every shard): for the queue-depth metrics and GET /stats/queues.
   */
  async depths(): Promise<Map<string, Record<QueueState, number>>> {
    const counted = await Promise.all(this.all().map(async (queue) => ({ name: queue.name, counts: await queue.getJobCounts(...QUEUE_STATES) })));
    const totals = new Map<string, Record<QueueState, number>>();
    for (const { name, counts } of counted) {
      const total = totals.get(name) ?? (Object.fromEntries(QUEUE_STATES.map((state) => [state, 0])) as Record<QueueState, number>);
      for (const state of QUEUE_STATES) total[state] += counts[state] ?? 0;
      totals.set(name, total);
    }
    return totals;
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

  /** A child's options in its run's flow: its root, and BullMQ told to let the root go on whatever the child's fate (the engine decides what a failure means). */
  private child(run: RunKey): Pick<JobsOptions, 'parent' | 'ignoreDependencyOnFailure'> {
    return { parent: this.shardOf(run.taskId).rootOf(run), ignoreDependencyOnFailure: true };
  }

  private job({ step, single, flow, continues, trace }: NewJob): { name: string; data: StepJobData; opts: JobsOptions } {
    return {
      name: step.item === undefined ? step.stepId : `${step.stepId}[${step.item}]`,
      data: {
        taskId: step.taskId,
        run: step.run,
        stepId: step.stepId,
        ...(step.item !== undefined ? { item: step.item } : {}),
        tool: step.tool,
        input: step.input,
        retry: step.retry,
        timeoutMs: step.timeoutMs,
        dependencies: step.dependencies,
        ...(single ? { single: true as const } : {}),
        ...(continues ? { continues: true as const } : {}),
        ...(step.claimed ? { claimed: true as const } : {}),
        ...(step.limited ? { limited: true as const } : {}),
        ...(step.owner ? { owner: step.owner } : {}),
      },
      opts: {
        jobId: stepJobId(step.taskId, step.run, step.stepId, step.item),
        attempts: step.retry.attempts,
        backoff: { type: BACKOFF_TYPE },
        ...(step.priority ? { priority: step.priority } : {}),
        ...(step.delayMs ? { delay: step.delayMs } : {}),
        ...this.keep(step.taskId),
        ...(flow ? this.child(step) : {}),
        ...jobTraceOptions(trace),
      },
    };
  }

  /**
   * Adds steps' jobs: per shard and tool, one round trip. Shards are written apart, so a shard
   * that refuses (its master failing over) fails its own jobs only: resolves with the error of
   * each task some of whose jobs may not have been added, by task id.
   */
  async addJobs(jobs: readonly NewJob[]): Promise<Map<string, unknown>> {
    const byShard = new Map<QueueShard, Map<string, NewJob[]>>();
    for (const job of jobs) {
      const shard = this.shardOf(job.step.taskId);
      const byTool = byShard.get(shard) ?? new Map<string, NewJob[]>();
      byTool.set(job.step.tool, [...(byTool.get(job.step.tool) ?? []), job]);
      byShard.set(shard, byTool);
    }
    const refused = new Map<string, unknown>();
    await Promise.all(
      [...byShard].map(async ([shard, byTool]) => {
        try {
          const added = await Promise.all([...byTool].map(([tool, group]) => this.addToQueue(shard.toolQueue(tool), group)));
          // BullMQ answers a child whose parent is gone with -5 in place of its id, and adds nothing.
          const orphans = [...byTool.values()].flat().filter((_, index) => typeof added.flat()[index]?.id !== 'string');
          if (orphans.length > 0) {
            const runs = new Map(orphans.map(({ step }) => [rootJobId(step.taskId, step.run), { taskId: step.taskId, run: step.run }]));
            const error = new MissingRootError([...runs.values()]);
            for (const { step } of orphans) refused.set(step.taskId, error);
          }
        } catch (error) {
          for (const group of byTool.values()) for (const job of group) refused.set(job.step.taskId, error);
        }
      }),
    );
    return refused;
  }

  /**
   * One job is added alone: addBulk wraps even one in MULTI/EXEC, which took 0.64 ms against
   * add's 0.44 (a workflow's level adds one job). add throws where addBulk answers -5 for a
   * child whose parent is gone: both come back as a job without an id.
   */
  private async addToQueue(queue: Queue, group: readonly NewJob[]): Promise<{ id?: string | undefined }[]> {
    if (group.length !== 1) return queue.addBulk(group.map((job) => this.job(job)));
    const { name, data, opts } = this.job(group[0]!);
    try {
      return [await queue.add(name, data, opts)];
    } catch (error) {
      if (/Missing key for parent job/.test((error as Error).message)) return [{}];
      throw error;
    }
  }

  /**
   * Starts workflow runs as flows: each run's root with its first children, in one MULTI per
   * shard (atomic: a shard that refuses adds nothing of its runs). Resolves with the error of each
   * task whose run was not added, by task id. A sub-workflow's run (`parent`) is added on its own,
   * so that a parent's root that is gone refuses that run alone.
   */
  async addRuns(runs: readonly NewRun[]): Promise<Map<string, unknown>> {
    const refused = new Map<string, unknown>();
    const byShard = new Map<QueueShard, NewRun[]>();
    const attached: NewRun[] = [];
    for (const run of runs) {
      if (run.parent) attached.push(run);
      else byShard.set(this.shardOf(run.taskId), [...(byShard.get(this.shardOf(run.taskId)) ?? []), run]);
    }
    await Promise.all([
      ...[...byShard].map(async ([shard, group]) => {
        try {
          await shard.flows.addBulk(group.map((run) => this.flow(run)));
        } catch (error) {
          for (const run of group) refused.set(run.taskId, error);
        }
      }),
      ...attached.map(async (run) => {
        try {
          await this.shardOf(run.taskId).flows.add(this.flow(run));
        } catch (error) {
          refused.set(run.taskId, /Missing key for parent job/.test((error as Error).message) ? new MissingRootError([run.parent!]) : error);
        }
      }),
    ]);
    return refused;
  }

  private flow(run: NewRun): FlowJob {
    // FlowProducer links the children to the root itself.
    const inTree = <T extends { opts: JobsOptions }>(job: T, queueName: string) => ({
      ...job,
      queueName,
      opts: { ...job.opts, ignoreDependencyOnFailure: true },
    });
    return {
      name: run.taskType,
      queueName: TASKS_QUEUE,
      data: { taskId: run.taskId, run: run.run },
      opts: {
        jobId: rootJobId(run.taskId, run.run),
        ...this.keep(run.taskId),
        ...(run.parent ? this.child(run.parent) : {}),
        ...jobTraceOptions(run.trace),
      },
      children: [
        ...run.jobs.map((job) => inTree(this.job({ ...job, flow: false }), toolQueueName(job.step.tool))),
        ...run.timers.map((timer) => inTree(this.timer(timer), TIMERS_QUEUE)),
        ...run.holds.map((hold) => inTree(this.hold(hold), TIMERS_QUEUE)),
      ],
    };
  }

  /**
   * Tells a run's root that the run ended (its progress), so that its processor closes it
   * without asking PostgreSQL. A root that is gone is no matter: a run that ended needs none.
   */
  async markEnded(taskId: string, run: number, status: string): Promise<void> {
    await this.shardOf(taskId)
      .tasks.updateJobProgress(rootJobId(taskId, run), { ended: status })
      .catch(() => undefined);
  }

  /**
   * Makes again the root of runs whose root is gone (Redis lost it): it waits in `wait`, and its
   * processor (workers/runtime/run-roots.ts) makes the run's children again and waits for them.
   */
  async remakeRoots(runs: readonly RunKey[]): Promise<void> {
    await Promise.all(runs.map((run) => this.shardOf(run.taskId).tasks.add('run', run, { jobId: rootJobId(run.taskId, run.run), ...this.keep(run.taskId) })));
  }

  /** Adds the steps' jobs, or throws the first refusal. */
  async addSteps(steps: readonly ReadyStep[]): Promise<void> {
    const [refused] = (await this.addJobs(steps.map((step) => ({ step })))).values();
    if (refused !== undefined) throw refused;
  }

  private timer(timer: NewTimer, flow = false): { name: string; data: TimerJobData; opts: JobsOptions } {
    return {
      // Named after its step: Bull Board's flow view shows the name.
      name: `${timer.stepId} (timer)`,
      data: { taskId: timer.taskId, run: timer.run, stepId: timer.stepId },
      opts: {
        jobId: timerJobId(timer.taskId, timer.run, timer.stepId),
        delay: Math.max(0, timer.at.getTime() - Date.now()),
        // A wake-up that could not report (PostgreSQL away) is put back by postpone; these are for Redis hiccups.
        attempts: 5,
        backoff: { type: 'exponential', delay: 1_000 },
        ...this.keep(timer.taskId),
        ...(flow ? this.child(timer) : {}),
      },
    };
  }

  /** Adds sleeping steps' wake-ups (and waits' timeouts), each a job delayed until its time; `flow`: each a child of its run's root. */
  async addTimers(timers: readonly NewTimer[], flow: (taskId: string) => boolean = () => false): Promise<void> {
    await this.addToTimers(timers.map((timer) => this.timer(timer, flow(timer.taskId))));
  }

  private hold(hold: HoldRef, flow = false): { name: string; data: HoldJobData; opts: JobsOptions } {
    return {
      name: `${hold.item === undefined ? hold.stepId : `${hold.stepId}[${hold.item}]`} (hold)`,
      data: { taskId: hold.taskId, run: hold.run, stepId: hold.stepId, ...(hold.item !== undefined ? { item: hold.item } : {}), hold: true },
      opts: {
        jobId: holdJobId(hold.taskId, hold.run, hold.stepId, hold.item),
        delay: HOLD_RECHECK_MS,
        ...this.keep(hold.taskId),
        ...(flow ? this.child(hold) : {}),
      },
    };
  }

  /** Adds holds (src/queue/jobs.ts): each a long-delayed child of its run's root, in the place of a step that waits with no job. */
  async addHolds(holds: readonly HoldRef[]): Promise<void> {
    await this.addToTimers(holds.map((hold) => this.hold(hold, true)));
  }

  /** Removes holds whose steps no longer wait (one that is being looked at, active, ends on its own). */
  async dropHolds(holds: readonly HoldRef[]): Promise<void> {
    await Promise.all(holds.map((hold) => this.shardOf(hold.taskId).timers.remove(holdJobId(hold.taskId, hold.run, hold.stepId, hold.item))));
  }

  /**
   * The holds waiting in Redis that were made before `before` (epoch ms), reading the delayed
   * timers' ids a page at a time: the reconciler drops those whose steps no longer wait (Runs.standing).
   */
  async holdsMadeBefore(before: number): Promise<HoldRef[]> {
    const found: HoldRef[] = [];
    for (const shard of this.shards) {
      for (let start = 0; ; start += HOLDS_PAGE) {
        // Ids first: only holds (their ids end in `.hold`, holdJobId) are read further, not the
        // sleeps' timers beside them, of which there may be many more.
        const ids = await shard.timers.getRanges(['delayed'], start, start + HOLDS_PAGE - 1, true);
        const jobs = await Promise.all(ids.filter((id) => id.endsWith('.hold')).map((id) => shard.timers.getJob(id)));
        for (const job of jobs)
          if (job && job.timestamp < before && 'hold' in job.data) {
            const { taskId, run, stepId, item } = job.data as HoldJobData;
            found.push({ taskId, run, stepId, ...(item !== undefined ? { item } : {}) });
          }
        if (ids.length < HOLDS_PAGE) break;
      }
    }
    return found;
  }

  /** Jobs of the timers queue, a bulk per shard; a child whose root is gone rejects with MissingRootError. */
  private async addToTimers(jobs: { name: string; data: TimerJobData | HoldJobData; opts: JobsOptions }[]): Promise<void> {
    const byShard = new Map<QueueShard, typeof jobs>();
    for (const job of jobs) byShard.set(this.shardOf(job.data.taskId), [...(byShard.get(this.shardOf(job.data.taskId)) ?? []), job]);
    await Promise.all(
      [...byShard].map(async ([shard, group]) => {
        const added = await shard.timers.addBulk(group);
        const orphans = group.filter((_, index) => typeof added[index]?.id !== 'string');
        if (orphans.length > 0) throw new MissingRootError(orphans.map(({ data }) => ({ taskId: data.taskId, run: data.run })));
      }),
    );
  }

  /**
   * Wake-ups of rate gates whose lines wait for their window to move on (src/queue/gates.ts):
   * one timer per gate and second, in the first shard (gates are not a task's).
   */
  async addGateWakes(wakes: readonly { gate: string; at: number }[]): Promise<void> {
    const now = Date.now();
    const timers = this.shards[0]!.timers;
    await Promise.all(
      wakes.map((wake) => {
        const second = Math.ceil(wake.at / 1000);
        return timers.add(
          'gate',
          { gate: wake.gate },
          {
            jobId: `gate.${wake.gate}.${second}`,
            delay: Math.max(0, second * 1000 - now),
            attempts: 5,
            backoff: { type: 'exponential', delay: 1_000 },
            removeOnComplete: true,
            removeOnFail: 100,
          },
        );
      }),
    );
  }

  /** Schedules the delivery of a finished run's result to its callback_url (once per run). */
  /** The callback of a task's end, or (`waitingStep`) of a step that started waiting for someone. */
  async enqueueCallback(ref: RunKey & { waitingStep?: string }, maxAttempts: number): Promise<void> {
    await this.shardOf(ref.taskId).callbacks.add(
      'deliver',
      { taskId: ref.taskId, run: ref.run, ...(ref.waitingStep !== undefined ? { waitingStep: ref.waitingStep } : {}) },
      {
        jobId: callbackJobId(ref.taskId, ref.run, ref.waitingStep),
        attempts: maxAttempts,
        // The callback worker computes the delay (callbackRetryDelay): Retry-After counts.
        backoff: { type: BACKOFF_TYPE },
        ...this.keep(ref.taskId),
      },
    );
  }

  /**
   * Removes jobs that have not run yet (waiting, or delayed by a backoff, a postponement or a
   * sleep) of steps that will not run now: skipped or cancelled. A parked job is kept: its step
   * ran and its result is still to be written. An active job is left to finish (remove refuses
   * it): its claim or its result is refused. Returns the jobs removed.
   *
   * The jobs of queued steps and items (a cancelled map's, up to MAP_MAX_ITEMS of them) go in
   * bulk, a few round trips per queue whatever their number: see dropUnstarted. A running step's
   * job and a sleep's timer are looked at one by one (dropOne).
   */
  async dropJobs(jobs: readonly JobRef[]): Promise<JobRef[]> {
    const dropped = new Set<JobRef>();
    const queued = new Map<Queue<StepJobData>, { shard: QueueShard; refs: JobRef[] }>();
    const others: JobRef[] = [];
    for (const ref of jobs) {
      if (!ref.tool || ref.running) {
        others.push(ref);
        continue;
      }
      const shard = this.shardOf(ref.taskId);
      const queue = shard.toolQueue(ref.tool);
      const group = queued.get(queue) ?? { shard, refs: [] };
      group.refs.push(ref);
      queued.set(queue, group);
    }
    await Promise.all([
      ...[...queued].map(([queue, { shard, refs }]) => this.dropUnstarted(shard, queue, refs, dropped)),
      ...others.map(async (ref) => {
        if (await this.dropOne(ref)) dropped.add(ref);
      }),
    ]);
    return jobs.filter((ref) => dropped.has(ref));
  }

  /**
   * The jobs of one queue, in bulk: one pipeline reads whether each exists and was ever
   * delivered (BullMQ's `timestamp` and `ats`, attempts started, which only grows), then those
   * never delivered are removed together. A job that was never delivered cannot be parked (only a
   * delivery parks its result), so nothing more need be read of it; `remove` itself refuses a job
   * a worker took meanwhile (it is locked). A job delivered before (its claim postponed, its
   * result parked) is looked at whole (dropOne).
   */
  private async dropUnstarted(shard: QueueShard, queue: Queue<StepJobData>, refs: readonly JobRef[], dropped: Set<JobRef>): Promise<void> {
    const ids = refs.map((ref) => stepJobId(ref.taskId, ref.run, ref.stepId, ref.item));
    // One slot on a cluster: a shard's keys share its hash tag.
    const pipeline = shard.connection.pipeline();
    for (const id of ids) pipeline.hmget(queue.toKey(id), 'timestamp', 'ats');
    const replies = (await pipeline.exec()) ?? [];
    const failed = replies.find(([error]) => error);
    if (failed) throw failed[0];
    await Promise.all(
      replies.map(async ([, value], index) => {
        const [timestamp, started] = value as [string | null, string | null];
        const ref = refs[index]!;
        if (timestamp === null) return; // gone already
        // remove answers 1 (removed) or 0: locked, a worker took it meanwhile (it finishes, or its claim is refused).
        const removed =
          started !== null && Number(started) > 0
            ? await this.dropOne(ref)
            : await queue.remove(ids[index]!, { removeChildren: false }).then(
                (code) => code === 1,
                () => false,
              );
        if (removed) dropped.add(ref);
      }),
    );
  }

  /** One job, looked at whole: removed only if it waits (not active, not finished) and is not parked. */
  private async dropOne(ref: JobRef): Promise<boolean> {
    const shard = this.shardOf(ref.taskId);
    const job = ref.tool
      ? await shard.toolQueue(ref.tool).getJob(stepJobId(ref.taskId, ref.run, ref.stepId, ref.item))
      : await shard.timers.getJob(timerJobId(ref.taskId, ref.run, ref.stepId));
    if (!job || (job.data as StepJobData).parked) return false;
    const state = await job.getState();
    if (state !== 'waiting' && state !== 'delayed' && state !== 'prioritized') return false;
    // Taken by a worker meanwhile: it finishes, or its claim is refused.
    return job.remove().then(
      () => true,
      () => false,
    );
  }

  async close(): Promise<void> {
    await Promise.all(this.shards.map((shard) => shard.close()));
  }
}
