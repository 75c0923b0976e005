import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createClient, type OrchestratorClient } from '../../client/index.js';
import { type NodeProcess, runEntry } from '../helpers/child-process.js';
import { createHarness, type Harness, poll, uniqueName } from '../helpers/harness.js';
import { KEY, whilePaused } from './support.js';

/** A client key that submits the approval task: its own key may not decide it (four eyes), the admin KEY may. */
const SUBMITTER_KEY = 'client-test-submitter-key-0123456789';

/** The CLI (client/cli.ts) as a process of its own, against a live API and worker over HTTP. */
// Each command is a node process that loads tsx: seconds apiece on a busy machine.
describe('the orchestrator CLI', { timeout: 90_000 }, () => {
  let h: Harness;
  let client: OrchestratorClient;
  let dir: string;
  const running: NodeProcess[] = [];
  beforeAll(async () => {
    h = await createHarness({ env: { API_KEYS: `${KEY},client@submitter:${SUBMITTER_KEY}` } });
    client = createClient({ baseUrl: h.url, apiKey: KEY });
    dir = mkdtempSync(path.join(tmpdir(), 'orchestrator-cli-'));
  });
  afterEach(async () => {
    await Promise.all(running.splice(0).map((child) => child.kill()));
  });
  afterAll(async () => {
    rmSync(dir, { recursive: true, force: true });
    await h?.close();
  });

  function start(...args: string[]): NodeProcess {
    const child = runEntry('client/cli.ts', { ORCHESTRATOR_URL: h.url, ORCHESTRATOR_API_KEY: KEY }, { args });
    running.push(child);
    return child;
  }

  /** Runs the CLI to its end: its exit status and what it printed. */
  async function cli(...args: string[]): Promise<{ code: number | null; output: string }> {
    const child = start(...args);
    const { code } = await child.waitForExit();
    return { code, output: child.output };
  }

  function workflowFile(definition: unknown): string {
    const file = path.join(dir, `${uniqueName('workflow')}.json`);
    writeFileSync(file, JSON.stringify(definition));
    return file;
  }

  it('ends quietly with status 0 when its reader closes the pipe early (orchestrator … | head)', async () => {
    // stdout is a pipe this test closes before the CLI writes: its first write meets EPIPE.
    const child = spawn(process.execPath, ['--import', 'tsx', 'client/cli.ts', '--help'], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.destroy();
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    expect(stderr).toBe('');
    expect(code).toBe(0);
  });

  it('submit --wait prints its progress as follow does, then the result, and exits 0', async () => {
    const { code, output } = await cli('submit', 'echo', '--params', '{"hello": "cli"}', '--wait');
    expect(output).toMatch(/^task [0-9a-f-]{36} assigned, waiting for it to end$/m);
    // The first line is the task as follow finds it (an echo may have ended already); the end is
    // its own event, or that first line.
    expect(output).toMatch(/^\[[01]\/1\] task [0-9a-f-]{36} echo (queued|running|completed)$/m);
    expect(output).toMatch(/^\[1\/1\] task ([0-9a-f-]{36} echo )?completed$/m);
    expect(output).toContain('{\n  "hello": "cli"\n}');
    expect(code).toBe(0);

    const json = await cli('submit', 'echo', '--params', '{"n": 1}', '--wait', '--json');
    expect(JSON.parse(json.output)).toMatchObject({ status: 'completed', result: { n: 1 } });
  });

  it("a refused request prints the API's error code and each problem's path, and exits 1; wrong usage exits 2", async () => {
    const invalid = await cli('submit', 'sleep', '--params', '{"ms": "soon"}');
    expect(invalid.output).toMatch(/^error invalid_params: .+$/m);
    expect(invalid.output).toMatch(/^ {2}params\.ms: .+$/m);
    expect(invalid.code).toBe(1);

    const workflow = await cli(
      'workflows',
      'push',
      workflowFile({
        name: uniqueName('broken'),
        steps: [
          { id: 'a', tool: 'echo' },
          { id: 'b', tool: 'nope', depends_on: ['zz'] },
        ],
      }),
    );
    expect(workflow.output).toMatch(/^error invalid_workflow: .+$/m);
    expect(workflow.output).toMatch(/^ {2}steps\[1\]\.tool: .+$/m);
    expect(workflow.output).toMatch(/^ {2}steps\[1\]\.depends_on\[0\]: .+$/m);
    expect(workflow.code).toBe(1);

    const unauthorized = runEntry('client/cli.ts', { ORCHESTRATOR_URL: h.url }, { args: ['tools'] });
    running.push(unauthorized);
    expect((await unauthorized.waitForExit()).code).toBe(1);
    expect(unauthorized.output).toMatch(/^error unauthorized: /m);

    const usage = await cli('submit', 'echo', '--params', '{not json');
    expect(usage.output).toMatch(/^error: --params is not JSON/m);
    expect(usage.code).toBe(2);
  });

  it('workflows push stores a definition; follow prints each step as it ends with [done/total], the result, and exits 0', async () => {
    const name = uniqueName('two_steps');
    const pushed = await cli(
      'workflows',
      'push',
      workflowFile({
        name,
        steps: [
          { id: 'a', tool: 'echo', input: { word: 'one' } },
          { id: 'b', tool: 'echo', depends_on: ['a'], input: { words: ['{{steps.a.output.word}}', 'two'] } },
        ],
        output: { words: '{{steps.b.output.words}}' },
      }),
    );
    expect(pushed).toEqual({ code: 0, output: `workflow ${name} stored as version 1\n` });
    expect((await cli('workflows', 'list')).output).toMatch(new RegExp(`^${name} +v1 +2 steps`, 'm'));

    const follow = await whilePaused(h, 'echo', async () => {
      const { task_id: id } = await client.submit(name);
      const follow = start('follow', id);
      await follow.waitForOutput(new RegExp(`^\\[0/2\\] task ${id} ${name} queued$`, 'm'));
      return follow;
    });
    expect((await follow.waitForExit()).code).toBe(0);
    const lines = follow.output.trimEnd().split('\n');
    expect(lines).toEqual(expect.arrayContaining(['[1/2] step a completed', '[2/2] step b completed', '[2/2] task completed']));
    expect(lines.indexOf('[1/2] step a completed')).toBeLessThan(lines.indexOf('[2/2] step b completed'));
    expect(follow.output).toContain('"words": [\n    "one",\n    "two"\n  ]');
  });

  it('signal: shows a waiting step with its approval link, lists it under tasks --status waiting, and sends the decision', async () => {
    const name = uniqueName('cli_approval');
    await client.workflows.push({
      name,
      steps: [
        { id: 'review', wait: { approval: {} } },
        { id: 'after', sleep: { ms: 600_000 }, depends_on: ['review'] },
      ],
    } as never);
    const { task_id: id } = await createClient({ baseUrl: h.url, apiKey: SUBMITTER_KEY }).submit(name);
    const waiting = await poll(
      async () => {
        const shown = await cli('result', id);
        return shown.output.includes('approve: ') ? shown : undefined;
      },
      { label: 'the step to wait' },
    );
    expect(waiting.output).toMatch(/^ {4}waits for signal review$/m);
    expect(waiting.output).toMatch(/^ {4}approve: http:\/\/\S+\/approvals\/\S+$/m);
    // follow shows the same under the waiting step, and goes on waiting.
    const followed = start('follow', id);
    await followed.waitForOutput(/^ {4}approve: http:\/\/\S+\/approvals\/\S+$/m);
    expect(followed.output).toMatch(/^\[0\/2\] task \S+ \S+ (running|waiting)\n {4}waits for signal review\n {4}approve: /m);
    expect(followed.child.exitCode).toBeNull();
    expect(JSON.parse((await cli('tasks', '--status', 'waiting', '--json')).output).items).toContainEqual(
      expect.objectContaining({ task_id: id, waiting_for: [expect.objectContaining({ step_id: 'review', reason: 'approval' })] }),
    );
    expect((await cli('signal', id, 'review', '--payload', 'not json')).code).toBe(2);
    expect(await cli('signal', id, 'review', '--payload', '{"decision": "approved"}')).toEqual({
      code: 0,
      output: `task ${id}: step review took signal review\n`,
    });
    const again = await cli('signal', id, 'review', '--payload', '{"decision": "rejected"}');
    expect(again.code).toBe(1);
    expect(again.output).toContain('already_signalled');
    await client.cancel(id);
  });

  it('cancel, retry, follow of a cancelled task (exits 1), result and tasks', async () => {
    const { task_id: id } = await client.submit('sleep', { ms: 600_000 });
    expect(await cli('cancel', id)).toEqual({ code: 0, output: `task ${id} cancelled\n` });

    const followed = await cli('follow', id);
    expect(followed.output).toMatch(new RegExp(`^\\[\\d/1\\] task ${id} sleep cancelled$`, 'm'));
    expect(followed.output).toMatch(/^error: /m);
    expect(followed.code).toBe(1);

    expect(await cli('retry', id)).toEqual({ code: 0, output: `task ${id} resumed as run 2\n` });
    expect((await cli('cancel', id)).code).toBe(0);

    const result = await cli('result', id, '--wait', '10');
    expect(result.output).toMatch(new RegExp(`^task ${id} sleep cancelled \\[1/1\\]$`, 'm'));
    expect(result.code).toBe(0);

    const tasks = await cli('tasks', '--type', 'sleep', '--json');
    expect(JSON.parse(tasks.output).items).toContainEqual(expect.objectContaining({ task_id: id, status: 'cancelled' }));
    // By a param's value (a number as typed), among the tasks that are no child; a malformed --param is a usage error.
    const byParam = await cli('tasks', '--param', 'ms=600000', '--top-level', '--type', 'sleep', '--json');
    expect(JSON.parse(byParam.output).items.map((task: { task_id: string }) => task.task_id)).toContain(id);
    expect(JSON.parse((await cli('tasks', '--param', 'ms="600000"', '--json')).output).items).toEqual([]);
    expect(JSON.parse((await cli('tasks', '--parent', id, '--json')).output).items).toEqual([]);
    expect((await cli('tasks', '--param', 'no-equals-sign')).code).toBe(2);

    // The history: every change in order, a page at a time, as text or JSON; the typed client reads the same.
    const history = await cli('history', id, '--limit', '4');
    expect(history.code).toBe(0);
    expect(history.output).toMatch(/^\S+ +submitted$/m);
    expect(history.output).toMatch(/^\S+ +sleep +step_queued$/m);
    expect(history.output).toMatch(/^more: --after \S+$/m);
    const after = history.output.match(/^more: --after (\S+)$/m)![1]!;
    const rest = JSON.parse((await cli('history', id, '--after', after, '--json')).output);
    const all = await client.history(id, { limit: 500 });
    expect(rest.events).toEqual(all.events.slice(4));
    expect(all.events.map((event) => event.type)).toEqual(expect.arrayContaining(['task_cancelled', 'task_resumed']));
  });

  it('result shows a for_each step with its item counts and a skipped step with its reason; items lists the items in order', async () => {
    const name = uniqueName('each_word');
    expect(
      (
        await cli(
          'workflows',
          'push',
          workflowFile({
            name,
            parameters: [{ name: 'words', type: 'array', required: true }],
            steps: [
              { id: 'each', tool: 'echo', for_each: '{{params.words}}', max_parallel: 2, input: { word: '{{item}}', at: '{{index}}' } },
              { id: 'never', tool: 'echo', depends_on: ['each'], when: 'size(steps.each.output) > 10' },
            ],
          }),
        )
      ).code,
    ).toBe(0);
    const { task_id: id } = await client.submit(name, { words: ['x', 'y', 'z'] });
    const result = await cli('result', id, '--wait', '10');
    expect(result.output).toMatch(/^ {2}each \(echo for_each 3\/3\) completed/m);
    expect(result.output).toMatch(/^ {2}never \(echo\) skipped.* \(condition\)$/m);

    const items = await cli('items', id, 'each', '--limit', '2');
    expect(items.code).toBe(0);
    expect(items.output).toMatch(/^0 +completed +\{"at":0,"word":"x"\}$/m);
    expect(items.output).toMatch(/^1 +completed +\{"at":1,"word":"y"\}$/m);
    expect(items.output).toMatch(/^more: --cursor \S+$/m);
    const rest = items.output.match(/^more: --cursor (\S+)$/m)![1]!;
    expect((await cli('items', id, 'each', '--cursor', rest)).output).toMatch(/^2 +completed +\{"at":2,"word":"z"\}$/m);
    expect((await cli('items', id, 'nope')).output).toMatch(/^error step_not_found: /m);
  });

  it('takes the key from a file or the environment, and refuses it as an argument', async () => {
    const keyFile = path.join(dir, 'api-key');
    writeFileSync(keyFile, `${KEY}\n`);
    const fromFile = runEntry('client/cli.ts', { ORCHESTRATOR_URL: h.url, ORCHESTRATOR_API_KEY: '' }, { args: ['tools', '--api-key-file', keyFile] });
    running.push(fromFile);
    expect((await fromFile.waitForExit()).code).toBe(0);
    expect(fromFile.output).toMatch(/^echo\b/m);
    const fromEnvFile = runEntry(
      'client/cli.ts',
      { ORCHESTRATOR_URL: h.url, ORCHESTRATOR_API_KEY: '', ORCHESTRATOR_API_KEY_FILE: keyFile },
      { args: ['tools'] },
    );
    running.push(fromEnvFile);
    expect((await fromEnvFile.waitForExit()).code).toBe(0);
    const onTheCommandLine = await cli('tools', '--api-key', KEY);
    expect(onTheCommandLine.code).toBe(2);
    expect(onTheCommandLine.output).toContain('--api-key is not accepted');
  });
});
