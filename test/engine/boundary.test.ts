import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

/**
 * The import boundaries are dependency-cruiser rules (.dependency-cruiser.cjs), which CI runs on
 * src/ and workers/ (npm run lint:boundaries). Here: the engine's rules hold on src/ (the engine decides and
 * does no I/O), and the rules catch what they are there to catch, on a small tree built for it.
 */

const ROOT = path.resolve(import.meta.dirname, '../..');
const CONFIG = path.join(ROOT, '.dependency-cruiser.cjs');
const CLI = path.join(ROOT, 'node_modules/dependency-cruiser/bin/dependency-cruise.mjs');

interface Violation {
  rule: { name: string };
  from: string;
  to: string;
}

/** Runs dependency-cruiser on `dir`/src and `dir`/workers with `config`; the violations it reports. */
function cruise(dir: string, config: string): Violation[] {
  // Its JSON report of the whole tree is over a megabyte (spawnSync's default buffer, which cut it).
  const run = spawnSync(process.execPath, [CLI, 'src', 'workers', '--config', config, '--output-type', 'json'], {
    cwd: dir,
    encoding: 'utf8',
    maxBuffer: 256 * 1024 * 1024,
  });
  if (run.error || !run.stdout) throw new Error(`dependency-cruiser failed: ${run.error?.message ?? run.stderr}`);
  return (JSON.parse(run.stdout) as { summary: { violations: Violation[] } }).summary.violations;
}

