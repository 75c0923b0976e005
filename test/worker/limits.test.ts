import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHarness, type Harness, submit, uniqueName, waitForTask } from '../helpers/harness.js';

/**
 * The size limits of docs/configuration.md "Limits", each with small values so that a test can pass them:
 * refused at definition or at submit (400) where that can be known, otherwise a named,
 * non-retryable failure recorded in PostgreSQL; and outputs that stay out of BullMQ's job data
 * and return values beyond JOB_INLINE_OUTPUT_MAX_BYTES.
 */

const LIMITS = {
  TEMPLATE_STRING_MAX_CHARS: 1_000,
  TEMPLATE_MAX_REFERENCES: 10,
  STEP_INPUT_MAX_BYTES: 16_384,
  STEP_OUTPUT_MAX_BYTES: 10_240,
  STEP_OUTPUT_MAX_DEPTH: 5,
  TASK_RESULT_MAX_BYTES: 20_480,
  JOB_INLINE_OUTPUT_MAX_BYTES: 256,
};

const bytes = (value: unknown) => Buffer.byteLength(JSON.stringify(value));

describe('size limits', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness({ env: Object.fromEntries(Object.entries(LIMITS).map(([name, value]) => [name, String(value)])) });
  });
  afterAll(async () => {
    await h?.close();
  });

  async function define(body: Record<string, unknown>) {
    const response = await h.request('POST', '/workflows', body);
    expect(response.status, JSON.stringify(response.body)).toBe(201);
  }

  async function counts() {
    const { rows } = await h.db.pool.query(`SELECT (SELECT count(*) FROM tasks) AS tasks, (SELECT count(*) FROM steps) AS steps`);
    return rows[0];
  }

  async function stepJob(taskId: string, stepId: string) {
    const key = `${h.config.QUEUE_PREFIX}:tool.echo:${taskId}.1.${stepId}`;
    const [data, returnvalue] = await h.redis.hmget(key, 'data', 'returnvalue');
    if (!data) return undefined;
    return { data: JSON.parse(data), text: data, returnvalue: returnvalue ? JSON.parse(returnvalue) : undefined };
  }

  describe('when a definition is posted', () => {
    it('refuses a string longer than TEMPLATE_STRING_MAX_CHARS in a step input or the output, with its path', async () => {
      const long = 'x'.repeat(LIMITS.TEMPLATE_STRING_MAX_CHARS + 1);
      const response = await h.request('POST', '/workflows', {
        name: uniqueName('long_strings'),
        steps: [{ id: 'a', tool: 'echo', input: { fine: 'x'.repeat(LIMITS.TEMPLATE_STRING_MAX_CHARS), text: long } }],
        output: { list: ['ok', `{{steps.a.output.fine}}${long}`] },
      });
      expect(response.status).toBe(400);
      expect(response.body.error.code).toBe('invalid_workflow');
      expect(response.body.error.details).toEqual([
        { path: 'steps[0].input.text', message: expect.stringMatching(/1001 characters.*at most 1000 \(TEMPLATE_STRING_MAX_CHARS\)/) },
        { path: 'output.list[1]', message: expect.stringMatching(/TEMPLATE_STRING_MAX_CHARS/) },
      ]);
    });

    it('refuses more than TEMPLATE_MAX_REFERENCES template references, naming where the first one over sits', async () => {
      const name = uniqueName('many_references');
      const steps = (extra: number) => [
        { id: 'a', tool: 'echo', input: { refs: '{{params.p}}'.repeat(6) } },
        { id: 'b', tool: 'echo', depends_on: ['a'], input: { one: '{{steps.a.output.refs}}', more: Array.from({ length: 3 + extra }, () => '{{params.p}}') } },
      ];
      const parameters = [{ name: 'p', type: 'string' }];
      await define({ name, parameters, steps: steps(0) }); // 10 references: at the limit
      const response = await h.request('POST', '/workflows', { name, parameters, steps: steps(1) });
      expect(response.status).toBe(400);
      expect(response.body.error.details).toEqual([
        { path: 'steps[1].input.more[3]', message: 'the definition holds 11 template references; at most 10 are allowed (TEMPLATE_MAX_REFERENCES)' },
      ]);
    });
  });

  describe('when a task is submitted', () => {
    it('refuses params over STEP_INPUT_MAX_BYTES for a one-tool task, storing nothing', async () => {
      const before = await counts();
      const response = await h.request('POST', '/assign-task', { task_type: 'echo', params: { blob: 'x'.repeat(LIMITS.STEP_INPUT_MAX_BYTES) } });
      expect(response.status).toBe(400);
      expect(response.body.error).toMatchObject({
        code: 'invalid_params',
        details: [{ path: 'params', message: expect.stringMatching(/STEP_INPUT_MAX_BYTES/) }],
      });
      expect(await counts()).toEqual(before);
      // Just under the limit is fine.
      const fits = { blob: 'x'.repeat(LIMITS.STEP_INPUT_MAX_BYTES - 20) };
      expect(bytes(fits)).toBeLessThanOrEqual(LIMITS.STEP_INPUT_MAX_BYTES);
      expect((await h.request('POST', '/assign-task', { task_type: 'echo', params: fits })).status).toBe(202);
    });

    it('refuses a workflow whose first steps would get an input over STEP_INPUT_MAX_BYTES once templates are resolved', async () => {
      const name = uniqueName('root_too_large');
      await define({
        name,
        parameters: [{ name: 's', type: 'string' }],
        steps: [{ id: 'a', tool: 'echo', input: { x: '{{params.s}}', y: 'twice: {{params.s}}' } }],
      });
      const before = await counts();
      const response = await h.request('POST', `/workflows/${name}/execute`, { parameters: { s: 'x'.repeat(9_000) } });
      expect(response.status).toBe(400);
      expect(response.body.error.code).toBe('invalid_params');
      expect(response.body.error.details).toEqual([
        {
          path: 'parameters',
          message: expect.stringMatching(/^the input of step 'a' would be larger than 16384 bytes.*\(at input\.y\).*STEP_INPUT_MAX_BYTES/),
        },
      ]);
      expect(await counts()).toEqual(before);
      expect((await h.request('POST', `/workflows/${name}/execute`, { parameters: { s: 'x'.repeat(7_000) } })).status).toBe(202);
    });
  });

  describe('while a task runs', () => {
    it('fails a step whose input passes STEP_INPUT_MAX_BYTES once it is ready (StepInputTooLarge), without running it', async () => {
      const name = uniqueName('input_too_large');
      await define({
        name,
        parameters: [{ name: 's', type: 'string' }],
        steps: [
          { id: 'a', tool: 'echo', input: { x: '{{params.s}}' } },
          { id: 'b', tool: 'echo', depends_on: ['a'], input: { x: '{{steps.a.output.x}}', y: '{{steps.a.output.x}}' }, retry: { attempts: 3 } },
          { id: 'c', tool: 'echo', depends_on: ['b'], input: {} },
        ],
      });
      const id = await submit(h, { task_type: name, params: { s: 'x'.repeat(9_000) } });
      const task = await waitForTask(h, id);
      expect(task.status).toBe('failed');
      const [a, b, c] = task.steps;
      expect(a.status).toBe('completed');
      expect(b).toMatchObject({
        status: 'failed',
        attempts: 0,
        error: { name: 'StepInputTooLarge', retryable: false, details: { limit: 16_384, setting: 'STEP_INPUT_MAX_BYTES', at: 'y' } },
      });
      expect(c.status).toBe('skipped');
      expect(task.error).toMatchObject({ step: 'b', name: 'StepInputTooLarge' });
      // The engine failed it when it became ready: no job was made, no oversized input stored.
      expect(await stepJob(id, 'b')).toBeUndefined();
      expect(b.input).toBeUndefined();
    });

    it('lets dependents run under on_failure "continue", seeing the StepInputTooLarge failure', async () => {
      const name = uniqueName('input_too_large_continue');
      await define({
        name,
        parameters: [{ name: 's', type: 'string' }],
        steps: [
          { id: 'a', tool: 'echo', input: { x: '{{params.s}}' } },
          { id: 'b', tool: 'echo', depends_on: ['a'], on_failure: 'continue', input: { x: '{{steps.a.output.x}}', y: '{{steps.a.output.x}}' } },
          { id: 'c', tool: 'echo', depends_on: ['b'], input: { status: '{{steps.b.status}}', error: '{{steps.b.error.name}}' } },
        ],
      });
      const task = await waitForTask(h, await submit(h, { task_type: name, params: { s: 'x'.repeat(9_000) } }));
      expect(task.status).toBe('completed');
      expect(task.steps[2].output).toEqual({ status: 'failed', error: 'StepInputTooLarge' });
    });

    it('fails a step whose output passes STEP_OUTPUT_MAX_BYTES (StepOutputTooLarge), at the first attempt, recorded in PostgreSQL', async () => {
      const id = await submit(h, { task_type: 'echo', params: { blob: 'x'.repeat(12_000) } });
      const task = await waitForTask(h, id);
      expect(task.status).toBe('failed');
      expect(task.steps[0]).toMatchObject({
        status: 'failed',
        attempts: 1,
        error: { name: 'StepOutputTooLarge', retryable: false, details: { limit: 10_240, setting: 'STEP_OUTPUT_MAX_BYTES' } },
      });
      expect(task.steps[0].output).toBeUndefined();
      const { rows } = await h.db.pool.query(`SELECT output, error->>'name' AS error FROM steps WHERE task_id = $1`, [id]);
      expect(rows).toEqual([{ output: null, error: 'StepOutputTooLarge' }]);
      const letters = await h.request('GET', `/dead-letters?task_id=${id}`);
      expect(letters.body.items).toHaveLength(1);
    });

    it('fails a step whose output nests deeper than STEP_OUTPUT_MAX_DEPTH (StepOutputTooLarge)', async () => {
      const id = await submit(h, { task_type: 'echo', params: { a: { b: { c: { d: { e: { f: 1 } } } } } } });
      const task = await waitForTask(h, id);
      expect(task.steps[0]).toMatchObject({
        status: 'failed',
        attempts: 1,
        error: { name: 'StepOutputTooLarge', details: { limit: 5, setting: 'STEP_OUTPUT_MAX_DEPTH' } },
      });
      // Five levels are fine.
      expect((await waitForTask(h, await submit(h, { task_type: 'echo', params: { a: { b: { c: { d: 1 } } } } }))).status).toBe('completed');
    });

    it('fails a task whose result passes TASK_RESULT_MAX_BYTES (TaskResultTooLarge), with or without an output template', async () => {
      const steps = ['a', 'b', 'c'].map((id) => ({ id, tool: 'echo', input: { x: '{{params.s}}' } }));
      const parameters = [{ name: 's', type: 'string' }];
      const byDefault = uniqueName('result_too_large');
      await define({ name: byDefault, parameters, steps });
      const templated = uniqueName('result_too_large_output');
      await define({ name: templated, parameters, steps, output: { all: ['{{steps.a.output}}', '{{steps.b.output}}', '{{steps.c.output}}'] } });
      for (const name of [byDefault, templated]) {
        const task = await waitForTask(h, await submit(h, { task_type: name, params: { s: 'x'.repeat(8_000) } }));
        expect(task.status, name).toBe('failed');
        expect(
          task.steps.map((step: { status: string }) => step.status),
          name,
        ).toEqual(['completed', 'completed', 'completed']);
        expect(task.error, name).toMatchObject({ name: 'TaskResultTooLarge', details: { limit: 20_480, setting: 'TASK_RESULT_MAX_BYTES' } });
        expect(task.result ?? null, name).toBeNull();
      }
      // The same workflows with smaller values complete.
      expect((await waitForTask(h, await submit(h, { task_type: templated, params: { s: 'x'.repeat(5_000) } }))).status).toBe('completed');
    });
  });

  describe('outputs do not travel in BullMQ beyond JOB_INLINE_OUTPUT_MAX_BYTES', () => {
    it('gives dependents a marker for a large output and the output itself for a small one; return values likewise', async () => {
      const name = uniqueName('inline_outputs');
      await define({
        name,
        parameters: [{ name: 's', type: 'string' }],
        steps: [
          { id: 'large', tool: 'echo', input: { x: '{{params.s}}' } },
          { id: 'small', tool: 'echo', input: { x: 'small' } },
          { id: 'after', tool: 'echo', depends_on: ['large', 'small'], input: { n: 1 } },
        ],
      });
      const id = await submit(h, { task_type: name, params: { s: 'x'.repeat(2_000) } });
      const task = await waitForTask(h, id);
      expect(task.status).toBe('completed');
      // PostgreSQL, and so GET /result, has every output in full.
      expect(task.steps[0].output).toEqual({ x: 'x'.repeat(2_000) });

      const after = (await stepJob(id, 'after'))!;
      expect(after.data.dependencies).toEqual({
        large: { status: 'completed', output_stored_in: 'postgresql' },
        small: { status: 'completed', output: { x: 'small' } },
      });
      expect(after.text.length).toBeLessThan(1_000);
      expect((await stepJob(id, 'large'))!.returnvalue).toEqual({ stored_in: 'postgresql', bytes: bytes({ x: 'x'.repeat(2_000) }) });
      expect((await stepJob(id, 'small'))!.returnvalue).toEqual({ x: 'small' });
    });
  });
});
