import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The docs' code blocks as a reader meets them: fenced blocks with the marker above them, the
 * shell commands of a block, a `curl` to the API read as the request it makes, and the answer the
 * comment under it shows, as a pattern an answer can be checked against. Used by
 * test/deploy/doc-commands.test.ts (which runs the blocks) and test/deploy/doc-blocks.test.ts
 * (which parses their JSON bodies with their endpoint's schema).
 *
 * Which blocks claim to run (see doc-commands.test.ts): a block that calls the API (a `curl`, a
 * `wget`, an `npx orchestrator` command, an ```http request to a path) is one of
 * - run: a ```sh block whose every call is a `curl` to `localhost:3000`;
 * - marked `<!-- not run: REASON -->` on the line above the fence: illustrative;
 * - marked `<!-- run by: FILE -->`: a test of its own runs it (FILE exists and names the page);
 * and anything else is an error. Blocks that call nothing (`npm test`, `docker compose up`,
 * settings as `NAME=value`, diagrams, JSON) claim nothing, unless marked.
 */

const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

export interface DocBlock {
  /** The page, relative to the repository (README.md, docs/workflows.md). */
  page: string;
  /** The line of the opening fence, 1-based. */
  line: number;
  /** The fence's info string: sh, json, http, ts, or '' */
  lang: string;
  text: string;
  /** The HTML comment on the line right above the fence, its text trimmed. */
  marker?: string;
}

/** The pages whose blocks are checked: the README and every page under docs/. */
export function docPages(): string[] {
  const under = (dir: string): string[] =>
    readdirSync(path.join(REPO_ROOT, dir), { withFileTypes: true }).flatMap((entry) =>
      entry.isDirectory() ? under(`${dir}/${entry.name}`) : entry.name.endsWith('.md') ? [`${dir}/${entry.name}`] : [],
    );
  return ['README.md', ...under('docs').sort()];
}

export function readPage(page: string): string {
  return readFileSync(path.join(REPO_ROOT, page), 'utf8');
}

/** Every fenced block of a Markdown text (``` or ~~~, indented in a list or not), with the marker above it. */
export function docBlocks(page: string, markdown: string): DocBlock[] {
  const lines = markdown.split('\n');
  const found: DocBlock[] = [];
  for (let i = 0; i < lines.length; i += 1) {
    // A backtick fence's info string has no backtick (CommonMark): ```` ```sh ```` in a line is code, not a fence.
    const open = /^(\s*)(`{3,}(?=[^`]*$)|~{3,})\s*([\w-]*)/.exec(lines[i]!);
    if (!open) continue;
    const [, indent = '', fence = '', lang = ''] = open;
    const body: string[] = [];
    let end = i + 1;
    const closes = (line: string) => line.trim().startsWith(fence) && new RegExp(`^\\${fence[0]}+$`).test(line.trim());
    while (end < lines.length && !closes(lines[end]!)) {
      body.push(lines[end]!.startsWith(indent) ? lines[end]!.slice(indent.length) : lines[end]!.trimStart());
      end += 1;
    }
    const marker = /^\s*<!--([\s\S]*?)-->\s*$/.exec(lines[i - 1] ?? '')?.[1]?.trim();
    found.push({ page, line: i + 1, lang, text: body.join('\n'), ...(marker !== undefined ? { marker } : {}) });
    i = end;
  }
  return found;
}

export interface ShellCommand {
  /** The command's first line in its block, 1-based. */
  line: number;
  /** As written, continuation lines and multi-line quotes included (comments left out). */
  source: string;
  /** Its words as the shell passes them: quotes removed, continuation lines joined. */
  words: string[];
  /** Why a shell would not take the words as they are (a variable, a redirection, a pipe), if so. */
  unplain?: string;
  /** The comment at the end of its last line, `#` removed. */
  trailing: string;
  /** The comment lines right below it, `#` removed, joined. */
  below: string;
}

