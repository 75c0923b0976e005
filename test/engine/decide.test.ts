import { afterAll, describe, expect, it } from 'vitest';
import { attemptOutcome, cancel, decide, freshState, outstanding, resume, start } from '../../src/engine/decide.js';
import { holdBack } from '../../src/engine/key-limits.js';
import { assertStepMove, IllegalTransitionError, STEP_TRANSITIONS } from '../../src/engine/lifecycle.js';
import type { Plan, PlanStep } from '../../src/engine/plan.js';
import type { Decision, ItemState, Report, TaskState } from '../../src/engine/state.js';
import { STEP_STATUSES } from '../../src/engine/status.js';
import { DEFAULT_LIMITS } from '../../src/lib/limits.js';
import { retryDelay } from '../../workers/runtime/backoff.js';

/**
 * The decider, pure: states as the ledger would load them, decisions as it would apply them. A
 * small applier below plays the ledger (and keeps every step move it sees, for the last test:
 * every transition the state machine allows is one the decider makes somewhere).
 */

const NOW = new Date('2026-11-23T10:00:00.000Z');
/**
 * Steps made ready are queued and claimed by their first delivery, as for a task under limits per
 * key or with a first delay; the claim made where a step is made ready (one commit per level) has
 * its own tests below (`claimed`).
 */
const options = {
  limits: { ...DEFAULT_LIMITS, MAP_MAX_PARALLEL: 2, SUBWORKFLOW_MAX_DEPTH: 2 },
  now: NOW,
  newTaskId: () => '0197a000-0000-7000-8000-00000000c01d',
  claimReady: () => false,
};
const claimed = { ...options, claimReady: () => true };
const retry = { attempts: 1, backoff: { type: 'fixed' as const, delay_ms: 0 } };

function tool(id: string, dependsOn: string[] = [], extra: Partial<PlanStep<'tool'>> = {}): PlanStep<'tool'> {
  return { id, kind: 'tool', tool: 'echo', dependsOn, onFailure: 'fail', input: {}, options: { retry, timeout_ms: 1000 }, ...extra };
}

/** A tool step's fields that any step has (to make a step of another kind). */
function common(id: string, dependsOn: string[] = []) {
  const { kind: _kind, tool: _tool, ...rest } = tool(id, dependsOn);
  return rest;
}

function taskOf(steps: PlanStep[], params: Record<string, unknown> = {}, output?: unknown, extra: Partial<Plan> = {}): TaskState {
  return freshState(
    { id: '0197a000-0000-7000-8000-000000000001', createdAt: NOW, taskType: 'w', params, callback: false, owner: '', depth: 0, parent: null },
    { steps, ...(output !== undefined ? { output } : {}), ...extra },
  );
}

/** Every (from, to) step move the decisions made (their transitions say both). */
const seen = new Set<string>();

/** Plays the ledger: applies a decision to a loaded state (a copy), as ledger_apply would. */
function apply(task: TaskState, decision: Decision): TaskState {
  expect(decision.needs).toBeUndefined();
  for (const transition of decision.transitions) if (transition.stepId && transition.from) seen.add(`${transition.from}>${transition.status}`);
  const next: TaskState = { ...task, steps: new Map([...task.steps].map(([id, step]) => [id, { ...step }])), items: new Map(task.items) };
  for (const change of decision.tasks.filter((entry) => entry.taskId === task.id)) {
    if (change.set.status) next.status = change.set.status;
    if (change.set.run !== undefined) next.run = change.set.run;
    if ('error' in change.set) next.error = change.set.error ?? null;
    if ('exit_status' in change.set) next.exitStatus = change.set.exit_status ?? null;
    if ('result' in change.set) next.result = change.set.result;
  }
  for (const change of decision.steps.filter((entry) => entry.taskId === task.id)) {
    const step = next.steps.get(change.stepId)!;
    Object.assign(step, {
      ...(change.set.status ? { status: change.set.status } : {}),
      ...('output' in change.set ? { output: change.set.output } : {}),
      ...('error' in change.set ? { error: change.set.error } : {}),
      ...('reason' in change.set ? { reason: change.set.reason } : {}),
      ...(change.set.run !== undefined ? { run: change.set.run } : {}),
      ...(change.set.attempts !== undefined ? { attempts: change.set.attempts } : {}),
      ...('items' in change.set ? { items: change.set.items } : {}),
      ...('child_task_id' in change.set ? { childTaskId: change.set.child_task_id } : {}),
      ...('wake_at' in change.set ? { wakeAt: change.set.wake_at ? new Date(change.set.wake_at) : null } : {}),
      ...('input' in change.set ? { input: change.set.input } : {}),
    });
  }
  // As the ledger does: a step's items deleted before new ones go in.
  for (const sweep of decision.sweeps.filter((entry) => entry.taskId === task.id && entry.delete)) next.items.delete(sweep.stepId);
  for (const item of decision.newItems.filter((entry) => entry.taskId === task.id)) {
    const items = new Map(next.items.get(item.stepId) ?? []);
    items.set(item.item, {
      item: item.item,
      run: item.run,
      status: item.status ?? 'pending',
      attempts: 0,
      output: null,
      error: null,
      startedAt: item.startedAt ? new Date(item.startedAt) : null,
      childTaskId: item.childTaskId ?? null,
      input: item.input,
    });
    next.items.set(item.stepId, items);
    next.allItemsLoaded = new Set([...next.allItemsLoaded, item.stepId]);
  }
  for (const change of decision.items.filter((entry) => entry.taskId === task.id)) {
    const item = next.items.get(change.stepId)!.get(change.item)!;
    const { child_task_id, started_at, finished_at: _finished, ...set } = change.set;
    next.items.get(change.stepId)!.set(change.item, {
      ...item,
      ...(set as Partial<ItemState>),
      ...(child_task_id !== undefined ? { childTaskId: child_task_id } : {}),
      ...(started_at !== undefined ? { startedAt: started_at ? new Date(started_at) : null } : {}),
    });
  }
  for (const sweep of decision.sweeps.filter((entry) => entry.taskId === task.id)) {
    const items = next.items.get(sweep.stepId);
    if (!items) continue;
    if (sweep.start !== undefined) {
      const pending = [...items.values()].filter((item) => item.status === 'pending').sort((a, b) => a.item - b.item);
      for (const item of pending.slice(0, sweep.start)) items.set(item.item, { ...item, status: 'queued' });
    } else if (sweep.from) {
      for (const item of items.values()) {
        if (sweep.from.includes(item.status))
          items.set(item.item, {
            ...item,
            status: sweep.to!,
            ...(sweep.run ? { run: sweep.run } : {}),
            ...(sweep.reset ? { output: null, error: null, attempts: 0 } : {}),
          });
      }
    }
  }
  return next;
}

const result = (stepId: string, status: 'completed' | 'failed' | 'cancelled', extra: Partial<Extract<Report, { type: 'result' }>> = {}): Report => ({
  type: 'result',
  taskId: '0197a000-0000-7000-8000-000000000001',
  run: 1,
  stepId,
  status,
  attempt: 1,
  startedAt: NOW,
  finishedAt: NOW,
  ...(status === 'completed' ? { output: { from: stepId } } : { error: { name: 'Boom', message: `${stepId} broke` } }),
  ...extra,
});

/** Starts a task, then feeds it reports one batch at a time; returns the state and the last decision. */
function run(task: TaskState, ...batches: Report[][]): { task: TaskState; decision: Decision } {
  return runWith(options, task, ...batches);
}

function runWith(with_: typeof options, task: TaskState, ...batches: Report[][]): { task: TaskState; decision: Decision } {
  let decision = start(task, with_);
  let state = apply(task, decision);
  for (const batch of batches) {
    decision = decide([state], batch, with_);
    state = apply(state, decision);
  }
  return { task: state, decision };
}

const status = (task: TaskState) => Object.fromEntries([...task.steps].map(([id, step]) => [id, step.reason ? `${step.status}:${step.reason}` : step.status]));

