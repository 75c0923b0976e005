import { ToolRegistry, type AnyTool } from '../tools/tool.js';
import approveBatches from './approve-batches.js';
import echo from './echo.js';
import http from './http.js';
import notify from './notify.js';
import sleep from './sleep.js';
import textStats from './text-stats.js';

/** Every tool adapter this deployment knows. Add yours here. */
export const builtinTools: AnyTool[] = [echo, sleep, http, notify, textStats, approveBatches] as AnyTool[];

export function createToolRegistry(extra: AnyTool[] = []): ToolRegistry {
  return new ToolRegistry([...builtinTools, ...extra]);
}
