import { setTimeout as delay } from 'node:timers/promises';
import { z } from 'zod';
import { defineTool } from '../../src/tools/tool.js';

export default defineTool({
  name: 'sleep',
  description: 'Waits `ms` milliseconds, then returns, reporting progress every tenth of the way. Stops at once when the step is cancelled or times out.',
  input: z.object({ ms: z.int().min(0).max(3_600_000) }),
  output: z.object({ slept_ms: z.int() }),
  retry: { attempts: 1, backoff: { type: 'fixed', delay_ms: 0 } },
  timeout_ms: 3_600_000,
  async run({ ms }, { signal, progress }) {
    const started = Date.now();
    const slices = ms >= 1_000 ? 10 : 1;
    for (let slice = 1; slice <= slices; slice += 1) {
      const until = started + (ms * slice) / slices;
      // A timer may fire a millisecond before the clock reads its time (timers and Date.now()
      // round differently): wait again for what is left, so that the step never sleeps short.
      while (Date.now() < until) await delay(until - Date.now(), undefined, { signal });
      if (slices > 1) progress((slice / slices) * 100, `slept ${Date.now() - started} of ${ms} ms`);
    }
    return { slept_ms: Date.now() - started };
  },
});
