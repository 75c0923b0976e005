import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TSC_PATH } from '../../scripts/tsc.mjs';

const run = promisify(execFile);
const CLIENT_DIR = fileURLToPath(new URL('../../client/', import.meta.url));
const PACKAGE = JSON.parse(readFileSync(path.join(CLIENT_DIR, 'package.json'), 'utf8')) as { name: string; version: string };

/**
 * The client as the package users install (@orchestrator/client): packed with `npm pack` (which
 * builds it), installed from the tarball into an empty project, imported by its name, its types
 * checked by TypeScript, its CLI run.
 */
describe('the client package', { timeout: 180_000 }, () => {
  let dir: string;
  let tarball: string;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'orchestrator-client-package-'));
    const { stdout } = await run('npm', ['pack', '--json', '--pack-destination', dir], { cwd: CLIENT_DIR });
    const [packed] = JSON.parse(stdout) as { filename: string; files: { path: string }[] }[];
    tarball = path.join(dir, packed!.filename);
    writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
    // Its dependencies come from npm's cache: they are the repository's own.
    await run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--ignore-scripts', tarball], { cwd: dir });
  });
  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('holds the built ESM, its .d.ts and the API description, not the TypeScript sources', async () => {
    const { stdout } = await run('tar', ['-tzf', tarball]);
    const files = stdout.trim().split('\n');
    expect(files).toEqual(
      expect.arrayContaining(['package/package.json', 'package/dist/index.js', 'package/dist/index.d.ts', 'package/dist/cli.js', 'package/openapi.json']),
    );
    expect(files.filter((file) => file.endsWith('.ts') && !file.endsWith('.d.ts'))).toEqual([]);
    expect(path.basename(tarball)).toBe(`orchestrator-client-${PACKAGE.version}.tgz`);
  });

  it('imports by its name in Node, with working code', async () => {
    const script = `
      import { createClient, OrchestratorError, FINISHED_STATUSES, defineWorkflow } from '${PACKAGE.name}';
      const client = createClient({ baseUrl: 'http://127.0.0.1:9' });
      console.log(JSON.stringify({ api: typeof client.api.GET, error: typeof OrchestratorError, finished: [...FINISHED_STATUSES], workflow: defineWorkflow({ name: 'w', steps: [{ id: 'a', tool: 'echo' }] }).name }));
    `;
    const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], { cwd: dir });
    expect(JSON.parse(stdout)).toEqual({ api: 'function', error: 'function', finished: ['completed', 'failed', 'cancelled'], workflow: 'w' });
  });

  it('types a consumer through its exports (TypeScript, NodeNext)', async () => {
    writeFileSync(
      path.join(dir, 'use.ts'),
      `import { createClient, type TaskView } from '${PACKAGE.name}';
       const client = createClient({ apiKey: 'k' });
       export async function status(id: string): Promise<TaskView['status']> { return (await client.result(id)).status; }
       // @ts-expect-error: the client knows its methods
       client.noSuchMethod();
      `,
    );
    writeFileSync(
      path.join(dir, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: { module: 'NodeNext', moduleResolution: 'NodeNext', target: 'ES2022', strict: true, noEmit: true, lib: ['ES2023', 'DOM'] },
        files: ['use.ts'],
      }),
    );
    await expect(run(process.execPath, [TSC_PATH, '-p', dir], { cwd: dir })).resolves.toBeDefined();
  });

  it("installs its CLI as `orchestrator-client` (in this repository `orchestrator` is the root package's, which builds first)", async () => {
    const { stdout } = await run(path.join(dir, 'node_modules/.bin/orchestrator-client'), ['--help'], { cwd: dir });
    expect(stdout).toMatch(/^Usage: orchestrator <command>/);
  });
});
