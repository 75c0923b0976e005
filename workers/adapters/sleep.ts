import { setTimeout as delay } from 'node:timers/promises';
import { z } from 'zod';
import { defineTool } from '../../src/tools/tool.js';

export default defineTool({
  name: 'sleep',
  description: 'Waits `ms` milliseconds, then returns. Stops at once when the step is cancelled or times out.',
  input: z.object({ ms: z.int().min(0).max(3_600_000) }),
  output: z.object({ slept_ms: z.int() }),
  retry: { attempts: 1, backoff: { type: 'fixed', delay_ms: 0 } },
  timeout_ms: 3_600_000,
  async run({ ms }, { signal }) {
    const started = Date.now();
    await delay(ms, undefined, { signal });
    return { slept_ms: Date.now() - started };
  },
});
