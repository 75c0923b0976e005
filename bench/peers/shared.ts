/**
 * What both peers share: the same HTTP contract as W1 (POST /assign-task {task_type: "echo",
 * params} → 202 {task_id}), validated with zod like the orchestrator, and a result row per task
 * with the time the API received the request and the time the worker committed the result, so
 * that latency is computed exactly as for the orchestrator (receipt → commit, read afterwards).
 */
import { randomUUID } from 'node:crypto';
import type { Server } from 'node:http';
import express from 'express';
import { z } from 'zod';

export interface PeerJob {
  task_id: string;
  /** ISO time at which the API received the request. */
  received_at: string;
  params: Record<string, unknown>;
}

export const RESULTS_TABLE = `CREATE TABLE IF NOT EXISTS bench_results (
  task_id uuid PRIMARY KEY,
  received_at timestamptz(3) NOT NULL,
  finished_at timestamptz(3) NOT NULL DEFAULT now(),
  result jsonb NOT NULL
)`;

/** Idempotent: delivery is at least once, a second run of the same job writes nothing. */
export const INSERT_RESULT = `INSERT INTO bench_results (task_id, received_at, result) VALUES ($1, $2, $3) ON CONFLICT (task_id) DO NOTHING`;

export const settings = {
  databaseUrl: process.env.DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/postgres',
  port: Number(process.env.PORT ?? 0),
  concurrency: Number(process.env.CONCURRENCY ?? 10),
  poolSize: Number(process.env.POOL_SIZE ?? 10),
};

const assignTask = z.object({
  task_type: z.literal('echo'),
  params: z.record(z.string(), z.unknown()).default({}),
});

/** The peer's HTTP API; `enqueue` hands the job to the peer's queue. */
export async function serveApi(enqueue: (job: PeerJob) => Promise<void>): Promise<Server> {
  const app = express();
  app.disable('x-powered-by');
  app.use(express.json({ limit: '1mb' }));
  app.get('/ready', (_req, res) => {
    res.json({ ready: true });
  });
  app.post('/assign-task', async (req, res) => {
    const receivedAt = new Date();
    const body = assignTask.safeParse(req.body ?? {});
    if (!body.success) {
      res.status(400).json({ error: { code: 'invalid_request', message: 'invalid body', details: body.error.issues } });
      return;
    }
    const taskId = randomUUID();
    try {
      await enqueue({ task_id: taskId, received_at: receivedAt.toISOString(), params: body.data.params });
    } catch (error) {
      res.status(503).json({ error: { code: 'queue_unavailable', message: error instanceof Error ? error.message : String(error) } });
      return;
    }
    res.status(202).json({ task_id: taskId, status: 'assigned', message: `Task 'echo' successfully assigned`, timestamp: new Date().toISOString() });
  });
  return new Promise((resolve, reject) => {
    const server = app.listen(settings.port, '127.0.0.1', () => resolve(server));
    server.once('error', reject);
  });
}

/** Tells the bench this process is ready, and stops cleanly on SIGTERM/SIGINT or when the bench goes away. */
export function ready(stop: () => Promise<void>): void {
  let stopping = false;
  const onStop = () => {
    if (stopping) return;
    stopping = true;
    stop().then(
      () => process.exit(0),
      (error: Error) => {
        process.stderr.write(`stop failed: ${error.message}\n`);
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', onStop);
  process.on('SIGINT', onStop);
  process.on('disconnect', onStop);
  process.send?.({ type: 'ready' });
}
