import { describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/lib/logger.js';
import type { ToolContext } from '../../src/tools/tool.js';
import approveBatches from '../../workers/adapters/approve-batches.js';

const context = { signal: new AbortController().signal, logger: silentLogger(), progress: () => undefined } as unknown as ToolContext;
const approve = (params: unknown) => approveBatches.run(approveBatches.input.parse(params), context);

describe('approve_batches', () => {
  it("runs the Celery-style service's example: integer ids stay integers", async () => {
    const output = await approve({ batch_ids: [1, 2, 3], auto_approve: true });
    expect(output).toEqual({ processed_batches: 3, approved: [1, 2, 3], rejected: [] });
    expect(approveBatches.output.parse(output)).toEqual(output);
  });

  it('reports string ids as strings and rejects those on hold unless auto_approve', async () => {
    expect(await approve({ batch_ids: ['a', 'hold-b', 7] })).toEqual({ processed_batches: 3, approved: ['a', 7], rejected: ['hold-b'] });
    expect(await approve({ batch_ids: ['a', 'hold-b'], auto_approve: true })).toEqual({ processed_batches: 2, approved: ['a', 'hold-b'], rejected: [] });
  });

  it('processes a batch once however often and in whichever form it is named, reported as first sent', async () => {
    expect(await approve({ batch_ids: [1, '1', 2, 1, '2'], auto_approve: true })).toEqual({ processed_batches: 2, approved: [1, 2], rejected: [] });
  });

  it('refuses ids that are neither integers nor non-empty strings', () => {
    for (const id of [1.5, '', null, true, {}, 2 ** 53]) {
      expect(approveBatches.input.safeParse({ batch_ids: [id] }).success, JSON.stringify(id)).toBe(false);
    }
    expect(approveBatches.input.safeParse({ batch_ids: [] }).success).toBe(false);
  });
});
