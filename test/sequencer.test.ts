import { describe, expect, it } from 'vitest';
import { spread } from './sequencer.js';

const file = (path: string) => ({ moduleId: `/repo/test/${path}.test.ts` });
const pathOf = (f: { moduleId: string }) => f.moduleId.replace(/^\/repo\/test\/|\.test\.ts$/g, '');

describe('the test sequencer', () => {
  it('spreads the chaos files evenly, the first of them first, and keeps every other file in its order', () => {
    const others = Array.from({ length: 12 }, (_, n) => file(`api/f${n}`));
    const chaos = ['a', 'b', 'c'].map((name) => file(`chaos/${name}`));
    const order = spread([...chaos, ...others]).map(pathOf);
    expect(order).toHaveLength(15);
    expect([0, 5, 10].map((place) => order[place])).toEqual(['chaos/a', 'chaos/b', 'chaos/c']);
    expect(order.filter((name) => !name.startsWith('chaos/'))).toEqual(others.map(pathOf));
  });

  it('leaves a project without chaos files as vitest ordered it', () => {
    const files = ['b', 'a', 'c'].map((name) => file(`lib/${name}`));
    expect(spread(files)).toEqual(files);
  });
});
