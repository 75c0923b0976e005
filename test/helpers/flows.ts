import { type Job, Queue } from 'bullmq';
import { expect } from 'vitest';
import { rootJobId, TASKS_QUEUE } from '../../src/queue/jobs.js';
import { Shards } from '../../src/queue/shards.js';
import { type Harness, poll } from './harness.js';

/**
 * BullMQ's own view of a workflow run (src/queue/jobs.ts): its root in the tasks queue and the
 * children BullMQ recorded under it. For tests that check what the engine does to the flow.
 */
export class FlowInspector {
  private readonly shards: Shards;
  private readonly queues = new Map<string, Queue>();

  constructor(private readonly h: Harness) {
    this.shards = Shards.of(h.config);
  }

  /** A queue of the task's shard. */
  queue(taskId: string, name: string): Queue {
    const prefix = this.shards.prefixOf(taskId);
    const key = `${prefix}:${name}`;
    let found = this.queues.get(key);
    if (!found) {
      found = new Queue(name, { connection: this.h.redis, prefix });
      this.queues.set(key, found);
    }
    return found;
  }

  root(taskId: string, run = 1): Promise<Job | undefined> {
    return this.queue(taskId, TASKS_QUEUE).getJob(rootJobId(taskId, run)) as Promise<Job | undefined>;
  }

  /** The root of an ended run, once its worker completed it (it may still be closing when the task's end is visible). */
  closedRoot(taskId: string, run = 1): Promise<Job> {
    return poll(
      async () => {
        // The job as read: one read while it was still active has no finishedOn, whatever its state is by now.
        const job = await this.root(taskId, run);
        return job?.finishedOn !== undefined && (await job.getState()) === 'completed' ? job : undefined;
      },
      { label: `the root of run ${run} of ${taskId} to complete` },
    );
  }

  /** Job ids of the root's children BullMQ counts as done (processed, or failed and ignored). */
  async children(root: Job): Promise<string[]> {
    const { processed = {}, ignored = {} } = await root.getDependencies({ processed: { count: 10_000 }, ignored: { count: 10_000 } });
    return [...Object.keys(processed), ...Object.keys(ignored)].map((key) => key.slice(key.lastIndexOf(':') + 1)).sort();
  }

  /** Job ids of the root's children still pending. */
  async pending(root: Job): Promise<string[]> {
    const { unprocessed = [] } = await root.getDependencies({ unprocessed: { count: 10_000 } });
    return unprocessed.map((key) => key.slice(key.lastIndexOf(':') + 1)).sort();
  }

  /** How many times BullMQ completed the job (its queue's event stream). */
  async completions(taskId: string, jobId: string): Promise<number> {
    const events = (await this.h.redis.xrange(`${this.shards.prefixOf(taskId)}:${TASKS_QUEUE}:events`, '-', '+')) as [string, string[]][];
    return events.filter(([, fields]) => fields[1] === 'completed' && fields[3] === jobId).length;
  }

  /**
   * A finished run's flow: its root completed exactly once, after every job in `jobs` (queue name
   * and job id), each of which names the root as its parent and is among its done children.
   */
  async expectClosedFlow(taskId: string, jobs: readonly { queue: string; id: string }[], run = 1): Promise<void> {
    const root = await this.closedRoot(taskId, run);
    expect(await this.completions(taskId, root.id!), `completions of ${root.id}`).toBe(1);
    expect(await this.pending(root)).toEqual([]);
    const done = new Set(await this.children(root));
    for (const { queue, id } of jobs) {
      const job = await this.queue(taskId, queue).getJob(id);
      expect(job, id).toBeDefined();
      expect(job!.parent?.id, `${id}'s parent`).toBe(root.id);
      expect(done.has(id), `${id} is a done child of ${root.id}`).toBe(true);
      const state = await job!.getState();
      expect(state, `${id}'s state`).toMatch(/^(completed|failed)$/);
      expect(root.finishedOn!, `${root.id} finished after ${id}`).toBeGreaterThanOrEqual(job!.finishedOn ?? Number.POSITIVE_INFINITY);
    }
  }

  async close(): Promise<void> {
    await Promise.all([...this.queues.values()].map((queue) => queue.close()));
  }
}
