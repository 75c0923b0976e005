import { z } from 'zod';
import type { Catalog, ToolSpec, WorkflowSpec } from '../../src/engine/catalog.js';
import { type WorkflowDefinition, workflowDefinitionSchema } from '../../src/engine/workflow-definition.js';

/**
 * A workflow that uses every step kind and every modifier, and the catalog it is compiled
 * against: test/engine/stored-plan.test.ts compiles it, and runs the plan that was stored for it
 * before PlanStep became a union (test/engine/stored-plan.json).
 */

const retry = { attempts: 2, backoff: { type: 'fixed' as const, delay_ms: 10 } };
const loose = z.looseObject({});
const tool = (name: string, extra: Partial<ToolSpec> = {}): ToolSpec => ({ name, input: loose, output: loose, retry, timeout_ms: 5000, ...extra });
const tools = [tool('list', { limits: [{ kind: 'c', key: 'svc:list', limit: 3 }] }), tool('echo'), tool('refund', { timeout_ms: 9000 })];

const child: WorkflowSpec = {
  name: 'child',
  version: 2,
  definition: workflowDefinitionSchema.parse({ name: 'child', parameters: [{ name: 'key', type: 'string' }], steps: [{ id: 'c', tool: 'echo' }] }),
};

export const catalog: Catalog = {
  tool: (name) => tools.find((candidate) => candidate.name === name),
  toolNames: () => tools.map((candidate) => candidate.name),
  workflow: (name, version) => (name === 'child' && (version === undefined || version === 2) ? child : undefined),
};

export const definition: WorkflowDefinition = workflowDefinitionSchema.parse({
  name: 'every_kind',
  parameters: [
    { name: 'n', type: 'integer', required: true },
    { name: 'who', type: 'string', default: 'ann' },
  ],
  concurrency: { key: 'run:{{params.who}}', limit: 5 },
  steps: [
    {
      id: 'fetch',
      tool: 'list',
      retry: { attempts: 4, backoff: { type: 'exponential', delay_ms: 100 } },
      rate_limit: { key: 'fetch:{{params.who}}', per_minute: 60 },
      input: { who: '{{params.who}}' },
      compensate: { tool: 'refund', input: { id: '{{output.id}}' } },
    },
    { id: 'each', tool: 'echo', depends_on: ['fetch'], for_each: '{{steps.fetch.output.items}}', max_parallel: 2, input: { message: '{{item}}' } },
    { id: 'nap', sleep: { ms: '{{params.n}}' }, depends_on: ['fetch'], when: 'params.n > 0' },
    { id: 'go', wait: { signal: 'go', schema: { type: 'object' }, timeout_ms: 60000, on_timeout: 'continue' }, depends_on: ['fetch'] },
    { id: 'ok', wait: { approval: { approvers: ['ann', 'bob'] } }, depends_on: ['fetch'], input: { amount: 3 } },
    { id: 'sub', workflow: 'child', depends_on: ['fetch'], input: { key: '{{params.who}}' }, on_failure: 'continue' },
    { id: 'end', tool: 'echo', depends_on: ['each', 'nap', 'go', 'ok', 'sub'], input: { message: '{{steps.ok.output.decision}}' } },
  ],
  output: { items: '{{steps.each.output}}', end: '{{steps.end.output}}' },
});
