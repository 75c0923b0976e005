import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { ToolContext } from '../../src/tools/tool.js';
import textStats from '../../workers/adapters/text-stats.js';

const analyse = (text: string) => textStats.run(textStats.input.parse({ text }), {} as ToolContext);

/** The expression text_stats counted sentences with before (quadratic, so only on short texts here). */
const OLD_SENTENCES = /[.!?]+(\s|$)/g;

describe('text_stats', () => {
  it('counts words, lines and sentences', async () => {
    expect(await analyse('One fish. Two fish!\nRed fish? Blue fish...')).toMatchObject({ words: 8, lines: 2, sentences: 4 });
    expect(await analyse('Wait... what?! e.g. this')).toMatchObject({ sentences: 3 });
    expect(await analyse('')).toMatchObject({ characters: 0, words: 0, lines: 0, sentences: 0 });
  });

  it('counts sentences as the regular expression it replaced did', async () => {
    const text = fc.string({ unit: fc.constantFrom('.', '!', '?', ' ', '\n', '\t', '\u00a0', '\u2028', 'a', 'Z', '1', '😀'), maxLength: 40 });
    await fc.assert(
      fc.asyncProperty(text, async (value) => {
        expect((await analyse(value)).sentences).toBe((value.match(OLD_SENTENCES) ?? []).length);
      }),
      { numRuns: 2_000 },
    );
  });

  it.each([
    ['"!" 60,000 times, then a letter', `${'!'.repeat(60_000)}x`],
    ['"." 60,000 times, then a letter', `${'.'.repeat(60_000)}a`],
    ['"?!." 20,000 times, then a digit', `${'?!.'.repeat(20_000)}1`],
    ['a 60,000-character word with apostrophes and dashes', `a${"'-".repeat(30_000)}`],
    ['60,000 line breaks', '\r\n'.repeat(30_000)],
  ])('analyses %s in well under 100 ms', async (_label, text) => {
    // The fastest of three runs: a shared machine adds pauses to some runs, a quadratic scan is slow in all.
    let fastest = Number.POSITIVE_INFINITY;
    for (let i = 0; i < 3; i += 1) {
      const started = performance.now();
      await analyse(text);
      fastest = Math.min(fastest, performance.now() - started);
    }
    expect(fastest).toBeLessThan(100);
  });
});
