import { z } from 'zod';
import { defineTool } from '../../src/tools/tool.js';

/**
 * A batch id as the client sends it. Frontends written against the Celery-style service this one
 * replaces send integers (`[1, 2, 3]`), others strings: both are accepted and reported back in
 * the form they were sent, so a client can match its own ids without converting them.
 */
const batchId = z.union([z.string().min(1).max(200), z.int()]);

/**
 * An example adapter: the whole contract of a tool in one file. Copy it to add your own, then
 * list it in workers/adapters/index.ts.
 *
 * A batch is approved when `auto_approve` is set or when it passed review (here: its id does
 * not start with "hold-"); the others are rejected and reported. `1` and `"1"` name the same
 * batch: it is processed once, reported as first sent.
 */
export default defineTool({
  name: 'approve_batches',
  description: 'Approves batches by id (integers or strings, reported back as sent): all of them with auto_approve, otherwise those not on hold ("hold-" ids).',
  input: z.object({
    batch_ids: z.array(batchId).min(1).max(10_000),
    auto_approve: z.boolean().default(false),
  }),
  output: z.object({
    processed_batches: z.int(),
    approved: z.array(batchId),
    rejected: z.array(batchId),
  }),
  retry: { attempts: 3, backoff: { type: 'exponential', delay_ms: 1000 } },
  timeout_ms: 60_000,
  concurrency: 5,
  rate_limit: { max: 100, duration_ms: 1_000 },
  async run({ batch_ids, auto_approve }, { signal, logger, progress }) {
    const approved: (string | number)[] = [];
    const rejected: (string | number)[] = [];
    const seen = new Set<string>();
    const unique = batch_ids.filter((id) => !seen.has(String(id)) && seen.add(String(id)));
    for (const [index, id] of unique.entries()) {
      signal.throwIfAborted();
      (auto_approve || !String(id).startsWith('hold-') ? approved : rejected).push(id);
      progress(((index + 1) / unique.length) * 100, `reviewed ${index + 1} of ${unique.length} batches`);
    }
    logger.info('batches reviewed', { approved: approved.length, rejected: rejected.length });
    return { processed_batches: approved.length + rejected.length, approved, rejected };
  },
});
