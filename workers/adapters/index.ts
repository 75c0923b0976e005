import { type AnyTool, type SettingsChooser, ToolRegistry } from '../../src/tools/tool.js';
import approveBatches from './approve-batches.js';
import echo from './echo.js';
import http from './http.js';
import notify from './notify.js';
import sleep from './sleep.js';
import textStats from './text-stats.js';

/** Every tool adapter this deployment knows. Add yours here. */
export const builtinTools: AnyTool[] = [echo, sleep, http, notify, textStats, approveBatches] as AnyTool[];

/**
 * What each built-in adapter sees of the configuration (its ctx.settings): the settings it
 * declares, picked here and nowhere else. The rest (database URLs, Redis, API keys, tokens)
 * never reaches an adapter. An adapter that declares settings needs a line here.
 */
export const builtinSettings: Readonly<Record<string, SettingsChooser>> = {
  http: (config) => ({ allowed_hosts: config.HTTP_TOOL_ALLOWED_HOSTS, private_names: config.HTTP_TOOL_PRIVATE_NAMES }),
  notify: (config) => ({ allowed_hosts: config.HTTP_TOOL_ALLOWED_HOSTS, private_names: config.HTTP_TOOL_PRIVATE_NAMES }),
};

/** The built-in tools and `extra` ones, with the built-in settings choosers and `extraSettings` for the extra tools. */
export function createToolRegistry(extra: AnyTool[] = [], extraSettings: Readonly<Record<string, SettingsChooser>> = {}): ToolRegistry {
  return new ToolRegistry([...builtinTools, ...extra], { ...builtinSettings, ...extraSettings });
}
