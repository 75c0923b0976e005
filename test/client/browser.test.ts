import { readFileSync } from 'node:fs';
import path from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

/**
 * The client library runs in browsers: from client/index.ts, every module it reaches may import
 * only other client modules and the two packages that run anywhere fetch does. Node's modules
 * are for the CLI (client/cli.ts), which no library module imports.
 */
const CLIENT = path.resolve(import.meta.dirname, '../../client');
const PACKAGES = new Set(['openapi-fetch', 'eventsource-parser/stream']);

describe('the client library', () => {
  it('imports nothing but its own modules, openapi-fetch and eventsource-parser', () => {
    const imports: string[] = [];
    const seen = new Set([path.join(CLIENT, 'index.ts')]);
    for (const file of seen) {
      for (const { fileName: specifier } of ts.preProcessFile(readFileSync(file, 'utf8'), true, true).importedFiles) {
        if (!specifier.startsWith('.')) {
          imports.push(specifier);
          continue;
        }
        const target = path.resolve(path.dirname(file), specifier).replace(/\.js$/, '.ts');
        expect(path.dirname(target), `${file} imports ${specifier}`).toBe(CLIENT);
        // The generated types are a declaration file.
        seen.add(target.endsWith('/openapi.ts') ? target.replace(/\.ts$/, '.d.ts') : target);
      }
    }
    expect([...seen].map((file) => path.basename(file)).sort()).toEqual([
      'callbacks.ts',
      'errors.ts',
      'events.ts',
      'index.ts',
      'openapi.d.ts',
      'params-filter.ts',
      'workflow.ts',
    ]);
    expect(imports.filter((specifier) => !PACKAGES.has(specifier))).toEqual([]);
  });
});
