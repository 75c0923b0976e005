import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHarness, submit, waitForTask, type Harness } from '../helpers/harness.js';
import { testTools } from '../fixtures/tools.js';

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
  });
});
