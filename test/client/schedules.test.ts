import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createClient, type OrchestratorClient, OrchestratorError } from '../../client/index.js';
import { type NodeProcess, runEntry } from '../helpers/child-process.js';
import { createHarness, type Harness, poll, uniqueName } from '../helpers/harness.js';
import { KEY } from './support.js';

/** Schedules through the typed client and the CLI, against a live API and worker with an API key. */
describe('schedules from the client and the CLI', { timeout: 90_000 }, () => {
  let h: Harness;
  let client: OrchestratorClient;
  let dir: string;
  const running: NodeProcess[] = [];
  beforeAll(async () => {
    h = await createHarness({ env: { API_KEYS: KEY } });
    client = createClient({ baseUrl: h.url, apiKey: KEY });
    dir = mkdtempSync(path.join(tmpdir(), 'orchestrator-schedules-'));
  });
  afterEach(async () => {
    await Promise.all(running.splice(0).map((child) => child.kill()));
  });
  afterAll(async () => {
    rmSync(dir, { recursive: true, force: true });
    await h?.close();
  });

  async function cli(...args: string[]): Promise<{ code: number | null; output: string }> {
    const child = runEntry('client/cli.ts', { ORCHESTRATOR_URL: h.url, ORCHESTRATOR_API_KEY: KEY }, { args });
    running.push(child);
    const { code } = await child.waitForExit();
    return { code, output: child.output };
  }

  it('the client creates, lists, reads, pauses, resumes and deletes a schedule, and its errors carry the API code and paths', async () => {
    const name = uniqueName('client');
    const created = await client.schedules.create({ name, every_ms: 300, task_type: 'echo', params: { via: 'client' }, overlap: 'allow' });
    expect(created).toMatchObject({ name, every_ms: 300, cron: null, paused: false, overlap: 'allow', catch_up: 'none' });
    expect(created.next_fire_times).toHaveLength(5);
    expect((await client.schedules.list()).map((schedule) => schedule.name)).toContain(name);
    const detail = await poll(
      async () => {
        const schedule = await client.schedules.get(name);
        return schedule.recent_runs.some((run) => run.status === 'completed') ? schedule : undefined;
      },
      { label: 'a completed run' },
    );
    const run = detail.recent_runs.find((candidate) => candidate.status === 'completed')!;
    expect((await client.result(run.task_id!)).schedule).toEqual({ name, tick_at: run.tick_at });
    expect(await client.schedules.pause(name)).toMatchObject({ paused: true, next_fire_times: [] });
    expect(await client.schedules.resume(name)).toMatchObject({ paused: false });
    expect(await client.schedules.update(name, { overlap: 'skip', catch_up: { all_within_ms: 1_000 } })).toMatchObject({
      overlap: 'skip',
      catch_up: { all_within_ms: 1_000 },
    });
    expect(await client.schedules.delete(name)).toMatchObject({ name, deleted: true });

    const refused = await client.schedules.create({ name, cron: '0 2 * * *', timezone: 'Atlantis/Capital', task_type: 'echo' }).catch((error) => error);
    expect(refused).toBeInstanceOf(OrchestratorError);
    expect(refused).toMatchObject({ status: 400, code: 'invalid_schedule' });
    expect((refused as OrchestratorError).problems.map((problem) => problem.path)).toEqual(['timezone']);
    expect(await client.schedules.get(name).catch((error) => error)).toMatchObject({ status: 404, code: 'schedule_not_found' });
  });

  it('the CLI: schedules create (flags and file), list, get, pause, resume, delete; a bad cron exits 1 with its path', async () => {
    const name = uniqueName('cli');
    const made = await cli(
      'schedules',
      'create',
      name,
      '--cron',
      '0 2 * * *',
      '--timezone',
      'Europe/Berlin',
      '--type',
      'echo',
      '--params',
      '{"n": 1}',
      '--catch-up',
      'latest',
    );
    expect(made.output).toContain(`schedule ${name} created`);
    expect(made.code).toBe(0);
    const listed = await cli('schedules', 'list');
    expect(listed.output).toMatch(new RegExp(`^${name}\\s+cron '0 2 \\* \\* \\*' Europe/Berlin\\s+echo\\s+\\d{4}-`, 'm'));
    const got = await cli('schedules', 'get', name, '--json');
    expect(JSON.parse(got.output)).toMatchObject({ name, catch_up: 'latest', recent_runs: [] });
    expect((await cli('schedules', 'pause', name)).output).toContain(`schedule ${name} paused`);
    expect((await client.schedules.get(name)).paused).toBe(true);
    expect((await cli('schedules', 'resume', name)).output).toContain(`schedule ${name} resumed`);
    expect((await cli('schedules', 'delete', name)).output).toContain(`schedule ${name} deleted`);
    expect((await client.schedules.list()).map((schedule) => schedule.name)).not.toContain(name);

    const file = path.join(dir, 'nightly.json');
    const fromFile = uniqueName('file');
    writeFileSync(file, JSON.stringify({ name: fromFile, every_ms: 60_000, task_type: 'echo', overlap: 'buffer_one', catch_up: { all_within_ms: 3_600_000 } }));
    expect((await cli('schedules', 'create', '--file', file)).code).toBe(0);
    expect(await client.schedules.get(fromFile)).toMatchObject({ overlap: 'buffer_one', catch_up: { all_within_ms: 3_600_000 } });

    const bad = await cli('schedules', 'create', uniqueName('bad'), '--cron', '0 2 * *', '--type', 'echo');
    expect(bad.output).toMatch(/^error invalid_schedule: .+$/m);
    expect(bad.output).toMatch(/^ {2}cron: .+5 fields.+$/m);
    expect(bad.code).toBe(1);
    const usage = await cli('schedules', 'create', uniqueName('untyped'), '--every-ms', '1000');
    expect(usage.output).toContain('--type');
    expect(usage.code).toBe(2);
  });
});