/** A block's shell commands, each with the comment that follows it (a blank line ends a comment). */
export function shellCommands(block: string): ShellCommand[] {
  const lines = block.split('\n');
  const found: ShellCommand[] = [];
  let last: ShellCommand | undefined;
  for (let i = 0; i < lines.length; i += 1) {
    const trimmed = lines[i]!.trim();
    if (trimmed === '') {
      last = undefined;
      continue;
    }
    if (trimmed.startsWith('#')) {
      if (last) last.below = `${last.below} ${trimmed.slice(1).trim()}`.trim();
      continue;
    }
    const start = i;
    let source = lines[i]!;
    let scanned = scanWords(source);
    while (scanned.open && i + 1 < lines.length) {
      source += `\n${lines[++i]}`;
      scanned = scanWords(source);
    }
    if (scanned.open) throw new Error(`line ${start + 1}: a quote or a continuation that does not end: ${source}`);
    last = {
      line: start + 1,
      source: source.slice(0, scanned.commentAt).trimEnd(),
      words: scanned.words,
      ...(scanned.unplain ? { unplain: scanned.unplain } : {}),
      trailing: source.slice(scanned.commentAt + 1).trim(),
      below: '',
    };
    found.push(last);
  }
  return found;
}

/** The words of a shell command as POSIX sh splits them (no expansion: a `$`, `<`, `|` and the like are noted, not run). */
export function scanWords(text: string): { words: string[]; open: boolean; commentAt: number; unplain?: string } {
  const words: string[] = [];
  // undefined between words; '' for a word begun by an empty quote.
  let current: string | undefined;
  let quote: "'" | '"' | undefined;
  let unplain: string | undefined;
  const note = (why: string) => {
    unplain ??= why;
  };
  for (let i = 0; i < text.length; i += 1) {
    const char = text[i]!;
    if (quote === "'") {
      if (char === "'") quote = undefined;
      else current += char;
    } else if (quote === '"') {
      if (char === '"') quote = undefined;
      else if (char === '\\' && i + 1 < text.length && '"\\$`\n'.includes(text[i + 1]!)) {
        if (text[i + 1] !== '\n') current = `${current ?? ''}${text[i + 1]}`;
        i += 1;
      } else {
        if (char === '$' || char === '`') note(`expands ${char} inside double quotes`);
        current += char;
      }
    } else if (char === "'" || char === '"') {
      quote = char;
      current ??= '';
    } else if (char === '\\') {
      if (i + 1 >= text.length) return { words, open: true, commentAt: text.length };
      if (text[i + 1] !== '\n') current = (current ?? '') + text[i + 1];
      i += 1;
    } else if (char === '#' && current === undefined) {
      // A comment ends the command (a line after it would be a command of its own).
      return { words, open: false, commentAt: i, ...(unplain ? { unplain } : {}) };
    } else if (/\s/.test(char)) {
      if (current !== undefined) words.push(current);
      current = undefined;
    } else {
      if ('$`'.includes(char)) note(`expands ${char}`);
      if ('<>|;&()'.includes(char)) note(`'${char}' is an operator to the shell`);
      current = (current ?? '') + char;
    }
  }
  if (quote) return { words, open: true, commentAt: text.length };
  if (current !== undefined) words.push(current);
  return { words, open: false, commentAt: text.length, ...(unplain ? { unplain } : {}) };
}

/** A block calls the API: a curl, a wget, the CLI, an http request to a path. */
export function callsTheApi(block: DocBlock): boolean {
  if (block.lang === 'http') return /^(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS) \//.test(block.text.trimStart());
  if (['sh', 'bash', 'shell', 'console', 'zsh'].includes(block.lang)) {
    let commands: ShellCommand[];
    try {
      commands = shellCommands(block.text);
    } catch {
      return /\bcurl\b|\bwget\b|npx orchestrator/.test(block.text);
    }
    return commands.some((command) => /\b(curl|wget)\b|npx orchestrator|localhost:3000/.test(command.words.join(' ')));
  }
  // Any other fence (a bare ```, a diagram): a command in it is meant to be typed.
  return block.text.split('\n').some((line) => /^\s*(\$ )?(curl|wget|npx orchestrator)\b/.test(line));
}

