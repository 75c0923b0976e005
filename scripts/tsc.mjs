// The TypeScript compiler that checks and builds this repository: TypeScript 7, the native one
// (devDependency `typescript-native`, an alias of typescript@7). On a busy two-core machine the
// server's typecheck took 12 s and 9 CPU-s against TypeScript 5's 46 s and 26, and the typecheck,
// the build and the packages' declarations are a large part of CI there. It emits the same
// JavaScript (dist/ compared file by file, 2026-11-26). TypeScript 5 stays as `typescript` for
// what uses the compiler's JavaScript API, which TypeScript 7 does not offer yet:
// openapi-typescript (the client's types), scripts/config-reference.ts, dependency-cruiser.
// Both packages name their command `tsc`, so node_modules/.bin/tsc may be either: scripts call
// this file instead (`node scripts/tsc.mjs -p .`), or run TSC_PATH with node.
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

// The package exports no ./bin/tsc, so the path is found from its package.json.
export const TSC_PATH = path.join(path.dirname(createRequire(import.meta.url).resolve('typescript-native/package.json')), 'bin', 'tsc');

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    execFileSync(process.execPath, [TSC_PATH, ...process.argv.slice(2)], { stdio: 'inherit' });
  } catch (error) {
    process.exit(typeof error.status === 'number' ? error.status : 1);
  }
}
