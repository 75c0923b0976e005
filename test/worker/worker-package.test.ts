import { execFile } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TSC_PATH } from '../../scripts/tsc.mjs';
import { type NodeProcess, runEntry } from '../helpers/child-process.js';
import { createHarness, type Harness, poll, waitForTask } from '../helpers/harness.js';

const run = promisify(execFile);
const SDK_DIR = fileURLToPath(new URL('../../workers/sdk/', import.meta.url));
const EXAMPLE_DIR = fileURLToPath(new URL('../../examples/worker-app/', import.meta.url));
const ROOT = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
};

const ADMIN = 'admin:worker-package-admin-key-0123456789';
const WORKER = 'worker@example:worker-package-worker-key-0123456789';
const bearer = (entry: string) => ({ authorization: `Bearer ${entry.slice(entry.indexOf(':') + 1)}` });

/**
 * The worker SDK as users install it (@orchestrator/worker): packed with `npm pack` (which builds
 * it), installed from the tarball into a copy of examples/worker-app outside the repository, and
 * started with REDIS_URL, ORCHESTRATOR_URL and ORCHESTRATOR_API_KEY only, against a live service.
 */
describe('the worker package and its example app', { timeout: 240_000 }, () => {
  let dir: string;
  let tarball: string;
  let h: Harness;
  let app: NodeProcess | undefined;

  // npm pack builds the bundle and npm install reads npm's cache: the pack alone took 56 s on a
  // loaded machine (2026-11-25), near the 60 s default for a hook. What it bounds is npm, not the SDK.
  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'orchestrator-worker-app-'));
    const { stdout } = await run('npm', ['pack', '--json', '--pack-destination', dir], { cwd: SDK_DIR });
    const [packed] = JSON.parse(stdout) as { filename: string }[];
    tarball = path.join(dir, packed!.filename);
    cpSync(EXAMPLE_DIR, path.join(dir, 'app'), { recursive: true });
    const manifest = JSON.parse(readFileSync(path.join(dir, 'app', 'package.json'), 'utf8')) as {
      dependencies: Record<string, string>;
      devDependencies?: Record<string, string>;
    };
    manifest.dependencies['@orchestrator/worker'] = `file:${tarball}`;
    manifest.dependencies.zod = ROOT.dependencies.zod!;
    // For the type test: a TypeScript user has Node's types.
    manifest.devDependencies = { '@types/node': ROOT.devDependencies['@types/node']! };
    writeFileSync(path.join(dir, 'app', 'package.json'), JSON.stringify(manifest, null, 2));
    // Its dependencies come from npm's cache: they are the repository's own.
    await run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--ignore-scripts'], { cwd: path.join(dir, 'app') });
    h = await createHarness({ env: { API_KEYS: [ADMIN, WORKER].join(',') } });
  }, 180_000);
  afterAll(async () => {
    await app?.kill();
    await h?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('holds the bundled ESM and its declarations, not the TypeScript sources', async () => {
    const { stdout } = await run('tar', ['-tzf', tarball]);
    const files = stdout.trim().split('\n');
    expect(files).toEqual(expect.arrayContaining(['package/package.json', 'package/dist/index.js', 'package/dist/types/workers/sdk/index.d.ts']));
    expect(files.filter((file) => file.endsWith('.ts') && !file.endsWith('.d.ts'))).toEqual([]);
    // Nothing of the database in it: no Prisma client, no migrations.
    expect(files.filter((file) => /prisma|generated/.test(file))).toEqual([]);
  });

  it('runs the example app with three variables: a task of its tool, and a workflow mixing it with a built-in tool', async () => {
    app = runEntry(
      path.join(dir, 'app', 'index.js'),
      { REDIS_URL: h.config.REDIS_URL, ORCHESTRATOR_URL: h.url, ORCHESTRATOR_API_KEY: bearer(WORKER).authorization.slice(7) },
      { compiled: true },
    );
    await app.waitForOutput(/worker started/);
    const task = await h.request('POST', '/assign-task', { task_type: 'shout', params: { text: 'packed' } }, bearer(ADMIN));
    expect(task.status, JSON.stringify(task.body)).toBe(202);
    expect(await waitForTask(h, task.body.task_id, 30_000, bearer(ADMIN))).toMatchObject({ status: 'completed', result: { text: 'PACKED' } });
    const workflow = await h.request(
      'POST',
      '/workflows',
      {
        name: 'echo_then_shout',
        steps: [
          { id: 'say', tool: 'echo', input: { text: 'mixed' } },
          { id: 'loud', tool: 'shout', depends_on: ['say'], input: { text: '{{steps.say.output.text}}' } },
        ],
      },
      bearer(ADMIN),
    );
    expect(workflow.status, JSON.stringify(workflow.body)).toBe(201);
    const mixed = await h.request('POST', '/assign-task', { task_type: 'echo_then_shout', params: {} }, bearer(ADMIN));
    expect(await waitForTask(h, mixed.body.task_id, 30_000, bearer(ADMIN))).toMatchObject({ status: 'completed', result: { loud: { text: 'MIXED' } } });
    // SIGTERM drains it and exits 0.
    expect((await app.signal('SIGTERM')).code).toBe(0);
  });

  it('npm run dev (node --watch): an edit restarts the app, which registers its changed tool as a new version at once', async () => {
    const appDir = path.join(dir, 'app');
    const env = { REDIS_URL: h.config.REDIS_URL, ORCHESTRATOR_URL: h.url, ORCHESTRATOR_API_KEY: bearer(WORKER).authorization.slice(7) };
    app = runEntry(path.join(appDir, 'index.js'), env, { compiled: true, nodeFlags: ['--watch'] });
    await app.waitForOutput(/worker started/);
    const tool = async () => (await h.request('GET', '/tools', undefined, bearer(ADMIN))).body.tools.find((entry: { name: string }) => entry.name === 'shout');
    const before = await tool();
    const source = readFileSync(path.join(appDir, 'index.js'), 'utf8');
    writeFileSync(path.join(appDir, 'index.js'), source.replace("description: 'Upper-cases a text.'", "description: 'Upper-cases a text, loudly.'"));
    await poll(() => (app!.output.match(/worker started/g) ?? []).length === 2, { label: 'the app restarted by node --watch', timeoutMs: 60_000 });
    // The old process deregistered as it stopped, so the change is a new version, not a 409 against it.
    expect(app.output).not.toContain('tool_conflict');
    expect(await tool()).toMatchObject({ description: 'Upper-cases a text, loudly.', fleet: { version: before.fleet.version + 1, live_workers: 1 } });
    const task = await h.request('POST', '/assign-task', { task_type: 'shout', params: { text: 'again' } }, bearer(ADMIN));
    expect(await waitForTask(h, task.body.task_id, 30_000, bearer(ADMIN))).toMatchObject({ status: 'completed', result: { text: 'AGAIN' } });
    await app.kill();
    writeFileSync(path.join(appDir, 'index.js'), source);
  });

  it("types defineTool through the package (a wrong input is a type error), and the README's example compiles as written", async () => {
    writeFileSync(
      path.join(dir, 'app', 'typed.ts'),
      `import { defineTool } from '@orchestrator/worker';
       import { z } from 'zod';
       export const add = defineTool({
         name: 'add', description: 'Adds.',
         input: z.object({ a: z.number(), b: z.number() }), output: z.object({ sum: z.number() }),
         async run(input) {
           // @ts-expect-error: input.a is a number
           const wrong: string = input.a;
           void wrong;
           return { sum: input.a + input.b };
         },
       });
       export const bad = defineTool({
         name: 'bad', description: 'Returns the wrong output.',
         input: z.object({}), output: z.object({ n: z.number() }),
         // @ts-expect-error: the output must fit the output schema
         async run() { return { n: 'one' }; },
       });
      `,
    );
    // The README's "Your own tools" example, as written.
    const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
    const block = /<!-- add-your-own-tool[^\n]*\n```ts\n([\s\S]*?)\n```/.exec(readme);
    expect(block, 'the README block marked add-your-own-tool').not.toBeNull();
    expect(block![1]).toContain("from '@orchestrator/worker'");
    writeFileSync(path.join(dir, 'app', 'readme-tool.ts'), block![1]!);
    writeFileSync(
      path.join(dir, 'app', 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          module: 'NodeNext',
          moduleResolution: 'NodeNext',
          target: 'ES2022',
          strict: true,
          noEmit: true,
          skipLibCheck: true,
          types: ['node'],
        },
        files: ['typed.ts', 'readme-tool.ts'],
      }),
    );
    const checked = await run(process.execPath, [TSC_PATH, '-p', path.join(dir, 'app')], { cwd: path.join(dir, 'app') }).catch(
      (error: { stdout: string }) => error,
    );
    expect((checked as { stdout?: string }).stdout ?? '').toBe('');
  });
});
