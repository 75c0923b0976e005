import { describe, expect, it } from 'vitest';
import { capErrorRecord, ERROR_LIMITS, NonRetryableError, toErrorRecord } from '../../src/lib/errors.js';

const bytes = (value: unknown) => Buffer.byteLength(JSON.stringify(value));
const MAX = ERROR_LIMITS.nameBytes + ERROR_LIMITS.messageBytes + ERROR_LIMITS.detailsBytes + 512;

describe('capErrorRecord', () => {
  it('leaves a small record as it is', () => {
    const record = { name: 'NonRetryableError', message: 'HTTP 404 from api.example.com', retryable: false, details: { status: 404, body: { error: 'no' } } };
    expect(capErrorRecord(record)).toEqual(record);
  });

  it('cuts a long message and a long string in the details, saying how long they were', () => {
    const record = toErrorRecord(new NonRetryableError('m'.repeat(100_000), { status: 422, body: 'b'.repeat(5_000_000) }));
    expect(record.message).toMatch(/^m+… \[cut: 100000 bytes in all\]$/);
    expect(Buffer.byteLength(record.message)).toBeLessThanOrEqual(ERROR_LIMITS.messageBytes);
    expect(record.details).toMatchObject({ status: 422, body: expect.stringMatching(/^b+… \[cut: 5000000 bytes in all\]$/) });
    expect(bytes(record)).toBeLessThan(MAX);
  });

  it('ends long lists and objects early, and counts what it left out', () => {
    const list = Array.from({ length: 100_000 }, (_, index) => ({ index, text: 'entry' }));
    const wide = Object.fromEntries(Array.from({ length: 10_000 }, (_, index) => [`k${index}`, index]));
    const record = capErrorRecord({ name: 'Error', message: 'x', details: { list, wide } });
    expect(bytes(record)).toBeLessThan(MAX);
    const details = record.details as { list: unknown[]; wide?: Record<string, unknown> };
    expect(details.list.at(-1)).toMatch(/^… \[cut: \d+ more items\]$/);
    expect(details.list[0]).toEqual({ index: 0, text: 'entry' });
  });

  it('cuts multi-byte text on a character, never in one', () => {
    const record = capErrorRecord({ name: 'Error', message: '€'.repeat(10_000) });
    expect(record.message).not.toContain('\uFFFD');
    expect(Buffer.byteLength(record.message)).toBeLessThanOrEqual(ERROR_LIMITS.messageBytes);
  });

  it('is idempotent and keeps the fields it does not bound', () => {
    const once = capErrorRecord({ name: 'E', message: 'y'.repeat(50_000), retryable: true, details: { deep: 'z'.repeat(50_000) }, step: 'fetch' } as never);
    expect(capErrorRecord(once)).toEqual(once);
    expect(once).toMatchObject({ retryable: true, step: 'fetch' });
  });

  it('survives a cycle and a huge Buffer', () => {
    const cyclic: Record<string, unknown> = { a: 1 };
    cyclic.self = cyclic;
    expect(bytes(capErrorRecord({ name: 'E', message: 'c', details: cyclic }))).toBeLessThan(MAX);
    expect(bytes(capErrorRecord({ name: 'E', message: 'b', details: Buffer.alloc(1_000_000) }))).toBeLessThan(MAX);
  });
});
