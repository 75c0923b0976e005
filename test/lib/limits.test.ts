import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { checkStepOutput, DEFAULT_LIMITS, jobReturnValue, jsonLengthAtLeast, jsonSize, nestsDeeperThan } from '../../src/lib/limits.js';

const exact = (value: unknown) => Buffer.byteLength(JSON.stringify(value));

describe('JSON size measures', () => {
  it('jsonLengthAtLeast never exceeds the exact UTF-8 length of the JSON, and equals it for plain ASCII', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        expect(jsonLengthAtLeast(value)).toBeLessThanOrEqual(exact(value));
      }),
      { numRuns: 1_000 },
    );
    const plain = fc.string({ unit: fc.constantFrom('a', 'b', ' ', '1', '-', '_') });
    fc.assert(
      fc.property(fc.jsonValue({ stringUnit: fc.constantFrom('a', 'Z', ' ', '0', '.') }), fc.dictionary(plain, plain), (value, object) => {
        expect(jsonLengthAtLeast(value)).toBe(exact(value));
        expect(jsonLengthAtLeast(object)).toBe(exact(object));
      }),
      { numRuns: 1_000 },
    );
  });

  it('jsonSize is exact within the bound and stops early beyond it', () => {
    expect(jsonSize({ a: 'é' }, 100)).toEqual({ bytes: exact({ a: 'é' }), over: false });
    expect(jsonSize({ a: '\u0001' }, 10)).toEqual({ bytes: 14, over: true });
    const wide = Array.from({ length: 1_000_000 }, () => 'x');
    for (const value of [wide, { nested: [[wide], wide] }, Array.from({ length: 1_000 }, () => wide)]) {
      const started = performance.now();
      expect(jsonSize(value, 1_000).over).toBe(true);
      expect(performance.now() - started).toBeLessThan(50);
    }
  });

  it('nestsDeeperThan counts arrays and objects, not scalars', () => {
    expect(nestsDeeperThan(1, 0)).toBe(false);
    expect(nestsDeeperThan({}, 0)).toBe(true);
    expect(nestsDeeperThan({ a: [{ b: 1 }] }, 3)).toBe(false);
    expect(nestsDeeperThan({ a: [{ b: [] }] }, 3)).toBe(true);
  });
});

describe('checkStepOutput', () => {
  const limits = { ...DEFAULT_LIMITS, STEP_OUTPUT_MAX_BYTES: 10_000, STEP_OUTPUT_MAX_DEPTH: 8 };

  it('returns the exact size of an output within the limits', () => {
    expect(checkStepOutput({ ok: true }, limits)).toBe(exact({ ok: true }));
  });

  it('refuses an output over the byte limit or the depth limit with StepOutputTooLarge', () => {
    expect(() => checkStepOutput({ blob: 'x'.repeat(10_000) }, limits)).toThrow(
      expect.objectContaining({ name: 'StepOutputTooLarge', details: { limit: 10_000, setting: 'STEP_OUTPUT_MAX_BYTES' } }),
    );
    // Escapes count: 2,000 control characters are 12,000 bytes of JSON.
    expect(() => checkStepOutput({ blob: '\u0001'.repeat(2_000) }, limits)).toThrow(
      expect.objectContaining({ details: expect.objectContaining({ setting: 'STEP_OUTPUT_MAX_BYTES' }) }),
    );
    expect(() => checkStepOutput([[[[[[[[[1]]]]]]]]], limits)).toThrow(
      expect.objectContaining({ name: 'StepOutputTooLarge', details: { limit: 8, setting: 'STEP_OUTPUT_MAX_DEPTH' } }),
    );
  });

  it('ends promptly on outputs an adapter built with cycles or shared parts', () => {
    const cyclic: Record<string, unknown> = { name: 'loop' };
    cyclic.self = cyclic;
    // Shared parts, 60 levels (within the default depth limit): 2^60 paths if walked as a tree.
    let shared: unknown = 1;
    for (let i = 0; i < 60; i += 1) shared = [shared, shared];
    for (const output of [cyclic, shared]) {
      const started = performance.now();
      expect(() => checkStepOutput(output, DEFAULT_LIMITS)).toThrow(expect.objectContaining({ name: 'StepOutputTooLarge' }));
      expect(performance.now() - started).toBeLessThan(1_000);
    }
  });
});

describe('jobReturnValue', () => {
  it('is the output up to JOB_INLINE_OUTPUT_MAX_BYTES, a reference to PostgreSQL beyond', () => {
    expect(jobReturnValue({ a: 1 }, 7, { JOB_INLINE_OUTPUT_MAX_BYTES: 7 })).toEqual({ a: 1 });
    expect(jobReturnValue({ a: 10 }, 8, { JOB_INLINE_OUTPUT_MAX_BYTES: 7 })).toEqual({ stored_in: 'postgresql', bytes: 8 });
  });
});