export type Claim =
  | { kind: 'none' }
  | { kind: 'runs' }
  | { kind: 'not run'; reason: string }
  | { kind: 'run by'; file: string }
  /** Calls the API, but neither runs here nor says why not: an error. */
  | { kind: 'unclaimed'; why: string };

/** What a block claims (see the top of this file). */
export function claimOf(block: DocBlock): Claim {
  const marker = block.marker === undefined ? undefined : /^(not run|run by):\s*(\S[\s\S]*)$/.exec(block.marker);
  if (!callsTheApi(block) && !marker) return { kind: 'none' };
  if (marker?.[1] === 'not run') return { kind: 'not run', reason: marker[2]!.trim() };
  if (marker?.[1] === 'run by') {
    const file = marker[2]!
      .trim()
      .split(/\s/)[0]!
      .replace(/[:,;.]$/, '');
    if (!existsSync(path.join(REPO_ROOT, file))) return { kind: 'unclaimed', why: `marked "run by: ${file}", which does not exist` };
    if (!readFileSync(path.join(REPO_ROOT, file), 'utf8').includes(block.page)) {
      return { kind: 'unclaimed', why: `marked "run by: ${file}", which does not name ${block.page}` };
    }
    return { kind: 'run by', file };
  }
  if (block.lang !== 'sh')
    return { kind: 'unclaimed', why: `a \`\`\`${block.lang || ' (bare)'} block: write it as \`\`\`sh with curl, or mark it <!-- not run: why -->` };
  if (/^\s*npx orchestrator\b/m.test(block.text)) {
    return { kind: 'unclaimed', why: 'runs the CLI: name the test that runs its lines, <!-- run by: FILE -->, or mark it <!-- not run: why -->' };
  }
  try {
    curlCalls(block.text);
  } catch (error) {
    return { kind: 'unclaimed', why: `cannot be run as written (${(error as Error).message}); fix it, or mark it <!-- not run: why -->` };
  }
  return { kind: 'runs' };
}

export interface DocCall extends Omit<CurlRequest, 'url'> {
  /** The command's line in its block, 1-based. */
  line: number;
  source: string;
  /** Path and query on the API, as written (placeholders such as `4f1c…` still in). */
  path: string;
  /** The comment its answer is shown in: the one at the end of its line if that shows one, else the lines below. */
  comment: string;
  /** What the comment says the answer is: a status and a pattern (see parseShown), or nothing (prose). */
  shown: Shown;
}

const API = /^(?:https?:\/\/)?(?:localhost|127\.0\.0\.1):3000(\/.*)?$/;

export interface CurlRequest {
  method: string;
  url: string;
  headers: Record<string, string>;
  /** The body as curl sends it (`-d @FILE`: the file's text, its line breaks removed, as curl does). */
  body?: string;
  /** The file a `-d @FILE` names, relative to the repository. */
  bodyFile?: string;
}

/**
 * The request a `curl` command makes, read from its words with the options the docs use (-s, -S,
 * -X, -H, -d/--data/--data-raw/--data-binary; `-d @FILE` from the repository's root). Throws for
 * anything else: a command this reader would misread is not run as written.
 */
