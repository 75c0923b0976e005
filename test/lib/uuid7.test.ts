import { describe, expect, it } from 'vitest';
import { uuidv7, uuidv7Time } from '../../src/lib/uuid7.js';

describe('uuidv7', () => {
  it('is an RFC 9562 version 7 id whose first 48 bits are its time, random in the rest', () => {
    const at = new Date('2026-11-26T01:23:45.678Z');
    const ids = Array.from({ length: 1_000 }, () => uuidv7(at));
    for (const id of ids) {
      expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      expect(uuidv7Time(id)?.toISOString()).toBe(at.toISOString());
    }
    expect(new Set(ids).size).toBe(ids.length);
    // Every random hex digit takes more than one value over a thousand ids (none is fixed by mistake).
    for (const index of [15, 16, 17, 20, 21, 22, 24, 35]) expect(new Set(ids.map((id) => id[index])).size, `digit ${index}`).toBeGreaterThan(1);
  });

  it('spans the 48 bits of time, and refuses what is outside them', () => {
    expect(uuidv7(new Date(0))).toMatch(/^00000000-0000-7/);
    expect(uuidv7(new Date(2 ** 48 - 1))).toMatch(/^ffffffff-ffff-7/);
    expect(() => uuidv7(new Date(Number.NaN))).toThrow(RangeError);
    expect(() => uuidv7(new Date(-1))).toThrow(RangeError);
  });
});
