import { type AnyTool, type SettingsChooser, ToolRegistry } from '../../src/tools/tool.js';
import approveBatches from './approve-batches.js';
import echo from './echo.js';
import http from './http.js';
import notify from './notify.js';
import sleep from './sleep.js';
import textStats from './text-stats.js';

/** The built-in worker's tools (workers/main.ts registers them at start). Add yours here. */
export const builtinTools: AnyTool[] = [echo, sleep, http, notify, textStats, approveBatches] as AnyTool[];

/**
 * The built-in tools and `extra` ones; `extraSettings`: settings choosers of extra tools that take
 * their settings from the configuration (test doubles). The built-in tools read theirs from the
 * worker's environment, as their `settings` declare (ToolRegistry.settings): an adapter that needs
 * one more variable declares it, and src/lib/config.ts does not hear of it.
 */
export function createToolRegistry(extra: AnyTool[] = [], extraSettings: Readonly<Record<string, SettingsChooser>> = {}): ToolRegistry {
  return new ToolRegistry([...builtinTools, ...extra], extraSettings);
}
