import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHarness, type Harness } from '../helpers/harness.js';

/**
 * The README's shell blocks that talk to the API run as written, against a live service: each
 * `curl` (its method, path and JSON body as the block has them; `4f1c…` and `<task_id>` stand for
 * the task the block made last), and each answer has what the block's comment after it shows.
 */

interface Call {
  method: string;
  path: string;
  body?: unknown;
  /** The block's comment on the answer (the lines after the command starting with `#`), if any. */
  shown: string;
}

/** The curl commands of one shell block, continuation lines joined, with the comment that follows each. */
function calls(block: string): Call[] {
  const lines = block.split('\n');
  const found: Call[] = [];
  for (let index = 0; index < lines.length; index += 1) {
    if (!lines[index]!.startsWith('curl')) continue;
    let command = lines[index]!;
    while (command.trimEnd().endsWith('\\')) command = `${command.trimEnd().slice(0, -1)} ${lines[++index]!.trim()}`;
    // Several lines of a quoted body: up to the closing quote.
    if ((command.match(/'/g) ?? []).length % 2 === 1) {
      while (index + 1 < lines.length && (command.match(/'/g) ?? []).length % 2 === 1) command += `\n${lines[++index]}`;
    }
    const [beforeComment = '', trailing = ''] = command.split(/\s{2,}#\s/, 2);
    // A comment that offers another way (`# or POST …`) shows no answer.
    const shown = [trailing.startsWith('or ') ? '' : trailing];
    while (index + 1 < lines.length && lines[index + 1]!.startsWith('#')) shown.push(lines[++index]!.slice(1));
    const method = /-X (\w+)/.exec(beforeComment)?.[1] ?? 'GET';
    const path = /localhost:3000(\/[^\s'"]*)/.exec(beforeComment)?.[1];
    const body = /-d '([\s\S]*?)'/.exec(beforeComment)?.[1];
    if (!path) throw new Error(`no path in: ${command}`);
    found.push({ method, path, ...(body !== undefined ? { body: JSON.parse(body) } : {}), shown: shown.join(' ') });
  }
  return found;
}

describe("the README's commands", () => {
  let h: Harness;
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  const blocks = [...readme.matchAll(/```sh\n([\s\S]*?)```/g)].map((match) => match[1]!).filter((block) => block.includes('curl'));

  beforeAll(async () => {
    h = await createHarness();
  });
  afterAll(async () => {
    await h?.close();
  });

  it('has blocks that call the API', () => {
    expect(blocks.length).toBeGreaterThanOrEqual(2);
  });

  it('runs each block as written: every answer is a success and has what its comment shows', async () => {
    for (const block of blocks) {
      let taskId: string | undefined;
      for (const call of calls(block)) {
        const path = call.path.replace(/4f1c…|<task_id>/g, () => {
          if (!taskId) throw new Error(`${call.path}: no task made before it in its block`);
          return taskId;
        });
        // A result read waits for the end, as `?wait=10` in the block does.
        const waited = path.startsWith('/result/') && !path.includes('wait=') ? `${path}?wait=10` : path;
        const answer = await h.request(call.method, waited, call.body);
        expect(answer.status, `${call.method} ${call.path}: ${JSON.stringify(answer.body)}`).toBeLessThan(300);
        if (typeof answer.body?.task_id === 'string') taskId = answer.body.task_id;
        // Each "key": value the comment shows (objects and strings) is in the answer.
        for (const [, key, value] of call.shown.matchAll(/"(\w+)":\s*("[^"…]*"|\{[^{}…]*\})/g)) {
          const expected = JSON.parse(value!);
          const actual = findKey(answer.body, key!);
          expect(actual, `${call.method} ${call.path}: "${key}" as the README shows it`).toEqual(expected);
        }
      }
    }
  });
});

/** The first value under `key` anywhere in `value` (depth first). */
function findKey(value: unknown, key: string): unknown {
  if (Array.isArray(value)) {
    for (const item of value) {
      const found = findKey(item, key);
      if (found !== undefined) return found;
    }
  } else if (value && typeof value === 'object') {
    if (key in value) return (value as Record<string, unknown>)[key];
    for (const item of Object.values(value)) {
      const found = findKey(item, key);
      if (found !== undefined) return found;
    }
  }
  return undefined;
}
