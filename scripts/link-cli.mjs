// Links the CLI as node_modules/.bin/orchestrator after `npm install`, so that `npx orchestrator`
// runs bin/orchestrator.mjs at once (docs/client-and-cli.md).
//
// Why not package.json "bin": npx treats a command that the project's own package provides as a
// package to install into its cache, and loads the whole dependency tree first (~800 packages:
// 2-3 s before the CLI starts, against 0.2 s for the CLI itself), since the tree is rarely as npm's
// hidden lockfile last saw it here (Prisma's and Vitest's caches appear in node_modules after an
// install; builds touch the workspaces). A command found in node_modules/.bin is run directly.
import { chmodSync, existsSync, lstatSync, mkdirSync, rmSync, symlinkSync } from 'node:fs';

const bin = new URL('../node_modules/.bin/', import.meta.url);
const link = new URL('orchestrator', bin);
mkdirSync(bin, { recursive: true });
if (existsSync(link) || lstatSync(link, { throwIfNoEntry: false })) rmSync(link);
symlinkSync('../../bin/orchestrator.mjs', link);
chmodSync(new URL('../bin/orchestrator.mjs', import.meta.url), 0o755);
