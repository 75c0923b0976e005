import { describe, expect, it } from 'vitest';
import type { ToolContext } from '../../src/tools/tool.js';
import sleep from '../../workers/adapters/sleep.js';

const context = (signal = new AbortController().signal) => ({ signal, progress: () => undefined }) as unknown as ToolContext;

describe('sleep', () => {
  it('never reports less than it was asked to sleep', async () => {
    // Timers may fire a millisecond early by Date.now(): over many short sleeps one did, when the
    // adapter waited once per slice (a workflow test then saw 1499 for 1500).
    for (let ms = 1; ms <= 40; ms += 1) {
      const { slept_ms } = await sleep.run({ ms }, context());
      expect(slept_ms, `asked for ${ms} ms`).toBeGreaterThanOrEqual(ms);
    }
    for (const ms of [1_000, 1_001, 1_007]) {
      const { slept_ms } = await sleep.run({ ms }, context());
      expect(slept_ms, `asked for ${ms} ms in ten slices`).toBeGreaterThanOrEqual(ms);
    }
  });

  it('stops at once when its signal fires', async () => {
    const controller = new AbortController();
    const started = Date.now();
    const run = sleep.run({ ms: 60_000 }, context(controller.signal));
    setTimeout(() => controller.abort(new Error('cancelled')), 20);
    await expect(run).rejects.toMatchObject({ name: 'AbortError' });
    expect(Date.now() - started).toBeLessThan(10_000);
  });
});
