import { defineTool, runWorker } from '@orchestrator/worker';
import { z } from 'zod';

const shout = defineTool({
  name: 'shout',
  description: 'Upper-cases a text.',
  input: z.object({ text: z.string() }),
  output: z.object({ text: z.string() }),
  async run(input) {
    return { text: input.text.toUpperCase() };
  },
});

await runWorker({ tools: [shout] });
