import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { finishPlan, initialSteps, type StepPlan, type TaskPlan } from '../../src/engine/plan.js';
import { readyStep } from '../../src/engine/step-input.js';
import { taskEnding } from '../../src/engine/task-output.js';
import { type RecordedResult, type ResultTransitions, resultTransitions } from '../../src/engine/transitions.js';
import type { FinishedStep, ReadyStep } from '../../src/engine/types.js';

const OPTIONS = { retry: { attempts: 1, backoff: { type: 'fixed' as const, delay_ms: 0 } }, timeout_ms: 1_000 };

interface StepSpec {
  deps: number[];
  onFailure: 'fail' | 'continue';
  /** How the step's one attempt ends. */
  outcome: 'completed' | 'failed';
}

/** Up to 12 steps; step i depends only on steps before it, so the graph is acyclic by construction. */
function dag(outcome: fc.Arbitrary<StepSpec['outcome']>): fc.Arbitrary<StepSpec[]> {
  return fc
    .array(
      fc.record({
        parents: fc.array(fc.nat(), { maxLength: 4 }),
        onFailure: fc.constantFrom('fail' as const, 'continue' as const),
        outcome,
      }),
      { minLength: 1, maxLength: 12 },
    )
    .map((steps) => steps.map(({ parents, ...step }, i) => ({ ...step, deps: i === 0 ? [] : [...new Set(parents.map((p) => p % i))] })));
}

const fatal = (spec: StepSpec) => spec.outcome === 'failed' && spec.onFailure === 'fail';

function workflowPlan(specs: StepSpec[]): TaskPlan {
  return finishPlan({
    taskType: 'dag',
    workflow: { name: 'dag', version: 1, outputTemplate: null },
    params: { seed: 7 },
    steps: specs.map(
      (spec, i): StepPlan => ({
        id: `s${i}`,
        tool: 'echo',
        dependsOn: spec.deps.map((dep) => `s${dep}`),
        dependents: [],
        onFailure: spec.onFailure,
        // Each input names its dependencies' outputs, so input resolution is exercised on the way.
        inputTemplate: { seed: '{{params.seed}}', from: Object.fromEntries(spec.deps.map((dep) => [`s${dep}`, `{{steps.s${dep}.output}}`])) },
        input: null,
        options: OPTIONS,
      }),
    ),
  });
}

/**
 * One task's run, with the counters PostgreSQL keeps (remaining_deps per step, steps_remaining
 * per task) and nothing else: every decision comes from the engine.
 */
class SimulatedRun {
  readonly remainingDeps: Map<string, number>;
  stepsRemaining: number;
  status: 'running' | 'completed' | 'failed' = 'running';
  readonly endings: ReturnType<typeof taskEnding>[] = [];
  failure?: ResultTransitions['failed'][number]['error'];
  readonly finished = new Map<string, FinishedStep>();
  /** Step ids in the order they became ready; a step listed twice became ready twice. */
  readonly readied: string[] = [];
  readonly readySteps = new Map<string, ReadyStep>();
  /** Violations seen along the way, reported at the end with the failing example. */
  readonly problems: string[] = [];
  running: ReadyStep[] = [];
  /** Ids of this run's results in the order they were recorded. */
  readonly recorded: string[] = [];
  endedWhenFinished?: number;
  readiedWhenFailed?: number;

  constructor(
    readonly id: string,
    readonly specs: StepSpec[],
    readonly plan: TaskPlan = workflowPlan(specs),
  ) {
    this.remainingDeps = new Map(plan.steps.map((step) => [step.id, step.dependsOn.length]));
    this.stepsRemaining = plan.steps.length;
    for (const step of initialSteps(plan)) this.ready(step);
  }

  private spec(stepId: string): StepSpec {
    return this.specs[Number(stepId.slice(1))]!;
  }

  private ready(step: ReadyStep): void {
    this.readied.push(step.stepId);
    this.readySteps.set(step.stepId, step);
    this.running.push(step);
    for (const dep of this.plan.steps.find((s) => s.id === step.stepId)!.dependsOn) {
      const done = this.finished.get(dep);
      if (!done || !(done.status === 'completed' || this.spec(dep).onFailure === 'continue')) this.problems.push(`${step.stepId} ready before ${dep} resolved`);
    }
  }

