import { describe, expect, it } from 'vitest';
import { checkWorkflow } from '../../src/engine/check.js';
import { freshState, start } from '../../src/engine/decide.js';
import type { PlanStep } from '../../src/engine/plan.js';
import { isKind, jobTool, KINDS, kindOf, STEP_KINDS } from '../../src/engine/registry.js';
import { type WorkflowStep, workflowDefinitionSchema } from '../../src/engine/workflow-definition.js';
import { DEFAULT_LIMITS } from '../../src/lib/limits.js';
import { stepViewSchema } from '../../src/tasks/task-view.js';
import { catalog } from './stored-plan-fixture.js';

/**
 * The registry (src/engine/registry.ts): what it says of every kind holds for each one listed,
 * so a new kind is held to it by its line in KINDS and its row in `examples` below.
 */

/** A step of each kind, as a definition writes it (the catalog is stored-plan-fixture.ts's). */
const examples: Record<string, Record<string, unknown>> = {
  tool: { tool: 'echo' },
  workflow: { workflow: 'child' },
  sleep: { sleep: { ms: 5 } },
  wait: { wait: { signal: 'go' } },
  terminate: { terminate: { status: 'completed' } },
};

const NOW = new Date('2026-12-01T10:00:00.000Z');
const options = { limits: DEFAULT_LIMITS, now: NOW, newTaskId: () => 'child' };
const common = {
  dependsOn: [],
  onFailure: 'fail' as const,
  input: {},
  options: { retry: { attempts: 1, backoff: { type: 'fixed' as const, delay_ms: 0 } }, timeout_ms: 0 },
};

describe('the registry of step kinds and modifiers', () => {
  it('has an example of every kind here', () => {
    expect(Object.keys(examples).sort()).toEqual([...STEP_KINDS].sort());
  });

  it('names each kind after its definition field, and the API lists each with what it does', () => {
    for (const kind of STEP_KINDS) {
      expect(kindOf({ id: 'a', ...examples[kind] } as WorkflowStep)).toBe(kind);
      expect(KINDS[kind].name).toBe(kind);
    }
    expect(kindOf({ id: 'a', ...examples.tool, ...examples.sleep } as WorkflowStep)).toBeUndefined();
    expect(stepViewSchema.shape.kind.options).toEqual(STEP_KINDS);
    expect(stepViewSchema.shape.kind.description).toBe(
      'tool: runs a tool; workflow: runs a sub-workflow as a child task; sleep: waits; wait: waits for a signal or an approval; terminate: ends the run.',
    );
  });

  it('takes for_each on a tool or sub-workflow step only, and refuses it on every other kind by its name', () => {
    for (const kind of STEP_KINDS) {
      const definition = workflowDefinitionSchema.parse({ name: 'mapped', steps: [{ id: 'a', ...examples[kind], for_each: [1, 2], max_parallel: 2 }] });
      const problems = checkWorkflow(definition, catalog).filter((problem) => /for_each|max_parallel/.test(problem.path));
      if (kind === 'tool' || kind === 'workflow') expect(problems).toEqual([]);
      else
        expect(problems).toEqual([
          { path: 'steps[0].for_each', message: `a ${KINDS[kind].label} step has no for_each` },
          { path: 'steps[0].max_parallel', message: `a ${KINDS[kind].label} step has no max_parallel` },
        ]);
    }
  });

  it('runs a plan step as its kind wrapped in the modifiers that go with it: a sleep carrying forEach (no check lets one through) sleeps', () => {
    const steps: PlanStep[] = [
      { id: 'nap', kind: 'sleep', sleep: { ms: 60_000 }, forEach: [1, 2], ...common },
      { id: 'each', kind: 'tool', tool: 'echo', forEach: [1, 2], ...common },
    ];
    const task = freshState({ id: 't', createdAt: NOW, taskType: 'w', params: {}, callback: false, owner: '', depth: 0, parent: null }, { steps });
    const decision = start(task, options);
    expect(decision.timers.map((timer) => timer.stepId)).toEqual(['nap']);
    expect(decision.newItems.map((item) => [item.stepId, item.item])).toEqual([
      ['each', 0],
      ['each', 1],
    ]);
  });

  it('says which tool queue runs a step: only a tool step has one', () => {
    const tool: PlanStep = { id: 'a', kind: 'tool', tool: 'echo', ...common };
    const sleep: PlanStep = { id: 'b', kind: 'sleep', sleep: { ms: 1 }, ...common };
    expect(jobTool(tool)).toBe('echo');
    expect(jobTool(sleep)).toBeUndefined();
    expect([tool, sleep].filter((step) => isKind(step, 'sleep')).map((step) => step.sleep)).toEqual([{ ms: 1 }]);
  });
});
