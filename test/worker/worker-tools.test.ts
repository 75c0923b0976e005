import { Queue } from 'bullmq';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { toolQueueName } from '../../src/queue/jobs.js';
import { type NodeProcess, runEntry } from '../helpers/child-process.js';
import { createHarness, type Harness, poll, submit, waitForTask } from '../helpers/harness.js';

describe('WORKER_TOOLS narrows the tools a worker process runs', () => {
  let h: Harness;
  const children: NodeProcess[] = [];

  beforeAll(async () => {
    h = await createHarness({ worker: false });
  });
  afterEach(async () => {
    for (const child of children.splice(0)) await child.kill();
  });
  afterAll(async () => {
    await h.close();
  });

  async function startChild(tools: string): Promise<NodeProcess> {
    const child = runEntry('test/fixtures/worker-entry.ts', { ...h.env, WORKER_TOOLS: tools });
    children.push(child);
    await child.waitForOutput(/^ready$/m);
    return child;
  }

  /** Which processes have a BullMQ worker on each tool's queue (BullMQ names its connections `…:w:<tool>@<pid>`). */
  async function servedBy(tools: string[]): Promise<Record<string, string[]>> {
    const served: Record<string, string[]> = {};
    for (const tool of tools) {
      const queue = new Queue(toolQueueName(tool), { connection: h.redis, prefix: h.config.QUEUE_PREFIX });
      served[tool] = (await queue.getWorkers()).map((client) => String(client.rawname).split(':w:')[1] ?? '').sort();
      await queue.close();
    }
    return served;
  }

  async function status(id: string) {
    const response = await h.request('GET', `/result/${id}`);
    expect(response.status).toBe(200);
    return { task: response.body.status as string, step: response.body.steps[0].status as string, attempts: response.body.steps[0].attempts as number };
  }

  it('runs only the listed tools; another process with the other tool picks up the rest', async () => {
    const echoWorker = await startChild('echo');
    const echoPid = echoWorker.child.pid;
    // No worker of that process listens on the sleep queue at all.
    expect(await servedBy(['echo', 'sleep'])).toEqual({ echo: [`echo@${echoPid}`], sleep: [] });
    const sleepTask = await submit(h, { task_type: 'sleep', params: { ms: 10 } });
    const echoTask = await submit(h, { task_type: 'echo', params: { n: 1 } });
    expect((await waitForTask(h, echoTask)).result).toEqual({ n: 1 });
    // The sleep task was submitted first and is tiny: had the echo worker taken it, it would be done.
    expect(await status(sleepTask)).toEqual({ task: 'queued', step: 'queued', attempts: 0 });

    const sleepWorker = await startChild('sleep');
    expect((await waitForTask(h, sleepTask)).status).toBe('completed');

    // And the other way round: with only the sleep worker left, echo waits.
    expect((await echoWorker.signal('SIGTERM')).code).toBe(0);
    // Connections of the stopped process may take a moment to leave Redis's client list.
    await poll(async () => (await servedBy(['echo'])).echo!.length === 0, { label: 'the echo worker to leave the echo queue' });
    expect(await servedBy(['echo', 'sleep'])).toEqual({ echo: [], sleep: [`sleep@${sleepWorker.child.pid}`] });
    const echoLater = await submit(h, { task_type: 'echo', params: { n: 2 } });
    const sleepLater = await submit(h, { task_type: 'sleep', params: { ms: 10 } });
    expect((await waitForTask(h, sleepLater)).status).toBe('completed');
    expect(await status(echoLater)).toEqual({ task: 'queued', step: 'queued', attempts: 0 });
    expect((await sleepWorker.signal('SIGTERM')).code).toBe(0);
  });

  it('refuses to start with an unknown tool in WORKER_TOOLS, naming it', async () => {
    // The real entry point, as `npm run worker` starts it.
    const child = runEntry('workers/main.ts', { ...h.env, WORKER_TOOLS: 'echo, no_such_tool' });
    children.push(child);
    const exit = await child.waitForExit(20_000);
    expect(exit.code).not.toBe(0);
    expect(exit.code).not.toBeNull();
    expect(child.output).toMatch(/unknown tools: no_such_tool\b/);
    expect(child.output).not.toMatch(/unknown tools:.*\becho\b.*\(known/);
  });
});