describe('the decider: a DAG of tool steps', () => {
  it('starts the steps without dependencies, with their inputs resolved, and leaves the task queued', () => {
    const task = taskOf([tool('a', [], { input: { who: '{{params.who}}' } }), tool('b', ['a'])], { who: 'Ada' });
    const { task: state, decision } = run(task);
    expect(status(state)).toEqual({ a: 'queued', b: 'pending' });
    expect(decision.jobs).toMatchObject([{ stepId: 'a', tool: 'echo', input: { who: 'Ada' }, dependencies: {} }]);
    expect(state.status).toBe('queued');
  });

  it('queues a dependent once its last dependency completes (a diamond: once, when both finish in one batch)', () => {
    const task = taskOf(
      [tool('a'), tool('b', ['a']), tool('c', ['a']), tool('d', ['b', 'c'], { input: { b: '{{steps.b.output.from}}' } })],
      {},
      { d: '{{steps.d.output}}' },
    );
    const afterA = run(task, [result('a', 'completed')]);
    expect(status(afterA.task)).toEqual({ a: 'completed', b: 'queued', c: 'queued', d: 'pending' });
    const both = decide([afterA.task], [result('b', 'completed'), result('c', 'completed')], options);
    expect(both.jobs.map((job) => job.stepId)).toEqual(['d']);
    expect(both.jobs[0]).toMatchObject({ input: { b: 'b' }, dependencies: { b: { status: 'completed', output: { from: 'b' } } } });
    const done = apply(apply(afterA.task, both), decide([apply(afterA.task, both)], [result('d', 'completed')], options));
    expect(done.status).toBe('completed');
  });

  it('ends the task with its output template once nothing is left; a result for another run is not recorded', () => {
    const task = taskOf([tool('a')], {}, { got: '{{steps.a.output.from}}' });
    const { task: state, decision } = run(task, [result('a', 'completed', { run: 2 }), result('a', 'completed')]);
    expect(decision.recorded).toEqual([false, true]);
    expect(state.status).toBe('completed');
    expect(decision.tasks[0]!.set).toMatchObject({ status: 'completed', result: { got: 'a' } });
    expect(decision.ended).toMatchObject([{ status: 'completed', taskType: 'w' }]);
  });

  it('fails the task under on_failure fail: steps not started are skipped (task_failed), running ones finish, a job in backoff is dropped', () => {
    const task = taskOf([tool('a'), tool('slow'), tool('idle'), tool('b', ['a']), tool('c', ['slow'])]);
    const started = run(task);
    const claimed: TaskState = { ...started.task, steps: new Map(started.task.steps) };
    claimed.steps.set('slow', { ...claimed.steps.get('slow')!, status: 'running' });
    const decision = decide([claimed], [result('a', 'failed')], options);
    const state = apply(claimed, decision);
    expect(state.status).toBe('failed');
    expect(status(state)).toEqual({ a: 'failed', slow: 'running', idle: 'skipped:task_failed', b: 'skipped:task_failed', c: 'skipped:task_failed' });
    expect(decision.tasks[0]!.set.error).toMatchObject({ step: 'a', name: 'Boom' });
    expect(decision.dropJobs).toEqual([expect.objectContaining({ stepId: 'slow', running: true }), expect.objectContaining({ stepId: 'idle', tool: 'echo' })]);
    expect(decision.deadLetters).toMatchObject([{ stepId: 'a' }]);
    // The running step's result is recorded, and changes nothing.
    const late = decide([state], [result('slow', 'completed')], options);
    expect(late.recorded).toEqual([true]);
    expect(late.tasks).toEqual([]);
  });

  it('under on_failure continue, dependents run and see the failure', () => {
    const task = taskOf([tool('a', [], { onFailure: 'continue' }), tool('b', ['a'], { input: { s: '{{steps.a.status}}', m: '{{steps.a.error.message}}' } })]);
    const { decision } = run(task, [result('a', 'failed')]);
    expect(decision.jobs).toMatchObject([
      { stepId: 'b', input: { s: 'failed', m: 'a broke' }, dependencies: { a: { status: 'failed', error: { name: 'Boom' } } } },
    ]);
  });

  it('fails a step whose resolved input is too large when it becomes ready, without a job', () => {
    const task = taskOf([tool('a'), tool('b', ['a'], { input: { x: '{{steps.a.output.big}}' } })]);
    const big = 'x'.repeat(DEFAULT_LIMITS.STEP_INPUT_MAX_BYTES);
    const { task: state, decision } = run(task, [result('a', 'completed', { output: { big } })]);
    expect(decision.jobs).toEqual([]);
    expect(state.steps.get('b')).toMatchObject({ status: 'failed', error: { name: 'StepInputTooLarge', retryable: false } });
    expect(state.status).toBe('failed');
  });

  it('asks for an output too large to have been loaded, and decides once it has it', () => {
    const task = taskOf([tool('a'), tool('b', ['a'], { input: { x: '{{steps.a.output.from}}' } })]);
    const { task: state } = run(task, [result('a', 'completed')]);
    const b = state.steps.get('b')!;
    const loaded: TaskState = { ...state, steps: new Map(state.steps) };
    loaded.steps.set('b', { ...b, status: 'pending' });
    loaded.steps.set('a', { ...loaded.steps.get('a')!, output: undefined });
    const decision = decide([loaded], [], options);
    expect(decision.needs).toEqual({ outputs: [{ taskId: loaded.id, stepId: 'a' }], items: [] });
    loaded.steps.set('a', { ...loaded.steps.get('a')!, output: { from: 'a' } });
    expect(decide([loaded], [], options).jobs).toMatchObject([{ stepId: 'b', input: { x: 'a' } }]);
  });
});

describe('the decider: a step claimed where it is made ready (one commit per level)', () => {
  it("leaves a new task's first steps queued: the task is queued until a worker takes one (its delivery claims it)", () => {
    const { task: state, decision } = runWith(claimed, taskOf([tool('a'), tool('b', ['a'])]));
    expect(status(state)).toEqual({ a: 'queued', b: 'pending' });
    expect(decision.jobs[0]!.claimed).toBeUndefined();
    expect(state.status).toBe('queued');
  });

  it("claims a step made ready while its task runs, for its first delivery: running, attempt 1, its attempt's start in the history", () => {
    const task = taskOf([tool('a'), tool('b', ['a'])]);
    const { task: state, decision } = runWith(claimed, { ...task, status: 'running' }, [result('a', 'completed')]);
    expect(status(state)).toEqual({ a: 'completed', b: 'running' });
    expect(state.steps.get('b')!.attempts).toBe(1);
    expect(decision.jobs).toMatchObject([{ stepId: 'b', claimed: true }]);
    expect(decision.history.filter((event) => event.stepId === 'b').map((event) => event.type)).toEqual(['step_running', 'attempt_started']);
    expect(decision.history.find((event) => event.stepId === 'b' && event.type === 'attempt_started')).toMatchObject({
      attempt: 1,
      data: { try: 1, delivery: 1, claimed_when_ready: true },
    });
  });

  it("claims a dependent in the decision that records its dependency's result; the result's start is the step's start", () => {
    const task = taskOf([tool('a'), tool('b', ['a']), tool('c', ['a'])]);
    const later = new Date(NOW.getTime() + 5_000);
    const { task: state, decision } = runWith(claimed, task, [result('a', 'completed', { startedAt: later, finishedAt: later })]);
    expect(status(state)).toEqual({ a: 'completed', b: 'running', c: 'running' });
    expect(decision.jobs.map((job) => [job.stepId, job.claimed])).toEqual([
      ['b', true],
      ['c', true],
    ]);
    expect(decision.steps.find((change) => change.stepId === 'a')!.set.started_at).toBe(later.toISOString());
  });

  it("a sibling's failure leaves a claimed step running (its job dropped as a running step's: it stops there if it has not started), never skipped", () => {
    const task = taskOf([tool('a'), tool('b', ['a']), tool('c', ['a']), tool('d', ['b', 'c'])]);
    const { task: state, decision } = runWith(claimed, task, [result('a', 'completed')], [result('b', 'failed')]);
    expect(state.status).toBe('failed');
    expect(status(state)).toEqual({ a: 'completed', b: 'failed', c: 'running', d: 'skipped:task_failed' });
    expect(decision.dropJobs).toEqual([{ taskId: task.id, run: 1, stepId: 'c', tool: 'echo', running: true }]);
  });

  it('is not made for a one-tool task (its start rides with its result), nor where the caller says not (limits per key)', () => {
    const single = taskOf([tool('echo')], {}, undefined, { single: true });
    expect(status(runWith(claimed, single).task)).toEqual({ echo: 'queued' });
    const held = runWith({ ...claimed, claimReady: () => false }, taskOf([tool('a'), tool('b', ['a'])]), [result('a', 'completed')]);
    expect(status(held.task)).toEqual({ a: 'completed', b: 'queued' });
    expect(held.decision.jobs[0]!.claimed).toBeUndefined();
  });
});

describe('the decider: when', () => {
  const branches = () =>
    taskOf(
      [
        tool('total'),
        tool('big', ['total'], { when: "steps.total.output.from == 'total' && params.notify" }),
        tool('small', ['total'], { when: "steps.total.output.from != 'total'" }),
        tool('after_small', ['small']),
        tool('join', ['big', 'small'], { input: { big: '{{steps.big.status}}', small: '{{steps.small.output}}' } }),
      ],
      { notify: true },
    );

  it('skips a step whose condition is false (reason condition); a step all of whose dependencies were skipped is skipped too (branch_not_taken); a join with one branch taken runs', () => {
    const { task: state, decision } = run(branches(), [result('total', 'completed')]);
    expect(status(state)).toEqual({ total: 'completed', big: 'queued', small: 'skipped:condition', after_small: 'skipped:branch_not_taken', join: 'pending' });
    expect(decision.transitions).toContainEqual(expect.objectContaining({ stepId: 'small', status: 'skipped', reason: 'condition' }));
    const joined = decide([state], [result('big', 'completed')], options);
    // A skipped step's output is null to templates, its status "skipped".
    expect(joined.jobs).toMatchObject([{ stepId: 'join', input: { big: 'completed', small: null }, dependencies: { small: { status: 'skipped' } } }]);
  });

  it('completes a task whose every step is skipped, at once', () => {
    const task = taskOf([tool('a', [], { when: 'params.go' }), tool('b', ['a'])], { go: false });
    const { task: state, decision } = run(task);
    expect(status(state)).toEqual({ a: 'skipped:condition', b: 'skipped:branch_not_taken' });
    expect(state.status).toBe('completed');
    expect(decision.jobs).toEqual([]);
  });

  it('fails the step with ConditionError when the condition cannot be evaluated', () => {
    const task = taskOf([tool('a'), tool('b', ['a'], { when: 'steps.a.output.missing > 1.0' })]);
    const { task: state } = run(task, [result('a', 'completed')]);
    expect(state.steps.get('b')).toMatchObject({ status: 'failed', error: { name: 'ConditionError', retryable: false } });
    expect(state.status).toBe('failed');
  });
});

