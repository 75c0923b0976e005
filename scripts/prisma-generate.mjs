// Generates the Prisma client (src/generated/prisma) after `npm install`.
//
// Prisma's CLI fetches its schema-engine binary before every command, even though generating
// the client needs no engine. Where binaries.prisma.sh cannot be reached that fetch fails, so
// we point PRISMA_SCHEMA_ENGINE_BINARY at any existing file unless the caller chose one.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
let cli;
try {
  cli = require.resolve('prisma/build/index.js');
} catch {
  // A production install without dev dependencies: the client was generated at build time.
  if (existsSync(new URL('../src/generated/prisma/client.ts', import.meta.url))) process.exit(0);
  console.error('prisma is not installed and src/generated/prisma is missing: run npm install with dev dependencies');
  process.exit(1);
}

const env = { ...process.env, PRISMA_HIDE_UPDATE_MESSAGE: '1' };
env.PRISMA_SCHEMA_ENGINE_BINARY ??= process.execPath;
const result = spawnSync(process.execPath, [cli, 'generate'], { stdio: 'inherit', env });
process.exit(result.status ?? 1);
