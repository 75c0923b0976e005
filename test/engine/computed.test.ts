import { describe, expect, it } from 'vitest';
import { checkWorkflow } from '../../src/engine/check.js';
import { CONDITION_MAX_CHARS } from '../../src/engine/condition.js';
import { planToolTask } from '../../src/engine/plan.js';
import { prepare } from '../../src/engine/prepare.js';
import { taskEnding } from '../../src/engine/task-output.js';
import { ResolvedSizeError, resolveTemplates, type TemplateContext } from '../../src/engine/templates.js';
import { workflowDefinitionSchema } from '../../src/engine/workflow-definition.js';
import { ExpressionError } from '../../src/lib/errors.js';
import { catalog } from './stored-plan-fixture.js';

/**
 * Computed values: a string that is exactly `{{= CEL}}` takes the expression's typed value, one
 * inside a longer string is interpolated as text; checked when stored like a `when`.
 */

const context: TemplateContext = {
  params: { vip: true, name: 'ann', list: [1, 2, 3], big: 2 ** 60 },
  steps: {
    a: { status: 'completed', output: { n: 2, items: ['x', 'y'] } },
    b: { status: 'completed', output: { n: 3.5 } },
    c: { status: 'failed', error: { name: 'Error', message: 'boom' } },
  },
};

describe('computed values at run time', () => {
  it('gives the typed value of a whole string, and text inside a longer one', () => {
    expect(
      resolveTemplates(
        {
          total: '{{= steps.a.output.n + steps.b.output.n}}',
          label: '{{= params.vip ? "gold" : "std"}}',
          count: '{{= size(steps.a.output.items)}}',
          joined: '{{= steps.a.output.items.join("-")}}',
          list: '{{= params.list.map(x, x * 2.0)}}',
          // Braces end a template (src/engine/templates.ts's spansOf): a map literal is not one, and stays text.
          literal: '{{= {"a": 1}}}',
          text: 'total {{= steps.a.output.n * 10.0}} for {{params.name}}, {{= [1, 2]}}',
        },
        context,
      ),
    ).toEqual({ total: 5.5, label: 'gold', count: 2, joined: 'x-y', list: [2, 4, 6], literal: '{{= {"a": 1}}}', text: 'total 20 for ann, [1,2]' });
  });

  it('writes a double that holds an integer, and an int, as a JSON integer', () => {
    const value = resolveTemplates({ d: '{{= 2.0 * 3.0}}', i: '{{= 7}}', u: '{{= 7u}}', t: '{{= string(4.0)}}' }, context);
    expect(value).toEqual({ d: 6, i: 7, u: 7, t: '4' });
    expect(JSON.stringify(value)).toBe('{"d":6,"i":7,"u":7,"t":"4"}');
  });

  it('fails with ExpressionError, naming where, for an error, a value JSON cannot hold, or too much work', () => {
    const fails = (value: unknown, message: RegExp) => {
      let thrown: unknown;
      try {
        resolveTemplates(value, context);
      } catch (error) {
        thrown = error;
      }
      expect(thrown).toBeInstanceOf(ExpressionError);
      expect((thrown as Error).message).toMatch(message);
    };
    fails({ x: '{{= 1 / 0}}' }, /at x could not be evaluated/);
    fails({ x: '{{= steps.a.output.missing}}' }, /could not be evaluated/);
    fails({ x: '{{= b"bytes"}}' }, /JSON cannot hold/);
    fails({ x: '{{= [1, int]}}' }, /JSON cannot hold/);
    fails({ x: '{{= 9223372036854775807}}' }, /2\^53/);
    fails(
      {
        deep: [
          '{{= [1,2,3,4,5,6,7,8,9,10].map(a, [1,2,3,4,5,6,7,8,9,10].map(b, [1,2,3,4,5,6,7,8,9,10].map(c, [1,2,3,4,5,6,7,8,9,10].map(d, [1,2,3,4,5,6,7,8,9,10].map(e, a + b)))))}}',
        ],
      },
      /deep\[0\] does more work/,
    );
  });

  it('keeps to the size bound on what it builds', () => {
    expect(() => resolveTemplates({ x: '{{= "ab".repeat(1)}}' }, context, { maxBytes: 10 })).toThrow();
    expect(() => resolveTemplates({ x: '{{= params.list + params.list + params.list}}' }, context, { maxBytes: 10 })).toThrow(ResolvedSizeError);
  });

  // 10^8 elements would take seconds and gigabytes (past the test's timeout); the bound stops it within the first million bytes.
  it('stops a cheap expression with a huge value (one list shared 10,000 times) at the size bound, before building it', () => {
    const list = Array.from({ length: 10_000 }, (_, index) => index);
    expect(() => resolveTemplates({ x: '{{= params.list.map(x, params.list)}}' }, { params: { list }, steps: {} }, { maxBytes: 1_000_000 })).toThrow(
      ResolvedSizeError,
    );
    expect(() => resolveTemplates({ x: 'as text: {{= params.list.map(x, params.list)}}' }, { params: { list }, steps: {} }, { maxBytes: 1_000_000 })).toThrow(
      ResolvedSizeError,
    );
  });

  it("fails a task whose output's expression fails, rather than throwing", () => {
    const ending = taskEnding({ params: {}, plan: { output: { x: '{{= steps.a.output.none}}' } } }, [
      { id: 'a', status: 'completed', output: { n: 1 }, error: null },
    ]);
    expect(ending).toMatchObject({ status: 'failed', error: { name: 'ExpressionError' } });
  });
});

