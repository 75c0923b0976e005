/**
 * W0's worker process: raw BullMQ, a no-op processor, no HTTP, no PostgreSQL. Started by the
 * bench with IPC; it reports each completed job's (tag, id, timestamp, finishedOn) when asked.
 */
import { Worker } from 'bullmq';
import { Redis } from 'ioredis';

const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = process.env.QUEUE_PREFIX ?? '{bench}';
const queueName = process.env.QUEUE_NAME ?? 'noop';
const concurrency = Number(process.env.CONCURRENCY ?? 10);

// The same connection settings and lock options as the orchestrator's workers.
const connection = new Redis(redisUrl, { maxRetriesPerRequest: null });
connection.on('error', () => undefined);

type Sample = [tag: string, id: string, created: number, finished: number];
let buffer: Sample[] = [];

const worker = new Worker(queueName, async () => undefined, { connection, prefix, concurrency, lockDuration: 30_000, maxStalledCount: 3 });
worker.on('completed', (job) => {
  buffer.push([(job.data as { tag: string }).tag, job.id!, job.timestamp, job.finishedOn ?? Date.now()]);
});
worker.on('error', (error) => process.stderr.write(`worker error: ${error.message}\n`));

process.on('message', (message: { type?: string }) => {
  if (message?.type !== 'collect') return;
  const samples = buffer;
  buffer = [];
  process.send?.({ type: 'samples', samples });
});

const stop = async () => {
  await worker.close();
  connection.disconnect();
  process.exit(0);
};
process.on('SIGTERM', () => void stop());
process.on('SIGINT', () => void stop());
process.on('disconnect', () => void stop());

await worker.waitUntilReady();
process.send?.({ type: 'ready' });