describe('the decider: for_each', () => {
  const map = (extra: Partial<PlanStep<'tool'>> = {}) =>
    tool('each', ['list'], { forEach: '{{steps.list.output.items}}', input: { v: '{{item}}', i: '{{index}}' }, ...extra });

  it('completes a map over an empty list with []', () => {
    const { task: state } = run(taskOf([tool('list'), map()]), [result('list', 'completed', { output: { items: [] } })]);
    expect(state.steps.get('each')).toMatchObject({ status: 'completed', output: [] });
    expect(state.status).toBe('completed');
  });

  it('stores every item, queues max_parallel of them, queues the next as each ends, and outputs the items in order', () => {
    const { task: state, decision } = run(taskOf([tool('list'), map()]), [result('list', 'completed', { output: { items: ['x', 'y', 'z'] } })]);
    expect(state.steps.get('each')).toMatchObject({ status: 'running', items: { total: 3, done: 0, failed: 0, running: 2 } });
    expect(decision.newItems.map((item) => [item.item, item.status ?? 'pending', item.input])).toEqual([
      [0, 'queued', { v: 'x', i: 0 }],
      [1, 'queued', { v: 'y', i: 1 }],
      [2, 'pending', { v: 'z', i: 2 }],
    ]);
    expect(decision.jobs.map((job) => [job.stepId, job.item])).toEqual([
      ['each', 0],
      ['each', 1],
    ]);
    const item1 = decide([state], [result('each', 'completed', { item: 1, output: 'Y' })], options);
    expect(item1.sweeps).toEqual([expect.objectContaining({ stepId: 'each', start: 1 })]);
    const after1 = apply(state, item1);
    // A second result for the same item (a redelivery) is not recorded.
    expect(decide([after1], [result('each', 'completed', { item: 1, output: 'Y2' })], options).recorded).toEqual([false]);
    const last = decide([after1], [result('each', 'completed', { item: 0, output: 'X' }), result('each', 'completed', { item: 2, output: 'Z' })], options);
    const done = apply(after1, last);
    expect(done.steps.get('each')).toMatchObject({ status: 'completed', output: ['X', 'Y', 'Z'] });
    expect(done.status).toBe('completed');
  });

  it('fails the map at its first failed item under fail (no further item starts), and keeps {error} in order under continue', () => {
    const listed = run(taskOf([tool('list'), map()]), [result('list', 'completed', { output: { items: [1, 2, 3] } })]).task;
    const failed = decide([listed], [result('each', 'failed', { item: 0 })], options);
    expect(apply(listed, failed).steps.get('each')).toMatchObject({ status: 'failed', error: { name: 'Boom', details: { item: 0 } } });
    expect(failed.sweeps).toEqual([expect.objectContaining({ from: ['pending', 'queued'], to: 'skipped' })]);
    expect(failed.deadLetters.map((letter) => letter.stepId)).toEqual(['each[0]']);

    const lenient = run(taskOf([tool('list'), map({ onFailure: 'continue' })]), [result('list', 'completed', { output: { items: [1, 2] } })]).task;
    const both = apply(lenient, decide([lenient], [result('each', 'failed', { item: 0 }), result('each', 'completed', { item: 1, output: 2 })], options));
    expect(both.steps.get('each')).toMatchObject({ status: 'completed', output: [{ error: { name: 'Boom', message: 'each broke' } }, 2] });
  });

  it('refuses a list that is not one, and a list longer than MAP_MAX_ITEMS', () => {
    expect(run(taskOf([tool('list'), map()]), [result('list', 'completed', { output: { items: 'no' } })]).task.steps.get('each')).toMatchObject({
      status: 'failed',
      error: { name: 'ForEachNotAList' },
    });
    const long = Array.from({ length: DEFAULT_LIMITS.MAP_MAX_ITEMS + 1 }, (_, index) => index);
    expect(run(taskOf([tool('list'), map()]), [result('list', 'completed', { output: { items: long } })]).task.steps.get('each')).toMatchObject({
      status: 'failed',
      error: { name: 'TooManyItems', details: { setting: 'MAP_MAX_ITEMS' } },
    });
  });
});

describe('the decider: sleep and sub-workflows', () => {
  const sleep = (id: string, spec: PlanStep<'sleep'>['sleep'], dependsOn: string[] = []): PlanStep => ({
    ...common(id, dependsOn),
    kind: 'sleep',
    sleep: spec,
  });

  it('waits (reason sleep) with a timer at wake_at, completes on the wake-up, and at once when the time has passed', () => {
    const { task: state, decision } = run(taskOf([sleep('nap', { ms: 60_000 }), sleep('past', { until: '2020-01-01T00:00:00Z' })]));
    expect(state.steps.get('nap')).toMatchObject({ status: 'waiting', reason: 'sleep', wakeAt: new Date(NOW.getTime() + 60_000) });
    expect(decision.timers).toEqual([{ taskId: state.id, run: 1, stepId: 'nap', at: new Date(NOW.getTime() + 60_000) }]);
    expect(state.steps.get('past')).toMatchObject({ status: 'completed' });
    expect(state.status).toBe('running');
    const woke = apply(state, decide([state], [{ type: 'wake', taskId: state.id, run: 1, stepId: 'nap', at: NOW }], options));
    expect(woke.steps.get('nap')).toMatchObject({ status: 'completed', output: { woke_at: NOW.toISOString() } });
    expect(woke.status).toBe('completed');
  });

  it('waits for a signal (the first one recorded completes it, a second is refused) and times out as on_timeout says', () => {
    const wait = (id: string, spec: Partial<PlanStep<'wait'>['wait']>): PlanStep => ({
      ...common(id),
      kind: 'wait',
      wait: { signal: id, on_timeout: 'fail', ...spec },
    });
    const { task: state, decision } = run(taskOf([wait('go', { timeout_ms: 5_000 }), wait('lenient', { timeout_ms: 5_000, on_timeout: 'continue' })]));
    expect(state.steps.get('go')).toMatchObject({ status: 'waiting', reason: 'signal', wakeAt: new Date(NOW.getTime() + 5_000) });
    expect(decision.timers.map((timer) => timer.stepId).sort()).toEqual(['go', 'lenient']);
    const signal = (payload: unknown) => ({
      type: 'signal' as const,
      taskId: state.id,
      run: 1,
      stepId: 'go',
      signal: 'go',
      payload,
      by: 'k',
      via: 'key' as const,
      at: NOW,
    });
    const first = decide([state], [signal({ n: 1 }), signal({ n: 2 })], options);
    expect(first.recorded).toEqual([true, false]);
    expect(apply(state, first).steps.get('go')).toMatchObject({ status: 'completed', output: { n: 1 } });
    const timedOut = apply(
      state,
      decide(
        [state],
        // lenient first: go's failure fails the task, which cancels a step still waiting.
        ['lenient', 'go'].map((stepId) => ({ type: 'wake' as const, taskId: state.id, run: 1, stepId, at: NOW })),
        options,
      ),
    );
    expect(timedOut.steps.get('go')).toMatchObject({ status: 'failed', error: { name: 'WaitTimedOut' } });
    expect(timedOut.steps.get('lenient')).toMatchObject({ status: 'completed', output: { timed_out: true } });
    expect(timedOut.status).toBe('failed');
  });

  it('keeps one signal sent before its step waits, and takes it then, checked against its schema', () => {
    const plan = (schema?: Record<string, unknown>): PlanStep[] => [
      tool('a'),
      { ...common('go', ['a']), kind: 'wait', wait: { signal: 'go', on_timeout: 'fail', timeout_ms: 5_000, ...(schema ? { schema } : {}) } },
    ];
    const signal = (payload: unknown): Report => ({
      type: 'signal',
      taskId: '0197a000-0000-7000-8000-000000000001',
      run: 1,
      stepId: 'go',
      signal: 'go',
      payload,
      by: 'k',
      via: 'key',
      at: NOW,
    });
    const { task: started } = run(taskOf(plan()));
    const kept = decide([started], [signal({ n: 1 }), signal({ n: 2 })], options);
    expect(kept.recorded).toEqual([true, false]);
    expect(kept.history.map((event) => event.type)).toEqual(['signal_buffered']);
    const waiting = apply(started, kept);
    expect(waiting.steps.get('go')).toMatchObject({ status: 'pending' });
    // `a` completes: `go` starts waiting, takes the kept signal, and needs no timer.
    const taken = decide([waiting], [result('a', 'completed')], options);
    expect(taken.timers).toEqual([]);
    expect(apply(waiting, taken).steps.get('go')).toMatchObject({ status: 'completed', output: { n: 1 } });
    expect(apply(waiting, taken).status).toBe('completed');

    // One that does not fit the schema when the step takes it fails the step.
    const { task: strict } = run(taskOf(plan({ type: 'object', required: ['amount'] })), [signal({ n: 1 })], [result('a', 'completed')]);
    expect(strict.steps.get('go')).toMatchObject({ status: 'failed', error: { name: 'InvalidSignalPayload' } });
    expect(strict.status).toBe('failed');

    // A step skipped with a kept signal holds no output.
    const { task: skipped } = run(taskOf(plan()), [signal({ n: 1 })], [result('a', 'failed')]);
    expect(skipped.steps.get('go')).toMatchObject({ status: 'skipped', output: null });
  });

  it('fails a sleep whose time does not resolve to one', () => {
    expect(run(taskOf([sleep('nap', { until: '{{params.at}}' })], { at: 'soon' })).task.steps.get('nap')).toMatchObject({
      status: 'failed',
      error: { name: 'InvalidSleep' },
    });
  });

  it("starts a child task with the resolved params, and takes its result (or its failure) as the step's", () => {
    const sub: PlanStep = { ...common('enrich'), kind: 'workflow', workflow: { name: 'child', version: 3 }, input: { id: '{{params.id}}' } };
    const { task: state, decision } = run(taskOf([sub], { id: 7 }));
    expect(decision.children).toMatchObject([{ stepId: 'enrich', workflow: { name: 'child', version: 3 }, params: { id: 7 }, depth: 1, existing: false }]);
    const child = decision.children[0]!.childTaskId;
    expect(state.steps.get('enrich')).toMatchObject({ status: 'running', childTaskId: child });
    const report = { type: 'child' as const, taskId: state.id, stepId: 'enrich', childTaskId: child, at: NOW };
    expect(apply(state, decide([state], [{ ...report, status: 'completed', output: { ok: 1 } }], options)).steps.get('enrich')).toMatchObject({
      status: 'completed',
      output: { ok: 1 },
    });
    const failed = apply(state, decide([state], [{ ...report, status: 'failed', error: { name: 'Boom', message: 'no' } }], options));
    expect(failed.steps.get('enrich')).toMatchObject({ status: 'failed', error: { name: 'SubWorkflowFailed', details: { task_id: child } } });
    expect(failed.status).toBe('failed');
    // A child that could not be made (its params refused) leaves no id behind.
    const refused = apply(
      state,
      decide([state], [{ ...report, status: 'failed', unstarted: true, error: { name: 'InvalidChildParams', message: 'params do not fit' } }], options),
    );
    expect(refused.steps.get('enrich')).toMatchObject({
      status: 'failed',
      childTaskId: null,
      error: { name: 'SubWorkflowFailed', message: 'the child task could not start: params do not fit', details: { error: { name: 'InvalidChildParams' } } },
    });
  });

  it('refuses to nest deeper than SUBWORKFLOW_MAX_DEPTH, and a child reports to its parent when it ends', () => {
    const sub: PlanStep = { ...common('deeper'), kind: 'workflow', workflow: { name: 'child', version: 1 } };
    const deep = { ...taskOf([sub]), depth: 2 };
    expect(run(deep).task.steps.get('deeper')).toMatchObject({ status: 'failed', error: { name: 'SubWorkflowTooDeep' } });
    const child = { ...taskOf([tool('a')]), parent: { taskId: 'parent', stepId: 'enrich' } };
    expect(run(child, [result('a', 'completed')]).decision.parentReports).toMatchObject([
      { type: 'child', taskId: 'parent', stepId: 'enrich', status: 'completed' },
    ]);
  });
});