describe('computed values when stored', () => {
  const check = (steps: unknown[], output?: unknown) =>
    checkWorkflow(
      workflowDefinitionSchema.parse({
        name: 'w',
        parameters: [
          { name: 'vip', type: 'boolean' },
          { name: 'ids', type: 'array' },
        ],
        steps,
        ...(output ? { output } : {}),
      }),
      catalog,
    );

  it('accepts expressions over params and the steps depended on', () => {
    expect(
      check(
        [
          { id: 'a', tool: 'echo' },
          { id: 'b', tool: 'echo', depends_on: ['a'], input: { total: '{{= size(steps.a.output) + 1}}', label: 'is {{= params.vip ? "gold" : "std"}}' } },
          { id: 'c', tool: 'echo', for_each: '{{params.ids}}', input: { at: '{{= index + 1.0}}', it: '{{= item}}' } },
        ],
        { all: '{{= [steps.a.status, steps.b.status]}}' },
      ),
    ).toEqual([]);
  });

  it('reports each problem at its path', () => {
    const problems = check(
      [
        { id: 'a', tool: 'echo' },
        { id: 'b', tool: 'echo', input: { total: '{{= steps.a.output.n}}' } },
        {
          id: 'c',
          tool: 'echo',
          depends_on: ['a'],
          input: { x: ['{{= params.nope}}', '{{= 1 +}}', '{{= item}}', `{{= ${'1 + '.repeat(CONDITION_MAX_CHARS / 4)}1}}`, '{{=}}'] },
        },
        { id: 'd', tool: 'echo', depends_on: ['a'], input: { y: '{{= params.vip + 1}}' } },
      ],
      { total: '{{= steps.ghost.output}}' },
    );
    const at = (path: string) => problems.filter((problem) => problem.path === path).map((problem) => problem.message);
    expect(at('steps[1].input.total')).toEqual(['steps.a is not one of the steps this step depends on']);
    expect(at('steps[2].input.x[0]')).toEqual(['params.nope is not a declared parameter']);
    expect(at('steps[2].input.x[1]')[0]).toMatch(/does not parse/);
    expect(at('steps[2].input.x[2]')).toEqual(['unknown name item (an expression sees params and steps)']);
    expect(at('steps[2].input.x[3]')[0]).toMatch(/characters long/);
    expect(at('steps[2].input.x[4]')).toEqual(['{{=}} holds no expression']);
    expect(at('steps[3].input.y')[0]).toMatch(/bool/);
    expect(at('output.total')).toEqual(['steps.ghost is not one of the steps this step depends on']);
  });

  it('reads only the steps an expression names, or every ancestor when it cannot tell', () => {
    const plan = prepare({
      steps: ['a', 'b']
        .map((id) => ({
          id,
          kind: 'tool',
          tool: 'echo',
          dependsOn: [],
          onFailure: 'fail',
          input: {},
          options: { retry: { attempts: 1, backoff: { type: 'fixed', delay_ms: 0 } }, timeout_ms: 0 },
        }))
        .concat([
          {
            id: 'c',
            kind: 'tool',
            tool: 'echo',
            dependsOn: ['a', 'b'],
            onFailure: 'fail',
            input: { x: '{{= steps.a.output.n + steps["b"].output.n}}' },
            options: { retry: { attempts: 1, backoff: { type: 'fixed', delay_ms: 0 } }, timeout_ms: 0 },
          },
          {
            id: 'd',
            kind: 'tool',
            tool: 'echo',
            dependsOn: ['a'],
            onFailure: 'fail',
            input: { x: '{{= size(steps)}}' },
            options: { retry: { attempts: 1, backoff: { type: 'fixed', delay_ms: 0 } }, timeout_ms: 0 },
          },
        ] as never[]) as never,
      output: { x: '{{= steps.c.output}}' },
    });
    expect([...plan.reads.get('c')!].sort()).toEqual(['a', 'b']);
    expect([...plan.reads.get('d')!]).toEqual(['a']);
    expect([...plan.outputReads!]).toEqual(['c']);
  });

  it('reads nothing for a one-tool task: its params are literal, whatever they look like', () => {
    const params = { a: '{{steps.ghost.output}}', b: 'and {{params.a}}' };
    const plan = prepare(planToolTask({ name: 'echo', retry: { attempts: 1, backoff: { type: 'fixed', delay_ms: 0 } }, timeout_ms: 0 }, params));
    expect([...plan.reads.get('echo')!]).toEqual([]);
    expect(plan.outputReads).toBeUndefined();
  });
});
