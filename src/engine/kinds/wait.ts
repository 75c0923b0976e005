import { schemaProblem, schemaProblems } from '../../lib/json-schema.js';
import type { JsonSchema } from '../catalog.js';
import type { PlanStep } from '../plan.js';
import type { Report, StepState } from '../state.js';
import { DEFAULT_RETRY_FOR_KINDS } from '../types.js';
import type { WaitSpec, WorkflowStep } from '../workflow-definition.js';
import { type Decider, endUnstarted, outstandingTimer, refuseFields, type StepKindModule } from './kind.js';

/**
 * A wait step waits for someone: a signal sent with an API key (POST /tasks/:id/signals/:name,
 * its payload checked against `schema`), or a person's decision through a signed link
 * (`approval`, src/lib/approval-links.ts; the API serves the page). Like a sleep it holds no
 * worker and no active job: PostgreSQL records it `waiting` (reason `signal` or `approval`), and
 * a delayed timer job stands for its timeout, made again by the reconciler if Redis lost it.
 *
 * The first signal (or decision) recorded completes it: its payload (an approval: the decision,
 * comment and form fields, and who decided) is the step's output, which later steps branch on
 * with `when`. A later one is refused (the API answers 409). The timeout follows `on_timeout`;
 * the task's cancel ends the wait.
 *
 * A signal that comes while its step is still pending (its task runs) is kept, one per step: in
 * the step's output column, `{buffered_signal: {payload, by, via, at}}`, which nothing reads as
 * an output (only finished steps' outputs are read, and a skip or a settle clears it). The step
 * takes it when it starts waiting: checked against its schema then, it completes the step, or
 * fails it (InvalidSignalPayload). Approvals are decided once they wait, as before.
 */

declare module '../plan.js' {
  interface StepKinds {
    /** The signal it answers to (an approval's: its step id unless named) and how long it waits. */
    wait: { wait: PlanWait };
  }
}

/** A wait step as its task runs it: the signal it answers to, always named. */
export interface PlanWait {
  signal: string;
  /** JSON Schema of a signal's payload. */
  schema?: Record<string, unknown>;
  approval?: { approvers?: string[]; form?: Record<string, unknown>; show?: string[] };
  timeout_ms?: number;
  on_timeout: 'fail' | 'continue';
}

export type WaitStep = PlanStep<'wait'>;

/** The signal a wait step answers to: its own name, or an approval's step id. */
export function signalName(step: Pick<WorkflowStep, 'id'> & { wait?: WaitSpec }): string {
  return step.wait?.signal ?? step.id;
}

/** What an approval's decision may be, and what a timeout under on_timeout continue records. */
export const APPROVAL_DECISIONS = ['approved', 'rejected'] as const;

/** The fields of an approval's form: a flat object of text, numbers, yes/no and choices (what a page without scripts can ask). */
const FORM_FIELD_TYPES = new Set(['string', 'number', 'integer', 'boolean']);

function formProblem(form: Record<string, unknown>): string | undefined {
  if (form.type !== 'object' || typeof form.properties !== 'object' || form.properties === null)
    return 'a form is an object schema: {"type": "object", "properties": {…}}';
  for (const [name, field] of Object.entries(form.properties as Record<string, Record<string, unknown>>)) {
    if (typeof field !== 'object' || field === null) return `form field ${name} is not a schema`;
    if (!FORM_FIELD_TYPES.has(String(field.type)) && !Array.isArray(field.enum))
      return `form field ${name} must be of type string, number, integer or boolean, or have an enum`;
  }
  return schemaProblem(form);
}

