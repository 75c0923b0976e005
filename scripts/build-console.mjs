// Builds the console (src/console, React + Vite) into dist/console, which the API serves at
// /console. Skipped when its inputs have not changed since the last build, as tsc -b skips
// unchanged sources, so `npm start` stays quick: the hash of every input is kept beside the build.
// scripts/build.mjs runs it; the browser tests (test/console) call buildConsole themselves.
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
export const CONSOLE_SOURCE = join(root, 'src/console');
export const CONSOLE_OUT = join(root, 'dist/console');
const HASH_FILE = '.inputs-hash';

/** Every file the build reads besides node_modules: the app, the client package, this script, the lockfile. */
function inputs() {
  const files = [];
  const walk = (dir) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      if (entry.name === 'node_modules' || entry.name === 'dist') continue;
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else files.push(path);
    }
  };
  walk(CONSOLE_SOURCE);
  walk(join(root, 'client'));
  files.push(fileURLToPath(import.meta.url), join(root, 'package-lock.json'));
  return files.sort();
}

function inputsHash() {
  const hash = createHash('sha256');
  for (const file of inputs()) {
    if (!statSync(file).isFile()) continue;
    hash.update(relative(root, file)).update('\0').update(readFileSync(file)).update('\0');
  }
  return hash.digest('hex');
}

/** Vite's configuration of the console: served under /console/, one chunk per page (React.lazy). */
export async function consoleViteConfig(outDir) {
  const { default: react } = await import('@vitejs/plugin-react');
  return {
    configFile: false,
    root: CONSOLE_SOURCE,
    base: '/console/',
    logLevel: 'warn',
    mode: 'production',
    plugins: [react()],
    // The client package from its TypeScript sources (its "orchestrator-source" export), so the
    // console needs no separate build of the package first.
    resolve: { conditions: ['orchestrator-source', 'module', 'browser', 'production'] },
    build: {
      outDir,
      emptyOutDir: true,
      sourcemap: true,
      target: 'es2022',
      chunkSizeWarningLimit: 600,
      // Rolldown's report of slow plugins: noise on a busy machine.
      rolldownOptions: { checks: { pluginTimings: false } },
    },
  };
}

/**
 * Builds the console into `outDir` unless the build there was made from the same inputs.
 * Written to a fresh folder and renamed into place, so parallel test files never read half a build.
 * @returns {Promise<{ outDir: string; built: boolean }>}
 */
export async function buildConsole({ outDir = CONSOLE_OUT, force = false } = {}) {
  const hash = inputsHash();
  const hashFile = join(outDir, HASH_FILE);
  if (!force && existsSync(hashFile) && readFileSync(hashFile, 'utf8') === hash) return { outDir, built: false };
  const { build } = await import('vite');
  const staging = `${outDir}.${process.pid}.${Date.now()}`;
  // Always React's production build and JSX transform: Vite and its React plugin follow the calling
  // process's NODE_ENV (vitest sets `test`), which would bundle React's development build.
  const nodeEnv = process.env.NODE_ENV;
  process.env.NODE_ENV = 'production';
  try {
    await build(await consoleViteConfig(staging));
  } finally {
    if (nodeEnv === undefined) delete process.env.NODE_ENV;
    else process.env.NODE_ENV = nodeEnv;
  }
  writeFileSync(join(staging, HASH_FILE), hash);
  // Another process (a parallel test file) may have put the same build in place meanwhile: keep
  // that one, which a server may be reading.
  if (existsSync(hashFile) && readFileSync(hashFile, 'utf8') === hash) {
    rmSync(staging, { recursive: true, force: true });
    return { outDir, built: true };
  }
  rmSync(outDir, { recursive: true, force: true });
  renameSync(staging, outDir);
  return { outDir, built: true };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { built } = await buildConsole({ force: process.argv.includes('--force') });
  console.log(built ? `console built into ${relative(root, CONSOLE_OUT)}` : 'console unchanged');
}
