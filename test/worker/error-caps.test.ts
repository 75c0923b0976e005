import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ERROR_LIMITS } from '../../src/lib/errors.js';
import { createHarness, type Harness, submit, uniqueName, waitForTask } from '../helpers/harness.js';
import { startServer, type TestServer } from '../helpers/http-server.js';

/**
 * The worst error an adapter produces today: the http tool quotes a 4xx answer's body, and the
 * tool reads up to 10 MiB of it. Wherever the error is stored or copied (the step, the task, the
 * dead letter, a dependent's job data in Redis, BullMQ's failed reason) it is a few KiB.
 */

const BODY_BYTES = 10 * 1024 * 1024 - 1024;
/** Name, message and details together, with JSON's punctuation and the cut markers. */
const RECORD_MAX = ERROR_LIMITS.nameBytes + ERROR_LIMITS.messageBytes + ERROR_LIMITS.detailsBytes + 512;
const bytes = (value: unknown) => Buffer.byteLength(JSON.stringify(value));

describe('error records are capped wherever they are kept', () => {
  let h: Harness;
  let server: TestServer;
  beforeAll(async () => {
    const body = 'x'.repeat(BODY_BYTES);
    server = await startServer((_request, res) => {
      res.writeHead(422, { 'content-type': 'text/plain' }).end(body);
    });
    h = await createHarness({ env: { HTTP_TOOL_ALLOWED_HOSTS: `127.0.0.1:${server.port}` } });
  });
  afterAll(async () => {
    await h?.close();
    await server?.close();
  });

  it('keeps a 10 MiB 4xx body out of the step, the task, the dead letter and a dependent job (on_failure continue)', async () => {
    const name = uniqueName('caps');
    const definition = {
      name,
      steps: [
        { id: 'fetch', tool: 'http', input: { method: 'GET', url: `${server.origin}/big` }, retry: { attempts: 1 }, on_failure: 'continue' },
        { id: 'after', tool: 'echo', input: { ok: true }, depends_on: ['fetch'] },
        { id: 'fail', tool: 'http', input: { method: 'GET', url: `${server.origin}/big` }, retry: { attempts: 1 }, depends_on: ['after'] },
      ],
    };
    expect((await h.request('POST', '/workflows', definition)).status).toBe(201);
    const id = await submit(h, { task_type: name });
    const task = await waitForTask(h, id, 30_000);
    expect(task.status).toBe('failed');
    expect(server.requests.length).toBe(2);

    const fetch = task.steps.find((step: { id: string }) => step.id === 'fetch');
    expect(fetch.status).toBe('failed');
    expect(fetch.error.details.status).toBe(422);
    expect(fetch.error.details.body).toMatch(/^x+… \[cut: \d+ bytes in all\]$/);
    expect(fetch.error.details.body).toContain(`[cut: ${BODY_BYTES} bytes in all]`);
    expect(bytes(fetch.error)).toBeLessThan(RECORD_MAX);
    expect(task.error.step).toBe('fail');
    expect(bytes(task.error)).toBeLessThan(RECORD_MAX);

    // As stored, not only as shown.
    const { rows } = await h.db.pool.query(
      `SELECT (SELECT max(octet_length(error::text)) FROM steps WHERE task_id = $1) AS steps,
              (SELECT octet_length(error::text) FROM tasks WHERE id = $1) AS task,
              (SELECT max(octet_length(error::text)) FROM dead_letters WHERE task_id = $1) AS letters,
              (SELECT count(*) FROM dead_letters WHERE task_id = $1) AS letter_count`,
      [id],
    );
    expect(Number(rows[0].letter_count)).toBe(2);
    for (const column of ['steps', 'task', 'letters']) expect(Number(rows[0][column]), column).toBeLessThan(RECORD_MAX);

    // The dependent's job data in Redis, and BullMQ's own record of the failed job.
    const [data] = await h.redis.hmget(`${h.config.QUEUE_PREFIX}:tool.echo:${id}.1.after`, 'data');
    expect(data).toBeTruthy();
    expect(JSON.parse(data!).dependencies.fetch.status).toBe('failed');
    expect(Buffer.byteLength(data!)).toBeLessThan(RECORD_MAX + 2048);
    // Under on_failure continue the failure did not fail the task: the job completes carrying its (capped) error.
    const [returned, reason, stack] = await h.redis.hmget(`${h.config.QUEUE_PREFIX}:tool.http:${id}.1.fetch`, 'returnvalue', 'failedReason', 'stacktrace');
    expect(JSON.parse(returned!)).toMatchObject({ status: 'failed', error: expect.stringContaining('422') });
    expect(Buffer.byteLength(returned ?? '') + Buffer.byteLength(reason ?? '') + Buffer.byteLength(stack ?? '')).toBeLessThan(RECORD_MAX + 8192);
  });
});