export const waitKind: StepKindModule<'wait'> = {
  name: 'wait',
  label: 'wait',
  summary: 'waits for a signal or an approval',

  check(step, index, context) {
    refuseFields(step, index, context, 'wait', ['version', 'retry', 'timeout_ms', 'concurrency', 'rate_limit']);
    const spec = step.wait;
    const at = (...path: (string | number)[]) => ['steps', index, 'wait', ...path];
    if (spec.approval === undefined && spec.signal === undefined) context.add(at(), 'a wait step names the signal it waits for, or is an approval');
    if (spec.approval !== undefined && spec.schema !== undefined)
      context.add(at('schema'), "an approval's payload is its decision: ask for fields with approval.form");
    if (spec.schema !== undefined) {
      const problem = schemaProblem(spec.schema);
      if (problem) context.add(at('schema'), `not a usable JSON Schema: ${problem}`);
    }
    if (spec.approval?.form !== undefined) {
      const problem = formProblem(spec.approval.form);
      if (problem) context.add(at('approval', 'form'), problem);
    }
    spec.approval?.show?.forEach((field, position) => {
      if (!(field in step.input)) context.add(at('approval', 'show', position), `the step's input has no field ${field} to show`);
    });
    const approvers = spec.approval?.approvers ?? [];
    if (new Set(approvers).size !== approvers.length) context.add(at('approval', 'approvers'), 'an approver is named twice');
    // A signal reaches one step: two wait steps may not answer to the same name.
    const name = signalName(step);
    const first = context.definition.steps.findIndex((other) => other.wait !== undefined && signalName(other) === name);
    if (first !== index) context.add(at(spec.signal !== undefined ? 'signal' : 'approval'), `steps[${first}] already waits for signal ${name}`);
  },

  outputSchema(step) {
    const spec = step.wait;
    if (spec.approval !== undefined) {
      return {
        type: 'object',
        properties: {
          decision: { type: 'string', enum: [...APPROVAL_DECISIONS, 'timed_out'] },
          approved: { type: 'boolean' },
          comment: { type: 'string' },
          fields: (spec.approval.form as JsonSchema | undefined) ?? { type: 'object' },
          by: { type: 'string' },
          decided_at: { type: 'string' },
          timed_out: { type: 'boolean' },
        },
        additionalProperties: false,
      };
    }
    if (spec.schema === undefined) return undefined;
    if (spec.on_timeout === 'fail') return spec.schema as JsonSchema;
    return { anyOf: [spec.schema as JsonSchema, { type: 'object', properties: { timed_out: { type: 'boolean' } } }] };
  },

  // A wait with a timeout has its timer; without one, nothing of it is in Redis until its signal.
  waitsWithoutJob: (status, reason, hasTimer) => status === 'waiting' && (reason === 'signal' || reason === 'approval') && !hasTimer,

  compile(step) {
    return { kind: 'wait', wait: { ...step.wait, signal: signalName(step) }, options: DEFAULT_RETRY_FOR_KINDS };
  },

  ready(decider, step, state) {
    // The input is what the wait is about: an approval page shows it.
    const input = decider.resolve(step, step.input);
    if (!input.ok) {
      if ('error' in input) decider.fail(step, input.error);
      return;
    }
    // A signal kept while the step was pending is in its output column.
    if (state.output === undefined) return decider.need('output', step.id);
    const buffered = bufferedSignal(state.output);
    const spec = step.wait;
    const wakeAt = spec.timeout_ms !== undefined && !buffered ? new Date(decider.now.getTime() + spec.timeout_ms) : undefined;
    decider.setStep(step, {
      status: 'waiting',
      reason: spec.approval !== undefined ? 'approval' : 'signal',
      input: input.value,
      started_at: decider.now.toISOString(),
      run: decider.task.run,
      ...(wakeAt ? { wake_at: wakeAt.toISOString() } : {}),
    });
    if (wakeAt) decider.decision.timers.push({ taskId: decider.task.id, run: decider.task.run, stepId: step.id, at: wakeAt });
    if (buffered) takeBuffered(decider, step, buffered);
  },

  report(decider, step, state, report) {
    if (report.type === 'signal' && state.status === 'pending') return buffer(decider, step, state, report);
    if (state.status !== 'waiting' || (state.reason !== 'signal' && state.reason !== 'approval')) return false;
    const spec = step.wait;
    if (report.type === 'wake') {
      decider.record({ type: 'wait_timed_out', stepId: step.id, at: report.at, data: { on_timeout: spec.on_timeout } });
      decider.setStep(step, { reason: null });
      if (spec.on_timeout === 'continue') completeTimedOut(decider, step, report.at);
      else decider.fail(step, { name: 'WaitTimedOut', message: `no ${describe(step)} came within ${spec.timeout_ms} ms`, retryable: false });
      return true;
    }
    if (report.type !== 'signal' || report.signal !== spec.signal) return false;
    // Its timeout's timer is no longer wanted (in a flow, it would hold the run's root until then).
    if (state.wakeAt) decider.decision.dropJobs.push({ taskId: decider.task.id, run: decider.task.run, stepId: step.id });
    if (spec.approval === undefined) {
      decider.record({ type: 'signal_received', stepId: step.id, at: report.at, data: { signal: report.signal, by: report.by, via: report.via } });
      decider.setStep(step, { reason: null });
      decider.complete(step, report.payload);
      return true;
    }
    const decision = report.payload as { decision: (typeof APPROVAL_DECISIONS)[number]; comment?: string; fields?: Record<string, unknown> };
    decider.record({
      type: 'approval_decided',
      stepId: step.id,
      at: report.at,
      data: { decision: decision.decision, by: report.by, via: report.via, ...(decision.comment ? { comment: decision.comment } : {}) },
    });
    decider.setStep(step, { reason: null });
    decider.complete(step, {
      decision: decision.decision,
      approved: decision.decision === 'approved',
      ...(decision.comment ? { comment: decision.comment } : {}),
      fields: decision.fields ?? {},
      by: report.by,
      decided_at: report.at.toISOString(),
    });
    return true;
  },

  outstanding: outstandingTimer,

  settle(decider, step, state, to) {
    // A kept signal goes with the step.
    if (state.status === 'pending' && state.output !== null) decider.setStep(step, { output: null });
    endUnstarted(decider, step, state, to);
  },
};