describe('the decider: cancel, retry, lost jobs, what runs wait on', () => {
  it('cancels: queued steps (their jobs dropped), sleeps (their timers), maps and children end; running steps are left to their workers', () => {
    const steps = [tool('a'), { ...common('nap'), kind: 'sleep' as const, sleep: { ms: 1000 } }, tool('later', ['a'])];
    const { task: state } = run(taskOf(steps));
    const decision = cancel([state], options);
    expect(decision.cancelled).toEqual([state.id]);
    expect(status(apply(state, decision))).toEqual({ a: 'cancelled', nap: 'cancelled', later: 'cancelled' });
    expect(decision.dropJobs.map((job) => [job.stepId, job.tool ?? 'timer'])).toEqual([
      ['a', 'echo'],
      ['nap', 'timer'],
    ]);
    expect(cancel([apply(state, decision)], options).cancelled).toEqual([]);
  });

  it('retries a failed task as a new run: completed steps keep their output, the others run again', () => {
    const { task: failed } = run(
      taskOf([tool('a'), tool('b', ['a'], { input: { x: '{{steps.a.output.from}}' } })]),
      [result('a', 'completed')],
      [result('b', 'failed')],
    );
    expect(failed.status).toBe('failed');
    const decision = resume([failed], options);
    expect(decision.resumed).toEqual([failed.id]);
    const again = apply(failed, decision);
    expect(again.run).toBe(2);
    expect(status(again)).toEqual({ a: 'completed', b: 'queued' });
    expect(decision.jobs).toMatchObject([{ stepId: 'b', run: 2, input: { x: 'a' } }]);
    expect(resume([again], options).resumed).toEqual([]);
  });

  it('retries every step that did not complete: skipped, cancelled, and one still running from the run that failed', () => {
    const steps = [tool('bad'), tool('slow'), tool('off', [], { when: 'params.on' }), tool('after', ['bad'])];
    const started = run(taskOf(steps, { on: false })).task;
    started.steps.set('slow', { ...started.steps.get('slow')!, status: 'running' });
    const failed = apply(started, decide([started], [result('bad', 'failed')], options));
    expect(status(failed)).toEqual({ bad: 'failed', slow: 'running', off: 'skipped:condition', after: 'skipped:task_failed' });
    const again = apply(failed, resume([failed], options));
    expect(status(again)).toEqual({ bad: 'queued', slow: 'queued', off: 'skipped:condition', after: 'pending' });
    const cancelled = apply(again, cancel([again], options));
    expect(status(apply(cancelled, resume([cancelled], options)))).toMatchObject({ bad: 'queued', slow: 'queued', after: 'pending' });
  });

  it('queues again a step whose job was lost, from the input it was given; closes it when its task ended', () => {
    const { task: state } = run(taskOf([tool('a', [], { input: { n: 1 } })]));
    const loaded: TaskState = { ...state, steps: new Map([['a', { ...state.steps.get('a')!, status: 'running', input: { n: 1 } }]]) };
    const lost = decide([loaded], [{ type: 'lost', taskId: state.id, run: 1, stepId: 'a', at: NOW }], options);
    expect(lost.jobs).toMatchObject([{ stepId: 'a', input: { n: 1 } }]);
    expect(apply(loaded, lost).steps.get('a')!.status).toBe('queued');
    const ended = { ...loaded, status: 'failed' as const };
    expect(apply(ended, decide([ended], [{ type: 'lost', taskId: state.id, run: 1, stepId: 'a', at: NOW }], options)).steps.get('a')!.status).toBe('cancelled');
  });

  it('lists what a run waits on outside PostgreSQL', () => {
    const steps = [tool('a', [], { input: { n: 1 } }), { ...common('nap'), kind: 'sleep' as const, sleep: { ms: 1000 } }];
    const { task: state } = run(taskOf(steps));
    const loaded: TaskState = { ...state, steps: new Map(state.steps) };
    loaded.steps.set('a', { ...loaded.steps.get('a')!, input: { n: 1 } });
    const waits = outstanding([loaded], options);
    expect(waits.jobs).toMatchObject([{ stepId: 'a', input: { n: 1 } }]);
    expect(waits.timers).toMatchObject([{ stepId: 'nap' }]);
  });

  it('retries an attempt unless the task stopped, the error says retrying cannot help, or no attempt is left', () => {
    expect(attemptOutcome(1, 3, {})).toEqual({ retry: true });
    expect(attemptOutcome(3, 3, {})).toEqual({ retry: false, why: 'no_attempts_left' });
    expect(attemptOutcome(1, 3, { retryable: false })).toEqual({ retry: false, why: 'not_retryable' });
    expect(attemptOutcome(1, 3, { stopped: true })).toEqual({ retry: false, why: 'stopped' });
    // max_elapsed_ms: the next try would start past it (counted from the first try).
    expect(attemptOutcome(1, 3, {}, { nextTryInMs: 900, maxElapsedMs: 1000 })).toEqual({ retry: true });
    expect(attemptOutcome(1, 3, {}, { nextTryInMs: 1001, maxElapsedMs: 1000 })).toEqual({ retry: false, why: 'max_elapsed' });
    expect(attemptOutcome(1, 3, {}, { nextTryInMs: 10_000_000 })).toEqual({ retry: true });
  });

  it('caps a backoff at max_delay_ms, and a longer Retry-After still wins', () => {
    const policy = { type: 'exponential' as const, delay_ms: 100 };
    expect(retryDelay(policy, 5, undefined, () => 1)).toBe(1600);
    expect(retryDelay({ ...policy, max_delay_ms: 250 }, 5, undefined, () => 1)).toBe(250);
    expect(retryDelay({ ...policy, max_delay_ms: 250 }, 5, undefined, () => 0)).toBe(125);
    expect(retryDelay({ ...policy, max_delay_ms: 250 }, 1, undefined, () => 1)).toBe(100);
    expect(retryDelay({ ...policy, max_delay_ms: 250 }, 5, 2000, () => 1)).toBe(2000);
  });
});

