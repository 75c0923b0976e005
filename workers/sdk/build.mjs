// The package's build (`npm pack` runs it): the SDK and the step runtime it shares with the
// built-in worker, bundled into one ESM file (dist/index.js; the dependencies stay imports), and
// their declarations (dist/types, from the repository's sources as they are laid out there).
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { TSC_PATH } from '../../scripts/tsc.mjs';

const here = fileURLToPath(new URL('.', import.meta.url));
rmSync(`${here}dist`, { recursive: true, force: true });
await build({
  entryPoints: [`${here}index.ts`],
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  packages: 'external',
  outfile: `${here}dist/index.js`,
  sourcemap: true,
  logLevel: 'warning',
});
execFileSync(process.execPath, [TSC_PATH, '-p', `${here}tsconfig.json`], { stdio: 'inherit' });