/** A signal kept for a step that did not wait yet: what its output column holds meanwhile. */
interface BufferedSignal {
  payload: unknown;
  by: string;
  via: 'key' | 'link';
  at: string;
}

/** The signal kept in a pending wait step's output column, if any. */
export function bufferedSignal(output: unknown): BufferedSignal | undefined {
  if (output === null || typeof output !== 'object' || !Object.hasOwn(output, 'buffered_signal')) return undefined;
  return (output as { buffered_signal: BufferedSignal }).buffered_signal;
}

/** Keeps a signal for a step that does not wait yet: one per step, while its task runs; returns whether it was kept. */
function buffer(decider: Decider, step: WaitStep, state: StepState, report: Extract<Report, { type: 'signal' }>): boolean {
  if (!decider.active || step.wait.approval !== undefined || report.signal !== step.wait.signal) return false;
  if (state.output === undefined) {
    decider.need('output', step.id);
    return false;
  }
  if (bufferedSignal(state.output)) return false;
  const kept: BufferedSignal = { payload: report.payload, by: report.by, via: report.via, at: report.at.toISOString() };
  decider.setStep(step, { output: { buffered_signal: kept } });
  decider.record({ type: 'signal_buffered', stepId: step.id, at: report.at, data: { signal: report.signal, by: report.by, via: report.via } });
  return true;
}

/** The step starts waiting with a kept signal: it takes it, checked against its schema now. */
function takeBuffered(decider: Decider, step: WaitStep, kept: BufferedSignal): void {
  const problems = step.wait.schema ? schemaProblems(step.wait.schema, kept.payload) : [];
  decider.setStep(step, { reason: null });
  if (problems.length > 0) {
    decider.setStep(step, { output: null });
    decider.fail(step, {
      name: 'InvalidSignalPayload',
      message: `the signal ${step.wait.signal} sent before the step waited does not fit its schema: ${problems.map((problem) => `${problem.path || '(payload)'} ${problem.message}`).join('; ')}`,
      retryable: false,
    });
    return;
  }
  decider.record({
    type: 'signal_received',
    stepId: step.id,
    data: { signal: step.wait.signal, by: kept.by, via: kept.via, buffered: true, sent_at: kept.at },
  });
  decider.complete(step, kept.payload);
}

function describe(step: WaitStep): string {
  return step.wait.approval !== undefined ? 'decision' : `signal ${step.wait.signal}`;
}

function completeTimedOut(decider: Decider, step: WaitStep, at: Date): void {
  decider.complete(
    step,
    step.wait.approval !== undefined
      ? { decision: 'timed_out', approved: false, fields: {}, decided_at: at.toISOString(), timed_out: true }
      : { timed_out: true },
  );
}
