import { z } from 'zod';
import { defineTool } from '../../src/tools/tool.js';

/**
 * An example adapter: the whole contract of a tool in one file. Copy it to add your own, then
 * list it in workers/adapters/index.ts.
 *
 * A batch is approved when `auto_approve` is set or when it passed review (here: its id does
 * not start with "hold-"); the others are rejected and reported.
 */
export default defineTool({
  name: 'approve_batches',
  description: 'Approves batches by id: all of them with auto_approve, otherwise those not on hold ("hold-" ids).',
  input: z.object({
    batch_ids: z.array(z.string().min(1).max(200)).min(1).max(10_000),
    auto_approve: z.boolean().default(false),
  }),
  output: z.object({
    processed_batches: z.int(),
    approved: z.array(z.string()),
    rejected: z.array(z.string()),
  }),
  retry: { attempts: 3, backoff: { type: 'exponential', delay_ms: 1000 } },
  timeout_ms: 60_000,
  concurrency: 5,
  rate_limit: { max: 100, duration_ms: 1_000 },
  async run({ batch_ids, auto_approve }, { signal, logger, progress }) {
    const approved: string[] = [];
    const rejected: string[] = [];
    const unique = [...new Set(batch_ids)];
    for (const [index, id] of unique.entries()) {
      signal.throwIfAborted();
      (auto_approve || !id.startsWith('hold-') ? approved : rejected).push(id);
      progress(((index + 1) / unique.length) * 100, `reviewed ${index + 1} of ${unique.length} batches`);
    }
    logger.info('batches reviewed', { approved: approved.length, rejected: rejected.length });
    return { processed_batches: approved.length + rejected.length, approved, rejected };
  },
});
