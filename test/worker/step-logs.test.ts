import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { ATTEMPT_LOG_MAX_LINES } from '../../src/ledger/attempt-logs.js';
import { defineTool } from '../../src/tools/tool.js';
import { createHarness, type Harness, submit, waitForTask } from '../helpers/harness.js';

/** A tool that logs `lines` lines (of `size` characters), then fails its first try when asked. */
const chatty = defineTool({
  name: 'chatty',
  description: 'Logs a lot.',
  input: z.object({ lines: z.int().min(0).max(10_000), size: z.int().min(1).max(100_000).default(10), fail_first: z.boolean().default(false) }),
  output: z.object({ ok: z.boolean() }),
  retry: { attempts: 2, backoff: { type: 'fixed', delay_ms: 10 } },
  async run(input, ctx) {
    for (let i = 0; i < input.lines; i += 1) ctx.logger.info(`line ${i} ${'x'.repeat(input.size)}`, { i, password: 'hunter2' });
    if (input.fail_first && ctx.attempt === 1) throw new Error('first try fails');
    return { ok: true };
  },
});

/** Per-step logs of the built-in worker (the in-process ledger); a user's worker's go through the API (user-worker.test.ts). */
describe("a step's log lines", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness({ tools: [chatty] });
  });
  afterAll(async () => {
    await h?.close();
  });

  it('are kept per attempt, bounded in lines (the rest counted as dropped), secrets redacted', async () => {
    const id = await submit(h, { task_type: 'chatty', params: { lines: ATTEMPT_LOG_MAX_LINES + 50, fail_first: true } });
    expect((await waitForTask(h, id)).status).toBe('completed');
    const logs = await h.request('GET', `/tasks/${id}/steps/chatty/logs`);
    expect(logs.status).toBe(200);
    expect(
      logs.body.attempts.map((attempt: { attempt: number; try: number; dropped: number; lines: unknown[] }) => [
        attempt.try,
        attempt.lines.length,
        attempt.dropped,
      ]),
    ).toEqual([
      [1, ATTEMPT_LOG_MAX_LINES, 50],
      [2, ATTEMPT_LOG_MAX_LINES, 50],
    ]);
    expect(logs.body.attempts[0].lines[0]).toMatchObject({
      level: 'info',
      message: expect.stringMatching(/^line 0 x+$/),
      fields: { i: 0, password: '[redacted]' },
    });
  });

  it('are bounded in bytes: the worst input (long lines) keeps at most 64 kB per attempt', async () => {
    const id = await submit(h, { task_type: 'chatty', params: { lines: 1_000, size: 100_000 } });
    expect((await waitForTask(h, id)).status).toBe('completed');
    const [attempt] = (await h.request('GET', `/tasks/${id}/steps/chatty/logs`)).body.attempts;
    expect(attempt.lines.length + attempt.dropped).toBe(1_000);
    expect(JSON.stringify(attempt.lines).length).toBeLessThanOrEqual(65_536);
    expect(attempt.lines[0].message.length).toBeLessThanOrEqual(2_000);
  });

  it('are the built-in adapters’ too, and a step that logged nothing has no attempts listed', async () => {
    const id = await submit(h, { task_type: 'approve_batches', params: { batch_ids: [1, 2] } });
    expect((await waitForTask(h, id)).status).toBe('completed');
    const logs = await h.request('GET', `/tasks/${id}/steps/approve_batches/logs`);
    expect(logs.body.attempts[0].lines.map((line: { message: string }) => line.message)).toEqual(['batches reviewed']);
    const quiet = await submit(h, { task_type: 'echo', params: {} });
    await waitForTask(h, quiet);
    expect((await h.request('GET', `/tasks/${quiet}/steps/echo/logs`)).body.attempts).toEqual([]);
  });
});
