import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { poll } from './harness.js';

export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** When the process ended (Date.now()). */
  at: number;
}

/** An entry point in its own process: TypeScript run by `node --import tsx`, or compiled JavaScript. */
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
 * `compiled`: `entry` is JavaScript (the build in dist/), run by node alone. `args`: its command
 * line arguments. `nodeFlags`: node's own (`--watch`).
 */
export function runEntry(entry: string, env: Record<string, string>, options: { compiled?: boolean; args?: string[]; nodeFlags?: string[] } = {}): NodeProcess {
  const child = spawn(process.execPath, [...(options.nodeFlags ?? []), ...(options.compiled ? [] : ['--import', 'tsx']), entry, ...(options.args ?? [])], {
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
