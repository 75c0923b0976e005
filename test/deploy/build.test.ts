import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { dropDatabase } from '../../src/persistence/database.js';
import { type NodeProcess, REPO_ROOT, runEntry } from '../helpers/child-process.js';
import { databaseUrl, TEST_REDIS_URL } from '../helpers/env.js';
import { poll, uniqueName } from '../helpers/harness.js';

/**
 * The production build: `npm run build` compiles to dist/, and the compiled entry points start
 * with node alone (no tsx), find their migrations, example workflows and package.json from
 * dist/, and serve: the API knows the built-in tools once the worker registered them. What the
 * Dockerfile's runtime stage runs.
 */

const KEY = 'build-test-admin-key-0123456789';

describe('the compiled build', () => {
  const children: NodeProcess[] = [];
  const databases: string[] = [];
  afterEach(async () => {
    await Promise.all(children.splice(0).map((child) => child.kill()));
  });
  afterAll(async () => {
    for (const url of databases) await dropDatabase(url);
  });

  const url = databaseUrl(uniqueName('orch_build'));
  databases.push(url);
  const prefix = `{${uniqueName('build')}}`;
  /** The API and the worker on one fresh database and queue prefix, as a deployment runs them. */
  function start(entry: string, env: Record<string, string>): NodeProcess {
    const child = runEntry(
      entry,
      { NODE_ENV: 'production', DATABASE_URL: url, REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: prefix, HOST: '127.0.0.1', PORT: '0', ...env },
      { compiled: true },
    );
    children.push(child);
    return child;
  }

  it('compiles with npm run build, then the API and the worker start from dist/ and serve', { timeout: 240_000 }, async () => {
    const build = spawnSync('npm', ['run', 'build'], { cwd: REPO_ROOT, encoding: 'utf8', timeout: 180_000 });
    expect(build.status, `${build.stdout}\n${build.stderr}`).toBe(0);
    for (const entry of ['dist/src/main.js', 'dist/src/api/main.js', 'dist/workers/main.js', 'dist/src/workflows/examples/diamond.json']) {
      expect(existsSync(path.join(REPO_ROOT, entry)), entry).toBe(true);
    }

    const api = start('dist/src/api/main.js', { API_KEYS: KEY });
    await api.waitForOutput(/"message":"API listening".*"url":"(http:\/\/[^"]+)"/, 60_000);
    const url = /"url":"(http:\/\/[^"]+)"/.exec(api.output)![1]!;
    expect(api.output).toMatch(/"message":"applied migration"/);
    // The API imports no adapter: on a fresh database the examples wait for the built-in worker to register their tools.
    expect(api.output).toMatch(/"message":"example workflows wait for their tools/);
    expect(api.output).not.toMatch(/"message":"loaded example workflows"/);
    expect((await fetch(`${url}/health`)).status).toBe(200);
    expect((await fetch(`${url}/tools`)).status).toBe(401);
    // Production without METRICS_TOKEN does not serve its metrics to whoever reaches the API.
    expect((await fetch(`${url}/metrics`)).status).toBe(404);
    const root = await fetch(`${url}/`, { headers: { authorization: `Bearer ${KEY}` } });
    expect(((await root.json()) as { version: string }).version).toMatch(/^\d+\.\d+\.\d+/);

    // The built-in worker registers its tools (the API hears of it at once) and loads the examples.
    const worker = start('dist/workers/main.js', {});
    await worker.waitForOutput(/"message":"worker started"/, 60_000);
    expect(worker.output).toMatch(/"message":"loaded example workflows"/);
    await poll(
      async () => {
        const answer = await fetch(`${url}/tools`, { headers: { authorization: `Bearer ${KEY}` } });
        return ((await answer.json()) as { tools: { name: string }[] }).tools.some((tool) => tool.name === 'echo');
      },
      { label: 'the API to know echo', timeoutMs: 5_000 },
    );
    // The CLI as a user runs it: `npx orchestrator` is bin/orchestrator.mjs (node_modules/.bin/orchestrator, linked after
    // the install: scripts/link-cli.mjs), which runs the compiled dist/client/cli.js; npm runs it without reading the
    // dependency tree first (what made it take 2-3 s).
    const cli = spawnSync('npx', ['--loglevel', 'silly', 'orchestrator', 'tools', '--json'], {
      cwd: REPO_ROOT,
      encoding: 'utf8',
      timeout: 60_000,
      env: { ...process.env, ORCHESTRATOR_URL: url, ORCHESTRATOR_API_KEY: KEY },
    });
    expect(cli.status, cli.stderr).toBe(0);
    expect((JSON.parse(cli.stdout) as { name: string }[]).map((tool) => tool.name)).toContain('echo');
    expect(cli.stderr).not.toMatch(/shrinkwrap|loadActual|reify/);
    const refused = spawnSync(process.execPath, ['bin/orchestrator.mjs', 'tools'], {
      cwd: REPO_ROOT,
      encoding: 'utf8',
      timeout: 60_000,
      env: { ...process.env, ORCHESTRATOR_URL: url, ORCHESTRATOR_API_KEY: '' },
    });
    expect(refused.status, 'without a key').not.toBe(0);
    expect((await api.signal('SIGTERM')).code).toBe(0);
    expect((await worker.signal('SIGTERM')).code).toBe(0);
  });
});
