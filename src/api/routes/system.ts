import { z } from 'zod';
import { scrapeAuthorized } from '../../observability/metrics.js';
import { errorBody } from '../http.js';
import * as ex from '../openapi-examples.js';
import { invalid, text } from '../replies.js';
import * as r from '../responses.js';
import { plainRoute, type Route, route, type SystemInfo } from '../route.js';
import { SERVICE_LINKS } from '../service-links.js';

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

/** Whether Redis and PostgreSQL answer now (within a second each). */
export async function checks(info: SystemInfo) {
  const [redis, database] = await Promise.all([probe(() => info.redis.ping()), probe(() => info.pool.query('SELECT 1'))]);
  return { redis, database };
}

/** The probes read no body, but a request's body is parsed before any route sees it. */
const BODY_ON_A_PROBE = 'A body was sent and it is not valid JSON (`invalid_json`). Probes need none.';

/** The index, the probes and the metrics. */
export const SYSTEM_ROUTES: Route[] = [
  route({
    method: 'get',
    path: '/',
    operationId: 'serviceInfo',
    access: 'catalog',
    summary: 'Name, version, uptime and links',
    tags: ['system'],
    responses: { 200: { description: 'About this service.', body: r.serviceInfoSchema, examples: ex.serviceInfoExamples } },
    handler: async (_input, { system }) => ({
      status: 200,
      body: {
        name: system.name,
        version: system.version,
        uptime_s: Math.round((Date.now() - system.startedAt) / 1000),
        links: SERVICE_LINKS,
      },
    }),
  }),
  // Liveness: the process answers. Dependencies are reported but do not fail it.
  route({
    method: 'get',
    path: '/health',
    operationId: 'health',
    summary: 'Liveness, with the status of Redis and PostgreSQL',
    description: 'Answers 200 while the process runs, even when a dependency is down (then `status` is `degraded`).',
    tags: ['system'],
    open: true,
    responses: {
      200: { description: 'The process is alive.', body: r.healthSchema, examples: ex.healthExamples },
      400: invalid(BODY_ON_A_PROBE),
    },
    handler: async (_input, { system }) => {
      const dependencies = await checks(system);
      return {
        status: 200,
        body: {
          status: dependencies.redis === 'up' && dependencies.database === 'up' ? 'ok' : 'degraded',
          uptime_s: Math.round((Date.now() - system.startedAt) / 1000),
          checks: dependencies,
          timestamp: new Date().toISOString(),
        },
      };
    },
  }),
  // Readiness: send traffic here only when Redis and PostgreSQL answer.
  route({
    method: 'get',
    path: '/ready',
    operationId: 'ready',
    summary: 'Readiness: 200 only when Redis and PostgreSQL answer',
    tags: ['system'],
    open: true,
    responses: {
      200: { description: 'Ready for traffic.', body: r.readySchema, examples: ex.readyExamples },
      400: invalid(BODY_ON_A_PROBE),
      503: { description: 'Redis or PostgreSQL does not answer (`not_ready`).', body: r.notReadySchema, examples: ex.notReadyExamples },
    },
    handler: async (_input, { system, services }) => {
      const dependencies = await checks(system);
      const ready = dependencies.redis === 'up' && dependencies.database === 'up';
      if (ready) return { status: 200, body: { ready, checks: dependencies, services: services.healthSummary() } };
      return { status: 503, body: errorBody('not_ready', 'Redis or PostgreSQL does not answer', { checks: dependencies }) };
    },
  }),
  plainRoute({
    method: 'get',
    path: '/metrics',
    operationId: 'metrics',
    summary: 'Prometheus metrics of this API process',
    description:
      'Outside API_KEYS. When METRICS_TOKEN is set, it needs `Authorization: Bearer <METRICS_TOKEN>` (else 401 `unauthorized`); with NODE_ENV=production and no METRICS_TOKEN it is not served (404). Queue, task and dead-letter gauges are read at most once per METRICS_CACHE_MS.',
    tags: ['system'],
    open: true,
    beforeBody: true,
    responses: {
      200: { description: 'The Prometheus text exposition format.', mediaType: 'text/plain', body: z.string(), examples: ex.metricsExamples },
      404: { description: 'NODE_ENV=production without METRICS_TOKEN: metrics are not served on the API port (`not_found`).', body: r.errorBodySchema },
      401: {
        description: 'METRICS_TOKEN is set and the request does not carry it (`unauthorized`).',
        body: r.errorBodySchema,
        headers: { 'WWW-Authenticate': { description: '`Bearer realm="metrics"`', schema: text } },
      },
    },
    serve:
      ({ metrics, metricsToken, metricsClosed }) =>
      async (req, res, next) => {
        // Production does not show its figures to anyone who reaches the API: it needs a token.
        if (metricsClosed) {
          res.status(404).json(errorBody('not_found', 'NODE_ENV=production serves /metrics only with METRICS_TOKEN set'));
          return;
        }
        if (!scrapeAuthorized(metricsToken, req.get('authorization'))) {
          res.setHeader('www-authenticate', 'Bearer realm="metrics"');
          res.status(401).json(errorBody('unauthorized', 'the metrics need METRICS_TOKEN: Authorization: Bearer <token>'));
          return;
        }
        try {
          res.set('content-type', metrics.registry.contentType).send(await metrics.registry.metrics());
        } catch (error) {
          next(error);
        }
      },
  }),
];
