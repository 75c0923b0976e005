// Compiles src/, workers/ and client/ to dist/ with tsc (tsconfig.build.json), copies the data files
// the code reads from beside itself, and builds the console into dist/console (scripts/build-console.mjs). Incremental: when nothing changed since the last build it
// takes about a second (the console's build is skipped too), so `npm start`, `npm run api` and `npm run worker` run it every time and
// always start what the sources say.
import { spawnSync } from 'node:child_process';
import { cpSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
let tsc;
try {
  ({ TSC_PATH: tsc } = await import('./tsc.mjs'));
} catch {
  console.error('typescript is not installed: run npm install (with dev dependencies) to build, or start the built dist/ directly with node');
  process.exit(1);
}
const result = spawnSync(process.execPath, [tsc, '--build', 'tsconfig.build.json'], { cwd: root, stdio: 'inherit' });
if (result.status !== 0) process.exit(result.status ?? 1);
// Example workflow definitions, loaded at start (src/workflows/workflow-service.ts, EXAMPLES_DIR).
cpSync(`${root}src/workflows/examples`, `${root}dist/src/workflows/examples`, { recursive: true });
// The console, which the API serves at /console. Vite is a development dependency: an install
// without it (npm ci --omit=dev) starts without a console, which answers 503 saying so.
let buildConsole;
try {
  ({ buildConsole } = await import('./build-console.mjs'));
  createRequire(import.meta.url).resolve('vite');
} catch {
  console.error('vite is not installed: the console is not built (run npm install with dev dependencies)');
}
if (buildConsole) {
  const { built } = await buildConsole();
  if (built) console.log('console built into dist/console');
}
