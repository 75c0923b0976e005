import { z } from 'zod';
import type { AnyTool } from '../../tools/tool.js';
import * as ex from '../openapi-examples.js';
import type { ToolBody } from '../responses.js';
import * as r from '../responses.js';
import { type Route, route } from '../route.js';

/** JSON Schema of what a tool accepts (input) and returns (output). */
export function toolSchemas(tool: AnyTool) {
  if (tool.schemas) return { input_schema: tool.schemas.input, output_schema: tool.schemas.output };
  return {
    input_schema: z.toJSONSchema(tool.input, { io: 'input', unrepresentable: 'any' }),
    output_schema: z.toJSONSchema(tool.output, { io: 'output', unrepresentable: 'any' }),
  };
}

export function describeTool(tool: AnyTool): ToolBody {
  return {
    name: tool.name,
    description: tool.description,
    ...toolSchemas(tool),
    retry: tool.retry,
    timeout_ms: tool.timeout_ms,
    rate_limit: tool.rate_limit ?? null,
    concurrency: tool.concurrency ?? null,
  };
}

/** The tool adapters workers run. */
export const TOOL_ROUTES: Route[] = [
  route({
    method: 'get',
    path: '/tools',
    operationId: 'listTools',
    access: 'catalog',
    summary: 'List the tool adapters, with their input and output JSON Schemas and defaults',
    tags: ['tools'],
    responses: { 200: { description: 'Every tool this deployment knows.', body: r.toolListSchema, examples: ex.toolListExamples } },
    handler: async (_input, { tools, fleet }) => {
      // Live workers per tool are read at each call; PostgreSQL away leaves the counts out, not the list.
      const live = await fleet.servedBy().catch(() => undefined);
      return {
        status: 200,
        body: {
          tools: tools().map((tool) => {
            const version = fleet.version(tool.name);
            return version === undefined || !live ? tool : { ...tool, fleet: { version, live_workers: live.get(tool.name) ?? 0 } };
          }),
        },
      };
    },
  }),
];
