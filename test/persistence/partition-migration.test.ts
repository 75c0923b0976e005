import { randomUUID } from 'node:crypto';
import { cp, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createdIn, createdTimes } from '../../src/ledger/task-days.js';
import { loadConfig } from '../../src/lib/config.js';
import { silentLogger } from '../../src/lib/logger.js';
import { uuidv7 } from '../../src/lib/uuid7.js';
import { type Database, dropDatabase, ensureDatabase, openDatabase } from '../../src/persistence/database.js';
import { MIGRATIONS_DIR, migrate } from '../../src/persistence/migrate.js';
import { TaskStore } from '../../src/persistence/task-store.js';
import { createRedis } from '../../src/queue/redis.js';
import { TaskQueues } from '../../src/queue/task-queues.js';
import { Runs } from '../../src/tasks/runs.js';
import { createToolRegistry } from '../../workers/adapters/index.js';
import { databaseUrl, TEST_REDIS_URL } from '../helpers/env.js';
import { uniqueName } from '../helpers/harness.js';
import { storeToolTasks } from '../helpers/stored-tasks.js';

const PARTITIONING = '20261124000000_partition_by_day';
const DAY_MS = 86_400_000;

/** Rows of a table as JSON, in a stable order, to compare before and after. */
async function rows(db: Database, table: string, columns: string): Promise<unknown[]> {
  const result = await db.pool.query(`SELECT ${columns} FROM ${table} ORDER BY 1, 2`);
  return result.rows;
}

