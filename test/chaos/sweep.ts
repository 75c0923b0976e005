import { Queue } from 'bullmq';
import { CALLBACKS_QUEUE, SERVICES_QUEUE, TASKS_QUEUE, TIMERS_QUEUE, toolQueueName } from '../../src/queue/jobs.js';
import { masters } from '../../src/queue/redis.js';
import { SCHEDULES_QUEUE } from '../../src/queue/schedule-queue.js';
import type { Harness } from '../helpers/harness.js';

/**
 * The stuck-state sweep every chaos test ends with. Whatever faults the test injected, once its
 * tasks have ended nothing may be left behind:
 * - BullMQ: no job waiting, active, delayed or prioritized in any queue (it is given time to
 *   settle: a step running when its task ended finishes);
 * - PostgreSQL, then: no task queued or running, no step (no item of a for_each or repeat step)
 *   of a finished task still pending, queued or running;
 * - Redis: no orphaned key of a finished task. Every job hash belongs to a job in one of its
 *   queue's state sets; finished jobs are no more than QUEUE_KEEP_COMPLETED / QUEUE_KEEP_FAILED
 *   per queue; every per-job key (lock, dependencies, processed, ...) has its job; every task event
 *   stream has a TTL (they expire after EVENTS_TTL_S and are not orphans); the one key that is
 *   neither BullMQ's nor a task's is admission control's finished-steps counter (and each registered
 *   service's circuit breaker); of limits per key, nothing but rate windows (no lease, no line, no
 *   task holding one) once the reconciler had a pass to give back what a task that ended while
 *   Redis was away still held.
 */

/** Keys BullMQ keeps once per queue (see QueueKeys in bullmq), not per job. */
const QUEUE_LEVEL = new Set([
  'active',
  'wait',
  'waiting-children',
  'paused',
  'id',
  'delayed',
  'prioritized',
  'stalled-check',
  'completed',
  'failed',
  'stalled',
  'repeat',
  'limiter',
  'meta',
  'events',
  'pc',
  'marker',
  'de',
  'metrics',
]);
/** Keys BullMQ keeps per job, next to the job's hash. */
const PER_JOB = new Set(['lock', 'logs', 'dependencies', 'processed', 'failed', 'unsuccessful']);
const UNFINISHED_STATES = ['waiting', 'active', 'delayed', 'prioritized', 'waiting-children'] as const;

export interface SweepReport {
  /** Finished jobs kept per queue: {queue: [completed, failed]}. */
  kept: Record<string, [number, number]>;
  eventStreams: number;
  keys: number;
}

export interface SweepOptions {
  /** How long BullMQ may take to settle (jobs of ended tasks finishing, stalled jobs coming back). @defaultValue 90000 */
  settleMs?: number;
}

