import { describe, expect, it } from 'vitest';
import { layeredLayout } from '../../src/console/components/dag-layout.js';

const SIZE = { width: 100, height: 40, columnGap: 20, rowGap: 10 };
const column = (x: number) => x / (SIZE.width + SIZE.columnGap);

/** The console graph's layout (src/console/components/dag-layout.ts), without a browser. */
describe('the console graph layout', () => {
  it('puts each step in the column of its longest chain of dependencies, without overlaps', () => {
    const positions = layeredLayout(
      [{ id: 'd', depends_on: ['b', 'c'] }, { id: 'a' }, { id: 'b', depends_on: ['a'] }, { id: 'c', depends_on: ['a'] }, { id: 'e', depends_on: ['a', 'd'] }],
      SIZE,
    );
    expect(Object.fromEntries([...positions].map(([id, { x }]) => [id, column(x)]))).toEqual({ a: 0, b: 1, c: 1, d: 2, e: 3 });
    const corners = [...positions.values()].map(({ x, y }) => `${x},${y}`);
    expect(new Set(corners).size).toBe(corners.length);
    // b and c share a column, one above the other; the lone steps are centred on them.
    expect(Math.abs(positions.get('b')!.y - positions.get('c')!.y)).toBe(SIZE.height + SIZE.rowGap);
    expect(positions.get('a')!.y).toBe(positions.get('d')!.y);
  });

  it('orders a column by its dependencies: two crossing chains are uncrossed', () => {
    // x1 -> y2 and x2 -> y1, listed so that a naive order crosses them.
    const positions = layeredLayout([{ id: 'x1' }, { id: 'x2' }, { id: 'y1', depends_on: ['x2'] }, { id: 'y2', depends_on: ['x1'] }], SIZE);
    expect(positions.get('y2')!.y < positions.get('y1')!.y).toBe(positions.get('x1')!.y < positions.get('x2')!.y);
  });

  it('places every step even given unknown dependencies or a cycle', () => {
    const positions = layeredLayout(
      [
        { id: 'a', depends_on: ['missing'] },
        { id: 'b', depends_on: ['c'] },
        { id: 'c', depends_on: ['b'] },
      ],
      SIZE,
    );
    expect([...positions.keys()].sort()).toEqual(['a', 'b', 'c']);
    expect(column(positions.get('a')!.x)).toBe(0);
    expect(column(positions.get('b')!.x)).toBe(1);
  });
});
