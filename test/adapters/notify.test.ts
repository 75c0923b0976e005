import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import winston from 'winston';
import type { ToolContext } from '../../src/tools/tool.js';
import notify from '../../workers/adapters/notify.js';
import { createHarness, type Harness, submit, waitForTask } from '../helpers/harness.js';
import { json, startServer, type TestServer } from '../helpers/http-server.js';

describe('the notify tool', () => {
  let h: Harness;
  let hooks: TestServer;
  let outsider: TestServer;

  beforeAll(async () => {
    hooks = await startServer((request, res) => (request.path.startsWith('/gone') ? json(res, 410, {}) : json(res, 204, {})));
    outsider = await startServer((_request, res) => json(res, 204, {}));
    h = await createHarness({ env: { HTTP_TOOL_ALLOWED_HOSTS: `127.0.0.1:${hooks.port}` } });
  });
  afterAll(async () => {
    await h?.close();
    await Promise.all([hooks?.close(), outsider?.close()]);
  });

  it('writes a log line on the log channel (the default)', async () => {
    const id = await submit(h, { task_type: 'notify', params: { message: 'batch approved', level: 'warn', data: { batch: 7 } } });
    const result = await waitForTask(h, id);
    expect(result.status).toBe('completed');
    expect(result.result).toEqual({ delivered: true, channel: 'log' });
  });

  it('logs the message at the chosen level with its data', async () => {
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        lines.push(JSON.parse(chunk.toString('utf8')));
        done();
      },
    });
    const logger = winston.createLogger({ level: 'info', format: winston.format.json(), transports: [new winston.transports.Stream({ stream: sink })] });
    const settings = h.registry.settings(h.config, h.env).get('notify') as { HTTP_TOOL_ALLOWED_HOSTS: string[]; HTTP_TOOL_PRIVATE_NAMES: 'allow' | 'refuse' };
    const ctx = { logger, signal: new AbortController().signal, settings, taskId: 't', stepId: 's', attempt: 1, dependencies: {} } as ToolContext<
      typeof settings
    >;
    const input = notify.input.parse({ message: 'disk almost full', level: 'error', data: { used: 0.97 } });
    expect(await notify.run(input, ctx)).toEqual({ delivered: true, channel: 'log' });
    expect(lines).toEqual([expect.objectContaining({ level: 'error', message: 'disk almost full', notification: { used: 0.97 } })]);
  });

  it('POSTs message, data, task id and step id as JSON to an allowlisted webhook', async () => {
    const id = await submit(h, {
      task_type: 'notify',
      params: { channel: 'webhook', url: `${hooks.origin}/hook?team=ops`, message: 'batch approved', data: { batch: 7, ok: true } },
    });
    const result = await waitForTask(h, id);
    expect(result.status).toBe('completed');
    expect(result.result).toEqual({ delivered: true, channel: 'webhook', status: 204 });
    const received = hooks.received('/hook?team=ops');
    expect(received).toHaveLength(1);
    expect(received[0]!.method).toBe('POST');
    expect(received[0]!.headers['content-type']).toBe('application/json');
    expect(JSON.parse(received[0]!.body)).toEqual({ message: 'batch approved', data: { batch: 7, ok: true }, task_id: id, step_id: 'notify' });
  });

  it('fails without retry when the webhook answers 4xx', async () => {
    const id = await submit(h, { task_type: 'notify', params: { channel: 'webhook', url: `${hooks.origin}/gone`, message: 'hello' } });
    const result = await waitForTask(h, id);
    expect(result.status).toBe('failed');
    expect(result.steps[0]).toMatchObject({ attempts: 1, error: { name: 'NonRetryableError', message: 'webhook answered 410' } });
    expect(hooks.received('/gone')).toHaveLength(1);
  });

  it('refuses a webhook on a host that is not allowlisted, sending nothing', async () => {
    const id = await submit(h, { task_type: 'notify', params: { channel: 'webhook', url: `${outsider.origin}/hook`, message: 'hello' } });
    const result = await waitForTask(h, id);
    expect(result.status).toBe('failed');
    expect(result.steps[0]).toMatchObject({ attempts: 1, error: { name: 'HostRefusedError' } });
    expect(outsider.requests).toHaveLength(0);
  });

  it('answers 400 invalid_params for a webhook without a url, and stores nothing', async () => {
    const before = await h.db.prisma.task.count();
    const response = await h.request('POST', '/assign-task', { task_type: 'notify', params: { channel: 'webhook', message: 'hello' } });
    expect(response.status).toBe(400);
    expect(response.body.error.code).toBe('invalid_params');
    expect(response.body.error.details).toEqual([{ path: 'params.url', message: 'a webhook needs a url' }]);
    expect(await h.db.prisma.task.count()).toBe(before);
  });

  it('answers 400 invalid_params for an empty message or an unknown channel', async () => {
    const response = await h.request('POST', '/assign-task', { task_type: 'notify', params: { channel: 'pager', message: '' } });
    expect(response.status).toBe(400);
    expect(response.body.error.details.map((problem: { path: string }) => problem.path).sort()).toEqual(['params.channel', 'params.message']);
  });
});