  /** Records the step's result, as the UPDATE of the step row does, and hands it to the engine. */
  finish(stepId: string): RecordedResult {
    const spec = this.spec(stepId);
    const plan = this.plan.steps.find((step) => step.id === stepId)!;
    this.running = this.running.filter((step) => step.stepId !== stepId);
    this.recorded.push(stepId);
    const error = { name: 'Boom', message: `${stepId} failed` };
    this.finished.set(
      stepId,
      spec.outcome === 'completed' ? { status: 'completed', output: { by: stepId }, error: null } : { status: 'failed', output: null, error },
    );
    return {
      taskId: this.id,
      stepId,
      status: spec.outcome,
      ...(spec.outcome === 'failed' ? { error } : {}),
      onFailure: plan.onFailure,
      dependents: plan.dependents,
    };
  }

  apply(decided: ResultTransitions): void {
    for (const failure of decided.failed.filter((f) => f.taskId === this.id)) {
      if (this.status !== 'running') this.problems.push(`failed while ${this.status}`);
      this.status = 'failed';
      this.failure = failure.error;
      this.readiedWhenFailed = this.readied.length;
      this.running = [];
    }
    for (const { stepId, count } of decided.resolved.filter((entry) => entry.taskId === this.id)) {
      const left = this.remainingDeps.get(stepId)! - count;
      this.remainingDeps.set(stepId, left);
      if (left < 0) this.problems.push(`${stepId} resolved more often than it has dependencies`);
      if (left === 0) {
        const step = this.plan.steps.find((s) => s.id === stepId)!;
        this.ready(
          readyStep(
            { step_id: step.id, tool: step.tool, input_template: step.inputTemplate, input: step.input, options: step.options, depends_on: step.dependsOn },
            { params: this.plan.params, steps: this.finished },
          ),
        );
      }
    }
    for (const { count } of decided.finished.filter((entry) => entry.taskId === this.id)) {
      this.stepsRemaining -= count;
      if (this.stepsRemaining <= 0) {
        const ending = taskEnding(
          { params: this.plan.params, output_template: null, workflow_name: 'dag' },
          [...this.finished].map(([step_id, step]) => ({ step_id, ...step })),
        );
        this.endings.push(ending);
        this.status = ending.status;
        this.endedWhenFinished = this.finished.size;
      }
    }
  }
}

/**
 * Runs several tasks at once: each round, a few running steps (from any of the tasks, in any
 * order) finish in one batch, as one flush() would record them.
 */
function simulate(dags: StepSpec[][], g: fc.GeneratorValue): SimulatedRun[] {
  const runs = dags.map((specs, k) => new SimulatedRun(`t${k}`, specs));
  for (;;) {
    const running = runs.flatMap((run) => (run.status === 'running' ? run.running.map((step) => ({ run, stepId: step.stepId })) : []));
    if (running.length === 0) return runs;
    const size = g(fc.integer, { min: 1, max: Math.min(4, running.length) });
    const batch = Array.from({ length: size }, () => running.splice(g(fc.integer, { min: 0, max: running.length - 1 }), 1)[0]!);
    const decided = resultTransitions(batch.map(({ run, stepId }) => run.finish(stepId)));
    for (const run of runs) run.apply(decided);
  }
}

