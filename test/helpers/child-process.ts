import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildSync } from 'esbuild';
import { poll } from './harness.js';

export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

/**
 * Entry points in these folders run as JavaScript transpiled ahead of time, not under tsx. The
 * same transform (esbuild, file by file, no bundling: tsx's own), done once for every process a
 * test starts instead of in each of them: under tsx a process that imports the whole service
 * spent about 0.9 s more CPU to start (1.95 s against 1.1 s), and a test run starts some 150 of
 * them. A quiet run of `npx vitest run` (2026-11-26, every process's CPU sampled): 1,310 s of CPU,
 * 417 s of it in processes started under tsx, before; 1,138 s, 282 s in the transpiled ones, after.
 */
const TRANSPILED_FOLDERS = ['src', 'workers', 'client', 'test/fixtures'];
const TREES = path.join(REPO_ROOT, 'node_modules/.cache/orchestrator-test-entries');

function transpiledSources(): string[] {
  return TRANSPILED_FOLDERS.flatMap((folder) =>
    readdirSync(path.join(REPO_ROOT, folder), { recursive: true, encoding: 'utf8' }).map((file) => path.join(folder, file)),
  ).filter((file) => file.endsWith('.ts') && !file.endsWith('.d.ts') && !file.startsWith('src/console/') && !/(^|\/)(dist|node_modules)\//.test(file));
}

/**
 * The transpiled tree of the sources as they are now: a folder named by their paths, sizes and
 * modification times, built when no such folder exists yet (about 0.3 s), so that a source
 * changed during a watch run is transpiled again. Built beside its final place and renamed
 * there whole: test files in other processes never see half of one.
 */
function transpiledTree(): string {
  const files = transpiledSources();
  const stamp = createHash('sha1');
  for (const file of files) {
    const { mtimeMs, size } = statSync(path.join(REPO_ROOT, file));
    stamp.update(`${file}\0${mtimeMs}\0${size}\n`);
  }
  const tree = path.join(TREES, stamp.digest('hex').slice(0, 16));
  if (existsSync(tree)) return tree;
  const building = `${tree}.${process.pid}.tmp`;
  rmSync(building, { recursive: true, force: true });
  buildSync({
    absWorkingDir: REPO_ROOT,
    entryPoints: files,
    outdir: building,
    outbase: '.',
    format: 'esm',
    platform: 'node',
    target: 'node20',
    sourcemap: 'linked',
    logLevel: 'error',
  });
  // Read beside the code at start (EXAMPLES_DIR), as scripts/build.mjs copies them into dist/.
  cpSync(path.join(REPO_ROOT, 'src/workflows/examples'), path.join(building, 'src/workflows/examples'), { recursive: true });
  try {
    renameSync(building, tree);
  } catch {
    // Another process renamed its own first: the same sources, the same tree.
    rmSync(building, { recursive: true, force: true });
  }
  pruneTrees(tree);
  return tree;
}

/** Trees (and abandoned half-built ones) of sources as they were over an hour ago: each edit makes one of about 5 MB. */
function pruneTrees(current: string): void {
  const before = Date.now() - 3_600_000;
  for (const name of readdirSync(TREES)) {
    const other = path.join(TREES, name);
    // Another process may be removing it too (statSync throws once it is gone).
    const old = other !== current && (statSync(other, { throwIfNoEntry: false })?.mtimeMs ?? Infinity) < before;
    if (old) rmSync(other, { recursive: true, force: true });
  }
}

/** Where `entry` runs from: its transpiled copy when it is a TypeScript source of TRANSPILED_FOLDERS. */
function runnable(entry: string): string | undefined {
  const relative = path.relative(REPO_ROOT, path.resolve(REPO_ROOT, entry));
  if (!relative.endsWith('.ts') || !TRANSPILED_FOLDERS.some((folder) => relative.startsWith(`${folder}/`))) return undefined;
  return path.join(transpiledTree(), relative.replace(/\.ts$/, '.js'));
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** When the process ended (Date.now()). */
  at: number;
}

/** An entry point in its own process (runEntry says how it runs). */
export interface NodeProcess {
  child: ChildProcess;
  /** stdout and stderr so far, interleaved. */
  readonly output: string;
  exited: Promise<Exit>;
  /** Resolves once the output matches; fails with the output so far if the process ends first. */
  waitForOutput(pattern: RegExp, timeoutMs?: number): Promise<void>;
  /** Resolves with how the process ended; fails if it still runs after `timeoutMs`. */
  waitForExit(timeoutMs?: number): Promise<Exit>;
  /** Sends a signal and resolves with how the process ended. */
  signal(signal: NodeJS.Signals): Promise<Exit>;
  /** Kills the process if it still runs (SIGKILL); safe to call twice. */
  kill(): Promise<void>;
}

/**
 * Starts `entry` with node. A TypeScript source of src/, workers/, client/ or test/fixtures/ runs
 * transpiled (TRANSPILED_FOLDERS, with source maps), any other through tsx. `compiled`: `entry`
 * is JavaScript (the build in dist/), run as it is. `tsx`: the TypeScript itself, under tsx, as
 * `npm run dev` runs it. `args`: its command line arguments. `nodeFlags`: node's own (`--watch`).
 */
export function runEntry(
  entry: string,
  env: Record<string, string>,
  options: { compiled?: boolean; tsx?: boolean; args?: string[]; nodeFlags?: string[] } = {},
): NodeProcess {
  const transpiled = options.compiled || options.tsx ? undefined : runnable(entry);
  const start = options.compiled ? [entry] : transpiled ? ['--enable-source-maps', transpiled] : ['--import', 'tsx', entry];
  const child = spawn(process.execPath, [...(options.nodeFlags ?? []), ...start, ...(options.args ?? [])], {
    cwd: REPO_ROOT,
    // PATH and HOME only from this process: every setting the service reads is explicit.
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  let exit: Exit | undefined;
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
  const exited = new Promise<Exit>((resolve) => {
    child.once('exit', (code, signal) => {
      exit = { code, signal, at: Date.now() };
      resolve(exit);
    });
  });

  const handle: NodeProcess = {
    child,
    get output() {
      return output;
    },
    exited,
    // Waiting for a process to start is no bound under test: on a busy machine compiling, migrating
    // and connecting take a while.
    async waitForOutput(pattern, timeoutMs = 60_000) {
      await poll(
        () => {
          if (pattern.test(output)) return true;
          if (exit) throw new Error(`process exited (${exit.code ?? exit.signal}) before printing ${pattern}:\n${output}`);
          return false;
        },
        { label: `${entry} to print ${pattern}`, timeoutMs },
      ).catch((error: Error) => {
        throw new Error(`${error.message}\noutput so far:\n${output}`);
      });
    },
    // A guard against a hang, not a bound: a process that exits at boot first imports the whole
    // service (tsx), 4-8 s alone on a busy machine and past 20 s in a loaded CI run (2026-11-25).
    async waitForExit(timeoutMs = 60_000) {
      return poll(() => exit, { label: `${entry} to exit`, timeoutMs }).catch((error: Error) => {
        throw new Error(`${error.message}\noutput so far:\n${output}`);
      });
    },
    async signal(signal) {
      if (!exit) child.kill(signal);
      return exited;
    },
    async kill() {
      if (!exit) child.kill('SIGKILL');
      await exited;
    },
  };
  return handle;
}
