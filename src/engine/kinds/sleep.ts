import { hasTemplates } from '../templates.js';
import { DEFAULT_RETRY_FOR_KINDS } from '../types.js';
import { SLEEP_MAX_MS } from '../workflow-definition.js';
import { outstandingTimer, refuseFields, type StepKindModule } from './kind.js';

/**
 * A durable sleep: once ready it waits until its wake-up time holding no worker and no active
 * job (a delayed timer job stands for it, and PostgreSQL keeps `wake_at`, from which the
 * reconciler makes the timer again if Redis lost it). The timer's report completes it with
 * `{woke_at}`. A wake-up time already past completes it at once.
 */

declare module '../plan.js' {
  interface StepKinds {
    /** How long, or until when (either may be a template). */
    sleep: { sleep: SleepSpec };
  }
}

type SleepSpec = { ms?: number | string; until?: string };

export const sleepKind: StepKindModule<'sleep'> = {
  name: 'sleep',
  label: 'sleep',
  summary: 'waits',

  check(step, index, context) {
    refuseFields(step, index, context, 'sleep', ['version', 'retry', 'timeout_ms', 'concurrency', 'rate_limit']);
    if (Object.keys(step.input).length > 0) context.add(['steps', index, 'input'], 'a sleep step takes no input');
    const spec: SleepSpec = step.sleep;
    const literal = typeof spec.ms === 'string' ? spec.ms : spec.until;
    if (literal === undefined || hasTemplates(literal)) return;
    const problem = wakeTime(spec, new Date(0));
    if (typeof problem === 'string' && spec.until === undefined) context.add(['steps', index, 'sleep', 'ms'], `${problem}, or a template that gives one`);
    else if (spec.until !== undefined && Number.isNaN(Date.parse(spec.until)))
      context.add(['steps', index, 'sleep', 'until'], `${JSON.stringify(spec.until)} is neither an ISO 8601 time nor a template`);
  },

  outputSchema() {
    return { type: 'object', properties: { woke_at: { type: 'string' } }, additionalProperties: false };
  },

  templatePlaces: (step, index) => [{ base: `steps[${index}].sleep`, value: step.sleep }],

  compile(step) {
    return { kind: 'sleep', sleep: step.sleep, options: DEFAULT_RETRY_FOR_KINDS };
  },

  templates: (step) => [step.sleep],

  ready(decider, step) {
    const spec = decider.resolve(step, step.sleep);
    if (!spec.ok) {
      if ('error' in spec) decider.fail(step, spec.error);
      return;
    }
    const wakeAt = wakeTime(spec.value as { ms?: unknown; until?: unknown }, decider.now);
    if (typeof wakeAt === 'string') return decider.fail(step, { name: 'InvalidSleep', message: wakeAt, retryable: false });
    if (wakeAt.getTime() <= decider.now.getTime()) return decider.complete(step, { woke_at: decider.now.toISOString() });
    decider.setStep(step, { status: 'waiting', reason: 'sleep', wake_at: wakeAt.toISOString(), started_at: decider.now.toISOString(), run: decider.task.run });
    decider.decision.timers.push({ taskId: decider.task.id, run: decider.task.run, stepId: step.id, at: wakeAt });
  },

  report(decider, step, state, report) {
    if (report.type !== 'wake' || state.status !== 'waiting') return false;
    decider.setStep(step, { reason: null });
    decider.complete(step, { woke_at: report.at.toISOString() });
    return true;
  },

  outstanding: outstandingTimer,
};

/** When a resolved sleep ends, or why it cannot: `ms` a whole number of milliseconds, `until` an ISO 8601 time. */
export function wakeTime(spec: { ms?: unknown; until?: unknown }, now: Date): Date | string {
  if (spec.until !== undefined) {
    if (typeof spec.until !== 'string') return `sleep.until must be an ISO 8601 time, not ${JSON.stringify(spec.until)}`;
    const at = Date.parse(spec.until);
    if (Number.isNaN(at)) return `sleep.until ${JSON.stringify(spec.until.slice(0, 100))} is not an ISO 8601 time`;
    if (at - now.getTime() > SLEEP_MAX_MS) return `sleep.until is more than a year away`;
    return new Date(at);
  }
  const ms = typeof spec.ms === 'string' && /^\d{1,15}$/.test(spec.ms) ? Number(spec.ms) : spec.ms;
  if (typeof ms !== 'number' || !Number.isInteger(ms) || ms < 0) return `sleep.ms must be a whole number of milliseconds, not ${JSON.stringify(spec.ms)}`;
  if (ms > SLEEP_MAX_MS) return `sleep.ms is more than a year (${SLEEP_MAX_MS} ms)`;
  return new Date(now.getTime() + ms);
}