describe('engine: a run driven by resultTransitions alone (property-based)', () => {
  it('with every step completing, each step becomes ready once, after its dependencies, and the task ends once, after the last step', () => {
    fc.assert(
      fc.property(fc.array(dag(fc.constant('completed')), { minLength: 1, maxLength: 3 }), fc.gen(), (dags, g) => {
        for (const run of simulate(dags, g)) {
          expect(run.problems).toEqual([]);
          expect([...run.readied].sort()).toEqual(run.plan.steps.map((step) => step.id).sort());
          expect(run.endings).toEqual([{ status: 'completed', result: Object.fromEntries(run.plan.steps.map((step) => [step.id, { by: step.id }])) }]);
          expect(run.endedWhenFinished).toBe(run.plan.steps.length);
          for (const step of run.plan.steps) {
            const ready = run.readySteps.get(step.id)!;
            expect(ready.input).toEqual({ seed: 7, from: Object.fromEntries(step.dependsOn.map((dep) => [dep, { by: dep }])) });
            expect(ready.dependencies).toEqual(Object.fromEntries(step.dependsOn.map((dep) => [dep, { status: 'completed', output: { by: dep } }])));
          }
        }
      }),
      { numRuns: 300 },
    );
  });

  it('a failure under on_failure=fail fails the task with that step, and nothing becomes ready afterwards', () => {
    const outcome = fc.constantFrom('completed' as const, 'completed' as const, 'failed' as const);
    fc.assert(
      fc.property(fc.array(dag(outcome), { minLength: 1, maxLength: 3 }), fc.gen(), (dags, g) => {
        for (const run of simulate(dags, g)) {
          expect(run.problems).toEqual([]);
          expect(new Set(run.readied).size).toBe(run.readied.length);
          if (!run.specs.some(fatal)) continue;
          const first = run.recorded.find((stepId) => fatal(run.specs[Number(stepId.slice(1))]!));
          expect(run.status).toBe('failed');
          expect(run.endings).toEqual([]);
          expect(run.failure).toEqual({ step: first, name: 'Boom', message: `${first} failed` });
          // Ready steps are decided per batch: none may come from the batch that failed the task.
          expect(run.readied).toHaveLength(run.readiedWhenFailed!);
        }
      }),
      { numRuns: 300 },
    );
  });

  it('with on_failure=continue, dependents of failed steps still run and see the failure', () => {
    const outcome = fc.constantFrom('completed' as const, 'failed' as const);
    const forgiving = dag(outcome).map((specs) => specs.map((spec) => ({ ...spec, onFailure: 'continue' as const })));
    fc.assert(
      fc.property(fc.array(forgiving, { minLength: 1, maxLength: 3 }), fc.gen(), (dags, g) => {
        for (const run of simulate(dags, g)) {
          expect(run.problems).toEqual([]);
          expect([...run.readied].sort()).toEqual(run.plan.steps.map((step) => step.id).sort());
          expect(run.endings.map((ending) => ending.status)).toEqual(['completed']);
          for (const step of run.plan.steps) {
            const expected = Object.fromEntries(
              step.dependsOn.map((dep) =>
                run.specs[Number(dep.slice(1))]!.outcome === 'completed'
                  ? [dep, { status: 'completed', output: { by: dep } }]
                  : [dep, { status: 'failed', error: { name: 'Boom', message: `${dep} failed` } }],
              ),
            );
            expect(run.readySteps.get(step.id)!.dependencies).toEqual(expected);
          }
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('resultTransitions', () => {
  const result = (stepId: string, fields: Partial<RecordedResult> = {}): RecordedResult => ({
    taskId: 't',
    stepId,
    status: 'completed',
    onFailure: 'fail',
    dependents: [],
    ...fields,
  });

  it('counts a dependent once per resolved dependency and a task once per finished step', () => {
    expect(
      resultTransitions([result('a', { dependents: ['c'] }), result('b', { dependents: ['c', 'd'] }), result('x', { taskId: 'u', dependents: ['c'] })]),
    ).toEqual({
      failed: [],
      resolved: [
        { taskId: 't', stepId: 'c', count: 2 },
        { taskId: 't', stepId: 'd', count: 1 },
        { taskId: 'u', stepId: 'c', count: 1 },
      ],
      finished: [
        { taskId: 't', count: 2 },
        { taskId: 'u', count: 1 },
      ],
    });
  });

  it('a cancelled attempt fails the task whatever the policy; a failure without an error gets a generic one', () => {
    expect(resultTransitions([result('a', { status: 'cancelled', onFailure: 'continue', error: { name: 'Cancelled', message: 'stop' } })]).failed).toEqual([
      { taskId: 't', result: 0, error: { step: 'a', name: 'Cancelled', message: 'stop' } },
    ]);
    expect(resultTransitions([result('k'), result('a', { status: 'failed' })]).failed).toEqual([
      { taskId: 't', result: 1, error: { step: 'a', name: 'Error', message: 'step failed' } },
    ]);
  });

  it("a task's failure voids its other results in the batch, and only its own", () => {
    const decided = resultTransitions([
      result('a', { dependents: ['c'] }),
      result('b', { status: 'failed', dependents: ['c'] }),
      result('c', { status: 'failed' }),
      result('x', { taskId: 'u', dependents: ['y'] }),
    ]);
    expect(decided).toEqual({
      failed: [{ taskId: 't', result: 1, error: { step: 'b', name: 'Error', message: 'step failed' } }],
      resolved: [{ taskId: 'u', stepId: 'y', count: 1 }],
      finished: [{ taskId: 'u', count: 1 }],
    });
  });
});
