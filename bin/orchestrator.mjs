#!/usr/bin/env node
// `npx orchestrator ...` (package.json "bin"): runs the compiled CLI, dist/client/cli.js. Builds
// first when the build is missing or older than the client's sources, as `npm start` does, so a
// fresh clone needs no extra step and an edited client is not run stale.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const cli = `${root}dist/client/cli.js`;
// Written by every build that compiled something (tsconfig.build.json).
const buildInfo = `${root}dist/.tsbuildinfo`;
const sources = existsSync(`${root}client`) ? readdirSync(`${root}client`).filter((name) => name.endsWith('.ts')) : [];
const stale = !existsSync(cli) || (existsSync(buildInfo) && sources.some((name) => statSync(`${root}client/${name}`).mtimeMs > statSync(buildInfo).mtimeMs));
if (stale) {
  // The build's output goes to stderr: stdout is the command's (--json).
  const build = spawnSync(process.execPath, [`${root}scripts/build.mjs`], { cwd: root, stdio: ['ignore', 2, 2] });
  if (build.status !== 0) process.exit(build.status ?? 1);
}
await import(cli);
