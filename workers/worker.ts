import http from 'node:http';
import type { Config } from '../src/lib/config.js';
import type { Logger } from '../src/lib/logger.js';
import { Metrics, scrapeAuthorized } from '../src/observability/metrics.js';
import type { Environment, ToolRegistry } from '../src/tools/tool.js';
import { startWorkerRuntime, type WorkerRuntime } from './runtime/worker-runtime.js';

export interface WorkerProcess {
  runtime: WorkerRuntime;
  /** The metrics server's URL when WORKER_METRICS_PORT is set. */
  metricsUrl?: string;
  close(): Promise<{ drained: boolean }>;
}

/**
 * Serves GET /metrics of this process on its own port, so a scraper sees every worker, and GET
 * /health for a container's healthcheck: 200 while its BullMQ workers run (an answer at all says
 * the event loop turns), 503 once they stopped. Dependencies away are no reason to restart it:
 * they are not checked here.
 */
async function serveMetrics(metrics: Metrics, port: number, host: string, token: string | undefined, running: () => boolean): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const path = req.url?.split('?')[0];
    if (req.method === 'GET' && path === '/health') {
      const up = running();
      res.writeHead(up ? 200 : 503, { 'content-type': 'application/json' }).end(JSON.stringify({ status: up ? 'ok' : 'stopped' }));
      return;
    }
    if (req.method !== 'GET' || path !== '/metrics') {
      res
        .writeHead(404, { 'content-type': 'application/json' })
        .end(JSON.stringify({ error: { code: 'route_not_found', message: 'only GET /metrics and GET /health here' } }));
      return;
    }
    if (!scrapeAuthorized(token, req.headers.authorization)) {
      res
        .writeHead(401, { 'content-type': 'application/json', 'www-authenticate': 'Bearer realm="metrics"' })
        .end(JSON.stringify({ error: { code: 'unauthorized', message: 'the metrics need METRICS_TOKEN: Authorization: Bearer <token>' } }));
      return;
    }
    metrics.registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text),
      (error: Error) => res.writeHead(500).end(error.message),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  return server;
}

/**
 * Starts the workers of this process: every tool of `registry`, narrowed by WORKER_TOOLS, their
 * settings read from `env` (the environment `config` was loaded from).
 */
export async function startWorker(
  config: Config,
  logger: Logger,
  registry: ToolRegistry,
  metrics = new Metrics(),
  env: Environment = process.env,
): Promise<WorkerProcess> {
  const tools = registry.only(config.WORKER_TOOLS);
  // Before anything is opened: settings that do not fit their tool stop the worker at boot.
  const settings = tools.settings(config, env);
  const runtime = await startWorkerRuntime({
    config,
    logger,
    registry: tools,
    settings,
    allTools: registry,
    metrics,
  });
  const metricsServer =
    config.WORKER_METRICS_PORT === undefined
      ? undefined
      : await serveMetrics(metrics, config.WORKER_METRICS_PORT, config.HOST, config.METRICS_TOKEN, () => runtime.workers.some((worker) => worker.isRunning()));
  const address = metricsServer?.address();
  const metricsUrl = address && typeof address === 'object' ? `http://127.0.0.1:${address.port}/metrics` : undefined;
  if (metricsUrl) logger.info('worker metrics listening', { url: metricsUrl });
  let closing: Promise<{ drained: boolean }> | undefined;
  return {
    runtime,
    ...(metricsUrl ? { metricsUrl } : {}),
    // Once: a second call (a signal handler and a supervisor both closing) waits for the first.
    close() {
      closing ??= (async () => {
        const outcome = await runtime.close();
        await new Promise((resolve) => (metricsServer ? metricsServer.close(resolve) : resolve(undefined)));
        return outcome;
      })();
      return closing;
    },
  };
}
