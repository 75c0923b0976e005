/**
 * `npm run bench:registration`: how long a user's worker with 50 tools takes to register them
 * (issue 30's target: under 1 s). The API runs in this process on a fresh database; each round a
 * worker of the SDK (createWorker, as users embed it) starts with 50 tools of its own, each with
 * an input and an output schema of a few fields, and is timed from start() until it answered,
 * i.e. registered (PUT /workers/{id}: the JSON Schemas stored, every tool a first version) and
 * listening on its 50 queues. A second worker with the same tools is then timed too: the tools
 * are known, so it is the registration of a restart or a scale-out. Medians over the rounds; the
 * first round includes the process's warm-up (connections, compiled code).
 */
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { startApi } from '../src/api/server.js';
import { loadConfig } from '../src/lib/config.js';
import { silentLogger } from '../src/lib/logger.js';
import { dropDatabase, ensureDatabase, withDatabase } from '../src/persistence/database.js';
import { migrate } from '../src/persistence/migrate.js';
import { ToolRegistry } from '../src/tools/tool.js';
import { createWorker, defineTool } from '../workers/sdk/index.js';

const { values } = parseArgs({ options: { tools: { type: 'string', default: '50' }, rounds: { type: 'string', default: '5' } } });
const TOOLS = Number(values.tools);
const ROUNDS = Number(values.rounds);
const KEY = `bench-registration-${randomBytes(8).toString('hex')}`;

const server = process.env.DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/postgres';
const database = withDatabase(server, `orch_bench_registration_${randomBytes(4).toString('hex')}`);
const prefix = `{bench_registration_${randomBytes(4).toString('hex')}}`;
const log = (line: string) => process.stdout.write(`${line}\n`);
const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

/** `count` tools named for the round, each with a few typed fields in and out. */
function toolsOf(round: number, count: number) {
  return Array.from({ length: count }, (_, index) =>
    defineTool({
      name: `reg_${round}_${index}`,
      description: `Tool ${index} of round ${round}: registered, never run.`,
      input: z.object({ id: z.string().min(1), count: z.number().int().min(0).default(1), tags: z.array(z.string()).max(10).optional() }),
      output: z.object({ ok: z.boolean(), id: z.string() }),
      async run(input) {
        return { ok: true, id: input.id };
      },
    }),
  );
}

await ensureDatabase(database);
await migrate(database, silentLogger());
const env = {
  NODE_ENV: 'test',
  PORT: '0',
  HOST: '127.0.0.1',
  DATABASE_URL: database,
  QUEUE_PREFIX: prefix,
  API_KEYS: `worker@bench:${KEY}`,
  LOG_LEVEL: 'error',
  ...(process.env.REDIS_URL ? { REDIS_URL: process.env.REDIS_URL } : {}),
};
const api = await startApi(loadConfig(env), silentLogger(), new ToolRegistry([]));
const first: number[] = [];
const again: number[] = [];
try {
  for (let round = 1; round <= ROUNDS; round += 1) {
    const tools = toolsOf(round, TOOLS);
    for (const into of [first, again]) {
      const worker = createWorker({
        tools,
        url: api.url,
        apiKey: KEY,
        logger: silentLogger(),
        ...(process.env.REDIS_URL ? { redisUrl: process.env.REDIS_URL } : {}),
      });
      const started = performance.now();
      await worker.start();
      into.push(performance.now() - started);
      await worker.close();
    }
  }
} finally {
  await api.close();
  await dropDatabase(database).catch(() => undefined);
}
log(`${TOOLS} tools, ${ROUNDS} rounds: start() until registered and listening, ms`);
log(`  new tools (first versions stored):  median ${median(first).toFixed(0)}  all ${first.map((ms) => ms.toFixed(0)).join(', ')}`);
log(`  known tools (a second worker):      median ${median(again).toFixed(0)}  all ${again.map((ms) => ms.toFixed(0)).join(', ')}`);
