import { describe, expect, it } from 'vitest';
import { decide, freshState, start } from '../../src/engine/decide.js';
import { holdBack } from '../../src/engine/key-limits.js';
import type { PlanStep } from '../../src/engine/plan.js';
import { historyEvent, type TaskState } from '../../src/engine/state.js';
import { DEFAULT_LIMITS } from '../../src/lib/limits.js';

/** The history the decider writes into its decisions (pure): one event per transition, in order, and each attempt's end. */

const NOW = new Date('2026-11-23T10:00:00.000Z');
/** Steps are queued and claimed by their first delivery here; decide.test.ts holds the claim made where a step is made ready. */
const options = { limits: DEFAULT_LIMITS, now: NOW, newTaskId: () => '', claimReady: () => false };
const retry = { attempts: 1, backoff: { type: 'fixed' as const, delay_ms: 0 } };
const tool = (id: string, dependsOn: string[] = []): PlanStep => ({
  id,
  kind: 'tool',
  tool: 'echo',
  dependsOn,
  onFailure: 'fail',
  input: {},
  options: { retry, timeout_ms: 1000 },
});
const task = (steps: PlanStep[]): TaskState =>
  freshState(
    { id: '0197a000-0000-7000-8000-000000000001', createdAt: NOW, taskType: 'w', params: {}, callback: false, owner: '', depth: 0, parent: null },
    { steps },
  );

describe('history in decisions', () => {
  it('has one event per transition, in the same order, each named by its scope and status', () => {
    const decision = start(task([tool('a'), tool('b', ['a'])]), options);
    expect(decision.history.map((event) => event.type)).toEqual(['step_queued']);
    expect(decision.history.length).toBe(decision.transitions.length);
    expect(decision.history[0]).toMatchObject({ stepId: 'a', run: 1, createdAt: NOW, data: { from: 'pending', to: 'queued' } });
  });

  it("records a result's attempt before the changes it causes, and not a result that is not recorded", () => {
    const loaded = task([tool('a'), tool('b', ['a'])]);
    loaded.status = 'running';
    loaded.steps.get('a')!.status = 'running';
    const report = {
      type: 'result' as const,
      taskId: loaded.id,
      run: 1,
      stepId: 'a',
      status: 'failed' as const,
      error: { name: 'Error', message: 'no' },
      attempt: 2,
      try: 2,
      worker: 'host/1',
      startedAt: new Date(NOW.getTime() - 40),
      finishedAt: NOW,
    };
    const decision = decide([loaded], [report], options);
    expect(decision.history.map((event) => event.type)).toEqual(['attempt_ended', 'step_failed', 'task_failed', 'step_skipped']);
    expect(decision.history[0]).toMatchObject({
      attempt: 2,
      data: { status: 'failed', try: 2, worker: 'host/1', error: { message: 'no' }, will_retry: false, duration_ms: 40 },
    });
    expect(decision.history[2]!.data).toMatchObject({ error: { step: 'a' } });
    expect(decision.history[3]!.data).toMatchObject({ reason: 'task_failed' });
    // The same result again (the step ended): nothing recorded, no attempt either.
    const ended: TaskState = {
      ...loaded,
      status: 'failed',
      steps: new Map([
        ['a', { ...loaded.steps.get('a')!, status: 'failed' }],
        ['b', { ...loaded.steps.get('b')!, status: 'skipped', reason: 'task_failed' }],
      ]),
    };
    const again = decide([ended], [report], options);
    expect(again.recorded).toEqual([false]);
    expect(again.history).toEqual([]);
  });

  it('names a resume, a start and a wake-up, and keeps what a limit changed (holdBack)', () => {
    const at = NOW.toISOString();
    const run = { run: 2, createdAt: NOW };
    expect(historyEvent({ taskId: 't', from: 'failed', status: 'queued', at }, run).type).toBe('task_resumed');
    expect(historyEvent({ taskId: 't', from: 'queued', status: 'running', at }, run).type).toBe('task_started');
    expect(historyEvent({ taskId: 't', stepId: 's', from: 'waiting', status: 'queued', at }, run).type).toBe('step_woken');
    expect(historyEvent({ taskId: 't', stepId: 's', from: 'waiting', status: 'cancelled', at }, run).type).toBe('step_cancelled');
    expect(historyEvent({ taskId: 't', stepId: 's', from: 'pending', status: 'skipped', at, reason: 'condition' }, run)).toMatchObject({
      type: 'step_skipped',
      run: 2,
      data: { reason: 'condition' },
    });

    const decision = start(task([tool('a')]), options);
    const held = holdBack(decision, new Map([[`${decision.history[0]!.taskId}/a`, 'c']]));
    expect(held.history).toEqual([expect.objectContaining({ type: 'step_waiting', data: expect.objectContaining({ to: 'waiting', reason: 'concurrency' }) })]);
  });
});
