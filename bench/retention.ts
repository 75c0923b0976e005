/**
 * `npm run bench:retention`: what retention by partition costs, in a throwaway database.
 *
 * 1. Fills one day's partitions with N tasks and a step each (INSERT ... SELECT generate_series),
 *    then times dropping that day (drop_day_partitions, what the retention job runs).
 * 2. Times the service's create statement (src/ledger/create-tasks.ts), in batches, into the
 *    partitioned tables and into unpartitioned copies of them (same columns and indexes, in a
 *    schema of their own), alternating rounds so that neither gets a warmer cache.
 *
 * Options: --tasks N (1000000), --batches N per round (200), --batch-size N (100), --rounds N (3),
 * DATABASE_URL (postgresql://postgres@127.0.0.1:5432/postgres: only the server is used).
 */
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { freshState, start } from '../src/engine/decide.js';
import { planToolTask } from '../src/engine/plan.js';
import { createTasks } from '../src/ledger/create-tasks.js';
import { poolSql } from '../src/ledger/sql.js';
import { DEFAULT_LIMITS } from '../src/lib/limits.js';
import { silentLogger } from '../src/lib/logger.js';
import { uuidv7, uuidv7Time } from '../src/lib/uuid7.js';
import { dropDatabase, ensureDatabase, withDatabase } from '../src/persistence/database.js';
import { migrate } from '../src/persistence/migrate.js';
import echo from '../workers/adapters/echo.js';

const { values } = parseArgs({
  options: {
    tasks: { type: 'string', default: '1000000' },
    batches: { type: 'string', default: '200' },
    'batch-size': { type: 'string', default: '100' },
    rounds: { type: 'string', default: '3' },
  },
});
const TASKS = Number(values.tasks);
const BATCHES = Number(values.batches);
const BATCH_SIZE = Number(values['batch-size']);
const ROUNDS = Number(values.rounds);
const DAY = '2030-01-01';

const server = process.env.DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/postgres';
const url = withDatabase(server, `orch_bench_retention_${randomBytes(4).toString('hex')}`);
const log = (line: string) => process.stderr.write(`${line}\n`);
const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const start = performance.now();
  const result = await fn();
  return [result, performance.now() - start];
}

const median = (list: number[]) => [...list].sort((a, b) => a - b)[Math.floor(list.length / 2)]!;

await ensureDatabase(url);
const pools: pg.Pool[] = [];
try {
  await migrate(url, silentLogger());
  const admin = new pg.Pool({ connectionString: url, max: 1 });
  pools.push(admin);

  // 1. A day of TASKS tasks, dropped.
  await admin.query(`SELECT create_day_partitions($1::date)`, [DAY]);
  const [, fillMs] = await timed(async () => {
    await admin.query(
      `INSERT INTO tasks (id, task_type, params, status, result, steps_total, created_at, finished_at)
       SELECT gen_random_uuid(), 'echo', jsonb_build_object('n', n), 'completed', jsonb_build_object('n', n), 1,
              $2::date::timestamptz + n * interval '80 ms', $2::date::timestamptz + n * interval '80 ms'
         FROM generate_series(1, $1) AS n`,
      [TASKS, DAY],
    );
    await admin.query(
      `INSERT INTO steps (task_id, task_created_at, step_id, tool, depends_on, input, output, status, attempts)
       SELECT id, created_at, 'echo', 'echo', '{}', params, result, 'completed', 1 FROM tasks WHERE created_at >= $1::date AND created_at < $1::date + 1`,
      [DAY],
    );
  });
  const [
    {
      rows: [size],
    },
  ] = await timed(() =>
    admin.query(
      `SELECT pg_size_pretty(pg_total_relation_size('tasks_p${DAY.replaceAll('-', '')}') + pg_total_relation_size('steps_p${DAY.replaceAll('-', '')}')) AS size`,
    ),
  );
  log(`filled ${TASKS.toLocaleString('en')} tasks + steps in ${seconds(fillMs)} (${size.size})`);
  await admin.query('CHECKPOINT');
  const [, dropMs] = await timed(() => admin.query(`SELECT drop_day_partitions($1::date)`, [DAY]));
  log(`dropped that day in ${dropMs.toFixed(1)} ms`);

  // 2. The create statement, partitioned against unpartitioned copies of the same tables.
  for (const table of ['tasks', 'steps', 'step_items', 'idempotency_keys']) {
    await admin.query(`CREATE SCHEMA IF NOT EXISTS flat`);
    await admin.query(`CREATE TABLE flat.${table} (LIKE public.${table} INCLUDING ALL)`);
  }
  const partitioned = new pg.Pool({ connectionString: url, max: 1 });
  const flat = new pg.Pool({ connectionString: url, max: 1, options: '-c search_path=flat,public' });
  pools.push(partitioned, flat);
  // Dropping the database at the end ends their connections from the server side.
  for (const pool of pools) pool.on('error', () => undefined);
  const plan = planToolTask(echo, { hello: 'world' });
  /** A new one-tool task as the API would store it: the engine decides its start. */
  const newTask = (id: string, idempotencyKey?: string) => {
    const meta = { id, createdAt: uuidv7Time(id)!, taskType: 'echo', params: { hello: 'world' }, callback: false, owner: '', depth: 0, parent: null };
    return {
      task: {
        id: meta.id,
        createdAt: meta.createdAt,
        taskType: meta.taskType,
        params: meta.params,
        owner: meta.owner,
        requestHash: 'h',
        priority: 0,
        delayMs: 0,
        ...(idempotencyKey ? { idempotencyKey } : {}),
      },
      plan,
      decision: start(freshState(meta, plan), { limits: DEFAULT_LIMITS, now: new Date(), newTaskId: () => '' }),
    };
  };
  let keys = 0;
  const round = async (pool: pg.Pool) => {
    const sql = poolSql(pool);
    const batchMs: number[] = [];
    for (let batch = 0; batch < BATCHES; batch += 1) {
      // Every other task has an idempotency key, as a frontend's retries would.
      const entries = Array.from({ length: BATCH_SIZE }, (_, index) => newTask(uuidv7(), index % 2 === 0 ? `k${keys + index}` : undefined));
      keys += BATCH_SIZE;
      const [, ms] = await timed(() => createTasks(sql, entries));
      batchMs.push(ms);
    }
    return batchMs;
  };
  const results = { partitioned: [] as number[], flat: [] as number[] };
  await round(partitioned); // warm-up
  await round(flat);
  for (let n = 0; n < ROUNDS; n += 1) {
    const [first, second] = n % 2 === 0 ? (['partitioned', 'flat'] as const) : (['flat', 'partitioned'] as const);
    results[first].push(...(await round(first === 'partitioned' ? partitioned : flat)));
    results[second].push(...(await round(second === 'partitioned' ? partitioned : flat)));
  }
  const line = (name: keyof typeof results) => {
    const ms = median(results[name]);
    return `${name.padEnd(12)} median ${ms.toFixed(2)} ms per batch of ${BATCH_SIZE} (${Math.round((BATCH_SIZE * 1000) / ms).toLocaleString('en')} tasks/s on one connection)`;
  };
  log(`create statement, ${ROUNDS} rounds of ${BATCHES} batches each:`);
  log(`  ${line('partitioned')}`);
  log(`  ${line('flat')}`);
  log(`  partitioned/unpartitioned: ${(median(results.partitioned) / median(results.flat)).toFixed(2)}x`);
} finally {
  await Promise.all(pools.map((pool) => pool.end()));
  await dropDatabase(url);
}
