import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { readyStep, referencedSteps } from '../../src/engine/step-input.js';
import type { FinishedStep, StepRow } from '../../src/engine/types.js';
import { DEFAULT_LIMITS } from '../../src/limits.js';

const bytes = (value: unknown) => Buffer.byteLength(JSON.stringify(value));

const row = (fields: Partial<StepRow> = {}): StepRow => ({
  step_id: 'next',
  tool: 'echo',
  input_template: null,
  input: { literal: true },
  options: { retry: { attempts: 2, backoff: { type: 'fixed', delay_ms: 5 } }, timeout_ms: 1_000 },
  depends_on: [],
  ...fields,
});

const limits = (fields: Partial<typeof DEFAULT_LIMITS>) => ({ ...DEFAULT_LIMITS, ...fields });

describe('readyStep (property-based)', () => {
  it('resolves the input within STEP_INPUT_MAX_BYTES, and past it carries StepInputTooLarge instead of throwing', () => {
    // A whole-string template keeps the value's type; one inside a longer string interpolates it as text.
    const templates = fc.constantFrom(
      { template: { v: '{{params.p}}' }, expected: (p: unknown) => ({ v: p }) },
      { template: ['{{steps.prev.output}}'], expected: (p: unknown) => [p] },
      { template: { text: 'p={{params.p}}' }, expected: (p: unknown) => ({ text: `p=${typeof p === 'string' ? p : p === null ? '' : JSON.stringify(p)}` }) },
    );
    fc.assert(
      fc.property(fc.jsonValue(), templates, fc.integer({ min: 1, max: 400 }), (p, { template, expected }, max) => {
        const context = { params: { p }, steps: new Map([['prev', { status: 'completed', output: p, error: null }]]) };
        const ready = readyStep(row({ input_template: template }), context, limits({ STEP_INPUT_MAX_BYTES: max }));
        if (bytes(expected(p)) <= max) {
          expect(ready.input).toEqual(expected(p));
          expect(ready.inputError).toBeUndefined();
        } else {
          expect(ready.input).toBeNull();
          expect(ready.inputError).toMatchObject({ name: 'StepInputTooLarge', details: { limit: max, setting: 'STEP_INPUT_MAX_BYTES' } });
        }
      }),
      { numRuns: 1_000 },
    );
  });

  it('inlines a dependency output up to JOB_INLINE_OUTPUT_MAX_BYTES, and past it says it is stored in PostgreSQL', () => {
    const finished: fc.Arbitrary<FinishedStep> = fc.oneof(
      fc.record({ status: fc.constant('completed'), output: fc.jsonValue(), error: fc.constant(null) }),
      fc.record({ status: fc.constant('failed'), output: fc.constant(null), error: fc.record({ name: fc.string(), message: fc.string() }) }),
    );
    fc.assert(
      fc.property(fc.dictionary(fc.constantFrom('a', 'b', 'c', 'd'), finished), fc.integer({ min: 1, max: 300 }), (deps, max) => {
        const context = { params: {}, steps: new Map(Object.entries(deps)) };
        // 'z' never finished: it is left out rather than invented.
        const ready = readyStep(row({ depends_on: [...Object.keys(deps), 'z'] }), context, limits({ JOB_INLINE_OUTPUT_MAX_BYTES: max }));
        expect(Object.keys(ready.dependencies).sort()).toEqual(Object.keys(deps).sort());
        for (const [id, dep] of Object.entries(deps)) {
          const got = ready.dependencies[id]!;
          expect(got.status).toBe(dep.status);
          expect(got.error).toEqual(dep.error ?? undefined);
          if (dep.output == null) {
            expect(got).not.toHaveProperty('output');
            expect(got).not.toHaveProperty('output_stored_in');
          } else if (bytes(dep.output) <= max) {
            expect(got.output).toEqual(dep.output);
            expect(got).not.toHaveProperty('output_stored_in');
          } else {
            expect(got).not.toHaveProperty('output');
            expect(got.output_stored_in).toBe('postgresql');
          }
        }
      }),
      { numRuns: 1_000 },
    );
  });
});

describe('readyStep', () => {
  it('takes a literal input as it is, and the job options from the stored options', () => {
    const ready = readyStep(row({ options: { ...row().options, priority: 3 } }), { params: {}, steps: new Map() });
    expect(ready).toEqual({
      stepId: 'next',
      tool: 'echo',
      input: { literal: true },
      retry: { attempts: 2, backoff: { type: 'fixed', delay_ms: 5 } },
      timeoutMs: 1_000,
      dependencies: {},
      priority: 3,
    });
  });
});

describe('referencedSteps', () => {
  it('names the dependencies and the steps the input templates refer to, not params', () => {
    const found = referencedSteps({
      depends_on: ['a'],
      input_template: { x: '{{steps.b.output.y}}', z: ['{{params.q}}', 'at {{steps.c.status}}'], bad: '{{steps.}}' },
    });
    expect([...found].sort()).toEqual(['a', 'b', 'c']);
  });
});
