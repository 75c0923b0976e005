// Writes the API description (src/api/openapi.ts) to the file named by the first argument, or to
// standard output: built in-process from the same zod schemas the server serves it from, so no
// server, Redis or PostgreSQL is needed. CI lints it with Redocly (npm run lint:openapi).
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { openApiJson } from '../src/api/openapi.js';

const [file] = process.argv.slice(2);
if (file) {
  mkdirSync(path.dirname(file), { recursive: true });
  // Indented, so that Redocly's messages point at a line rather than a column of one long line.
  writeFileSync(file, `${JSON.stringify(JSON.parse(openApiJson()), null, 2)}\n`);
} else process.stdout.write(`${openApiJson()}\n`);
