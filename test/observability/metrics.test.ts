import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Metrics } from '../../src/observability/metrics.js';
import { testTools } from '../fixtures/tools.js';
import { createHarness, type Harness, poll, submit, waitForTask } from '../helpers/harness.js';

function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (Object.entries(labels).every(([key, value]) => line.includes(`${key}="${value}"`))) return Number(line.split(' ').at(-1));
  }
  return undefined;
}

describe('Prometheus metrics', () => {
  let h: Harness;
  beforeAll(async () => {
    // The worker runs in this process too, but with its own metrics server, as a worker process would.
    h = await createHarness({ tools: testTools, env: { WORKER_METRICS_PORT: '0' } });
    const ids = await Promise.all([
      submit(h, { task_type: 'echo', params: {} }),
      submit(h, { task_type: 'echo', params: {} }),
      submit(h, { task_type: 'flaky', params: { succeed_on: 2, key: 'metrics' }, retry: { attempts: 2, backoff: { type: 'fixed', delay_ms: 10 } } }),
      submit(h, { task_type: 'broken', params: {} }),
    ]);
    await Promise.all(ids.map((id) => waitForTask(h, id)));
  });
  afterAll(async () => {
    await h.close();
  });

  it('serves the API metrics at /metrics: requests, submissions, queue depth, active tasks, dead letters', async () => {
    await h.request('GET', '/nope');
    const response = await fetch(`${h.url}/metrics`);
    expect(response.headers.get('content-type')).toMatch(/^text\/plain/);
    const text = await response.text();
    expect(sample(text, 'orchestrator_tasks_submitted_total', { task_type: 'echo' })).toBe(2);
    expect(sample(text, 'orchestrator_http_requests_total', { method: 'POST', route: '/assign-task', status: '202' })).toBe(4);
    expect(sample(text, 'orchestrator_http_requests_total', { route: 'unmatched', status: '404' })).toBe(1);
    expect(sample(text, 'orchestrator_http_request_duration_seconds_count', { method: 'POST', route: '/assign-task' })).toBe(4);
    expect(sample(text, 'orchestrator_queue_jobs', { queue: 'tool.echo', state: 'wait' })).toBe(0);
    expect(sample(text, 'orchestrator_active_tasks', { status: 'running' })).toBe(0);
    expect(sample(text, 'orchestrator_dead_letters_open')).toBe(1);
    expect(sample(text, 'orchestrator_process_resident_memory_bytes')).toBeGreaterThan(0);
  });

  it('serves each worker process its own metrics on WORKER_METRICS_PORT', async () => {
    const url = h.worker!.metricsUrl!;
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
    const text = await (await fetch(url)).text();
    expect(sample(text, 'orchestrator_steps_finished_total', { tool: 'echo', status: 'completed' })).toBe(2);
    expect(sample(text, 'orchestrator_steps_finished_total', { tool: 'broken', status: 'failed' })).toBe(1);
    expect(sample(text, 'orchestrator_step_retries_total', { tool: 'flaky' })).toBe(1);
    expect(sample(text, 'orchestrator_dead_letters_total', { tool: 'broken' })).toBe(1);
    expect(sample(text, 'orchestrator_tasks_finished_total', { task_type: 'echo', status: 'completed' })).toBe(2);
    expect(sample(text, 'orchestrator_tasks_finished_total', { task_type: 'broken', status: 'failed' })).toBe(1);
    expect(sample(text, 'orchestrator_step_duration_seconds_count', { tool: 'echo', status: 'completed' })).toBe(2);
    expect(sample(text, 'orchestrator_task_duration_seconds_count', { task_type: 'flaky', status: 'completed' })).toBe(1);
    expect((await fetch(url.replace('/metrics', '/other'))).status).toBe(404);
    // Its /health, for a container's healthcheck (docker-compose.yml): up while its workers run.
    const health = await fetch(url.replace('/metrics', '/health'));
    expect([health.status, await health.json()]).toEqual([200, { status: 'ok' }]);
  });
});

