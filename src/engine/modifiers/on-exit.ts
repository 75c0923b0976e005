import type { Problem } from '../../lib/errors.js';
import type { JsonSchema } from '../catalog.js';
import type { WorkflowDefinition, WorkflowStep } from '../workflow-definition.js';
import type { StepModifier } from './modifier.js';

/**
 * An exit handler (a workflow's `on_exit`): steps that run once the run has ended, whatever its
 * outcome, after any compensations (Argo's onExit, Temporal's finally). The checker and the
 * compiler see them as steps after the definition's own (withExitSteps), each reading every main
 * step (their outputs, null for those that did not run) and `{{task.status}}`/`{{task.error}}`;
 * in the plan they carry `onExit` and depend only on each other. The decider (decide.ts) runs them
 * once the main graph has ended: the run's outcome waits in the task's exit_status (the task shows
 * `running`) and is what the task ends with once they are done. They never change it.
 *
 * Only tool and sub-workflow steps (with their modifiers) handle an exit: waiting for a person or
 * a time, or ending the run again, has no meaning once it has ended.
 */

declare module '../plan.js' {
  interface StepModifiers {
    /** A step of the workflow's exit handler. */
    onExit?: true;
  }
}

/** What `{{task…}}` gives an exit step: the status its run ended with, and its error (null when it completed). */
export const EXIT_TASK_SCHEMA: JsonSchema = {
  type: 'object',
  properties: { status: { type: 'string', enum: ['completed', 'failed', 'cancelled'] }, error: { type: ['object', 'null'] } },
};

/** The exit steps of the definitions withExitSteps made (objects, so a hook given a step knows it for one). */
const exitSteps = new WeakSet<WorkflowStep>();

export function isExitStep(step: WorkflowStep): boolean {
  return exitSteps.has(step);
}

/**
 * The definition as the checker and the compiler see it: its steps, then its exit steps (at
 * `steps[n + k]`, which exitPath maps back to `on_exit[k]`).
 */
export function withExitSteps(definition: WorkflowDefinition): WorkflowDefinition {
  if (!definition.on_exit) return definition;
  const exits = definition.on_exit.map((step) => ({ ...step }));
  for (const step of exits) exitSteps.add(step);
  return { ...definition, steps: [...definition.steps, ...exits] };
}

/** A problem's path as the definition writes it: `steps[n + k]…` is `on_exit[k]…`. */
export function exitPath(problem: Problem, mainSteps: number): Problem {
  const match = /^steps\[(\d+)\]/.exec(problem.path);
  if (!match || Number(match[1]) < mainSteps) return problem;
  return { ...problem, path: `on_exit[${Number(match[1]) - mainSteps}]${problem.path.slice(match[0].length)}` };
}

/** The kinds an exit step may not be. */
const OTHER_KINDS = ['sleep', 'wait', 'terminate'] as const;

export const onExit: StepModifier = {
  check(step, index, context) {
    if (!isExitStep(step)) return;
    for (const kind of OTHER_KINDS)
      if (step[kind] !== undefined) context.add(['steps', index, kind], `an on_exit step runs a tool or a sub-workflow, not a ${kind} step`);
    if (step.compensate !== undefined) context.add(['steps', index, 'compensate'], 'an on_exit step is not compensated (the run has ended)');
    for (const [at, dep] of step.depends_on.entries()) {
      if (!context.definition.on_exit?.some((other) => other.id === dep))
        context.add(
          ['steps', index, 'depends_on', at],
          `an on_exit step depends only on on_exit steps (${dep} is a main step: every one has ended when it runs)`,
        );
    }
  },

  locals: (step) => (isExitStep(step) ? { task: EXIT_TASK_SCHEMA } : undefined),

  compile: (step) => (isExitStep(step) ? { onExit: true } : {}),
};