describe('the decider: limits per key (src/engine/key-limits.ts)', () => {
  const taskId = '0197a000-0000-7000-8000-000000000001';
  const admitted = (stepId?: string): Report => ({ type: 'admitted', taskId, run: 1, ...(stepId ? { stepId } : {}), at: NOW });

  it('a job held back makes its step wait with the reason; let in, it is queued with its job; the task stays queued meanwhile', () => {
    const task = taskOf([tool('a'), tool('b')]);
    const started = start(task, options);
    const held = holdBack(started, new Map([[`${taskId}/a`, 'c']]));
    expect(held.jobs.map((job) => job.stepId)).toEqual(['b']);
    expect(held.transitions.filter((transition) => transition.stepId === 'a')).toMatchObject([{ from: 'pending', status: 'waiting', reason: 'concurrency' }]);
    let state = apply(task, held);
    expect(status(state)).toEqual({ a: 'waiting:concurrency', b: 'queued' });
    expect(state.status).toBe('queued');
    const turn = decide([state], [admitted('a')], options);
    expect(turn.recorded).toEqual([true]);
    expect(turn.jobs).toMatchObject([{ stepId: 'a' }]);
    state = apply(state, turn);
    expect(status(state)).toEqual({ a: 'queued', b: 'queued' });
    // Let in twice (a release and the reconciler): the second changes nothing.
    expect(decide([state], [admitted('a')], options)).toMatchObject({ recorded: [false], jobs: [] });
  });

  it('held back again after its turn (the limit filled meanwhile), a step keeps waiting and says nothing new', () => {
    const task = taskOf([tool('a')]);
    let state = apply(task, holdBack(start(task, options), new Map([[`${taskId}/a`, 'r']])));
    expect(status(state)).toEqual({ a: 'waiting:rate_limit' });
    const again = holdBack(decide([state], [admitted('a')], options), new Map([[`${taskId}/a`, 'r']]));
    expect(again.jobs).toEqual([]);
    expect(again.transitions).toEqual([]);
    state = apply(state, again);
    expect(status(state)).toEqual({ a: 'waiting:rate_limit' });
  });

  it('a run let in queues every step its own limit held; cancelled, a waiting step is cancelled', () => {
    const task = taskOf([tool('a'), tool('b')]);
    const held = holdBack(
      start(task, options),
      new Map([
        [`${taskId}/a`, 'c'],
        [`${taskId}/b`, 'c'],
      ]),
    );
    let state = apply(task, held);
    expect(status(state)).toEqual({ a: 'waiting:concurrency', b: 'waiting:concurrency' });
    const cancelled = apply(state, cancel([state], options));
    expect(status(cancelled)).toEqual({ a: 'cancelled', b: 'cancelled' });
    const turn = decide([state], [admitted()], options);
    expect(turn.jobs.map((job) => job.stepId).sort()).toEqual(['a', 'b']);
    state = apply(state, turn);
    expect(status(state)).toEqual({ a: 'queued', b: 'queued' });
  });
});

describe("the decider: a service's circuit breaker (src/queue/circuits.ts)", () => {
  const taskId = '0197a000-0000-7000-8000-000000000001';
  const circuit = (stepId: string, open: boolean): Report => ({ type: 'circuit', taskId, run: 1, stepId, open, at: NOW });

  it('an open circuit makes a queued or running step wait (reason circuit_open) without a new job; let through, it is queued again, its job still there', () => {
    const task = taskOf([tool('a'), tool('b')]);
    let state = apply(task, start(task, options));
    state.steps.set('b', { ...state.steps.get('b')!, status: 'running' });
    const held = decide([state], [circuit('a', true), circuit('b', true)], options);
    expect(held.recorded).toEqual([true, true]);
    expect(held.jobs).toEqual([]);
    expect(
      held.transitions
        .filter((transition) => transition.stepId)
        .map((transition) => `${transition.stepId}:${transition.from}>${transition.status}:${transition.reason}`),
    ).toEqual(['a:queued>waiting:circuit_open', 'b:running>waiting:circuit_open']);
    state = apply(state, held);
    expect(status(state)).toEqual({ a: 'waiting:circuit_open', b: 'waiting:circuit_open' });
    // Held twice (a redelivery): nothing new.
    expect(decide([state], [circuit('a', true)], options)).toMatchObject({ recorded: [false], jobs: [] });
    const through = decide([state], [circuit('a', false)], options);
    expect(through).toMatchObject({ recorded: [true], jobs: [] });
    state = apply(state, through);
    expect(status(state)).toEqual({ a: 'queued', b: 'waiting:circuit_open' });
    // A step waiting for another reason is not let through by its circuit.
    expect(decide([state], [circuit('a', false)], options).recorded).toEqual([false]);
  });
});

describe('the decider: a step whose tool is withdrawn (its service deleted by force)', () => {
  const taskId = '0197a000-0000-7000-8000-000000000001';
  const error = { name: 'ServiceDeleted', message: 'the service s was deleted', retryable: false };
  const withdrawn = (stepId: string): Report => ({ type: 'withdrawn', taskId, run: 1, stepId, error, at: NOW });

  it('fails a waiting or pending step at once, dropping its job; its task fails under on_failure fail', () => {
    const task = taskOf([tool('a'), tool('b', ['a'])]);
    let state = apply(task, start(task, options));
    state = apply(state, decide([state], [{ type: 'circuit', taskId, run: 1, stepId: 'a', open: true, at: NOW }], options));
    const decision = decide([state], [withdrawn('a')], options);
    expect(decision.recorded).toEqual([true]);
    expect(decision.dropJobs).toEqual([expect.objectContaining({ taskId, run: 1, stepId: 'a' })]);
    state = apply(state, decision);
    expect(status(state)).toEqual({ a: 'failed', b: 'skipped:task_failed' });
    expect(state.status).toBe('failed');
    expect(state.steps.get('a')!.error).toEqual(error);
    // The task ended: a second report changes nothing.
    expect(decide([state], [withdrawn('b')], options).recorded).toEqual([false]);
  });

  it('under on_failure continue, fails the step and runs its dependents', () => {
    const task = taskOf([tool('a', [], { onFailure: 'continue' }), tool('b', ['a'])]);
    let state = apply(task, start(task, options));
    const decision = decide([state], [withdrawn('a')], options);
    state = apply(state, decision);
    expect(status(state)).toEqual({ a: 'failed', b: 'queued' });
    expect(decision.jobs.map((job) => job.stepId)).toEqual(['b']);
  });

  it("leaves a compensation alone: it runs only if its task fails, and is the compensating decider's to end", () => {
    const compensation = tool('a.compensate', [], { compensationOf: 'a', onFailure: 'continue' });
    const task = taskOf([tool('a'), compensation]);
    const state = apply(task, start(task, options));
    expect(state.steps.get('a.compensate')!.status).toBe('pending');
    expect(decide([state], [withdrawn('a.compensate')], options).recorded).toEqual([false]);
  });
});