export function curlRequest(command: ShellCommand): CurlRequest {
  const where = `line ${command.line} (${command.source.split('\n')[0]})`;
  if (command.words[0] !== 'curl') throw new Error(`${where}: not a curl`);
  if (command.unplain) throw new Error(`${where}: ${command.unplain}`);
  let method: string | undefined;
  let url: string | undefined;
  let body: string | undefined;
  let bodyFile: string | undefined;
  const headers: Record<string, string> = {};
  const args = command.words.slice(1);
  for (let i = 0; i < args.length; i += 1) {
    const arg = args[i]!;
    const value = () => {
      if (i + 1 >= args.length) throw new Error(`${where}: ${arg} without its value`);
      return args[++i]!;
    };
    if (/^-[sS]+$/.test(arg) || arg === '--silent' || arg === '--show-error') continue;
    if (arg === '-X' || arg === '--request') method = value();
    else if (arg === '-H' || arg === '--header') {
      const header = value();
      const colon = header.indexOf(':');
      if (colon < 1) throw new Error(`${where}: header ${header} has no name`);
      headers[header.slice(0, colon).trim().toLowerCase()] = header.slice(colon + 1).trim();
    } else if (['-d', '--data', '--data-raw', '--data-binary'].includes(arg)) {
      let data = value();
      if (data.startsWith('@') && arg !== '--data-raw') {
        bodyFile = data.slice(1);
        data = readFileSync(path.join(REPO_ROOT, bodyFile), 'utf8');
        if (arg !== '--data-binary') data = data.replace(/[\r\n]/g, '');
      }
      body = body === undefined ? data : `${body}&${data}`;
    } else if (arg.startsWith('-')) throw new Error(`${where}: option ${arg} is not one this reader knows`);
    else if (url === undefined) url = arg;
    else throw new Error(`${where}: a second URL, ${arg}`);
  }
  if (url === undefined) throw new Error(`${where}: no URL`);
  if (body !== undefined && !headers['content-type']) headers['content-type'] = 'application/x-www-form-urlencoded';
  return {
    method: method ?? (body !== undefined ? 'POST' : 'GET'),
    url,
    headers,
    ...(body !== undefined ? { body } : {}),
    ...(bodyFile !== undefined ? { bodyFile } : {}),
  };
}

/** A block's calls: every command must be a plain `curl` (see curlRequest) to the API at `localhost:3000`; anything else throws. */
export function curlCalls(block: string): DocCall[] {
  return shellCommands(block).map((command) => {
    const { url, ...request } = curlRequest(command);
    const api = API.exec(url);
    if (!api) throw new Error(`line ${command.line}: calls ${url}, not the API at localhost:3000`);
    return { line: command.line, source: command.source, ...request, path: api[1] ?? '/', comment: shownIn(command), shown: parseShown(shownIn(command)) };
  });
}

/** A value as a comment shows it: JSON where `…` leaves something out. */
export type Pattern =
  /** `…` or `"…"`: anything. */
  | { kind: 'any' }
  | { kind: 'literal'; value: null | boolean | number }
  /** A string; `…` inside stands for any text. */
  | { kind: 'string'; text: string }
  /** The members shown; the answer may have more. */
  | { kind: 'object'; members: [string, Pattern][] }
  /** The items shown, in order; with a `…` among them, others may come between and around them, else exactly these. */
  | { kind: 'array'; items: Pattern[]; open: boolean };

export interface Shown {
  /** `201 {…}`: the status the comment shows. */
  status?: number;
  pattern?: Pattern;
}

