import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { TOOL_NAME } from '../../src/tools/tool.js';
import { builtinTools } from '../../workers/adapters/index.js';

/**
 * One contract for every registered adapter: what the runtime, the API and the workflow checker
 * rely on. A new adapter in workers/adapters/index.ts is checked by this file without edits.
 */
describe.each(builtinTools.map((tool) => [tool.name, tool] as const))('tool adapter %s', (_name, tool) => {
  it('has a valid name and a description', () => {
    expect(tool.name).toMatch(TOOL_NAME);
    expect(tool.description.length).toBeGreaterThan(10);
  });

  it('declares input and output schemas that convert to JSON Schema objects', () => {
    const input = z.toJSONSchema(tool.input, { io: 'input', unrepresentable: 'any' }) as { type?: string };
    const output = z.toJSONSchema(tool.output, { io: 'output', unrepresentable: 'any' }) as { type?: string };
    expect(input.type).toBe('object');
    expect(output.type).toBe('object');
  });

  it('has sane defaults for retry, timeout, rate limit and concurrency', () => {
    expect(Number.isInteger(tool.retry.attempts) && tool.retry.attempts >= 1).toBe(true);
    expect(['fixed', 'exponential']).toContain(tool.retry.backoff.type);
    // A tool that retries waits between attempts: 0 would retry at once, hammering what failed.
    expect(Number.isInteger(tool.retry.backoff.delay_ms)).toBe(true);
    if (tool.retry.attempts > 1) expect(tool.retry.backoff.delay_ms).toBeGreaterThan(0);
    expect(tool.timeout_ms).toBeGreaterThan(0);
    if (tool.rate_limit) {
      expect(tool.rate_limit.max).toBeGreaterThan(0);
      expect(tool.rate_limit.duration_ms).toBeGreaterThan(0);
    }
    if (tool.concurrency !== undefined) expect(tool.concurrency).toBeGreaterThanOrEqual(1);
  });

  it('rejects an input that is not an object', () => {
    expect(tool.input.safeParse('a string').success).toBe(false);
    expect(tool.input.safeParse(null).success).toBe(false);
  });

  it('is frozen: the registry hands out one shared definition', () => {
    expect(Object.isFrozen(tool)).toBe(true);
  });
});

describe('the registry of built-in tools', () => {
  it('has unique names', () => {
    const names = builtinTools.map((tool) => tool.name);
    expect(new Set(names).size).toBe(names.length);
  });
});
