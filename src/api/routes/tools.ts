import { Router } from 'express';
import { z } from 'zod';
import type { AnyTool, ToolRegistry } from '../../tools/tool.js';
import { requireAccess } from '../access.js';
import { handle } from '../http.js';
import type { ToolBody } from '../responses.js';

/** JSON Schema of what a tool accepts (input) and returns (output). */
export function toolSchemas(tool: AnyTool) {
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

export function toolRoutes(registry: ToolRegistry): Router {
  const router = Router();
  // Schemas do not change while the process runs.
  const described = registry.list().map(describeTool);
  router.get(
    '/tools',
    requireAccess('catalog'),
    handle(async () => ({ status: 200, body: { tools: described } })),
  );
  return router;
}
