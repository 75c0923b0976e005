import { z } from 'zod';
import { defineTool } from '../../src/tools/tool.js';

const payload = z.record(z.string(), z.unknown());

export default defineTool({
  name: 'echo',
  description: 'Returns its input unchanged. Useful to test a setup and to shape data between workflow steps.',
  input: payload,
  output: payload,
  retry: { attempts: 1, backoff: { type: 'fixed', delay_ms: 0 } },
  timeout_ms: 5_000,
  async run(input) {
    return input;
  },
});