describe('import boundaries', () => {
  it('src/engine imports only itself, src/lib/errors.ts, src/lib/limits.ts, zod and the CEL packages, and reaches no persistence, queue, API, worker, database or Redis code', () => {
    const engine = cruise(ROOT, CONFIG).filter((violation) => violation.rule.name.startsWith('engine-'));
    expect(engine).toEqual([]);
  });

  describe('the rules, on a tree that breaks them', () => {
    let dir: string;
    let violations: string[];

    beforeAll(() => {
      dir = mkdtempSync(path.join(os.tmpdir(), 'boundaries-'));
      const files: Record<string, string> = {
        // The engine: through limits.ts it reaches ioredis; it imports the queue (type only) and a package; the CEL evaluator is allowed.
        'src/engine/plan.ts': `import { limit } from '../lib/limits.js';\nimport type { Job } from '../queue/jobs.js';\nimport 'node:fs';\nimport { parse } from '@bufbuild/cel';\nexport const plan = (job: Job) => [limit, parse];`,
        'src/lib/limits.ts': `import type { Redis } from 'ioredis';\nexport type R = Redis;\nexport const limit = 1;`,
        'src/queue/jobs.ts': `export interface Job { id: string }`,
        // An adapter that reads the configuration; the SDK and lib are fine.
        'workers/adapters/mail.ts': `import { config } from '../../src/lib/config.js';\nimport { defineTool } from '../../src/tools/tool.js';\nimport { send } from '../../src/lib/smtp.js';\nexport default defineTool(config, send);`,
        'src/lib/config.ts': `export const config = {};`,
        'src/tools/tool.ts': `export const defineTool = (...args: unknown[]) => args;`,
        'src/lib/smtp.ts': `export const send = () => undefined;`,
        // The worker runtime reaching into the API; a service importing the API; a store importing a service.
        'workers/runtime/step.ts': `import { problems } from '../../src/api/http.js';\nexport const step = problems;`,
        'src/api/http.ts': `export const problems = [];`,
        'src/tasks/service.ts': `import { problems } from '../api/http.js';\nexport const service = problems;`,
        'src/persistence/store.ts': `import type { Definition } from '../workflows/definition.js';\nexport type Stored = Definition;`,
        'src/workflows/definition.ts': `export interface Definition { name: string }`,
        // Two folders of one layer importing each other.
        'src/ledger/sql.ts': `import { observe } from '../observability/metrics.js';\nexport const sql = observe;`,
        'src/observability/metrics.ts': `import type { sql } from '../ledger/sql.js';\nexport const observe = (s?: typeof sql) => s;`,
        // A folder that has no layer yet.
        'src/billing/invoice.ts': `import { config } from '../lib/config.js';\nexport const invoice = config;`,
        // Only the worker's entry point picks adapters; nothing of src/ imports them, the API's entry point included.
        'src/api/app.ts': `import mail from '../../workers/adapters/mail.js';\nexport const app = mail;`,
        'src/main.ts': `import mail from '../workers/adapters/mail.js';\nexport const main = mail;`,
        'src/api/main.ts': `import mail from '../../workers/adapters/mail.js';\nexport const api = mail;`,
        'workers/main.ts': `import mail from './adapters/mail.js';\nexport const worker = mail;`,
      };
      for (const [file, source] of Object.entries(files)) {
        mkdirSync(path.dirname(path.join(dir, file)), { recursive: true });
        writeFileSync(path.join(dir, file), source);
      }
      writeFileSync(path.join(dir, 'tsconfig.json'), JSON.stringify({ compilerOptions: { module: 'NodeNext', moduleResolution: 'NodeNext' } }));
      symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'), 'dir');
      // The project's rules; packages resolved through the symlink keep their node_modules/ path.
      writeFileSync(path.join(dir, 'config.cjs'), `module.exports = { extends: ${JSON.stringify(CONFIG)}, options: { preserveSymlinks: true } };`);
      violations = cruise(dir, 'config.cjs').map((violation) => `${violation.rule.name}: ${violation.from} -> ${violation.to}`);
    });
    afterAll(() => {
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    it('keep the engine pure: no upward import, type-only included, no package but zod and the CEL ones, nothing that reaches I/O', () => {
      expect(violations).toEqual(
        expect.arrayContaining([
          'engine-imports-downward: src/engine/plan.ts -> src/queue/jobs.ts',
          'engine-is-pure: src/engine/plan.ts -> src/queue/jobs.ts',
          'engine-is-pure: src/engine/plan.ts -> fs',
          'engine-reaches-no-io: src/engine/plan.ts -> node_modules/ioredis/built/index.js',
        ]),
      );
      expect(violations.filter((violation) => violation.includes('@bufbuild'))).toEqual([]);
    });

    it('hold adapters to the tool SDK and src/lib, and let only the worker’s entry point import them: the API knows tools as workers register them', () => {
      const adapters = violations.filter((violation) => /adapters/.test(violation));
      expect(adapters.sort()).toEqual([
        'adapters-use-the-sdk: workers/adapters/mail.ts -> src/lib/config.ts',
        'api-without-workers: src/api/app.ts -> workers/adapters/mail.ts',
        'api-without-workers: src/api/main.ts -> workers/adapters/mail.ts',
        'only-entry-points-choose-adapters: src/api/app.ts -> workers/adapters/mail.ts',
        'src-without-adapters: src/api/app.ts -> workers/adapters/mail.ts',
        'src-without-adapters: src/api/main.ts -> workers/adapters/mail.ts',
        'src-without-adapters: src/main.ts -> workers/adapters/mail.ts',
      ]);
    });

    it('let layers import only downward, and keep the API and the worker runtime apart', () => {
      expect(violations).toEqual(
        expect.arrayContaining([
          'workers-without-api: workers/runtime/step.ts -> src/api/http.ts',
          'services-imports-downward: src/tasks/service.ts -> src/api/http.ts',
          'store-imports-downward: src/persistence/store.ts -> src/workflows/definition.ts',
        ]),
      );
    });

    it('refuse cycles between folders and modules, and a folder without a layer', () => {
      expect(violations).toEqual(
        expect.arrayContaining([
          'no-folder-cycles: src/ledger -> src/observability',
          'no-module-cycles: src/ledger/sql.ts -> src/observability/metrics.ts',
          'every-module-has-a-layer: src/billing/invoice.ts -> src/lib/config.ts',
        ]),
      );
    });

    it('and nothing more: importing the SDK, src/lib and lower layers passes, and the worker’s entry point may import adapters', () => {
      // Those are expected above: the configuration is the one part of src/lib an adapter may not
      // read, and src/'s entry points may not import adapters.
      const expected = new Set([
        'adapters-use-the-sdk: workers/adapters/mail.ts -> src/lib/config.ts',
        'every-module-has-a-layer: src/billing/invoice.ts -> src/lib/config.ts',
        'api-without-workers: src/api/main.ts -> workers/adapters/mail.ts',
        'src-without-adapters: src/api/main.ts -> workers/adapters/mail.ts',
        'src-without-adapters: src/main.ts -> workers/adapters/mail.ts',
      ]);
      expect(violations.filter((violation) => /-> src\/(tools|lib)\/|main\.ts ->/.test(violation) && !expected.has(violation))).toEqual([]);
      expect(violations).toHaveLength(19);
    });
  });
});
