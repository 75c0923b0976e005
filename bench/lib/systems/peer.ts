import type { Completion } from '../capacity.js';
import { HttpClient } from '../load.js';
import { CountingClient } from '../metrics.js';
import { type Child, freePort, spawnNode, waitForReadyMessage } from '../processes.js';
import { HttpTarget, inChunks, type ResultRecords, type RunContext, type RunningSystem } from './system.js';

/** Finished tasks as a peer records them: bench_results.received_at and finished_at. */
function resultRecords(client: CountingClient): ResultRecords {
  return {
    async unfinished(ids) {
      const done = new Set(
        await inChunks(ids, async (chunk) =>
          (await client.query<{ id: string }>('SELECT task_id::text AS id FROM bench_results WHERE task_id = ANY($1::uuid[])', [chunk])).map((row) => row.id),
        ),
      );
      return ids.filter((id) => !done.has(id));
    },
    async completions(ids) {
      return inChunks(ids, async (chunk) => {
        const rows = await client.query<{ id: string; created: number; finished: number }>(
          `SELECT task_id::text AS id, (extract(epoch FROM received_at) * 1000)::float8 AS created,
                  (extract(epoch FROM finished_at) * 1000)::float8 AS finished
             FROM bench_results WHERE task_id = ANY($1::uuid[])`,
          [chunk],
        );
        return rows.map((row): Completion => ({ ...row, ok: true }));
      });
    },
  };
}

/**
 * A peer (pg-boss or graphile-worker): its own database, N worker processes and one API process
 * from bench/peers/<kind>/. The first worker installs the queue's schema before the others start.
 */
export async function startPeer(ctx: RunContext, kind: 'pg-boss' | 'graphile-worker'): Promise<RunningSystem> {
  const { options } = ctx;
  const database = `orch_bench_${ctx.runId}_${kind.replace('-', '_')}`;
  const url = new URL(options.postgresUrl);
  url.pathname = `/${database}`;
  await ctx.admin.createDatabase(database);
  if (!options.keep) ctx.releasers.add(`database ${database}`, () => ctx.admin.dropDatabase(database));
  const env = { DATABASE_URL: url.toString(), CONCURRENCY: String(options.concurrency), POOL_SIZE: String(options.poolSize) };
  const children = [spawnNode(`${kind}-worker-1`, `bench/peers/${kind}/worker.ts`, env, { logDir: ctx.logDir, ipc: true })];
  const stopAll = ctx.releasers.add(`${kind} processes`, async () => {
    await Promise.all(children.map((child) => child.stop()));
  });
  let port: number;
  let api: Child;
  try {
    await waitForReadyMessage(children[0]!);
    for (let index = 1; index < options.workers; index += 1) {
      children.push(spawnNode(`${kind}-worker-${index + 1}`, `bench/peers/${kind}/worker.ts`, env, { logDir: ctx.logDir, ipc: true }));
    }
    port = await freePort();
    api = spawnNode(`${kind}-api`, `bench/peers/${kind}/api.ts`, { ...env, PORT: String(port) }, { logDir: ctx.logDir, ipc: true });
    children.push(api);
    await Promise.all(children.slice(1).map((child) => waitForReadyMessage(child)));
  } catch (error) {
    await stopAll();
    throw error;
  }

  const http = new HttpClient(`http://127.0.0.1:${port}`, options.connections);
  const closeHttp = ctx.releasers.add('HTTP client', () => http.close());
  const benchClient = new CountingClient(url.toString());
  const closeClient = ctx.releasers.add('bench database client', () => benchClient.close());
  const records = resultRecords(benchClient);
  return {
    kind,
    processes: { api: [api.pid], workers: children.filter((child) => child !== api).map((child) => child.pid) },
    database,
    benchClient,
    target: (body) => new HttpTarget(http, body, records),
    async stop() {
      await closeClient();
      await closeHttp();
      await stopAll();
    },
  };
}
