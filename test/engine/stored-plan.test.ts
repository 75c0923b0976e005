import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { compileWorkflow } from '../../src/engine/compile.js';
import { decide, freshState, outstanding, start } from '../../src/engine/decide.js';
import { type Plan, planToolTask } from '../../src/engine/plan.js';
import type { Decision, Report, TaskState } from '../../src/engine/state.js';
import { DEFAULT_LIMITS } from '../../src/lib/limits.js';
import { catalog, definition } from './stored-plan-fixture.js';

/**
 * A running task's plan is stored as JSON (tasks.plan) and read back as it was written, by
 * whatever version of the engine is running then. stored-plan.json holds the plans written for
 * the workflow of stored-plan-fixture.ts (every kind, every modifier) and for a one-tool task
 * before PlanStep became a union on `kind`: the compiler still writes exactly that, and the
 * decider runs it to its end.
 */

const stored = JSON.parse(readFileSync(new URL('./stored-plan.json', import.meta.url), 'utf8')) as { workflow: Plan; single: Plan };
const NOW = new Date('2026-12-01T10:00:00.000Z');
const TASK = '0197a000-0000-7000-8000-0000000000aa';
const CHILD = '0197a000-0000-7000-8000-0000000000cc';
const options = { limits: DEFAULT_LIMITS, now: NOW, newTaskId: () => CHILD };

/** Plays the ledger for what this plan's run needs: task, step and item changes, new items, started items. */
function apply(task: TaskState, decision: Decision): TaskState {
  expect(decision.needs).toBeUndefined();
  const next: TaskState = {
    ...task,
    steps: new Map([...task.steps].map(([id, step]) => [id, { ...step }])),
    items: new Map([...task.items].map(([id, items]) => [id, new Map(items)])),
  };
  for (const { set } of decision.tasks) {
    if (set.status) next.status = set.status;
    if ('error' in set) next.error = set.error ?? null;
  }
  for (const { stepId, set } of decision.steps) {
    const step = next.steps.get(stepId)!;
    if (set.status) step.status = set.status;
    if (set.reason !== undefined) step.reason = set.reason;
    if (set.output !== undefined) step.output = set.output;
    if (set.error !== undefined) step.error = set.error;
    if (set.items !== undefined) step.items = set.items;
    if (set.child_task_id !== undefined) step.childTaskId = set.child_task_id;
    if (set.wake_at !== undefined) step.wakeAt = set.wake_at ? new Date(set.wake_at) : null;
    if (set.input !== undefined) step.input = set.input;
  }
  for (const item of decision.newItems) {
    const items = next.items.get(item.stepId) ?? new Map();
    items.set(item.item, {
      item: item.item,
      run: item.run,
      status: item.status ?? 'pending',
      attempts: 0,
      output: null,
      error: null,
      startedAt: null,
      input: item.input,
    });
    next.items.set(item.stepId, items);
    next.allItemsLoaded.add(item.stepId);
  }
  for (const change of decision.items) {
    const items = next.items.get(change.stepId)!;
    items.set(change.item, { ...items.get(change.item)!, ...(change.set.status ? { status: change.set.status } : {}), output: change.set.output ?? null });
  }
  for (const sweep of decision.sweeps) {
    const pending = [...(next.items.get(sweep.stepId)?.values() ?? [])].filter((item) => item.status === 'pending');
    for (const item of pending.slice(0, sweep.start ?? 0)) next.items.get(sweep.stepId)!.set(item.item, { ...item, status: 'queued' });
  }
  return next;
}

function taskOf(plan: Plan, params: Record<string, unknown>): TaskState {
  return freshState({ id: TASK, createdAt: NOW, taskType: 'every_kind', params, callback: false, owner: 'k', depth: 0, parent: null }, plan);
}

const result = (stepId: string, status: 'completed' | 'failed', output: unknown = {}, item?: number): Report => ({
  type: 'result',
  taskId: TASK,
  run: 1,
  stepId,
  ...(item !== undefined ? { item } : {}),
  status,
  ...(status === 'completed' ? { output } : { error: { name: 'Boom', message: `${stepId} broke` } }),
  attempt: 1,
  startedAt: NOW,
  finishedAt: NOW,
});
const signal = (stepId: string, payload: unknown): Report => ({
  type: 'signal',
  taskId: TASK,
  run: 1,
  stepId,
  signal: stepId,
  payload,
  by: 'ann',
  via: 'key',
  at: NOW,
});

