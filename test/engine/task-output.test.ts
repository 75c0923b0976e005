import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { singleRunEnding, taskEnding } from '../../src/engine/task-output.js';

const bytes = (value: unknown) => Buffer.byteLength(JSON.stringify(value));
const toolTask = { params: {}, plan: { single: true } };

describe('taskEnding (property-based)', () => {
  it("a one-tool task's result is its step's output, up to TASK_RESULT_MAX_BYTES, and TaskResultTooLarge past it", () => {
    fc.assert(
      fc.property(fc.jsonValue(), fc.integer({ min: 1, max: 400 }), (output, max) => {
        const steps = [{ id: 'echo', status: 'completed', output, error: null }];
        const ending = taskEnding(toolTask, steps, { TASK_RESULT_MAX_BYTES: max });
        if (bytes(output) <= max) expect(ending).toEqual({ status: 'completed', result: output });
        else
          expect(ending).toMatchObject({ status: 'failed', error: { name: 'TaskResultTooLarge', details: { limit: max, setting: 'TASK_RESULT_MAX_BYTES' } } });
        // The one-tool path, decided before anything is read, says the same.
        expect(singleRunEnding({ stepId: 'echo', status: 'completed', output }, { TASK_RESULT_MAX_BYTES: max })).toEqual(ending);
      }),
      { numRuns: 1_000 },
    );
  });

  it('a workflow output template over TASK_RESULT_MAX_BYTES is TaskResultTooLarge', () => {
    fc.assert(
      fc.property(fc.jsonValue(), fc.integer({ min: 1, max: 400 }), (output, max) => {
        const task = { params: {}, plan: { output: { all: ['{{steps.a.output}}'] } } };
        const steps = [{ id: 'a', status: 'completed', output, error: null }];
        const expected = { all: [output ?? null] };
        const ending = taskEnding(task, steps, { TASK_RESULT_MAX_BYTES: max });
        if (bytes(expected) <= max) expect(ending).toEqual({ status: 'completed', result: expected });
        else
          expect(ending).toMatchObject({ status: 'failed', error: { name: 'TaskResultTooLarge', details: { limit: max, setting: 'TASK_RESULT_MAX_BYTES' } } });
      }),
      { numRuns: 1_000 },
    );
  });
});

describe('taskEnding', () => {
  it('without an output template, a workflow returns every completed step by id and leaves the others out', () => {
    const steps = [
      { id: 'a', status: 'completed', output: { n: 1 }, error: null },
      { id: 'b', status: 'failed', output: null, error: { name: 'Boom', message: 'no' } },
      { id: 'c', status: 'completed', output: null, error: null },
      { id: 'd', status: 'skipped', output: null, error: null },
    ];
    expect(taskEnding({ params: {}, plan: {} }, steps)).toEqual({ status: 'completed', result: { a: { n: 1 }, c: null } });
  });

  it("an output template sees params, and each step's status, output and error; a skipped step's output is null", () => {
    const task = {
      params: { who: 'me' },
      plan: {
        output: {
          who: '{{params.who}}',
          b: '{{steps.b.status}}: {{steps.b.error.message}}',
          a: '{{steps.a.output.n}}',
          c: '{{steps.c.output.n}}',
          s: '{{steps.c.status}}',
        },
      },
    };
    const steps = [
      { id: 'a', status: 'completed', output: { n: 1 }, error: null },
      { id: 'b', status: 'failed', output: null, error: { name: 'Boom', message: 'no' } },
      { id: 'c', status: 'skipped', output: null, error: null },
    ];
    expect(taskEnding(task, steps)).toEqual({ status: 'completed', result: { who: 'me', b: 'failed: no', a: 1, c: null, s: 'skipped' } });
  });

  it('a one-tool task without output has a null result; a failed one fails naming its step', () => {
    expect(taskEnding(toolTask, [{ id: 'echo', status: 'completed', output: null, error: null }])).toEqual({ status: 'completed', result: null });
    expect(singleRunEnding({ stepId: 'http', status: 'failed', error: { name: 'HttpError', message: '500' } })).toEqual({
      status: 'failed',
      error: { step: 'http', name: 'HttpError', message: '500' },
    });
  });
});
