import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHarness, type Harness, submit, waitForTask } from '../helpers/harness.js';

describe('POST /assign-task and GET /result', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness({ env: { BODY_LIMIT: '10kb' } });
  });
  afterAll(async () => {
    await h.close();
  });

  it('accepts a task, runs it, and shows its output and step', async () => {
    const response = await h.request('POST', '/assign-task', { task_type: 'echo', params: { hello: 'world', n: 3 } });
    expect(response.status).toBe(202);
    expect(response.body).toMatchObject({ status: 'assigned', message: "Task 'echo' successfully assigned" });
    expect(response.body.task_id).toMatch(/^[0-9a-f-]{36}$/);
    expect(Date.parse(response.body.timestamp)).not.toBeNaN();

    const result = await waitForTask(h, response.body.task_id);
    expect(result).toMatchObject({
      task_id: response.body.task_id,
      task_type: 'echo',
      status: 'completed',
      result: { hello: 'world', n: 3 },
      progress: { completed: 1, total: 1 },
    });
    expect(result.steps).toHaveLength(1);
    const [step] = result.steps;
    expect(step).toMatchObject({ id: 'echo', tool: 'echo', status: 'completed', attempts: 1, output: { hello: 'world', n: 3 } });
    // The duration is the step's own span, not a number that merely exists.
    expect(Date.parse(step.finished_at)).toBeGreaterThanOrEqual(Date.parse(step.started_at));
    expect(step.duration_ms).toBe(Date.parse(step.finished_at) - Date.parse(step.started_at));
    expect(Date.parse(step.started_at)).toBeGreaterThanOrEqual(Date.parse(result.created_at));
    expect(Date.parse(result.finished_at)).toBeGreaterThanOrEqual(Date.parse(step.finished_at));
    for (const field of ['created_at', 'started_at', 'finished_at', 'timestamp']) expect(Date.parse(result[field])).not.toBeNaN();
  });

  it('also answers on /assign-task/ with a trailing slash', async () => {
    const response = await h.request('POST', '/assign-task/', { task_type: 'echo', params: {} });
    expect(response.status).toBe(202);
  });

  it('answers 404 with the known task types for an unknown task_type, and stores nothing', async () => {
    const before = await h.db.prisma.task.count();
    const response = await h.request('POST', '/assign-task', { task_type: 'no_such_tool', params: {} });
    expect(response.status).toBe(404);
    expect(response.body.error.code).toBe('unknown_task_type');
    expect(response.body.error.details.known_task_types).toEqual(expect.arrayContaining(['echo', 'sleep', 'http', 'notify', 'approve_batches']));
    expect(await h.db.prisma.task.count()).toBe(before);
  });

  it('answers 400 with one entry per problem when params do not fit the schema', async () => {
    const before = await h.db.prisma.task.count();
    const response = await h.request('POST', '/assign-task', {
      task_type: 'approve_batches',
      params: { batch_ids: ['ok', 1.5, ''], auto_approve: 'yes' },
    });
    expect(response.status).toBe(400);
    expect(response.body.error.code).toBe('invalid_params');
    const paths = response.body.error.details.map((problem: { path: string }) => problem.path).sort();
    expect(paths).toEqual(['params.auto_approve', 'params.batch_ids[1]', 'params.batch_ids[2]']);
    for (const problem of response.body.error.details) expect(problem.message).toEqual(expect.any(String));
    expect(await h.db.prisma.task.count()).toBe(before);
  });

  it('answers 400 for a body that is not the contract', async () => {
    for (const body of [
      {},
      { task_type: '' },
      { task_type: 'echo', params: [] },
      { task_type: 'echo', priority: 0 },
      { task_type: 'echo', priority: 2 ** 21 },
      { task_type: 'echo', surprise: 1 },
    ]) {
      const response = await h.request('POST', '/assign-task', body);
      expect(response.status, JSON.stringify(body)).toBe(400);
      expect(response.body.error.code).toBe('validation_error');
      expect(response.body.error.details.length).toBeGreaterThan(0);
    }
  });

  it('answers 400 invalid_json for malformed JSON and 415 for another content type', async () => {
    const malformed = await h.request('POST', '/assign-task', '{"task_type": "echo",');
    expect(malformed.status).toBe(400);
    expect(malformed.body.error.code).toBe('invalid_json');
    const text = await h.request('POST', '/assign-task', 'task_type=echo', { 'content-type': 'text/plain' });
    expect(text.status).toBe(415);
    expect(text.body.error.code).toBe('unsupported_media_type');
  });

  it('answers 413 for a body over the limit', async () => {
    const response = await h.request('POST', '/assign-task', { task_type: 'echo', params: { blob: 'x'.repeat(20_000) } });
    expect(response.status).toBe(413);
    expect(response.body.error.code).toBe('payload_too_large');
  });

  it('returns the first task for a repeated idempotency key, and 409 for a different body', async () => {
    const body = { task_type: 'echo', params: { a: 1, b: 2 }, idempotency_key: 'order-42' };
    const first = await h.request('POST', '/assign-task', body);
    expect(first.status).toBe(202);
    // Same body, keys in another order.
    const again = await h.request('POST', '/assign-task', { idempotency_key: 'order-42', params: { b: 2, a: 1 }, task_type: 'echo' });
    expect(again.status).toBe(200);
    expect(again.body.task_id).toBe(first.body.task_id);
    const different = await h.request('POST', '/assign-task', { ...body, params: { a: 1, b: 3 } });
    expect(different.status).toBe(409);
    expect(different.body.error.code).toBe('idempotency_conflict');
    expect(await h.db.prisma.task.count({ where: { idempotencyKey: 'order-42' } })).toBe(1);
    await waitForTask(h, first.body.task_id);
    const jobs = await h.db.prisma.step.count({ where: { taskId: first.body.task_id } });
    expect(jobs).toBe(1);
  });

  it('answers 404 for an unknown or malformed task id', async () => {
    for (const id of ['00000000-0000-4000-8000-000000000000', 'not-a-uuid', "'; drop table tasks; --"]) {
      const response = await h.request('GET', `/result/${encodeURIComponent(id)}`);
      expect(response.status).toBe(404);
      expect(response.body.error.code).toBe('task_not_found');
    }
  });

  it('holds GET /result?wait=N until the task ends', async () => {
    const id = await submit(h, { task_type: 'sleep', params: { ms: 300 } });
    const response = await h.request('GET', `/result/${id}?wait=10`);
    const answeredAt = Date.now();
    expect(response.status).toBe(200);
    expect(response.body.status).toBe('completed');
    // Answered when the task ended, long before the 10 s ran out (counted from the task's end).
    expect(answeredAt - Date.parse(response.body.finished_at)).toBeLessThan(5_000);
    expect(response.body.steps[0].output.slept_ms).toBeGreaterThanOrEqual(300);
  });

  it('answers 400 for a negative wait', async () => {
    const id = await submit(h, { task_type: 'echo', params: {} });
    const response = await h.request('GET', `/result/${id}?wait=-1`);
    expect(response.status).toBe(400);
  });

  it('delays a task by delay_ms', async () => {
    const id = await submit(h, { task_type: 'echo', params: {}, delay_ms: 600 });
    const result = await waitForTask(h, id);
    expect(Date.parse(result.steps[0].started_at) - Date.parse(result.created_at)).toBeGreaterThanOrEqual(550);
  });

  it('answers 404 with the contract body for an unknown route', async () => {
    const response = await h.request('GET', '/nope');
    expect(response.status).toBe(404);
    expect(response.body.error.code).toBe('route_not_found');
  });
});
