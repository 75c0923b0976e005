import { afterEach, describe, expect, it } from 'vitest';
import { type NodeProcess, runEntry } from '../helpers/child-process.js';
import { TEST_POSTGRES_URL } from '../helpers/env.js';
import { freePort } from '../helpers/ports.js';

/**
 * A process started while PostgreSQL cannot be reached stops with one line that names
 * PostgreSQL, where it was looked for and the setting that says so, never the password
 * ("connect ECONNREFUSED 127.0.0.1:5439" alone named neither).
 */

const PASSWORD = 'pg-secret-word-0123';
const KEY = 'startup-admin-key-0123456789';

describe('PostgreSQL unreachable at start', () => {
  const children: NodeProcess[] = [];
  afterEach(async () => {
    await Promise.all(children.splice(0).map((child) => child.kill()));
  });
  const start = (entry: string, env: Record<string, string>) => {
    // Keys set: a development process without them says so in a line of its own first.
    const child = runEntry(entry, { API_KEYS: KEY, LOG_FORMAT: 'json', REDIS_URL: 'redis://127.0.0.1:1', ...env });
    children.push(child);
    return child;
  };
  const lines = (output: string) => output.split('\n').filter((line) => line.trim() !== '');

  it.each([
    ['src/api/main.ts', 'api'],
    ['workers/main.ts', 'worker'],
    ['src/main.ts', 'orchestrator'],
  ])(
    '%s exits 1 with one line naming PostgreSQL, its host:port and DATABASE_URL',
    async (entry, name) => {
      const port = await freePort();
      const child = start(entry, { DATABASE_URL: `postgresql://app:${PASSWORD}@127.0.0.1:${port}/orchestrator` });
      expect((await child.waitForExit(60_000)).code).toBe(1);
      expect(lines(child.output)).toEqual([
        `${name} could not start: cannot reach PostgreSQL at 127.0.0.1:${port} (DATABASE_URL): connect ECONNREFUSED 127.0.0.1:${port}`,
      ]);
      expect(child.output).not.toContain(PASSWORD);
    },
    90_000,
  );

  it('names DATABASE_DIRECT_URL when that is the address it used', async () => {
    const port = await freePort();
    const child = start('workers/main.ts', {
      DATABASE_URL: 'postgresql://app@pgbouncer.invalid:6432/orchestrator',
      DATABASE_DIRECT_URL: `postgresql://app:${PASSWORD}@127.0.0.1:${port}/orchestrator`,
    });
    expect((await child.waitForExit(60_000)).code).toBe(1);
    expect(lines(child.output)).toEqual([
      `worker could not start: cannot reach PostgreSQL at 127.0.0.1:${port} (DATABASE_DIRECT_URL): connect ECONNREFUSED 127.0.0.1:${port}`,
    ]);
  }, 90_000);

  it('says PostgreSQL refused when it answered (a role it does not know), with its own words', async () => {
    const url = new URL(TEST_POSTGRES_URL);
    url.username = 'no_such_role_28';
    url.password = PASSWORD;
    url.pathname = '/orchestrator_never';
    const child = start('src/api/main.ts', { DATABASE_URL: url.toString() });
    expect((await child.waitForExit(60_000)).code).toBe(1);
    expect(lines(child.output)).toEqual([
      `api could not start: PostgreSQL at ${url.hostname}:${url.port || '5432'} (DATABASE_URL) refused: role "no_such_role_28" does not exist`,
    ]);
    expect(child.output).not.toContain(PASSWORD);
  }, 90_000);
});