describe('the gauges read from Redis and PostgreSQL', () => {
  function countingSources() {
    const reads = { queueDepth: 0, activeTasks: 0, openDeadLetters: 0 };
    let failNext = false;
    return {
      reads,
      failNextRead: () => {
        failNext = true;
      },
      sources: {
        queueDepth: async () => {
          reads.queueDepth += 1;
          return [{ queue: 'tool.echo', state: 'wait', count: reads.queueDepth }];
        },
        activeTasks: async () => {
          reads.activeTasks += 1;
          return [{ status: 'running', count: 1 }];
        },
        openDeadLetters: async () => {
          reads.openDeadLetters += 1;
          if (failNext) {
            failNext = false;
            throw new Error('database down');
          }
          return 2;
        },
      },
    };
  }

  it('are read once for a burst of scrapes, concurrent or one after the other', async () => {
    const { reads, sources } = countingSources();
    const metrics = new Metrics({ defaultMetrics: false });
    metrics.addGauges(sources, { cacheMs: 60_000 });
    const texts = await Promise.all(Array.from({ length: 5 }, () => metrics.registry.metrics()));
    for (let i = 0; i < 3; i += 1) texts.push(await metrics.registry.metrics());
    expect(reads).toEqual({ queueDepth: 1, activeTasks: 1, openDeadLetters: 1 });
    for (const text of texts) {
      expect(sample(text, 'orchestrator_queue_jobs', { queue: 'tool.echo', state: 'wait' })).toBe(1);
      expect(sample(text, 'orchestrator_dead_letters_open')).toBe(2);
    }
  });

  it('are read again once the cache time has passed, and a failed reading is not kept', async () => {
    const { reads, sources, failNextRead } = countingSources();
    const metrics = new Metrics({ defaultMetrics: false });
    metrics.addGauges(sources, { cacheMs: 100 });
    await metrics.registry.metrics();
    const text = await poll(
      async () => {
        const scraped = await metrics.registry.metrics();
        return reads.queueDepth === 2 ? scraped : undefined;
      },
      { label: 'a second reading after 100 ms' },
    );
    expect(sample(text, 'orchestrator_queue_jobs', { queue: 'tool.echo', state: 'wait' })).toBe(2);
    await poll(() => reads.openDeadLetters === 2, { label: 'the second reading to settle' });
    failNextRead();
    await poll(
      async () => {
        await metrics.registry.metrics().catch(() => undefined);
        return reads.openDeadLetters === 3;
      },
      { label: 'a third reading, which fails' },
    );
    await expect(metrics.registry.metrics()).resolves.toContain('orchestrator_dead_letters_open 2');
    expect(reads.openDeadLetters).toBe(4);
  });

  it('count open dead letters through an index', async () => {
    const h = await createHarness({ api: false, worker: false });
    const client = new pg.Client({ connectionString: h.config.DATABASE_URL });
    await client.connect();
    try {
      // The table is tiny in a test: forbid the sequential scan to see which index the count can use.
      await client.query('SET enable_seqscan = off');
      const plan = (await client.query('EXPLAIN SELECT count(*) FROM dead_letters WHERE replayed_at IS NULL')).rows.map((row) => row['QUERY PLAN']).join('\n');
      // Each day's partition has its own copy of the index (dead_letters_p20261124_replayed_at_idx).
      expect(plan).toMatch(/Index Scan on dead_letters_\w+_replayed_at_idx/);
      expect(plan).not.toMatch(/Seq Scan/);
    } finally {
      await client.end();
      await h.close();
    }
  });
});

describe('/metrics with METRICS_TOKEN', () => {
  const TOKEN = 'metrics-token-0123456789';
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness({ env: { METRICS_TOKEN: TOKEN, WORKER_METRICS_PORT: '0' } });
  });
  afterAll(async () => {
    await h.close();
  });

  it('answers 401 without the token or with another one, on the API and on workers', async () => {
    for (const url of [`${h.url}/metrics`, h.worker!.metricsUrl!]) {
      for (const headers of [
        {},
        { authorization: `Bearer ${TOKEN}x` },
        { authorization: TOKEN },
        { authorization: `Basic ${Buffer.from(`x:${TOKEN}`).toString('base64')}` },
      ] as Record<string, string>[]) {
        const response = await fetch(url, { headers });
        expect(response.status, `${url} ${JSON.stringify(headers)}`).toBe(401);
        expect(response.headers.get('www-authenticate')).toBe('Bearer realm="metrics"');
        expect(((await response.json()) as { error: { code: string } }).error.code).toBe('unauthorized');
      }
      const allowed = await fetch(url, { headers: { authorization: `Bearer ${TOKEN}` } });
      expect(allowed.status, url).toBe(200);
      expect(await allowed.text()).toContain('# TYPE orchestrator_');
    }
  });
});
