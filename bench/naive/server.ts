/**
 * The naive baseline of the LOOP workload (issue 32): what a team might write in an afternoon
 * instead of using the orchestrator, to serve the same closed loop (POST /assign-task, then
 * GET /result/:id?wait=N until it ends). Express, one BullMQ job per task, PostgreSQL inserts
 * and updates batched naturally (whatever arrived while the previous statement ran goes in the
 * next one), and a result endpoint that re-reads the row every 5 ms. No auth, no workflows, no
 * retries, no history, and an update lost if the worker dies between the job's end and its
 * statement: it is a yardstick, not a product.
 *
 *   NAIVE_ROLE=api|worker node --import tsx bench/naive/server.ts   (DATABASE_URL, REDIS_URL, PORT)
 */
import { randomUUID } from 'node:crypto';
import { Queue, Worker } from 'bullmq';
import express from 'express';
import { Redis } from 'ioredis';
import pg from 'pg';

const role = process.env.NAIVE_ROLE;
const db = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 4 });
const connection = () => new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', { maxRetriesPerRequest: null });
const QUEUE = 'naive';

/** Runs `write` over everything queued while the previous call ran: one statement per batch, none waiting for a timer. */
function naturalBatcher<T>(write: (items: T[]) => Promise<void>): (item: T) => Promise<void> {
  let pending: { item: T; done: (error?: unknown) => void }[] = [];
  let running = false;
  const drain = async () => {
    running = true;
    while (pending.length > 0) {
      const batch = pending;
      pending = [];
      const failure = await write(batch.map((entry) => entry.item)).then(
        () => undefined,
        (error: unknown) => error ?? new Error('the batch failed'),
      );
      for (const entry of batch) entry.done(failure);
    }
    running = false;
  };
  return (item) =>
    new Promise<void>((resolve, reject) => {
      pending.push({ item, done: (error) => (error ? reject(error) : resolve()) });
      if (!running) void drain();
    });
}

if (role === 'api') {
  const queue = new Queue(QUEUE, { connection: connection() });
  const insert = naturalBatcher<{ id: string; params: unknown }>(async (tasks) => {
    await db.query(`INSERT INTO naive_tasks (id, params, status) SELECT id, params, 'queued' FROM unnest($1::uuid[], $2::jsonb[]) AS t(id, params)`, [
      tasks.map((task) => task.id),
      tasks.map((task) => JSON.stringify(task.params ?? {})),
    ]);
    await queue.addBulk(tasks.map((task) => ({ name: 'echo', data: task, opts: { removeOnComplete: true, removeOnFail: true } })));
  });
  const app = express();
  app.use(express.json());
  app.post('/assign-task', async (req, res) => {
    const id = randomUUID();
    await insert({ id, params: req.body?.params });
    res.status(202).json({ task_id: id, status: 'queued' });
  });
  app.get('/result/:id', async (req, res) => {
    const deadline = Date.now() + Math.min(Number(req.query.wait ?? 0), 30) * 1000;
    for (;;) {
      const { rows } = await db.query('SELECT status, result FROM naive_tasks WHERE id = $1', [req.params.id]);
      const row = rows[0];
      if (!row) return void res.status(404).json({ error: { code: 'not_found', message: 'no such task' } });
      if (row.status === 'completed' || Date.now() >= deadline) return void res.json({ task_id: req.params.id, status: row.status, output: row.result });
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  });
  app.get('/ready', (_req, res) => void res.json({ ready: true }));
  app.listen(Number(process.env.PORT), '127.0.0.1');
} else if (role === 'worker') {
  const finish = naturalBatcher<{ id: string; result: unknown }>(async (done) => {
    await db.query(
      `UPDATE naive_tasks t SET status = 'completed', result = u.result, finished_at = now() FROM unnest($1::uuid[], $2::jsonb[]) AS u(id, result) WHERE t.id = u.id`,
      [done.map((task) => task.id), done.map((task) => JSON.stringify(task.result))],
    );
  });
  // The job ends once its row says so: the loop's client is told only after the update.
  new Worker(
    QUEUE,
    async (job) => {
      const result = { message: (job.data.params as { message?: unknown })?.message ?? null };
      await finish({ id: job.data.id as string, result });
      return result;
    },
    { connection: connection(), concurrency: 64 },
  );
} else {
  process.stderr.write('set NAIVE_ROLE to api or worker\n');
  process.exit(2);
}
