import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { dropDatabase } from '../../src/persistence/database.js';
import { type NodeProcess, runEntry } from '../helpers/child-process.js';
import { databaseUrl, TEST_REDIS_URL } from '../helpers/env.js';
import { poll, uniqueName } from '../helpers/harness.js';

/**
 * `npm start` (src/main.ts; npm start runs its compiled build): the database created and migrated
 * once, then the API and a worker as two processes; a worker that dies is started again; SIGTERM
 * stops both, each draining. `npm run dev` (--watch) restarts both when a source file changes.
 */

interface Started {
  name: string;
  pid: number;
}

function started(output: string): Started[] {
  return output
    .split('\n')
    .filter((line) => line.includes('"process started"'))
    .map((line) => JSON.parse(line) as Started);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('npm start', () => {
  const children: NodeProcess[] = [];
  const pids: number[] = [];
  const url = databaseUrl(uniqueName('orch_start'));
  afterEach(async () => {
    for (const pid of pids.splice(0)) if (alive(pid)) process.kill(pid, 'SIGKILL');
    await Promise.all(children.splice(0).map((child) => child.kill()));
  });
  afterAll(async () => {
    await dropDatabase(url);
  });

  it('migrates a fresh database once, runs the API and the worker as two processes, restarts a dead worker, and stops both on SIGTERM', {
    timeout: 60_000,
  }, async () => {
    const supervisor = runEntry('src/main.ts', {
      DATABASE_URL: url,
      REDIS_URL: TEST_REDIS_URL,
      QUEUE_PREFIX: `{${uniqueName('start')}}`,
      HOST: '127.0.0.1',
      PORT: '0',
      LOG_FORMAT: 'json',
      LOG_LEVEL: 'info',
    });
    children.push(supervisor);
    await supervisor.waitForOutput(/"message":"API listening"/);
    await supervisor.waitForOutput(/"message":"worker started"/);
    const first = started(supervisor.output);
    pids.push(...first.map((child) => child.pid));
    expect(first.map((child) => child.name).sort()).toEqual(['api', 'worker']);
    const [api, worker] = [first.find((child) => child.name === 'api')!, first.find((child) => child.name === 'worker')!];
    expect(new Set([api.pid, worker.pid, supervisor.child.pid]).size).toBe(3);
    // Migrated by the supervisor, before either process started; neither found anything left to apply.
    const output = supervisor.output;
    expect(output.indexOf('"message":"applied migration"')).toBeGreaterThanOrEqual(0);
    expect(output.lastIndexOf('"message":"applied migration"')).toBeLessThan(output.indexOf('"message":"process started"'));
    const listening = /"url":"(http:\/\/[^"]+)"/.exec(output)![1]!;
    expect((await fetch(`${listening}/health`)).status).toBe(200);

    // The worker dies: it is started again, as a new process; the API stays.
    process.kill(worker.pid, 'SIGKILL');
    await supervisor.waitForOutput(/"message":"worker exited; starting it again"/);
    const again = await poll(() => started(supervisor.output).find((child) => child.name === 'worker' && child.pid !== worker.pid), {
      label: 'a new worker process',
      timeoutMs: 30_000,
    });
    pids.push(again.pid);
    await poll(() => (supervisor.output.match(/"message":"worker started"/g) ?? []).length === 2, { label: 'the new worker started', timeoutMs: 30_000 });
    expect(alive(api.pid)).toBe(true);
    expect(started(supervisor.output).filter((child) => child.name === 'api')).toHaveLength(1);

    // SIGTERM to the supervisor stops both, and it exits 0 once they have.
    expect((await supervisor.signal('SIGTERM')).code).toBe(0);
    expect(alive(api.pid)).toBe(false);
    expect(alive(again.pid)).toBe(false);
  });

  it('with --watch (npm run dev), restarts the API and the worker when a watched source file changes, and only then', { timeout: 90_000 }, async () => {
    // A folder of its own stands for src/ and workers/: the test changes nothing of the repository.
    const watched = await mkdtemp(path.join(tmpdir(), 'orch-watch-'));
    try {
      const supervisor = runEntry(
        'src/main.ts',
        {
          DATABASE_URL: url,
          REDIS_URL: TEST_REDIS_URL,
          QUEUE_PREFIX: `{${uniqueName('watch')}}`,
          HOST: '127.0.0.1',
          PORT: '0',
          LOG_FORMAT: 'json',
          LOG_LEVEL: 'info',
          DEV_WATCH_PATHS: watched,
        },
        // Under tsx, as `npm run dev` runs it.
        { args: ['--watch'], tsx: true },
      );
      children.push(supervisor);
      await supervisor.waitForOutput(/"message":"worker started"/);
      await supervisor.waitForOutput(/"message":"API listening"/);
      const first = started(supervisor.output);
      pids.push(...first.map((child) => child.pid));

      // Not a source file: nothing restarts. Then a tool's file: both restart, once.
      await writeFile(path.join(watched, 'notes.txt'), 'not code');
      await writeFile(path.join(watched, 'my-tool.ts'), 'export const changed = 1;\n');
      await supervisor.waitForOutput(/"message":"sources changed: restarting the API and the worker"/);
      const next = await poll(
        () => {
          const now = started(supervisor.output);
          return now.length === 4 ? now.slice(2) : undefined;
        },
        { label: 'the API and the worker started again', timeoutMs: 60_000 },
      );
      pids.push(...next.map((child) => child.pid));
      expect(next.map((child) => child.name).sort()).toEqual(['api', 'worker']);
      for (const child of first) expect(alive(child.pid), `${child.name} ${child.pid} stopped`).toBe(false);
      expect(supervisor.output.match(/"message":"sources changed/g)).toHaveLength(1);
      expect(supervisor.output).toMatch(/"changed":\["[^",]*my-tool\.ts"\]/);
      await poll(() => (supervisor.output.match(/"message":"API listening"/g) ?? []).length === 2, { label: 'the new API listening', timeoutMs: 60_000 });
      const listening = [...supervisor.output.matchAll(/"url":"(http:\/\/[^"]+)"/g)].at(-1)![1]!;
      expect((await fetch(`${listening}/health`)).status).toBe(200);
      // No "API exited" shutdown and no worker restart loop: a restart is not a crash.
      expect(supervisor.output).not.toContain('the API exited');
      expect(supervisor.output).not.toContain('worker exited; starting it again');
      expect((await supervisor.signal('SIGTERM')).code).toBe(0);
    } finally {
      await rm(watched, { recursive: true, force: true });
    }
  });
});