describe('the decider: compensation (sagas)', () => {
  /** A step and its compensation, as compile makes them (src/engine/modifiers/compensate.ts). */
  const undo = (id: string, waitsFor: string[] = [], extra: Partial<PlanStep<'tool'>> = {}): PlanStep =>
    tool(
      `${id}.compensate`,
      waitsFor.map((below) => `${below}.compensate`),
      {
        compensationOf: id,
        onFailure: 'continue',
        input: { undo: `{{steps.${id}.output.from}}` },
        ...extra,
      },
    );
  /** A diamond a → b, c → d, every step compensated. */
  const diamond = () =>
    taskOf([tool('a'), tool('b', ['a']), tool('c', ['a']), tool('d', ['b', 'c']), undo('d'), undo('b', ['d']), undo('c', ['d']), undo('a', ['b', 'c'])]);
  const queuedJobs = (decision: Decision) => decision.jobs.map((job) => job.stepId);

  it('a diamond failing at its last step: compensations run in reverse dependency order with the outputs of what they undo, then the task fails', () => {
    const { task: failing, decision } = run(
      diamond(),
      [result('a', 'completed')],
      [result('b', 'completed'), result('c', 'completed')],
      [result('d', 'failed')],
    );
    // d did not complete: nothing of it to undo. b and c are undone first, side by side.
    expect(status(failing)).toMatchObject({
      'd.compensate': 'skipped:not_needed',
      'b.compensate': 'queued',
      'c.compensate': 'queued',
      'a.compensate': 'pending',
    });
    expect(decision.jobs).toMatchObject([
      { stepId: 'b.compensate', input: { undo: 'b' } },
      { stepId: 'c.compensate', input: { undo: 'c' } },
    ]);
    expect(failing.status).toBe('running');
    expect(decision.history.map((event) => event.type)).toContain('compensation_started');
    const afterB = apply(failing, decide([failing], [result('b.compensate', 'completed')], options));
    expect(afterB.steps.get('a.compensate')!.status).toBe('pending');
    const last = decide([afterB], [result('c.compensate', 'completed')], options);
    expect(queuedJobs(last)).toEqual(['a.compensate']);
    const done = decide([apply(afterB, last)], [result('a.compensate', 'completed')], options);
    const ended = apply(apply(afterB, last), done);
    expect(ended.status).toBe('failed');
    expect(done.tasks[0]!.set.error).toMatchObject({ step: 'd', name: 'Boom' });
    expect(done.history.find((event) => event.type === 'compensation_ended')!.data).toEqual({ compensated: true, ran: 3 });
    expect(done.ended).toMatchObject([{ status: 'failed' }]);
  });

  it('a step that completes after the failure is compensated too, before the steps above it; a failed compensation does not stop the others', () => {
    const task = taskOf([tool('a'), tool('b', ['a']), tool('c', ['a']), undo('a', ['c']), undo('c')]);
    const started = run(task, [result('a', 'completed')]).task;
    started.steps.set('c', { ...started.steps.get('c')!, status: 'running' });
    const failing = apply(started, decide([started], [result('b', 'failed')], options));
    expect(status(failing)).toMatchObject({ c: 'running', 'c.compensate': 'pending', 'a.compensate': 'pending' });
    // While compensating, a step's late result is recorded and moves no ordinary step on.
    const cDone = decide([failing], [result('c', 'completed')], options);
    expect(queuedJobs(cDone)).toEqual(['c.compensate']);
    const undoFailed = apply(apply(failing, cDone), decide([apply(failing, cDone)], [result('c.compensate', 'failed')], options));
    expect(undoFailed.steps.get('a.compensate')!.status).toBe('queued');
    const ended = decide([undoFailed], [result('a.compensate', 'completed')], options);
    expect(ended.history.find((event) => event.type === 'compensation_ended')!.data).toEqual({ compensated: 'partial', ran: 2 });
    expect(apply(undoFailed, ended).status).toBe('failed');
  });

  it('a retry after compensations ran starts over (completed steps run again); one with nothing undone keeps what completed', () => {
    const { task: failing } = run(diamond(), [result('a', 'completed')], [result('b', 'completed'), result('c', 'failed')]);
    const compensated = [['b.compensate'], ['a.compensate']].reduce(
      (state, [id]) => apply(state, decide([state], [result(id!, 'completed')], options)),
      failing,
    );
    expect(compensated.status).toBe('failed');
    const again = apply(compensated, resume([compensated], options));
    expect(status(again)).toEqual({
      a: 'queued',
      b: 'pending',
      c: 'pending',
      d: 'pending',
      'a.compensate': 'pending',
      'b.compensate': 'pending',
      'c.compensate': 'pending',
      'd.compensate': 'pending',
    });
    // Nothing completed before the failure: no compensation runs, and the task fails at once.
    const first = run(diamond(), [result('a', 'failed')]).task;
    expect(first.status).toBe('failed');
    expect(status(first)).toMatchObject({ 'a.compensate': 'skipped:not_needed', 'b.compensate': 'skipped:not_needed' });
  });

  it('a task that completes skips its compensations (not_needed); cancelling a compensating task cancels what is left of them', () => {
    const completed = run(diamond(), [result('a', 'completed')], [result('b', 'completed'), result('c', 'completed')], [result('d', 'completed')]).task;
    expect(completed.status).toBe('completed');
    expect(status(completed)['a.compensate']).toBe('skipped:not_needed');
    const failing = run(diamond(), [result('a', 'completed')], [result('b', 'failed')]).task;
    expect(status(failing)).toMatchObject({ 'a.compensate': 'queued' });
    const decision = cancel([failing], options);
    expect(decision.cancelled).toEqual([failing.id]);
    expect(status(apply(failing, decision))).toMatchObject({ 'a.compensate': 'cancelled' });
  });
});

describe('the decider: a repeat step (src/engine/modifiers/repeat.ts)', () => {
  const poll = (extra: Partial<NonNullable<PlanStep<'tool'>['repeat']>> = {}, step: Partial<PlanStep<'tool'>> = {}) =>
    tool('poll', ['start'], {
      input: { job: '{{steps.start.output.job}}', page: '{{iteration}}', cursor: '{{previous.output.next}}' },
      repeat: { until: "output.state == 'done' || steps.start.output.job == 'instant'", maxIterations: 3, delayMs: 2_000, ...extra },
      ...step,
    });
  const started = (job = 'j1', extra: Partial<NonNullable<PlanStep<'tool'>['repeat']>> = {}, step: Partial<PlanStep<'tool'>> = {}) =>
    run(taskOf([tool('start'), poll(extra, step)]), [result('start', 'completed', { output: { job } })]).task;
  const iteration = (n: number, output: unknown, status: 'completed' | 'failed' = 'completed') =>
    result('poll', status, { item: n, ...(status === 'completed' ? { output } : {}) });

  it('runs iteration 0 at once with {{iteration}} 0 and {{previous}} null; each false `until` queues the next, delayed, with the last output', () => {
    const first = started();
    expect(first.steps.get('poll')).toMatchObject({ status: 'running', items: { total: 1, done: 0, running: 1, iterations: true } });
    const one = first.items.get('poll')!.get(0)!;
    expect(one).toMatchObject({ status: 'queued', input: { job: 'j1', page: 0, cursor: null } });

    const again = decide([first], [iteration(0, { state: 'running', next: 'c1' })], options);
    expect(again.jobs).toEqual([expect.objectContaining({ stepId: 'poll', item: 1, input: { job: 'j1', page: 1, cursor: 'c1' }, delayMs: 2_000 })]);
    expect(again.history.filter((event) => event.type === 'iteration_ended').map((event) => event.data)).toEqual([{ iteration: 0, until: false }]);
    const second = apply(first, again);
    expect(second.steps.get('poll')).toMatchObject({ status: 'running', items: { total: 2, done: 1, running: 1 } });

    const done = apply(second, decide([second], [iteration(1, { state: 'done', n: 42 })], options));
    expect(done.steps.get('poll')).toMatchObject({ status: 'completed', output: { state: 'done', n: 42 }, items: { total: 2, done: 2, running: 0 } });
    expect(done.status).toBe('completed');
  });

  it('completes after one iteration when `until` holds at once, over an ancestor too; the first job is not delayed', () => {
    const task = started('instant');
    const decision = decide([task], [iteration(0, { state: 'running' })], options);
    const done = apply(task, decision);
    expect(done.steps.get('poll')).toMatchObject({ status: 'completed', output: { state: 'running' } });
    const first = start(
      taskOf([tool('alone', [], { input: { page: '{{iteration}}' }, repeat: { until: 'true', maxIterations: 2, delayMs: 1_000 } })]),
      options,
    );
    expect(first.jobs).toEqual([expect.objectContaining({ stepId: 'alone', item: 0, input: { page: 0 } })]);
    expect(first.jobs[0]!.delayMs).toBeUndefined();
  });

  it('fails with RepeatLimitReached when `until` is still false after max_iterations', () => {
    let task = started('j1', { maxIterations: 2 });
    task = apply(task, decide([task], [iteration(0, { state: 'running' })], options));
    const last = decide([task], [iteration(1, { state: 'running' })], options);
    expect(last.jobs).toEqual([]);
    const failed = apply(task, last);
    expect(failed.steps.get('poll')).toMatchObject({ status: 'failed', error: { name: 'RepeatLimitReached', details: { max_iterations: 2 } } });
    expect(failed.status).toBe('failed');
  });

  it('fails the step on a failed iteration (no next one), and goes on under on_failure continue; a late result of an old iteration counts for nothing', () => {
    const task = started();
    const failed = apply(task, decide([task], [iteration(0, null, 'failed')], options));
    expect(failed.steps.get('poll')).toMatchObject({
      status: 'failed',
      error: { name: 'Boom', message: 'iteration 0: poll broke', details: { iteration: 0 } },
    });
    expect(failed.status).toBe('failed');

    const lenient = started('j1', {}, { onFailure: 'continue' });
    const onwards = apply(lenient, decide([lenient], [iteration(0, null, 'failed')], options));
    expect(onwards.steps.get('poll')!.status).toBe('failed');
    expect(onwards.status).toBe('completed');
  });

  it('fails with ConditionError when `until` cannot be evaluated over the output', () => {
    const task = started('j1', { until: 'output.missing.deeper == 1' });
    const failed = apply(task, decide([task], [iteration(0, { state: 'x' })], options));
    expect(failed.steps.get('poll')).toMatchObject({ status: 'failed', error: { name: 'ConditionError', details: { iteration: 0 } } });
    expect(failed.steps.get('poll')!.error!.message).toMatch(/^repeat\.until: /);
  });

  it('repeats a sub-workflow: each iteration a child task of its own, its params resolved with the locals, until `until` holds', () => {
    let made = 0;
    const counting = {
      ...options,
      newTaskId: () => {
        made += 1;
        return `0197a000-0000-7000-8000-0000000000${String(made).padStart(2, '0')}`;
      },
    };
    const flip: PlanStep = {
      ...common('flip'),
      kind: 'workflow',
      workflow: { name: 'coin', version: 1 },
      input: { round: '{{iteration}}', last: '{{previous.output.side}}' },
      repeat: { until: "output.side == 'heads'", maxIterations: 3, delayMs: 0 },
    };
    let task = apply(taskOf([flip]), start(taskOf([flip]), counting));
    const first = task.steps.get('flip')!;
    expect(first).toMatchObject({ status: 'running', childTaskId: '0197a000-0000-7000-8000-000000000001', items: { total: 1, running: 1 } });
    expect(task.items.get('flip')!.get(0)).toMatchObject({ status: 'running', input: { round: 0, last: null } });
    const ended = (childTaskId: string, side: string) => ({
      type: 'child' as const,
      taskId: task.id,
      stepId: 'flip',
      childTaskId,
      status: 'completed' as const,
      output: { side },
      at: NOW,
    });

    const second = decide([task], [ended(first.childTaskId!, 'tails')], counting);
    expect(second.children).toMatchObject([{ childTaskId: '0197a000-0000-7000-8000-000000000002', existing: false, params: { round: 1, last: 'tails' } }]);
    expect(second.items).toEqual([
      expect.objectContaining({ stepId: 'flip', item: 0, set: expect.objectContaining({ status: 'completed', output: { side: 'tails' } }) }),
    ]);
    task = apply(task, second);
    // The first child's report again (the reconciler repeats an ended child's report): it counts for nothing.
    expect(decide([task], [ended(first.childTaskId!, 'heads')], counting).children).toEqual([]);

    const done = apply(task, decide([task], [ended('0197a000-0000-7000-8000-000000000002', 'heads')], counting));
    expect(done.steps.get('flip')).toMatchObject({ status: 'completed', output: { side: 'heads' }, items: { total: 2, done: 2, running: 0 } });
    expect(done.status).toBe('completed');

    // A failed child fails the step as a sub-workflow's does.
    const failing = apply(taskOf([flip]), start(taskOf([flip]), counting));
    const child = failing.steps.get('flip')!.childTaskId!;
    const failed = apply(
      failing,
      decide([failing], [{ ...ended(child, ''), status: 'failed', output: undefined, error: { name: 'Boom', message: 'no' } }], counting),
    );
    expect(failed.steps.get('flip')).toMatchObject({ status: 'failed', error: { name: 'SubWorkflowFailed' } });
  });

  it('cancels a repeat with its task: the queued iteration is swept, and starts over from iteration 0 on a retry', () => {
    let task = started();
    task = apply(task, decide([task], [iteration(0, { state: 'running' })], options));
    const cancelled = cancel([task], options);
    expect(cancelled.sweeps).toEqual([expect.objectContaining({ stepId: 'poll', from: ['pending', 'queued'], to: 'cancelled' })]);
    const ended = apply(task, cancelled);
    expect(ended.steps.get('poll')!.status).toBe('cancelled');
    const retried = resume([ended], options);
    expect(retried.sweeps).toEqual([expect.objectContaining({ stepId: 'poll', delete: true })]);
  });
});

