import type { Route } from '../route.js';
import { BOARD_ROUTES } from './board.js';
import { CALLBACK_ROUTES } from './callbacks.js';
import { SEED_001_ROUTES } from './compat/seed-001.js';
import { SEED_003_ROUTES } from './compat/seed-003.js';
import { CONSOLE_ROUTES } from './console.js';
import { DEAD_LETTER_ROUTES } from './dead-letters.js';
import { DOCS_ROUTES } from './docs.js';
import { SCHEDULE_ROUTES } from './schedules.js';
import { SERVICE_ROUTES } from './services.js';
import { STATS_ROUTES } from './stats.js';
import { SYSTEM_ROUTES } from './system.js';
import { TASK_ROUTES } from './tasks.js';
import { TOOL_ROUTES } from './tools.js';
import { WAIT_ROUTES } from './waits.js';
import { WORKER_ROUTES } from './workers.js';
import { WORKFLOW_ROUTES } from './workflows.js';

/**
 * Every route the API serves, each declared once: the app mounts them (src/api/app.ts) and the
 * OpenAPI document describes them (src/api/openapi.ts), in this order.
 */
export const ROUTES: readonly Route[] = [
  ...TASK_ROUTES,
  ...WAIT_ROUTES,
  ...CALLBACK_ROUTES,
  ...TOOL_ROUTES,
  // Before the workflow routes: /workflows/search and its kin are not workflows named so.
  ...SEED_001_ROUTES,
  ...WORKFLOW_ROUTES,
  ...SCHEDULE_ROUTES,
  ...SERVICE_ROUTES,
  ...WORKER_ROUTES,
  ...DEAD_LETTER_ROUTES,
  ...STATS_ROUTES,
  ...SYSTEM_ROUTES,
  ...DOCS_ROUTES,
  ...BOARD_ROUTES,
  ...CONSOLE_ROUTES,
  ...SEED_003_ROUTES,
];
