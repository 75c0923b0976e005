/**
 * `npm run bench:history`: what the durable history (docs/workflows.md "History") adds to the ledger's
 * statements of a one-tool task, in a throwaway database, with nothing else of the service
 * running: a W1 task's two statements, ledger_create and ledger_finish_singles (its step ran
 * unclaimed, the fast path), each over batches of one-tool tasks, with the history and without
 * it (TASK_HISTORY=off), alternating batches so that neither gets a warmer cache. Reports the
 * median time of a batch, per task, and PostgreSQL's CPU over each half (the server's backend for
 * the one connection used, from pg_stat_activity's pid and /proc when the server is local).
 *
 * Options: --batches N per mode (100), --batch-size N (100).
 * DATABASE_URL (postgresql://postgres@127.0.0.1:5432/postgres: only the server is used).
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { freshState, start } from '../src/engine/decide.js';
import { planToolTask } from '../src/engine/plan.js';
import { createTasks, type NewTask } from '../src/ledger/create-tasks.js';
import { finishSingleRuns } from '../src/ledger/finish-single-runs.js';
import { poolSql } from '../src/ledger/sql.js';
import { DEFAULT_LIMITS } from '../src/lib/limits.js';
import { silentLogger } from '../src/lib/logger.js';
import { uuidv7 } from '../src/lib/uuid7.js';
import { dropDatabase, ensureDatabase, withDatabase } from '../src/persistence/database.js';
import { migrate } from '../src/persistence/migrate.js';
import echo from '../workers/adapters/echo.js';

const { values } = parseArgs({ options: { batches: { type: 'string', default: '100' }, 'batch-size': { type: 'string', default: '100' } } });
const BATCHES = Number(values.batches);
const SIZE = Number(values['batch-size']);

const server = process.env.DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/postgres';
const url = withDatabase(server, `orch_bench_history_${randomBytes(4).toString('hex')}`);
const log = (line: string) => process.stderr.write(`${line}\n`);
const median = (list: number[]) => [...list].sort((a, b) => a - b)[Math.floor(list.length / 2)]!;

/** CPU ms of a local process (utime + stime), or undefined when /proc does not have it (a remote server). */
function cpuMs(pid: number): number | undefined {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
  } catch {
    return undefined;
  }
}

function tasks(count: number): NewTask[] {
  return Array.from({ length: count }, () => {
    const id = uuidv7();
    const createdAt = new Date();
    const params = { hello: 'world' };
    const plan = planToolTask(echo, params);
    const meta = { id, createdAt, taskType: 'echo', params, callback: false, owner: 'bench', depth: 0, parent: null };
    return {
      task: { id, createdAt, taskType: 'echo', params, owner: 'bench', requestHash: 'bench', priority: 0, delayMs: 0 },
      plan,
      decision: start(freshState(meta, plan), { limits: DEFAULT_LIMITS, now: createdAt, newTaskId: () => '' }),
    };
  });
}

await ensureDatabase(url);
const pool = new pg.Pool({ connectionString: url, max: 1 });
try {
  await migrate(url, silentLogger());
  const sql = poolSql(pool);
  const [{ pid }] = (await pool.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows as [{ pid: number }];
  const modes = { on: { history: true }, off: { history: false } } as const;
  const times: Record<keyof typeof modes, { create: number[]; finish: number[]; cpu: number }> = {
    on: { create: [], finish: [], cpu: 0 },
    off: { create: [], finish: [], cpu: 0 },
  };
  // A warm-up batch each, not counted: the functions' plans are made on their first calls.
  for (let batch = -1; batch < BATCHES; batch += 1) {
    for (const mode of batch % 2 === 0 ? (['on', 'off'] as const) : (['off', 'on'] as const)) {
      const entries = tasks(SIZE);
      const cpuBefore = cpuMs(pid);
      let at = performance.now();
      await sql.$transaction((tx) => createTasks(tx, entries, modes[mode]));
      const created = performance.now() - at;
      const results = entries.map(({ task }) => ({
        taskId: task.id,
        createdAt: task.createdAt,
        run: 1,
        stepId: 'echo',
        tool: 'echo',
        attempt: 1,
        try: 1,
        worker: 'bench/1',
        jobId: `${task.id}.1.echo`,
        status: 'completed' as const,
        output: { hello: 'world' },
        startedAt: new Date(),
        finishedAt: new Date(),
      }));
      at = performance.now();
      await sql.$transaction((tx) => finishSingleRuns(tx, results, DEFAULT_LIMITS, modes[mode]));
      const finished = performance.now() - at;
      const cpuAfter = cpuMs(pid);
      if (batch < 0) continue;
      times[mode].create.push(created);
      times[mode].finish.push(finished);
      if (cpuBefore !== undefined && cpuAfter !== undefined) times[mode].cpu += cpuAfter - cpuBefore;
    }
  }
  const [{ n }] = (await pool.query<{ n: string }>('SELECT count(*) AS n FROM task_events')).rows as [{ n: string }];
  log(`${BATCHES} batches of ${SIZE} one-tool tasks per mode; ${n} history rows written with it on`);
  const perTask = (ms: number) => `${((ms * 1000) / SIZE).toFixed(1)} µs/task`;
  for (const mode of ['on', 'off'] as const) {
    const { create, finish, cpu } = times[mode];
    log(
      `history ${mode.padEnd(3)}: ledger_create median ${median(create).toFixed(2)} ms/batch (${perTask(median(create))}), ` +
        `ledger_finish_singles median ${median(finish).toFixed(2)} ms/batch (${perTask(median(finish))}); ` +
        `PostgreSQL backend CPU ${cpu ? `${((cpu * 1000) / (BATCHES * SIZE)).toFixed(1)} µs/task` : 'not readable (remote server)'}`,
    );
  }
} finally {
  await pool.end();
  await dropDatabase(url).catch((error: Error) => log(`could not drop ${url}: ${error.message}`));
}
