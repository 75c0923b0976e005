// W1U's worker of a user's own: the packaged SDK's bundle (workers/sdk/dist, built by the bench as
// `npm pack` builds it) and one tool defined as the built-in echo is (same schemas, same retry), so
// W1U against W1 is what running a tool in a user's worker costs, nothing else.
import { z } from 'zod';
import { defineTool, runWorker } from '../workers/sdk/dist/index.js';

const payload = z.record(z.string(), z.unknown());

const userEcho = defineTool({
  name: 'user_echo',
  description: 'Returns its input unchanged, from a worker of a user’s own (the bench’s W1U).',
  input: payload,
  output: payload,
  retry: { attempts: 1, backoff: { type: 'fixed', delay_ms: 0 } },
  timeout_ms: 5_000,
  async run(input) {
    return input;
  },
});

await runWorker({ tools: [userEcho], concurrency: Number(process.env.WORKER_CONCURRENCY ?? 10) });