describe(`the migration ${PARTITIONING}, on a database with data in it`, () => {
  let url: string;
  let olderMigrations: string;
  let db: Database;
  const now = Date.now();
  const days = [now - 40 * DAY_MS, now - 2 * DAY_MS, now];
  const ids = days.flatMap(() => [randomUUID(), randomUUID(), randomUUID()]);

  beforeAll(async () => {
    url = databaseUrl(uniqueName('orch_part'));
    await ensureDatabase(url);
    // The schema as it was before: every migration up to this one; then this one alone.
    olderMigrations = await mkdtemp(path.join(tmpdir(), 'orch-old-migrations-'));
    for (const name of (await readdir(MIGRATIONS_DIR)).filter((name) => name < PARTITIONING)) {
      await cp(path.join(MIGRATIONS_DIR, name), path.join(olderMigrations, name), { recursive: true });
    }
    await migrate(url, silentLogger(), { migrations: olderMigrations, functions: null });
    await cp(path.join(MIGRATIONS_DIR, PARTITIONING), path.join(olderMigrations, PARTITIONING), { recursive: true });
    db = openDatabase(url, 2, silentLogger());
  });
  afterAll(async () => {
    await db?.close();
    if (url) await dropDatabase(url);
    if (olderMigrations) await rm(olderMigrations, { recursive: true, force: true });
  });

  it('keeps every task, step, dead letter and callback delivery, each in its task day, with its idempotency key, and the service works on them', async () => {
    // Three tasks on each of three days: one with an idempotency key, all with two steps, a dead
    // letter and a callback delivery.
    for (const [index, id] of ids.entries()) {
      const createdAt = new Date(days[Math.floor(index / 3)]! + index);
      await db.pool.query(
        `INSERT INTO tasks (id, task_type, params, status, steps_total, steps_remaining, created_at, owner_key, idempotency_key, request_hash, error)
         VALUES ($1, 'echo', $2, 'failed', 1, 0, $3, 'owner', $4, 'hash', '{"name":"Failed","message":"x"}')`,
        [id, JSON.stringify({ index }), createdAt, index % 3 === 0 ? `key-${index}` : null],
      );
      await db.pool.query(
        `INSERT INTO steps (task_id, step_id, tool, depends_on, dependents, remaining_deps, options, input, status, output)
         VALUES ($1, 'echo', 'echo', '{}', '{}', 0, '{}', $2, 'completed', $2), ($1, 'later', 'echo', '{echo}', '{}', 1, '{}', $2, 'failed', NULL)`,
        [id, JSON.stringify({ index })],
      );
      await db.pool.query(`INSERT INTO dead_letters (id, task_id, step_id, run, tool, error, attempts) VALUES ($1, $2, 'later', 1, 'echo', '{}', 3)`, [
        randomUUID(),
        id,
      ]);
      await db.pool.query(
        `INSERT INTO callback_deliveries (id, task_id, run, attempt, url, event, delivered, duration_ms) VALUES ($1, $2, 1, 1, 'http://x', 'task.failed', true, 5)`,
        [randomUUID(), id],
      );
    }
    const before = {
      tasks: await rows(db, 'tasks', '*'),
      steps: await rows(db, 'steps', '*'),
      deadLetters: await rows(db, 'dead_letters', '*'),
      callbacks: await rows(db, 'callback_deliveries', '*'),
    };

    expect(await migrate(url, silentLogger(), { migrations: olderMigrations, functions: null })).toEqual([PARTITIONING]);

    const without = (list: unknown[]) => list.map((row) => Object.fromEntries(Object.entries(row as object).filter(([name]) => name !== 'task_created_at')));
    expect(await rows(db, 'tasks', '*')).toEqual(before.tasks);
    expect(without(await rows(db, 'steps', '*'))).toEqual(before.steps);
    expect(without(await rows(db, 'dead_letters', '*'))).toEqual(before.deadLetters);
    expect(without(await rows(db, 'callback_deliveries', '*'))).toEqual(before.callbacks);

    // Each row sits in the partition of its task's day, none in a default partition.
    const placed = await db.pool.query<{ table: string; partition: string; day: string }>(
      `SELECT 'tasks' AS table, tableoid::regclass::text AS partition, to_char(created_at AT TIME ZONE 'UTC', 'YYYYMMDD') AS day FROM tasks
       UNION ALL SELECT 'steps', tableoid::regclass::text, to_char(task_created_at AT TIME ZONE 'UTC', 'YYYYMMDD') FROM steps
       UNION ALL SELECT 'dead_letters', tableoid::regclass::text, to_char(task_created_at AT TIME ZONE 'UTC', 'YYYYMMDD') FROM dead_letters
       UNION ALL SELECT 'callback_deliveries', tableoid::regclass::text, to_char(task_created_at AT TIME ZONE 'UTC', 'YYYYMMDD') FROM callback_deliveries`,
    );
    expect(placed.rows).toHaveLength(9 * 5);
    for (const row of placed.rows) expect(row.partition).toBe(`${row.table}_p${row.day}`);
    const mismatched = await db.pool.query(
      `SELECT 1 FROM steps s JOIN tasks t ON t.id = s.task_id WHERE s.task_created_at <> t.created_at
       UNION ALL SELECT 1 FROM dead_letters d JOIN tasks t ON t.id = d.task_id WHERE d.task_created_at <> t.created_at`,
    );
    expect(mismatched.rows).toEqual([]);
    const keys = await db.pool.query(`SELECT owner_key, idempotency_key, task_id::text AS task_id FROM idempotency_keys ORDER BY idempotency_key`);
    expect(keys.rows).toEqual(
      [0, 3, 6]
        .map((index) => ({ owner_key: 'owner', idempotency_key: `key-${index}`, task_id: ids[index] }))
        .sort((a, b) => a.idempotency_key.localeCompare(b.idempotency_key)),
    );

    // Then every later migration (the engine's plans are made for the tasks already stored), and
    // the service on the migrated data: read, replay a key, create, cancel, resume.
    expect(await migrate(url, silentLogger())).toEqual((await readdir(MIGRATIONS_DIR)).filter((name) => /^\d/.test(name) && name > PARTITIONING).sort());
    const store = new TaskStore(db.prisma, db.sql);
    const old = await store.get(ids[4]!);
    expect(old).toMatchObject({ id: ids[4], params: { index: 4 }, status: 'failed' });
    expect(old!.steps.map((step) => step.stepId)).toEqual(['echo', 'later']);
    expect(old!.callbacks).toHaveLength(1);

    const registry = createToolRegistry();
    const replay = uuidv7();
    const fresh = uuidv7();
    const stored = await storeToolTasks(db.sql, registry, [
      { id: replay, params: { fresh: true }, owner: 'owner', idempotencyKey: 'key-3', requestHash: 'hash' },
      { id: fresh, params: { fresh: true }, owner: 'owner', idempotencyKey: 'key-new', requestHash: 'hash' },
    ]);
    expect([...stored]).toEqual([fresh]);
    expect(await store.keyHolders([{ owner: 'owner', key: 'key-3' }])).toEqual([
      { id: ids[3], owner_key: 'owner', idempotency_key: 'key-3', request_hash: 'hash' },
    ]);
    expect(await store.get(fresh)).toMatchObject({ id: fresh, status: 'queued', steps: [{ stepId: 'echo', status: 'queued' }] });

    const config = loadConfig({ QUEUE_PREFIX: `{${uniqueName('part')}}` });
    const redis = createRedis({ ...config, REDIS_URL: TEST_REDIS_URL }, 'producer', 'test');
    const queues = new TaskQueues(redis, config, registry.names(), silentLogger());
    const runs = new Runs({ sql: db.sql, queues, publish: async () => undefined, logger: silentLogger(), config });
    try {
      expect(await runs.cancel(fresh)).toMatchObject({ outcome: 'cancelled' });
      expect(await runs.resume(ids[7]!)).toMatchObject({ outcome: 'resumed', run: 2 });
      expect((await store.ownerAndStatus(ids[7]!))?.status).toBe('queued');
      // The step that had failed is queued again, its job made; the one that completed kept its output.
      const resumed = await store.get(ids[7]!);
      expect(resumed!.steps.map((step) => [step.stepId, step.status])).toEqual([
        ['echo', 'completed'],
        ['later', 'queued'],
      ]);
      expect(await queues.toolQueue(ids[7]!, 'echo').getJob(`${ids[7]}.2.later`)).toBeDefined();
    } finally {
      await queues.close();
      redis.disconnect();
    }
  });

  it('lets a lookup by a UUIDv7 task id read one partition only', async () => {
    const id = uuidv7();
    const explain = await db.pool.query(`EXPLAIN SELECT 1 FROM tasks WHERE id = $1::uuid AND ${createdIn('created_at', '$2')}`, [id, createdTimes([id])]);
    const plan = explain.rows.map((row: Record<string, string>) => row['QUERY PLAN']).join('\n');
    const today = new Date().toISOString().slice(0, 10).replaceAll('-', '');
    expect(plan).toContain(`tasks_p${today}`);
    expect(plan.match(/tasks_(p\d{8}|default)/g)?.filter((name) => name !== `tasks_p${today}`)).toEqual([]);
    // An id from before UUIDv7 ids holds no time: every partition is searched.
    const legacy = await db.pool.query(`EXPLAIN SELECT 1 FROM tasks WHERE id = $1::uuid AND ${createdIn('created_at', '$2')}`, [
      randomUUID(),
      createdTimes([randomUUID()]),
    ]);
    expect(legacy.rows.map((row: Record<string, string>) => row['QUERY PLAN']).join('\n')).toContain('tasks_default');
  });
});
