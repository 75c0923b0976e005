import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

/**
 * The engine decides, it does no I/O: nothing under src/engine may reach persistence, queues,
 * the API or the workers, nor the clients of PostgreSQL, Redis and HTTP, directly or through a
 * local module it imports. Type-only imports count too: they tie the engine to those layers all
 * the same.
 */

const ROOT = path.resolve(import.meta.dirname, '../..');
const ENGINE = path.join(ROOT, 'src/engine');
const FORBIDDEN_DIRS = ['src/persistence', 'src/queue', 'src/api', 'src/generated', 'src/workers', 'src/adapters'];
const FORBIDDEN_PACKAGES = ['prisma', '@prisma', 'bullmq', 'ioredis', 'pg', 'express'];

/** Every module specifier of a file: import, export-from, import type, dynamic import, require. */
function specifiers(source: string): string[] {
  return ts.preProcessFile(source, true, true).importedFiles.map((file) => file.fileName);
}

/** Walks the relative imports from `entries`; returns "<file> imports '<specifier>'" for each one over the boundary. */
function boundaryViolations(entries: string[], read: (file: string) => string): string[] {
  const violations: string[] = [];
  const seen = new Set(entries);
  const queue = [...entries];
  for (let file = queue.shift(); file !== undefined; file = queue.shift()) {
    for (const specifier of specifiers(read(file))) {
      const violation = `${path.relative(ROOT, file)} imports '${specifier}'`;
      if (!specifier.startsWith('.')) {
        // A package is named by its first segment; '@prisma' stands for all of its scope.
        if (FORBIDDEN_PACKAGES.includes(specifier.split('/')[0]!)) violations.push(violation);
        continue;
      }
      const target = path.resolve(path.dirname(file), specifier).replace(/\.js$/, '.ts');
      const relative = path.relative(ROOT, target);
      if (FORBIDDEN_DIRS.some((dir) => relative === dir || relative.startsWith(`${dir}/`))) violations.push(violation);
      else if (!seen.has(target)) {
        seen.add(target);
        queue.push(target);
      }
    }
  }
  return violations;
}

describe('src/engine import boundary', () => {
  it('src/engine, and every local module it reaches, imports no persistence, queue, api, workers, database or Redis client', () => {
    const files = readdirSync(ENGINE, { recursive: true, encoding: 'utf8' })
      .filter((name) => name.endsWith('.ts'))
      .map((name) => path.join(ENGINE, name));
    expect(files.length).toBeGreaterThan(0);
    expect(boundaryViolations(files, (file) => readFileSync(file, 'utf8'))).toEqual([]);
  });

  it('the check catches forbidden imports of every form, also through a module the engine imports', () => {
    const at = (file: string) => path.join(ROOT, file);
    const sources: Record<string, string> = {
      [at('src/engine/a.ts')]: `import { b } from './b.js';\nimport type { Row } from '../limits.js';\nexport * from '../queue/jobs.js';`,
      [at('src/engine/b.ts')]: `import {\n  x,\n} from 'bullmq';\nexport const b = () => import('pg');`,
      [at('src/limits.ts')]: `import type { PrismaClient } from '@prisma/client';\nimport { y } from './workers/runtime/z.js';\nimport 'node:fs';\nimport 'pg-boss';`,
    };
    expect(boundaryViolations([at('src/engine/a.ts')], (file) => sources[file]!)).toEqual([
      "src/engine/a.ts imports '../queue/jobs.js'",
      "src/engine/b.ts imports 'bullmq'",
      "src/engine/b.ts imports 'pg'",
      "src/limits.ts imports '@prisma/client'",
      "src/limits.ts imports './workers/runtime/z.js'",
    ]);
  });
});
