import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient } from '../../client/index.js';
import { runEntry } from '../helpers/child-process.js';
import { createHarness, type Harness, waitForTask } from '../helpers/harness.js';
import { KEY } from './support.js';

/**
 * The `npx orchestrator …` lines of docs/client-and-cli.md run as written against a live service
 * (`4f1c…` standing for a task that exists, `greet.json` for a file that holds the greet workflow):
 * none is wrong usage (exit 2), so a command or option the page shows is one the CLI takes.
 * A request the API refuses (cancelling a completed task, an unknown step's items) exits 1: the
 * line is right, the state is not, and the page does not claim it.
 */

/** A shell line's words: single and double quotes kept together, a trailing `  # comment` dropped. */
function words(line: string): string[] {
  const found: string[] = [];
  let current: string | undefined;
  let quote: string | undefined;
  for (let i = 0; i < line.length; i += 1) {
    const char = line[i]!;
    if (quote) {
      if (char === quote) quote = undefined;
      else current += char;
    } else if (char === "'" || char === '"') {
      quote = char;
      current ??= '';
    } else if (char === '#' && current === undefined) {
      break;
    } else if (/\s/.test(char)) {
      if (current !== undefined) found.push(current);
      current = undefined;
    } else {
      current = (current ?? '') + char;
    }
  }
  if (current !== undefined) found.push(current);
  return found;
}

/** The page's `npx orchestrator` commands, continuation lines joined, each as its arguments. */
function documented(): { line: string; args: string[] }[] {
  const page = readFileSync(new URL('../../docs/client-and-cli.md', import.meta.url), 'utf8');
  const commands: { line: string; args: string[] }[] = [];
  for (const [, block] of page.matchAll(/```sh\n([\s\S]*?)```/g)) {
    const lines = block!.split('\n');
    for (let i = 0; i < lines.length; i += 1) {
      let line = lines[i]!;
      if (!line.startsWith('npx orchestrator ')) continue;
      while (line.trimEnd().endsWith('\\')) line = `${line.trimEnd().slice(0, -1)} ${lines[++i]!.trim()}`;
      commands.push({ line, args: words(line).slice(2) });
    }
  }
  return commands;
}

describe('the CLI lines of docs/client-and-cli.md', { timeout: 180_000 }, () => {
  let h: Harness;
  let dir: string;
  let taskId: string;
  beforeAll(async () => {
    h = await createHarness({ env: { API_KEYS: KEY } });
    dir = mkdtempSync(path.join(tmpdir(), 'orchestrator-cli-docs-'));
    const greet = {
      name: 'greet',
      parameters: [{ name: 'who', type: 'string', required: true }],
      steps: [{ id: 'hello', tool: 'echo', input: { text: 'Hello, {{params.who}}' } }],
    };
    writeFileSync(path.join(dir, 'greet.json'), JSON.stringify(greet));
    const client = createClient({ baseUrl: h.url, apiKey: KEY });
    await client.workflows.push(greet as never);
    taskId = (await client.submit('greet', { who: 'Ada' })).task_id;
    await waitForTask(h, taskId, 20_000, { authorization: `Bearer ${KEY}` });
  });
  afterAll(async () => {
    rmSync(dir, { recursive: true, force: true });
    await h?.close();
  });

  it('reads the words of a shell line as a shell would', () => {
    expect(words(`npx orchestrator submit greet --params '{"who": "Ada"}' --wait   # then the result`)).toEqual([
      'npx',
      'orchestrator',
      'submit',
      'greet',
      '--params',
      '{"who": "Ada"}',
      '--wait',
    ]);
    expect(words(`a --cron '0 2 * * *' "b c"`)).toEqual(['a', '--cron', '0 2 * * *', 'b c']);
  });

  it('each runs as written: none is wrong usage', async () => {
    const commands = documented();
    expect(commands.length).toBeGreaterThanOrEqual(15);
    const ran = new Set<string>();
    for (const { line, args } of commands) {
      const argv = args.map((arg) => (arg === '4f1c…' ? taskId : arg === 'greet.json' ? path.join(dir, 'greet.json') : arg));
      const child = runEntry('client/cli.ts', { ORCHESTRATOR_URL: h.url, ORCHESTRATOR_API_KEY: KEY }, { args: argv });
      const { code } = await child.waitForExit();
      expect(code, `${line}\n${child.output}`).not.toBe(2);
      expect(child.output, line).not.toMatch(/run orchestrator --help/);
      ran.add(args[0]!);
    }
    // Every command the page names ran.
    expect([...ran].sort()).toEqual(['cancel', 'follow', 'history', 'items', 'result', 'retry', 'schedules', 'submit', 'tasks', 'tools', 'workflows']);
  });
});
