import { z } from 'zod';
import { DependencyUnavailableError, ValidationError } from '../../lib/errors.js';
import type { StatsStore } from '../../persistence/stats-store.js';
import type { Reply } from '../http.js';
import { errorBody } from '../http.js';
import * as ex from '../openapi-examples.js';
import { invalid, unavailable } from '../replies.js';
import * as r from '../responses.js';
import { type Route, type RouteContext, route } from '../route.js';

const UNIT_MS = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

export const statsQuery = z
  .object({
    window: z
      .string()
      .regex(/^\d{1,6}[smhd]$/, 'a duration like 15m, 1h, 24h or 7d')
      .optional()
      .meta({ description: 'How far back from now (default 24h). Ignored when since is given.' }),
    since: z.iso.datetime({ offset: true }).optional(),
    until: z.iso.datetime({ offset: true }).optional(),
  })
  .strict();

/**
 * The statistics of a window as GET /stats computes them: the window checked against
 * STATS_MAX_WINDOW_DAYS (400 at `window` or `since`), at most STATS_MAX_CONCURRENT computed at
 * once in this process (past it, `busy` is the 503 to answer). `defaultWindow`: without
 * `window` or `since`.
 */
export async function windowStats(
  query: z.output<typeof statsQuery>,
  { stats, statsMaxWindowDays: maxWindowDays, statsSlots }: Pick<RouteContext, 'stats' | 'statsMaxWindowDays' | 'statsSlots'>,
  defaultWindow = '24h',
): Promise<{ busy: Reply } | { window: { from: string; to: string }; stats: Awaited<ReturnType<StatsStore['compute']>> }> {
  const to = query.until ? new Date(query.until) : new Date();
  const window = query.window ?? defaultWindow;
  const from = query.since ? new Date(query.since) : new Date(to.getTime() - Number(window.slice(0, -1)) * UNIT_MS[window.at(-1) as keyof typeof UNIT_MS]);
  if (from >= to) throw new ValidationError('the window is empty', [{ path: 'since', message: 'must be before until' }]);
  if (to.getTime() - from.getTime() > maxWindowDays * UNIT_MS.d) {
    throw new ValidationError(`the window is longer than ${maxWindowDays} days (STATS_MAX_WINDOW_DAYS)`, [
      { path: query.since ? 'since' : 'window', message: `the window may span at most ${maxWindowDays} days` },
    ]);
  }
  // Each request holds pool connections for its queries: past the cap, refuse rather than queue.
  if (statsSlots.inUse >= statsSlots.max) {
    return {
      busy: {
        status: 503,
        body: errorBody('stats_busy', `${statsSlots.max} /stats requests are being computed (STATS_MAX_CONCURRENT); retry after Retry-After`, {
          max_concurrent: statsSlots.max,
        }),
        headers: { 'retry-after': '1' },
      },
    };
  }
  statsSlots.inUse += 1;
  try {
    return { window: { from: from.toISOString(), to: to.toISOString() }, stats: await stats.compute(from, to) };
  } finally {
    statsSlots.inUse -= 1;
  }
}

/**
 * GET /stats: counts by status and task type, duration percentiles per task type and per tool,
 * over a window of at most STATS_MAX_WINDOW_DAYS.
 */
export const STATS_ROUTES: Route[] = [
  route({
    method: 'get',
    path: '/stats',
    operationId: 'stats',
    access: 'monitor',
    summary: 'Counts by status and task type, duration percentiles per task type and per tool',
    description:
      'Of the tasks created in the window (and their steps), computed in PostgreSQL. The window spans at most STATS_MAX_WINDOW_DAYS; the queries run under STATS_STATEMENT_TIMEOUT_MS.',
    tags: ['system'],
    query: statsQuery,
    responses: {
      200: { description: 'The statistics of the window.', body: r.statsSchema, examples: ex.statsExamples },
      400: invalid('The query is invalid, or the window is empty or wider than STATS_MAX_WINDOW_DAYS (path `window` or `since`).'),
      503: {
        description:
          '`stats_timeout`: the queries took longer than STATS_STATEMENT_TIMEOUT_MS (ask for a shorter window); `stats_busy`: STATS_MAX_CONCURRENT requests are being computed in this process (retry after Retry-After); or `service_unavailable`.',
        body: r.errorBodySchema,
        headers: { 'Retry-After': { description: 'With `stats_busy`: seconds to wait.', schema: { type: 'integer' } } },
      },
    },
    handler: async ({ query }, ctx) => {
      const computed = await windowStats(query, ctx);
      if ('busy' in computed) return computed.busy;
      return { status: 200, body: { window: computed.window, ...computed.stats, timestamp: new Date().toISOString() } };
    },
  }),
  route({
    method: 'get',
    path: '/stats/queues',
    operationId: 'queueDepths',
    access: 'monitor',
    summary: 'How many jobs each queue holds, by state',
    description:
      'Read from Redis now (Bull Board shows the jobs themselves): a backlog shows as `wait` and `prioritized`, the work in hand as `active`, retries and sleeps as `delayed`. The same figures as the `orchestrator_queue_jobs` metric.',
    tags: ['system'],
    responses: {
      200: { description: 'Every queue of this deployment, by name.', body: r.queueDepthsSchema, examples: ex.queueDepthsExamples },
      503: unavailable,
    },
    handler: async (_input, { queues, system }) => {
      // Fail fast: the queues' connection would otherwise hold the request until Redis is back.
      if (system.redis.status !== 'ready') throw new DependencyUnavailableError('redis');
      const depths = await queues.depths();
      return {
        status: 200,
        body: {
          queues: [...depths].sort(([a], [b]) => (a < b ? -1 : 1)).map(([name, counts]) => ({ name, counts })),
          timestamp: new Date().toISOString(),
        },
      };
    },
  }),
];
