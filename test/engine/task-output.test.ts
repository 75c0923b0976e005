import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { taskEnding, taskResult } from '../../src/engine/task-output.js';
import { LimitExceededError } from '../../src/errors.js';

const bytes = (value: unknown) => Buffer.byteLength(JSON.stringify(value));
const toolTask = { params: {}, output_template: null, workflow_name: null };

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (error) {
    return error;
  }
  throw new Error('expected a throw');
}

describe('taskResult (property-based)', () => {
  it("a one-tool task's result is its step's output, up to TASK_RESULT_MAX_BYTES, and TaskResultTooLarge past it", () => {
    fc.assert(
      fc.property(fc.jsonValue(), fc.integer({ min: 1, max: 400 }), (output, max) => {
        const steps = [{ step_id: 'echo', status: 'completed', output, error: null }];
        if (bytes(output) <= max) {
          expect(taskResult(toolTask, steps, { TASK_RESULT_MAX_BYTES: max })).toEqual(output);
          expect(taskEnding(toolTask, steps, { TASK_RESULT_MAX_BYTES: max })).toEqual({ status: 'completed', result: output });
        } else {
          const error = thrown(() => taskResult(toolTask, steps, { TASK_RESULT_MAX_BYTES: max }));
          expect(error).toBeInstanceOf(LimitExceededError);
          expect(error).toMatchObject({ name: 'TaskResultTooLarge', details: { limit: max, setting: 'TASK_RESULT_MAX_BYTES' } });
          expect(taskEnding(toolTask, steps, { TASK_RESULT_MAX_BYTES: max })).toMatchObject({ status: 'failed', error: { name: 'TaskResultTooLarge' } });
        }
      }),
      { numRuns: 1_000 },
    );
  });

  it('a workflow output template over TASK_RESULT_MAX_BYTES is TaskResultTooLarge', () => {
    fc.assert(
      fc.property(fc.jsonValue(), fc.integer({ min: 1, max: 400 }), (output, max) => {
        const task = { params: {}, output_template: { all: ['{{steps.a.output}}'] }, workflow_name: 'w' };
        const steps = [{ step_id: 'a', status: 'completed', output, error: null }];
        const expected = { all: [output] };
        if (bytes(expected) <= max) {
          expect(taskResult(task, steps, { TASK_RESULT_MAX_BYTES: max })).toEqual(expected);
        } else {
          expect(thrown(() => taskResult(task, steps, { TASK_RESULT_MAX_BYTES: max }))).toMatchObject({
            name: 'TaskResultTooLarge',
            details: { limit: max, setting: 'TASK_RESULT_MAX_BYTES' },
          });
        }
      }),
      { numRuns: 1_000 },
    );
  });
});

describe('taskResult', () => {
  it('without an output template, a workflow returns every completed step by id and leaves failed ones out', () => {
    const steps = [
      { step_id: 'a', status: 'completed', output: { n: 1 }, error: null },
      { step_id: 'b', status: 'failed', output: null, error: { name: 'Boom', message: 'no' } },
      { step_id: 'c', status: 'completed', output: null, error: null },
    ];
    expect(taskResult({ params: {}, output_template: null, workflow_name: 'w' }, steps)).toEqual({ a: { n: 1 }, c: null });
  });

  it('an output template sees params, and each step status, output and error', () => {
    const task = {
      params: { who: 'me' },
      output_template: { who: '{{params.who}}', b: '{{steps.b.status}}: {{steps.b.error.message}}', a: '{{steps.a.output.n}}' },
      workflow_name: 'w',
    };
    const steps = [
      { step_id: 'a', status: 'completed', output: { n: 1 }, error: null },
      { step_id: 'b', status: 'failed', output: null, error: { name: 'Boom', message: 'no' } },
    ];
    expect(taskResult(task, steps)).toEqual({ who: 'me', b: 'failed: no', a: 1 });
  });

  it('a one-tool task without output has a null result', () => {
    expect(taskEnding(toolTask, [{ step_id: 'echo', status: 'completed', output: null, error: null }])).toEqual({ status: 'completed', result: null });
  });
});
