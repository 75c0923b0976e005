import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { workflowDefinitionSchema } from '../../src/engine/workflow-definition.js';
import { WorkflowStore } from '../../src/persistence/workflow-store.js';
import { createHarness, type Harness, poll, submit, waitForTask } from '../helpers/harness.js';

/** A workflow that sleeps, then says which version it is. */
function definition(name: string, says: string, extraStep = false) {
  return {
    name,
    description: `says ${says}`,
    parameters: [{ name: 'ms', type: 'integer', default: 1500 }],
    steps: [
      { id: 'nap', tool: 'sleep', input: { ms: '{{params.ms}}' } },
      { id: 'say', tool: 'echo', depends_on: ['nap'], input: { said: says, slept: '{{steps.nap.output.slept_ms}}' } },
      ...(extraStep ? [{ id: 'extra', tool: 'echo', depends_on: ['say'], input: { only_in: says } }] : []),
    ],
    output: { said: '{{steps.say.output.said}}' },
  };
}

describe('workflow versions and running tasks', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness();
  });
  afterAll(async () => {
    await h.close();
  });

  async function define(body: Record<string, unknown>): Promise<number> {
    const response = await h.request('POST', '/workflows', body);
    expect(response.status, JSON.stringify(response.body)).toBe(201);
    return response.body.version;
  }

  /**
   * Waits until the task's step `stepId` is running, and returns the task as the API shows it.
   * Waits for the task's own status too, so the answer is one where both say running.
   */
  function stepRunning(taskId: string, stepId: string) {
    return poll(
      async () => {
        const { body } = await h.request('GET', `/result/${taskId}`);
        const step = body.steps?.find((s: { id: string }) => s.id === stepId);
        if (step?.status === 'running' && body.status === 'running') return body;
        if (['completed', 'failed', 'cancelled'].includes(body.status)) throw new Error(`task ended (${body.status}) before ${stepId} was seen running`);
        return undefined;
      },
      { label: `step ${stepId} of task ${taskId} running`, timeoutMs: 10_000 },
    );
  }

  it('stores an example once when several processes load it at the same moment (two APIs starting on a new database)', async () => {
    const definition = workflowDefinitionSchema.parse({ name: `raced_${Date.now()}`, steps: [{ id: 'a', tool: 'echo', input: { x: 1 } }] });
    const stores = Array.from({ length: 8 }, () => new WorkflowStore(h.db.prisma));
    const stored = await Promise.all(stores.map((store) => store.createIfAbsent(definition)));
    expect(stored.filter(Boolean)).toHaveLength(1);
    expect(await h.db.prisma.workflow.count({ where: { name: definition.name } })).toBe(1);
  });

  it('a new version does not affect a task already running; the next task uses it', async () => {
    expect(await define(definition('w', 'v1'))).toBe(1);
    const first = await submit(h, { task_type: 'w', params: {} });
    const running = await stepRunning(first, 'nap');
    expect(running.status).toBe('running');
    expect(running.workflow).toEqual({ name: 'w', version: 1 });

    // v2 changes the text and adds a step, while v1's sleep is still going.
    expect(await define(definition('w', 'v2', true))).toBe(2);

    const done = await waitForTask(h, first);
    expect(done.status).toBe('completed');
    expect(done.workflow).toEqual({ name: 'w', version: 1 });
    expect(done.result).toEqual({ said: 'v1' });
    expect(done.steps.map((s: { id: string }) => s.id).sort()).toEqual(['nap', 'say']);
    expect(done.progress).toEqual({ completed: 2, total: 2 });
    const say = done.steps.find((s: { id: string }) => s.id === 'say');
    expect(say.output.said).toBe('v1');
    expect(say.output.slept).toBeGreaterThanOrEqual(1500);
    // v2 was stored while the task ran: before its first step ended, before its second began.
    const v2 = await h.request('GET', '/workflows/w?version=2');
    const nap = done.steps.find((s: { id: string }) => s.id === 'nap');
    expect(Date.parse(v2.body.created_at)).toBeLessThan(Date.parse(nap.finished_at));
    expect(Date.parse(say.started_at)).toBeGreaterThan(Date.parse(v2.body.created_at));

    const second = await waitForTask(h, await submit(h, { task_type: 'w', params: { ms: 1 } }));
    expect(second.status).toBe('completed');
    expect(second.workflow).toEqual({ name: 'w', version: 2 });
    expect(second.result).toEqual({ said: 'v2' });
    expect(second.steps.map((s: { id: string }) => s.id).sort()).toEqual(['extra', 'nap', 'say']);
  });

  it('archiving a workflow does not stop a task already running', async () => {
    await define(definition('archived_while_running', 'before'));
    const id = await submit(h, { task_type: 'archived_while_running', params: { ms: 1000 } });
    await stepRunning(id, 'nap');
    const archived = await h.request('DELETE', '/workflows/archived_while_running');
    expect(archived.status).toBe(200);

    const done = await waitForTask(h, id);
    expect(done.status).toBe('completed');
    expect(done.result).toEqual({ said: 'before' });
    expect(done.workflow).toEqual({ name: 'archived_while_running', version: 1 });
    const history = await h.request('GET', '/workflows/archived_while_running/versions');
    const nap = done.steps.find((s: { id: string }) => s.id === 'nap');
    expect(Date.parse(history.body.versions[0].archived_at)).toBeLessThan(Date.parse(nap.finished_at));
    const rejected = await h.request('POST', '/assign-task', { task_type: 'archived_while_running', params: {} });
    expect(rejected.status).toBe(404);
  });

  // A regression test: TaskStore.get once read the task and its steps in two statements, so a
  // step start committed between them showed a running step under a queued task (seen in about
  // one run in three of the first test). A table lock holds that window open so the
  // interleaving is deterministic: the read begins, waits for the steps, the start commits.
  it('GET /result shows a task and its steps from one moment (no running step under a queued task)', async () => {
    await define(definition('torn_read', 'x'));
    // Delayed, so no worker touches it: the test plays the worker's step start itself.
    const id = await submit(h, { task_type: 'torn_read', params: {}, delay_ms: 600_000 });
    const sql = new pg.Client({ connectionString: h.config.DATABASE_URL });
    await sql.connect();
    try {
      await sql.query('BEGIN');
      await sql.query('LOCK TABLE steps IN ACCESS EXCLUSIVE MODE');
      const reading = h.request('GET', `/result/${id}`);
      await poll(
        async () => {
          // pg_stat_activity may still show the previous statement: ask pg_locks who waits for steps.
          const { rows } = await sql.query(
            `SELECT count(*)::int AS n FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE NOT l.granted AND c.relname = 'steps' AND l.pid <> pg_backend_pid()`,
          );
          return rows[0].n > 0;
        },
        { label: 'GET /result waiting to read the steps', timeoutMs: 10_000 },
      );
      // The worker's start of a step: the step and its task become running in one transaction.
      await sql.query(`UPDATE steps SET status = 'running', started_at = now(), attempts = 1 WHERE task_id = $1::uuid AND step_id = 'nap'`, [id]);
      await sql.query(`UPDATE tasks SET status = 'running', started_at = now() WHERE id = $1::uuid`, [id]);
      await sql.query('COMMIT');
      const { status, body } = await reading;
      expect(status).toBe(200);
      const nap = body.steps.find((s: { id: string }) => s.id === 'nap');
      // Either moment is fine; a mix of the two is not.
      expect([
        ['queued', 'queued'],
        ['queued', 'pending'],
        ['running', 'running'],
      ]).toContainEqual([body.status, nap.status]);
    } finally {
      await sql.query('ROLLBACK').catch(() => undefined);
      await sql.end();
      await h.request('POST', `/tasks/${id}/cancel`);
    }
  });
});