/** Runs the stored workflow plan up to the step `end`: every kind and modifier acts once. */
function upToEnd(plan: Plan): TaskState {
  const step = (reports: Report[]) => {
    const decision = decide([task], reports, options);
    expect(decision.recorded).toEqual(reports.map(() => true));
    task = apply(task, decision);
    return decision;
  };
  let task = taskOf(plan, { n: 50, who: 'ann' });
  const started = start(task, options);
  expect(started.jobs).toMatchObject([{ stepId: 'fetch', tool: 'list', input: { who: 'ann' }, retry: { attempts: 4 }, priority: 3 }]);
  task = apply(task, started);

  const fetched = step([result('fetch', 'completed', { id: 'f1', items: ['x', 'y', 'z'] })]);
  expect(fetched.jobs.map((job) => [job.stepId, job.item, job.tool, job.input])).toEqual([
    ['each', 0, 'echo', { message: 'x' }],
    ['each', 1, 'echo', { message: 'y' }],
  ]);
  expect(fetched.timers.map((timer) => [timer.stepId, timer.at.getTime() - NOW.getTime()])).toEqual([
    ['nap', 50],
    ['go', 60_000],
  ]);
  expect(fetched.children).toMatchObject([{ stepId: 'sub', childTaskId: CHILD, workflow: { name: 'child', version: 2 }, params: { key: 'ann' }, priority: 3 }]);
  expect(Object.fromEntries([...task.steps].map(([id, state]) => [id, state.reason ? `${state.status}:${state.reason}` : state.status]))).toEqual({
    fetch: 'completed',
    each: 'running',
    nap: 'waiting:sleep',
    go: 'waiting:signal',
    ok: 'waiting:approval',
    sub: 'running',
    end: 'pending',
    'fetch.compensate': 'pending',
  });
  // What the run waits on outside PostgreSQL, as the reconciler asks for it.
  const waits = outstanding([task], options);
  expect(waits.jobs.map((job) => [job.stepId, job.item])).toEqual([
    ['each', 0],
    ['each', 1],
  ]);
  expect(waits.timers.map((timer) => timer.stepId)).toEqual(['nap', 'go']);
  expect(waits.children.map((child) => child.stepId)).toEqual(['sub']);

  step([result('each', 'completed', 'X', 0), result('each', 'completed', 'Y', 1)]);
  step([result('each', 'completed', 'Z', 2)]);
  step([{ type: 'wake', taskId: TASK, run: 1, stepId: 'nap', at: NOW }]);
  step([signal('go', { fine: true })]);
  step([signal('ok', { decision: 'approved' })]);
  const last = step([{ type: 'child', taskId: TASK, stepId: 'sub', childTaskId: CHILD, status: 'completed', output: { token: 't' }, at: NOW }]);
  expect(last.jobs).toMatchObject([{ stepId: 'end', tool: 'echo', input: { message: 'approved' } }]);
  expect(task.steps.get('each')!.output).toEqual(['X', 'Y', 'Z']);
  return task;
}

describe('a plan stored before PlanStep was a union on kind', () => {
  it('is what the compiler writes today, field for field', () => {
    expect(compileWorkflow(definition, { n: 50 }, { priority: 3 }, catalog).plan).toEqual(stored.workflow);
    const tool = catalog.tool('list')!;
    expect(planToolTask(tool, { who: 'x' }, { timeout_ms: 700, limits: [{ kind: 'r', key: 'k', limit: 9, windowMs: 60000 }] })).toEqual(stored.single);
  });

  it('runs every kind and modifier to the end: a tool, a map, a sleep under a when, a signal, an approval, a sub-workflow', () => {
    let task = upToEnd(stored.workflow);
    task = apply(task, decide([task], [result('end', 'completed', { done: 1 })], options));
    expect(task.status).toBe('completed');
    expect(task.steps.get('fetch.compensate')!.status).toBe('skipped');
  });

  it('runs its compensation when the task fails at its last step', () => {
    const task = upToEnd(stored.workflow);
    const failed = decide([task], [result('end', 'failed')], options);
    expect(failed.jobs).toMatchObject([{ stepId: 'fetch.compensate', tool: 'refund', input: { id: 'f1' }, timeoutMs: 9000 }]);
    const undone = apply(apply(task, failed), decide([apply(task, failed)], [result('fetch.compensate', 'completed')], options));
    expect(undone.status).toBe('failed');
  });

  it('runs a one-tool task', () => {
    const task = taskOf(stored.single, {});
    const started = start(task, options);
    expect(started.jobs).toMatchObject([{ stepId: 'list', tool: 'list', input: { who: 'x' }, timeoutMs: 700 }]);
    expect(apply(apply(task, started), decide([apply(task, started)], [result('list', 'completed', { n: 1 })], options)).status).toBe('completed');
  });
});
