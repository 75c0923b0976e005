import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import type { Completion, Target } from '../capacity.js';
import { type Child, spawnNode, waitForReadyMessage } from '../processes.js';
import { deleteKeys, type RunContext, type RunningSystem } from './system.js';

type Sample = [tag: string, id: string, created: number, finished: number];

const QUEUE = 'noop';

/** Asks every worker process for the completions it saw since the last time. */
async function collect(workers: Child[]): Promise<Sample[]> {
  const replies = await Promise.all(
    workers.map(
      (worker) =>
        new Promise<Sample[]>((resolve, reject) => {
          const onMessage = (message: { type?: string; samples?: Sample[] }) => {
            if (message?.type !== 'samples') return;
            worker.process.off('message', onMessage);
            resolve(message.samples ?? []);
          };
          worker.process.on('message', onMessage);
          if (!worker.process.send?.({ type: 'collect' })) reject(new Error(`${worker.name} does not answer:\n${worker.tail()}`));
        }),
    ),
  );
  return replies.flat();
}

/**
 * W0's system: N worker processes running raw BullMQ workers at the orchestrator's concurrency;
 * the bench itself is the producer (queue.add, no HTTP, no PostgreSQL). Latency is the job's
 * timestamp (set by queue.add) to its finishedOn.
 */
export async function startRawBullmq(ctx: RunContext): Promise<RunningSystem> {
  const { options } = ctx;
  const prefix = `{bench_${ctx.runId}_raw}`;
  if (options.redisUrl) ctx.releasers.add(`Redis keys ${prefix}`, () => deleteKeys(ctx.redis, prefix));
  const env = { REDIS_URL: ctx.redisUrl, QUEUE_PREFIX: prefix, QUEUE_NAME: QUEUE, CONCURRENCY: String(options.concurrency) };
  const workers = Array.from({ length: options.workers }, (_, index) =>
    spawnNode(`raw-worker-${index + 1}`, 'bench/raw-bullmq-worker.ts', env, { logDir: ctx.logDir, ipc: true }),
  );
  const stopWorkers = ctx.releasers.add('raw BullMQ workers', async () => {
    await Promise.all(workers.map((worker) => worker.stop()));
  });
  await Promise.all(workers.map((worker) => waitForReadyMessage(worker))).catch(async (error: unknown) => {
    await stopWorkers();
    throw error;
  });

  const connection = new Redis(ctx.redisUrl, { maxRetriesPerRequest: null });
  connection.on('error', () => undefined);
  const queue = new Queue(QUEUE, { connection, prefix });
  const closeQueue = ctx.releasers.add('raw BullMQ queue', async () => {
    await queue.close();
    connection.disconnect();
  });

  const seen = new Map<string, Map<string, Sample>>();
  const refresh = async () => {
    for (const sample of await collect(workers)) {
      const byId = seen.get(sample[0]) ?? new Map<string, Sample>();
      byId.set(sample[1], sample);
      seen.set(sample[0], byId);
    }
  };
  const target: Target = {
    async submit(tag) {
      // The orchestrator's retention defaults (QUEUE_KEEP_COMPLETED, QUEUE_KEEP_FAILED), so Redis does the same housekeeping.
      const job = await queue.add('noop', { tag }, { removeOnComplete: { count: 1000 }, removeOnFail: { count: 5000 } });
      return job.id!;
    },
    async unfinished(tag, ids) {
      await refresh();
      const done = seen.get(tag);
      return done ? ids.filter((id) => !done.has(id)) : ids;
    },
    async completions(tag, ids) {
      await refresh();
      const done = seen.get(tag);
      return ids.flatMap((id): Completion[] => {
        const sample = done?.get(id);
        return sample ? [{ id, created: sample[2], finished: sample[3], ok: true }] : [];
      });
    },
  };
  return {
    kind: 'raw-bullmq',
    // The producer is the bench process itself: no API process to charge.
    processes: { api: [], workers: workers.map((worker) => worker.pid) },
    target: () => target,
    async stop() {
      await closeQueue();
      await stopWorkers();
    },
  };
}
