import { z } from 'zod';
import { defineTool } from '../../src/tools/tool.js';

const WORD = /[\p{L}\p{N}][\p{L}\p{N}'-]*/gu;
const WHITESPACE = /\s/;
const ENDS_SENTENCE = new Set(['.', '!', '?']);

/**
 * Runs of `.`, `!` or `?` followed by whitespace or the end of the text, counted in one pass.
 * (The regular expression this replaces, /[.!?]+(\s|$)/g, took quadratic time on a long run of
 * `!` followed by a letter: seconds for 40,000 characters.)
 */
function countSentences(text: string): number {
  let count = 0;
  for (let i = 0; i < text.length; i += 1) {
    if (!ENDS_SENTENCE.has(text[i]!)) continue;
    const next = text[i + 1];
    if (next === undefined || WHITESPACE.test(next)) count += 1;
  }
  return count;
}

export default defineTool({
  name: 'text_stats',
  description:
    'Analyses text: characters, words, lines, sentences, reading time and the most frequent words. A value that is not a string is analysed as its JSON.',
  input: z.object({
    text: z.unknown().transform((value) => (typeof value === 'string' ? value : (JSON.stringify(value) ?? ''))),
    top: z.int().min(0).max(100).default(10),
    min_word_length: z.int().min(1).max(50).default(4),
  }),
  output: z.object({
    characters: z.int(),
    words: z.int(),
    lines: z.int(),
    sentences: z.int(),
    reading_time_s: z.int(),
    top_words: z.array(z.object({ word: z.string(), count: z.int() })),
  }),
  retry: { attempts: 1, backoff: { type: 'fixed', delay_ms: 0 } },
  timeout_ms: 10_000,
  async run({ text, top, min_word_length }) {
    const words = text.match(WORD) ?? [];
    const counts = new Map<string, number>();
    for (const word of words) {
      const key = word.toLowerCase();
      if (key.length >= min_word_length) counts.set(key, (counts.get(key) ?? 0) + 1);
    }
    return {
      characters: text.length,
      words: words.length,
      lines: text.length === 0 ? 0 : text.split(/\r?\n/).length,
      sentences: countSentences(text),
      // About 200 words a minute.
      reading_time_s: Math.ceil((words.length / 200) * 60),
      top_words: [...counts]
        .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
        .slice(0, top)
        .map(([word, count]) => ({ word, count })),
    };
  },
});
