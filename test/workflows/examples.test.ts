import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHarness, type Harness, submit, waitForTask } from '../helpers/harness.js';

describe('example workflows shipped with the service', () => {
  let h: Harness;
  let server: http.Server;
  let port: number;
  beforeAll(async () => {
    server = http.createServer((_req, res) => {
      res.setHeader('content-type', 'text/plain');
      res.end('The quick brown fox jumps over the lazy dog. The fox runs! Brown foxes everywhere.');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
    h = await createHarness({ env: { HTTP_TOOL_ALLOWED_HOSTS: `127.0.0.1:${port}` } });
  });
  afterAll(async () => {
    await h.close();
    await new Promise((resolve) => server.close(resolve));
  });

  it('are loaded on start', async () => {
    const { status, body } = await h.request('GET', '/workflows');
    expect(status).toBe(200);
    expect(body.workflows.map((w: { name: string }) => w.name).sort()).toEqual(['diamond', 'document_analysis', 'fan_out_fan_in']);
  });

  it('runs the diamond: every step once, d after b and c', async () => {
    const id = await submit(h, { task_type: 'diamond', params: { value: 'v' } });
    const task = await waitForTask(h, id);
    expect(task.status).toBe('completed');
    expect(task.result).toEqual({ joined: 'v-b+v-c' });
    const at = Object.fromEntries(task.steps.map((s: any) => [s.id, s]));
    expect(Date.parse(at.d.started_at)).toBeGreaterThanOrEqual(Date.parse(at.b.finished_at));
    expect(Date.parse(at.d.started_at)).toBeGreaterThanOrEqual(Date.parse(at.c.finished_at));
    for (const step of task.steps) expect(step.attempts).toBe(1);
  });

  it('runs fan-out/fan-in 1 -> 10 -> 1 through /workflows/:name/execute', async () => {
    const { status, body } = await h.request('POST', '/workflows/fan_out_fan_in/execute', {
      parameters: { items: ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j'] },
    });
    expect(status).toBe(202);
    const task = await waitForTask(h, body.task_id);
    expect(task.status).toBe('completed');
    expect(task.result).toEqual({ values: ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j'] });
    expect(task.progress).toEqual({ completed: 12, total: 12 });
  });

  it('runs the document analysis against a local server', async () => {
    const id = await submit(h, { task_type: 'document_analysis', params: { url: `http://127.0.0.1:${port}/doc` } });
    const task = await waitForTask(h, id);
    expect(task.status).toBe('completed');
    expect(task.result).toMatchObject({ http_status: 200, words: 15 });
    expect(task.result.top_words[0]).toEqual({ word: 'brown', count: 2 });
  });
});
