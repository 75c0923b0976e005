import { Router } from 'express';
import type { RedisClient } from '../../queue/redis.js';
import type pg from 'pg';
import { requireAccess } from '../access.js';
import { errorBody, handle } from '../http.js';

export interface SystemInfo {
  name: string;
  version: string;
  startedAt: number;
  redis: RedisClient;
  pool: pg.Pool;
}

async function probe(check: () => Promise<unknown>, timeoutMs = 1_000): Promise<'up' | 'down'> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      check(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error('timeout')), timeoutMs);
      }),
    ]);
    return 'up';
  } catch {
    return 'down';
  } finally {
    clearTimeout(timer);
  }
}

/** What GET / links to; the OpenAPI example shows the same object. */
export const SERVICE_LINKS = {
  assign_task: '/assign-task',
  result: '/result/{task_id}',
  tasks: '/tasks',
  tools: '/tools',
  workflows: '/workflows',
  health: '/health',
  ready: '/ready',
  queues: '/admin/queues',
  openapi: '/openapi.json',
  docs: '/docs/',
  redoc: '/redoc',
};

export function systemRoutes(info: SystemInfo): Router {
  const router = Router();
  const checks = async () => {
    const [redis, database] = await Promise.all([probe(() => info.redis.ping()), probe(() => info.pool.query('SELECT 1'))]);
    return { redis, database };
  };

  router.get(
    '/',
    requireAccess('catalog'),
    handle(async () => ({
      status: 200,
      body: {
        name: info.name,
        version: info.version,
        uptime_s: Math.round((Date.now() - info.startedAt) / 1000),
        links: SERVICE_LINKS,
      },
    })),
  );

  // Liveness: the process answers. Dependencies are reported but do not fail it.
  router.get(
    '/health',
    handle(async () => {
      const dependencies = await checks();
      return {
        status: 200,
        body: {
          status: dependencies.redis === 'up' && dependencies.database === 'up' ? 'ok' : 'degraded',
          uptime_s: Math.round((Date.now() - info.startedAt) / 1000),
          checks: dependencies,
          timestamp: new Date().toISOString(),
        },
      };
    }),
  );

  // Readiness: send traffic here only when Redis and PostgreSQL answer.
  router.get(
    '/ready',
    handle(async () => {
      const dependencies = await checks();
      const ready = dependencies.redis === 'up' && dependencies.database === 'up';
      if (ready) return { status: 200, body: { ready, checks: dependencies } };
      return { status: 503, body: errorBody('not_ready', 'Redis or PostgreSQL does not answer', { checks: dependencies }) };
    }),
  );

  return router;
}