describe('the decider: a map over a sub-workflow (src/engine/modifiers/map-children.ts)', () => {
  /** Child ids in order of making: c01, c02, … */
  function counting() {
    let made = 0;
    return {
      ...options,
      newTaskId: () => {
        made += 1;
        return `0197a000-0000-7000-8000-0000000000${String(made).padStart(2, '0')}`;
      },
    };
  }
  const id = (n: number) => `0197a000-0000-7000-8000-0000000000${String(n).padStart(2, '0')}`;
  const each = (extra: Partial<PlanStep<'workflow'>> = {}): PlanStep => ({
    ...common('each'),
    kind: 'workflow',
    workflow: { name: 'enrich', version: 1 },
    forEach: '{{params.ids}}',
    input: { customer_id: '{{item}}', at: '{{index}}' },
    ...extra,
  });
  const ended = (task: TaskState, childTaskId: string, status: 'completed' | 'failed' | 'cancelled', output?: unknown): Report => ({
    type: 'child',
    taskId: task.id,
    stepId: 'each',
    childTaskId,
    status,
    ...(status === 'completed' ? { output } : { error: { name: 'Boom', message: `${childTaskId} broke` } }),
    at: NOW,
  });
  const items = (task: TaskState) => [...task.items.get('each')!.values()].sort((a, b) => a.item - b.item).map((item) => `${item.item}:${item.status}`);

  it('runs a child per item, at most max_parallel at once, each with its params; its output is their results in item order', () => {
    const ids = counting();
    const fresh = taskOf([each()], { ids: ['a', 'b', 'c'] }, '{{steps.each.output}}');
    const first = start(fresh, ids);
    expect(first.children).toMatchObject([
      { stepId: 'each', childTaskId: id(1), existing: false, params: { customer_id: 'a', at: 0 }, workflow: { name: 'enrich', version: 1 }, depth: 1 },
      { stepId: 'each', childTaskId: id(2), existing: false, params: { customer_id: 'b', at: 1 } },
    ]);
    let task = apply(fresh, first);
    expect(task.steps.get('each')).toMatchObject({ status: 'running', childTaskId: null, items: { total: 3, done: 0, running: 2 } });
    expect(items(task)).toEqual(['0:running', '1:running', '2:pending']);

    // The second child ends first: the third item's child starts in its place.
    const second = decide([task], [ended(task, id(2), 'completed', { n: 2 })], ids);
    expect(second.recorded).toEqual([true]);
    expect(second.children).toMatchObject([{ childTaskId: id(3), existing: false, params: { customer_id: 'c', at: 2 } }]);
    task = apply(task, second);
    expect(items(task)).toEqual(['0:running', '1:completed', '2:running']);
    // Its report again (the reconciler repeats an ended child's report), or an unknown child's: nothing.
    expect(decide([task], [ended(task, id(2), 'completed', { n: 9 })], ids).recorded).toEqual([false]);
    expect(decide([task], [ended(task, id(7), 'completed', {})], ids).recorded).toEqual([false]);

    task = apply(task, decide([task], [ended(task, id(3), 'completed', { n: 3 }), ended(task, id(1), 'completed', { n: 1 })], ids));
    expect(task.steps.get('each')).toMatchObject({ status: 'completed', output: [{ n: 1 }, { n: 2 }, { n: 3 }], items: { done: 3, running: 0 } });
    expect(task.status).toBe('completed');
  });

  it('under on_failure fail, a failed child fails the step: the running child is cancelled, the pending items skipped', () => {
    const ids = counting();
    let task = apply(taskOf([each()], { ids: ['a', 'b', 'c'] }), start(taskOf([each()], { ids: ['a', 'b', 'c'] }), ids));
    const failing = decide([task], [ended(task, id(1), 'failed')], ids);
    expect(failing.children).toEqual([]);
    expect(failing.cancelChildren).toEqual([id(2)]);
    task = apply(task, failing);
    expect(task.steps.get('each')).toMatchObject({
      status: 'failed',
      error: { name: 'SubWorkflowFailed', message: expect.stringMatching(/^item 0: child task /), details: { item: 0, task_id: id(1) } },
    });
    expect(items(task)).toEqual(['0:failed', '1:cancelled', '2:skipped']);
    expect(task.status).toBe('failed');
    // The cancelled child's own report comes later: its item is closed already.
    expect(decide([task], [ended(task, id(2), 'cancelled')], ids).recorded).toEqual([false]);
  });

  it('under on_failure continue, a failed or cancelled child is `{error}` in the output, and the others go on', () => {
    const ids = counting();
    const fresh = taskOf([each({ onFailure: 'continue', maxParallel: 3 })], { ids: ['a', 'b', 'c'] });
    let task = apply(fresh, start(fresh, ids));
    task = apply(task, decide([task], [ended(task, id(1), 'failed'), ended(task, id(2), 'cancelled'), ended(task, id(3), 'completed', 'ok')], ids));
    const step = task.steps.get('each')!;
    expect(step).toMatchObject({ status: 'completed', items: { total: 3, done: 3, failed: 2 } });
    expect(step.output).toEqual([
      { error: expect.objectContaining({ name: 'SubWorkflowFailed' }) },
      { error: expect.objectContaining({ name: 'SubWorkflowCancelled' }) },
      'ok',
    ]);
  });

  it('cancelled with its task, its running children are cancelled and its pending items too; they are listed as what the run waits on', () => {
    const ids = counting();
    const fresh = taskOf([each()], { ids: ['a', 'b', 'c'] });
    const task = apply(fresh, start(fresh, ids));
    expect(outstanding([task], ids).children).toMatchObject([
      { childTaskId: id(1), existing: true, params: { customer_id: 'a', at: 0 } },
      { childTaskId: id(2), existing: true, params: { customer_id: 'b', at: 1 } },
    ]);
    const cancelled = cancel([task], ids);
    expect(cancelled.cancelChildren).toEqual([id(1), id(2)]);
    const after = apply(task, cancelled);
    expect(after.steps.get('each')!.status).toBe('cancelled');
    expect(items(after)).toEqual(['0:cancelled', '1:cancelled', '2:cancelled']);
  });

  it('retried, it keeps its completed children and resumes the others (the same child ids); pending items start new ones', () => {
    const ids = counting();
    const fresh = taskOf([each()], { ids: ['a', 'b', 'c', 'd'] });
    let task = apply(fresh, start(fresh, ids));
    task = apply(task, decide([task], [ended(task, id(1), 'completed', 'A')], ids));
    // Items: 0 completed (c1), 1 running (c2), 2 running (c3), 3 pending. Then c2 fails: c3 is cancelled, 3 skipped.
    task = apply(task, decide([task], [ended(task, id(2), 'failed')], ids));
    expect(items(task)).toEqual(['0:completed', '1:failed', '2:cancelled', '3:skipped']);
    expect(task.status).toBe('failed');

    const retried = resume([task], ids);
    expect(retried.resumed).toEqual([task.id]);
    expect(retried.sweeps).toEqual([]);
    expect(retried.children).toMatchObject([
      { childTaskId: id(2), existing: true, params: { customer_id: 'b', at: 1 } },
      { childTaskId: id(3), existing: true, params: { customer_id: 'c', at: 2 } },
    ]);
    task = apply(task, retried);
    expect(items(task)).toEqual(['0:completed', '1:running', '2:running', '3:pending']);
    expect(task.items.get('each')!.get(1)).toMatchObject({ run: 2, output: null, error: null });
    expect(task.steps.get('each')).toMatchObject({ status: 'running', items: { total: 4, done: 1, running: 2 } });
    task = apply(task, decide([task], [ended(task, id(2), 'completed', 'B')], ids));
    // The last item never had a child: it gets a new one.
    expect(task.items.get('each')!.get(3)).toMatchObject({ status: 'running', childTaskId: id(4) });
    task = apply(task, decide([task], [ended(task, id(3), 'completed', 'C'), ended(task, id(4), 'completed', 'D')], ids));
    expect(task.steps.get('each')).toMatchObject({ status: 'completed', output: ['A', 'B', 'C', 'D'] });
  });

  it('a child started in the same decision as its task fails is not started at all (rather than cancelled before it exists)', () => {
    const ids = counting();
    const nap: PlanStep = { ...common('nap'), kind: 'sleep', sleep: { until: '{{params.at}}' } };
    const decision = start(taskOf([each(), nap], { ids: ['a', 'b'], at: 'soon' }), ids);
    expect(decision.children).toEqual([]);
    expect(decision.cancelChildren).toEqual([]);
    const task = apply(taskOf([each(), nap], { ids: ['a', 'b'], at: 'soon' }), decision);
    expect(task.status).toBe('failed');
    expect(items(task)).toEqual(['0:cancelled', '1:cancelled']);
  });

  it('refuses to nest deeper than SUBWORKFLOW_MAX_DEPTH, and completes over an empty list without a child', () => {
    const deep = { ...taskOf([each()], { ids: ['a'] }), depth: 2 };
    expect(run(deep).task.steps.get('each')).toMatchObject({ status: 'failed', error: { name: 'SubWorkflowTooDeep' } });
    const { task, decision } = run(taskOf([each()], { ids: [] }));
    expect(decision.children).toEqual([]);
    expect(task.steps.get('each')).toMatchObject({ status: 'completed', output: [] });
  });
});