function showsAnswer(comment: string): boolean {
  return /^([1-5]\d\d(\s|$)|[{"])/.test(comment);
}

function shownIn(command: ShellCommand): string {
  return showsAnswer(command.trailing) ? command.trailing : command.below;
}

/**
 * What a comment after a command shows of its answer: an optional status, then a JSON object or
 * some of its members (`"status": "completed", "result": {…}`), `…` leaving things out. A comment
 * that starts otherwise is prose and shows nothing (`# or POST /assign-task …`, `# waits up to 10 s`).
 */
export function parseShown(comment: string): Shown {
  const status = /^([1-5]\d\d)(?:\s|$)/.exec(comment);
  const rest = status ? comment.slice(status[0].length).trim() : comment;
  const shown: Shown = status ? { status: Number(status[1]) } : {};
  if (!rest.startsWith('{') && !rest.startsWith('"')) return shown;
  const text = rest.startsWith('{') ? rest : `{${rest}}`;
  const reader = new PatternReader(text);
  const pattern = reader.value();
  reader.end();
  return { ...shown, pattern };
}

class PatternReader {
  private at = 0;
  constructor(private readonly text: string) {}

  private fail(what: string): never {
    throw new Error(`cannot read the answer shown, ${what} at ${this.at}: ${this.text.slice(0, this.at)}⟨here⟩${this.text.slice(this.at)}`);
  }

  private skip(): void {
    while (/\s/.test(this.text[this.at] ?? '')) this.at += 1;
  }

  private peek(token: string): boolean {
    this.skip();
    return this.text.startsWith(token, this.at);
  }

  private eat(token: string): boolean {
    if (!this.peek(token)) return false;
    this.at += token.length;
    return true;
  }

  end(): void {
    this.skip();
    if (this.at < this.text.length) this.fail('more after the value');
  }

  private string(): string {
    this.skip();
    const match = /^"(?:[^"\\]|\\.)*"/.exec(this.text.slice(this.at));
    if (!match) this.fail('a string expected');
    this.at += match[0].length;
    return JSON.parse(match[0]) as string;
  }

  value(): Pattern {
    if (this.eat('…')) return { kind: 'any' };
    if (this.eat('{')) {
      const members: [string, Pattern][] = [];
      while (!this.eat('}')) {
        if (!this.eat('…')) {
          const key = this.string();
          if (!this.eat(':')) this.fail('":" expected');
          members.push([key, this.value()]);
        }
        if (!this.eat(',') && !this.peek('}')) this.fail('"," or "}" expected');
      }
      return { kind: 'object', members };
    }
    if (this.eat('[')) {
      const items: Pattern[] = [];
      let open = false;
      while (!this.eat(']')) {
        if (this.eat('…')) open = true;
        else items.push(this.value());
        if (!this.eat(',') && !this.peek(']')) this.fail('"," or "]" expected');
      }
      return { kind: 'array', items, open };
    }
    if (this.peek('"')) {
      const text = this.string();
      return text === '…' ? { kind: 'any' } : { kind: 'string', text };
    }
    this.skip();
    const literal = /^(?:null|true|false|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)/.exec(this.text.slice(this.at));
    if (!literal) this.fail('a value expected');
    this.at += literal[0].length;
    return { kind: 'literal', value: JSON.parse(literal[0]) as null | boolean | number };
  }
}

/** Members whose value differs from run to run (times, durations): only their type is compared. */
const VARYING = /^(timestamp|duration_ms)$|_at$/;

/** Where `actual` differs from what `pattern` shows, each with its path; none: it has what is shown. */
export function mismatches(actual: unknown, pattern: Pattern, at = '$', key = ''): string[] {
  const show = (value: unknown) => JSON.stringify(value)?.slice(0, 200);
  switch (pattern.kind) {
    case 'any':
      return actual === undefined ? [`${at}: missing`] : [];
    case 'literal':
      if (VARYING.test(key)) return typeof actual === typeof pattern.value ? [] : [`${at}: ${show(actual)}, not a ${typeof pattern.value}`];
      return Object.is(actual, pattern.value) ? [] : [`${at}: ${show(actual)}, shown as ${show(pattern.value)}`];
    case 'string': {
      if (typeof actual !== 'string') return [`${at}: ${show(actual)}, shown as the string ${show(pattern.text)}`];
      if (VARYING.test(key)) return [];
      const glob = new RegExp(
        `^${pattern.text
          .split('…')
          .map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
          .join('[\\s\\S]*')}$`,
      );
      return glob.test(actual) ? [] : [`${at}: ${show(actual)}, shown as ${show(pattern.text)}`];
    }
    case 'object': {
      if (!actual || typeof actual !== 'object' || Array.isArray(actual)) return [`${at}: ${show(actual)}, shown as an object`];
      return pattern.members.flatMap(([name, member]) => {
        const path = `${at}.${name}`;
        return name in actual
          ? mismatches((actual as Record<string, unknown>)[name], member, path, name)
          : [`${path}: missing (${at} has ${Object.keys(actual).join(', ') || 'nothing'})`];
      });
    }
    case 'array': {
      if (!Array.isArray(actual)) return [`${at}: ${show(actual)}, shown as an array`];
      if (!pattern.open) {
        if (actual.length !== pattern.items.length) return [`${at}: ${actual.length} items, shown as ${pattern.items.length}: ${show(actual)}`];
        return pattern.items.flatMap((item, index) => mismatches(actual[index], item, `${at}[${index}]`));
      }
      // In order, others allowed between them.
      let next = 0;
      for (const [index, item] of pattern.items.entries()) {
        while (next < actual.length && mismatches(actual[next], item, `${at}[${next}]`).length > 0) next += 1;
        if (next >= actual.length) return [`${at}: no item matches the ${index + 1}. shown (in order): ${show(actual)}`];
        next += 1;
      }
      return [];
    }
  }
}

/** The task the block made last: `4f1c…` and `<task_id>` stand for it in commands and in answers shown. */
const TASK_PLACEHOLDER = /4f1c…|<task_id>/g;

export interface RunOptions {
  /** The API's origin, for `localhost:3000`. */
  baseUrl: string;
  /** Addresses a block names and the test's stand-ins for them: `127.0.0.1:4010` → `127.0.0.1:41234`. */
  hosts?: Record<string, string>;
  /** How long a call may be asked again: a `/result/…?wait=N` read while the task has not ended, a 503 (a busy machine). @defaultValue 30 s */
  retryForMs?: number;
}

export interface RunRecord {
  call: DocCall;
  url: string;
  status: number;
  body: unknown;
}

/**
 * Runs a shell block's curls in order as written, against the API: each answer must be a success
 * (or the status the comment shows) and have what the comment shows. Returns what was asked and
 * answered, and the problems: none when the block is right. Stops at the first call with a problem.
 */
export async function runBlock(block: string, options: RunOptions): Promise<{ records: RunRecord[]; problems: string[] }> {
  let text = block;
  for (const [from, to] of Object.entries(options.hosts ?? {})) text = text.split(from).join(to);
  const records: RunRecord[] = [];
  let taskId: string | undefined;
  const fill = (value: string, where: string) =>
    value.replace(TASK_PLACEHOLDER, () => {
      if (!taskId) throw new Error(`${where}: 4f1c… or <task_id>, but no task made before it in its block`);
      return taskId;
    });
  for (const call of curlCalls(text)) {
    const where = `line ${call.line}: ${call.method} ${call.path}`;
    const url = `${options.baseUrl}${fill(call.path, where)}`;
    const deadline = Date.now() + (options.retryForMs ?? 30_000);
    let answer: { status: number; body: unknown };
    for (;;) {
      const response = await fetch(url, { method: call.method, headers: call.headers, ...(call.body !== undefined ? { body: fill(call.body, where) } : {}) });
      const raw = await response.text();
      let body: unknown = raw;
      try {
        body = JSON.parse(raw);
      } catch {
        // not JSON: keep the text
      }
      answer = { status: response.status, body };
      if (Date.now() >= deadline) break;
      // 503: a dependency did not answer in time (a busy machine), nothing was done; a client asks again.
      if (response.status === 503 && call.shown.status !== 503) {
        await new Promise((resolve) => setTimeout(resolve, 200));
        continue;
      }
      // `?wait=N` holds the request until the task ends or N passes; on a busy machine a reader asks again.
      const unfinished = ['queued', 'running'].includes((body as { status?: string } | undefined)?.status ?? '');
      if (!(/\/result\/[^?]*\?(.*&)?wait=/.test(url) && response.status === 200 && unfinished)) break;
    }
    records.push({ call, url, ...answer });
    const id = (answer.body as { task_id?: unknown } | undefined)?.task_id;
    if (typeof id === 'string' && answer.status < 300) taskId = id;
    const problems: string[] = [];
    if (call.shown.status !== undefined ? answer.status !== call.shown.status : answer.status >= 300) {
      problems.push(
        `${where}: answered ${answer.status}${call.shown.status !== undefined ? `, shown as ${call.shown.status}` : ''}: ${JSON.stringify(answer.body)?.slice(0, 500)}`,
      );
    }
    if (call.shown.pattern) {
      // The answer shown may name the task by its placeholder: read it again with the task filled in.
      const shown = parseShown(fill(call.comment, where));
      problems.push(...mismatches(answer.body, shown.pattern!).map((problem) => `${where}: ${problem}`));
    }
    if (problems.length > 0) return { records, problems };
  }
  return { records, problems: [] };
}