export async function sweep(h: Harness, options: SweepOptions = {}): Promise<SweepReport> {
  const problems: string[] = [];
  const prefix = h.config.QUEUE_PREFIX;

  // BullMQ: wait until nothing is left to run, then look at what is.
  // The runs' roots too: a flow whose root is left in waiting-children is a run BullMQ still thinks is on.
  const names = [TASKS_QUEUE, TIMERS_QUEUE, CALLBACKS_QUEUE, SCHEDULES_QUEUE, SERVICES_QUEUE, ...h.registry.names().map(toolQueueName)];
  const queues = names.map((name) => new Queue(name, { connection: h.redis, prefix }));
  const kept: SweepReport['kept'] = {};
  try {
    const deadline = Date.now() + (options.settleMs ?? 90_000);
    let unfinished: Record<string, Record<string, number>> = {};
    for (;;) {
      unfinished = {};
      for (const queue of queues) {
        const counts = await queue.getJobCounts(...UNFINISHED_STATES);
        const left = Object.fromEntries(Object.entries(counts).filter(([, n]) => n > 0));
        if (Object.keys(left).length > 0) unfinished[queue.name] = left;
      }
      if (Object.keys(unfinished).length === 0 || Date.now() > deadline) break;
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    for (const [queue, counts] of Object.entries(unfinished))
      problems.push(`BullMQ: queue ${queue} still holds ${JSON.stringify(counts)} after the tasks ended`);
  } finally {
    await Promise.all(queues.map((queue) => queue.close()));
  }

  // PostgreSQL, once BullMQ settled: a step that was running when its task ended has finished by now.
  const { rows: active } = await h.db.pool.query<{ id: string; status: string }>(
    `SELECT id::text AS id, status::text AS status FROM tasks WHERE status IN ('queued', 'running') LIMIT 20`,
  );
  for (const task of active) problems.push(`PostgreSQL: task ${task.id} is still ${task.status}`);
  const { rows: dangling } = await h.db.pool.query<{ task_id: string; step_id: string; status: string; task_status: string }>(
    `SELECT s.task_id::text AS task_id, s.step_id, s.status::text AS status, t.status::text AS task_status
       FROM steps s JOIN tasks t ON t.id = s.task_id
      WHERE t.status IN ('completed', 'failed', 'cancelled') AND s.status IN ('pending', 'queued', 'running') LIMIT 20`,
  );
  for (const step of dangling) problems.push(`PostgreSQL: step ${step.step_id} of ${step.task_status} task ${step.task_id} is still ${step.status}`);
  // Nor an item of a map's (a repeat's) step: a sub-workflow map's running item has a child still to end.
  const { rows: items } = await h.db.pool.query<{ task_id: string; step_id: string; item: number; status: string; task_status: string }>(
    `SELECT i.task_id::text AS task_id, i.step_id, i.item, i.status::text AS status, t.status::text AS task_status
       FROM step_items i JOIN tasks t ON t.id = i.task_id AND t.created_at = i.task_created_at
      WHERE t.status IN ('completed', 'failed', 'cancelled') AND i.status IN ('pending', 'queued', 'running') LIMIT 20`,
  );
  for (const item of items)
    problems.push(`PostgreSQL: item ${item.item} of step ${item.step_id} of ${item.task_status} task ${item.task_id} is still ${item.status}`);

  // Limits per key: a task that ended while Redis was away kept its leases (its release failed
  // after its commit); the reconciler gives them back on its next pass (RECONCILE_INTERVAL_MS).
  // Wait for that pass, bounded, before the keys are judged below.
  const gatesDeadline = Date.now() + Math.max(options.settleMs ?? 90_000, 2 * h.config.RECONCILE_INTERVAL_MS + 5_000);
  while ((await leftInGates(h, prefix)).length > 0 && Date.now() < gatesDeadline) await new Promise((resolve) => setTimeout(resolve, 500));

  // Redis keys.
  const keys: string[] = [];
  for (const node of masters(h.redis)) {
    let cursor = '0';
    do {
      const [next, found] = await node.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      keys.push(...found);
      cursor = next;
    } while (cursor !== '0');
  }
  const ttls = new Map<string, number>();
  for (let i = 0; i < keys.length; i += 500) {
    const pipeline = h.redis.pipeline();
    for (const key of keys.slice(i, i + 500)) pipeline.pttl(key);
    const replies = (await pipeline.exec()) ?? [];
    for (const [index, key] of keys.slice(i, i + 500).entries()) ttls.set(key, Number(replies[index]?.[1]));
  }
  const jobHashes = new Map<string, Set<string>>(); // queue -> job ids with a hash
  const perJob: { queue: string; id: string; key: string }[] = [];
  let eventStreams = 0;
  for (const key of keys) {
    const rest = key.slice(prefix.length + 1);
    const [head, ...tail] = rest.split(':');
    const ttl = ttls.get(key)!;
    if (head === 'events') {
      eventStreams += 1;
      // -1: no expiry. (-2: it expired since the scan, as a finished task's stream does.)
      if (ttl === -1) problems.push(`Redis: event stream ${key} has no TTL: it would never expire`);
      continue;
    }
    if (head === 'test') continue; // what the test tools observed
    // Limits per key (src/queue/gates.ts): once every task ended, only rate windows may be left (they expire).
    if (head === '{gates}') {
      if (tail[0] !== 's') problems.push(`Redis: ${key} of limits per key is left after its tasks ended`);
      continue;
    }
    // One counter per deployment, not per task: the drain rate admission control reads.
    if (rest === 'admission:finished-steps') continue;
    // One circuit breaker per registered service, not per task (src/queue/circuits.ts): its state and latest transitions.
    if (head === 'circuit') continue;
    if (!names.includes(head!)) {
      if (ttl === -1) problems.push(`Redis: unknown key ${key} without a TTL`);
      continue;
    }
    const [idOrName, suffix, ...more] = tail;
    if (idOrName === undefined || QUEUE_LEVEL.has(idOrName)) continue;
    if (suffix === undefined) {
      const set = jobHashes.get(head!) ?? new Set<string>();
      set.add(idOrName);
      jobHashes.set(head!, set);
    } else if (PER_JOB.has(suffix) && more.length === 0) {
      perJob.push({ queue: head!, id: idOrName, key });
    } else if (ttl < 0) {
      problems.push(`Redis: unknown key ${key} without a TTL`);
    }
  }

  const keepCompleted = h.config.QUEUE_KEEP_COMPLETED;
  const keepFailed = h.config.QUEUE_KEEP_FAILED;
  for (const queue of names) {
    const hashes = jobHashes.get(queue) ?? new Set<string>();
    const completed = await h.redis.zrange(`${prefix}:${queue}:completed`, 0, -1);
    const failed = await h.redis.zrange(`${prefix}:${queue}:failed`, 0, -1);
    if (completed.length > 0 || failed.length > 0 || hashes.size > 0) kept[queue] = [completed.length, failed.length];
    if (completed.length > keepCompleted)
      problems.push(`Redis: ${queue} keeps ${completed.length} completed jobs, more than QUEUE_KEEP_COMPLETED=${keepCompleted}`);
    if (failed.length > keepFailed) problems.push(`Redis: ${queue} keeps ${failed.length} failed jobs, more than QUEUE_KEEP_FAILED=${keepFailed}`);
    const inSets = new Set([...completed, ...failed]);
    // The keys were scanned before the sets were read: a job removed in between (trimmed past
    // QUEUE_KEEP_COMPLETED, hash and entry at once) looked like an orphan whose hash was already
    // gone when read back (a loaded CI run and 1 of 27 loaded runs of circuit-crash, 2026-11-28).
    // Each candidate is looked at again, alone: only one still there and still unlisted counts.
    const listed = async (id: string) =>
      (await h.redis.zscore(`${prefix}:${queue}:completed`, id)) !== null || (await h.redis.zscore(`${prefix}:${queue}:failed`, id)) !== null;
    for (const id of hashes) {
      if (inSets.has(id)) continue;
      // What the hash holds says which of BullMQ's moves left it (or made it again) outside every set.
      const fields = await h.redis.hgetall(`${prefix}:${queue}:${id}`);
      if (Object.keys(fields).length === 0 || (await listed(id))) continue;
      const shown = Object.fromEntries(Object.entries(fields).map(([field, value]) => [field, value.length > 120 ? `${value.slice(0, 120)}…` : value]));
      problems.push(`Redis: job hash ${prefix}:${queue}:${id} belongs to no finished-job set (orphan): ${JSON.stringify(shown)}`);
    }
    for (const id of inSets) {
      if (hashes.has(id) || (await h.redis.exists(`${prefix}:${queue}:${id}`)) === 1 || !(await listed(id))) continue;
      problems.push(`Redis: ${queue} lists finished job ${id} whose hash is gone`);
    }
  }
  for (const { queue, id, key } of perJob) {
    if (jobHashes.get(queue)?.has(id)) continue;
    // A lock of a job removed while its (killed) holder still had it expires by itself.
    if (key.endsWith(':lock') && (ttls.get(key) ?? -1) > 0) continue;
    problems.push(`Redis: ${key} outlived its job (orphan)`);
  }

  // Quotas per client count a task until its release: the tasks still counted, as PostgreSQL has them, say which path lost one.
  if (problems.some((problem) => problem.includes(`${prefix}:quota:`))) {
    const counted = await h.redis.hgetall(`${prefix}:quota:client-of`);
    const ids = Object.keys(counted).slice(0, 20);
    const { rows } = await h.db.pool.query<{ id: string; status: string; created_at: Date; finished_at: Date | null; task_type: string }>(
      'SELECT id::text AS id, status::text AS status, created_at, finished_at, task_type FROM tasks WHERE id = ANY($1::uuid[])',
      [ids],
    );
    const byId = new Map(rows.map((row) => [row.id, row]));
    for (const id of ids) {
      const task = byId.get(id);
      problems.push(
        `Redis: quota still counts task ${id} (${counted[id]}): ${task ? `${task.task_type}, ${task.status}, created ${task.created_at.toISOString()}, finished ${task.finished_at?.toISOString() ?? '-'}` : 'not in PostgreSQL'}`,
      );
    }
  }

  if (problems.length > 0) {
    throw new Error(`stuck-state sweep found ${problems.length} problem(s):\n  ${problems.slice(0, 40).join('\n  ')}`);
  }
  return { kept, eventStreams, keys: keys.length };
}

/** Keys of limits per key other than rate windows (which expire): leases, lines, tasks holding them. */
async function leftInGates(h: Harness, prefix: string): Promise<string[]> {
  const left: string[] = [];
  for (const node of masters(h.redis)) {
    let cursor = '0';
    do {
      const [next, found] = await node.scan(cursor, 'MATCH', `${prefix}:{gates}:*`, 'COUNT', 1000);
      left.push(...found.filter((key) => !key.startsWith(`${prefix}:{gates}:s:`)));
      cursor = next;
    } while (cursor !== '0');
  }
  return left;
}