describe('the decider: an exit handler (on_exit, src/engine/modifiers/on-exit.ts)', () => {
  const notify = (id = 'notify', dependsOn: string[] = [], extra: Partial<PlanStep<'tool'>> = {}) =>
    tool(id, dependsOn, { onExit: true, input: { message: 'ended {{task.status}}: {{task.error.message}}', a: '{{steps.a.output}}' }, ...extra });
  const exitStatuses = (task: TaskState) => ({ task: task.status, exit: task.exitStatus });

  it('runs once the run completed, seeing how it ended and the main steps; the task ends completed with its result after it', () => {
    const plan = [tool('a'), notify()];
    let task = run(taskOf(plan, {}, { done: '{{steps.a.output}}' })).task;
    expect(status(task)).toEqual({ a: 'queued', notify: 'pending' });
    const ending = decide([task], [result('a', 'completed')], options);
    expect(ending.jobs).toMatchObject([{ stepId: 'notify', input: { message: 'ended completed: ', a: { from: 'a' } } }]);
    expect(ending.ended).toEqual([]);
    task = apply(task, ending);
    expect(exitStatuses(task)).toEqual({ task: 'running', exit: 'completed' });
    expect(task.result).toEqual({ done: { from: 'a' } });
    // A report about a main step now counts for nothing; the exit step's does.
    const done = decide([task], [result('notify', 'failed')], options);
    task = apply(task, done);
    expect(exitStatuses(task)).toEqual({ task: 'completed', exit: null });
    expect(done.ended).toMatchObject([{ status: 'completed' }]);
    expect(task.steps.get('notify')!.status).toBe('failed');
    expect(done.history.map((event) => event.type)).toContain('exit_ended');
  });

  it('runs after a failure, seeing the error; the task ends failed with the main error, whatever the handler does', () => {
    const plan = [tool('a'), tool('b', ['a']), notify('notify'), notify('after', ['notify'])];
    let task = run(taskOf(plan), [result('a', 'completed')]).task;
    const failing = decide([task], [result('b', 'failed')], options);
    expect(failing.jobs).toMatchObject([{ stepId: 'notify', input: { message: 'ended failed: b broke' } }]);
    task = apply(task, failing);
    expect(exitStatuses(task)).toEqual({ task: 'running', exit: 'failed' });
    expect(task.error).toMatchObject({ step: 'b', name: 'Boom' });
    task = apply(task, decide([task], [result('notify', 'completed')], options));
    expect(status(task)).toMatchObject({ notify: 'completed', after: 'queued' });
    task = apply(task, decide([task], [result('after', 'completed')], options));
    expect(exitStatuses(task)).toEqual({ task: 'failed', exit: null });
    expect(task.error).toMatchObject({ step: 'b', name: 'Boom' });
  });

  it('runs when the task is cancelled (task.status cancelled); a second cancel stops it, and the task ends cancelled', () => {
    const plan = [tool('a'), notify()];
    let task = run(taskOf(plan)).task;
    const cancelled = cancel([task], options);
    expect(cancelled.cancelled).toEqual([task.id]);
    expect(cancelled.jobs).toMatchObject([{ stepId: 'notify', input: { message: 'ended cancelled: task was cancelled' } }]);
    task = apply(task, cancelled);
    expect(exitStatuses(task)).toEqual({ task: 'running', exit: 'cancelled' });
    expect(task.steps.get('a')!.status).toBe('cancelled');
    // Bounded: a timer at EXIT_CANCEL_TIMEOUT_MS, which goes when the handler ends.
    expect(cancelled.timers).toEqual([{ taskId: task.id, run: 1, stepId: 'notify', at: new Date(NOW.getTime() + DEFAULT_LIMITS.EXIT_CANCEL_TIMEOUT_MS) }]);
    // The reconciler makes it again where Redis lost it (with the exit step's job).
    expect(outstanding([task], options).timers).toMatchObject([{ stepId: 'notify' }]);
    const again = cancel([task], options);
    expect(again.dropJobs).toContainEqual({ taskId: task.id, run: 1, stepId: 'notify' });
    const stopped = apply(task, again);
    expect(exitStatuses(stopped)).toEqual({ task: 'cancelled', exit: null });
    expect(stopped.steps.get('notify')!.status).toBe('cancelled');
    expect(again.history.map((event) => event.type)).toContain('exit_stopped');

    // Its time up, the handler is stopped as by a second cancel, and workers are told.
    const late = decide([task], [{ type: 'wake', taskId: task.id, run: 1, stepId: 'notify', at: NOW }], options);
    expect(late.recorded).toEqual([true]);
    expect(late.stops).toEqual([{ taskId: task.id, run: 1 }]);
    expect(late.history.map((event) => event.type)).toContain('exit_timed_out');
    expect(exitStatuses(apply(task, late))).toEqual({ task: 'cancelled', exit: null });
    // A failed run's exit handler has no such bound.
    const failing = run(taskOf(plan), [result('a', 'failed')]).task;
    expect(decide([failing], [{ type: 'wake', taskId: task.id, run: 1, stepId: 'notify', at: NOW }], options).recorded).toEqual([false]);
  });

  it("a map in an exit step sees how the run ended in each item's input, with its item", () => {
    const each = notify('each', [], { forEach: [1, 2], input: { message: '{{task.status}} {{item}}' } });
    const { decision } = run(taskOf([tool('a'), each]), [result('a', 'failed')]);
    expect(decision.jobs.map((job) => job.input)).toEqual([{ message: 'failed 1' }, { message: 'failed 2' }]);
  });

  it('skips an exit step whose `when` over how the run ended is false; a retried task runs it again from pending', () => {
    const plan = [tool('a'), notify('on_failure', [], { when: "task.status == 'failed'" })];
    let task = run(taskOf(plan), [result('a', 'completed')]).task;
    expect(exitStatuses(task)).toEqual({ task: 'completed', exit: null });
    expect(task.steps.get('on_failure')).toMatchObject({ status: 'skipped', reason: 'condition' });

    task = run(taskOf(plan), [result('a', 'failed')]).task;
    expect(exitStatuses(task)).toEqual({ task: 'running', exit: 'failed' });
    task = apply(task, decide([task], [result('on_failure', 'completed')], options));
    expect(task.status).toBe('failed');
    const retried = resume([task], options);
    task = apply(task, retried);
    expect(exitStatuses(task)).toEqual({ task: 'queued', exit: null });
    expect(status(task)).toEqual({ a: 'queued', on_failure: 'pending' });
  });
});

describe("the step's state machine (src/engine/lifecycle.ts)", () => {
  it('refuses every move it does not list', () => {
    for (const from of STEP_STATUSES) {
      for (const to of STEP_STATUSES) {
        const allowed = from === to || STEP_TRANSITIONS[from].includes(to);
        if (allowed) expect(() => assertStepMove('test', from, to)).not.toThrow();
        else expect(() => assertStepMove('test', from, to), `${from} -> ${to}`).toThrow(IllegalTransitionError);
      }
    }
  });

  afterAll(() => {
    // Every move the machine allows is one the decider made in the tests above, through the
    // applier (running → pending and running → queued: a retry while a step still runs, a lost
    // job; the ledger alone moves queued → running, by a worker's claim).
    const allowed = STEP_STATUSES.flatMap((from) => STEP_TRANSITIONS[from].map((to) => `${from}>${to}`));
    const byClaim = new Set(['queued>running']);
    const missing = allowed.filter((move) => !seen.has(move) && !byClaim.has(move));
    expect(missing).toEqual([]);
  });

  it('(the moves seen are checked once every test above has run)', () => {
    expect(seen.size).toBeGreaterThan(0);
  });
});
