import { z } from 'zod';
import { ValidationError } from '../lib/errors.js';
import type { Decision } from './state.js';
import type { KeyLimit } from './types.js';

/**
 * Concurrency and rate limits per key: on a workflow (its runs), on a tool step (each run of it,
 * each item of a map), or on a one-tool task. The key is text, usually naming a customer or a
 * tenant through the task's params: `{"key": "{{params.customer_id}}", "limit": 2}`. Keys are
 * resolved when the task is submitted (a param that cannot make a key is the client's 400), so
 * the plan carries them literally; the runtime holds the limits in Redis (src/queue/gates.ts).
 */

/** Longest key a definition may write, and longest once its params are filled in. */
export const LIMIT_KEY_MAX_CHARS = 200;
export const RESOLVED_KEY_MAX_CHARS = 500;

const keySchema = z.string().min(1).max(LIMIT_KEY_MAX_CHARS).meta({
  description: "Text, and {{params.NAME}} of the task's params (a string, number or boolean): work with the same key shares the limit, across every worker.",
});

export const concurrencySchema = z
  .object({ key: keySchema, limit: z.int().min(1).max(100_000) })
  .strict()
  .meta({ description: 'At most `limit` of these at once per key; the rest wait (status waiting, reason concurrency), holding no worker.' });

export const rateLimitSchema = z
  .object({ key: keySchema, per_minute: z.int().min(1).max(1_000_000).optional(), per_second: z.int().min(1).max(100_000).optional() })
  .strict()
  .refine((value) => (value.per_minute === undefined) !== (value.per_second === undefined), { message: 'give exactly one of per_minute and per_second' })
  .meta({ description: 'At most this many starts per key in any minute (or second); the rest wait (status waiting, reason rate_limit).' });

export type ConcurrencySpec = z.output<typeof concurrencySchema>;
export type RateLimitSpec = z.output<typeof rateLimitSchema>;

/** The limits a workflow, a step or a task names, as written. */
export interface LimitSpecs {
  concurrency?: ConcurrencySpec;
  rate_limit?: RateLimitSpec;
}

/** Why a step waits: a limit per key. */
export function waitReason(kind: 'c' | 'r'): 'concurrency' | 'rate_limit' {
  return kind === 'c' ? 'concurrency' : 'rate_limit';
}

// Linear: no nested quantifiers; the text is at most LIMIT_KEY_MAX_CHARS.
const PARAM_REFERENCE = /\{\{\s*params\.([A-Za-z][A-Za-z0-9_-]{0,63})\s*\}\}/g;

/** What is wrong with a key as written: templates other than {{params.NAME}} of a declared parameter. */
export function keyProblems(key: string, parameters: readonly string[]): string[] {
  const problems: string[] = [];
  const rest = key.replace(PARAM_REFERENCE, (_, name: string) => {
    if (!parameters.includes(name)) problems.push(`{{params.${name}}}: the workflow has no parameter ${name}`);
    return '';
  });
  if (rest.includes('{{') || rest.includes('}}')) problems.push('a limit key may hold only text and {{params.NAME}}');
  return problems;
}

/** A key with its params filled in; a problem (at `where`) when a param it names cannot make a key. */
function resolveKey(key: string, params: Record<string, unknown>, where: string): string {
  const resolved = key.replace(PARAM_REFERENCE, (_, name: string) => {
    const value = params[name];
    if (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean') return String(value);
    throw new ValidationError(
      `params.${name} cannot make the limit key at ${where}`,
      [
        {
          path: `params.${name}`,
          message: `the limit key at ${where} needs a string, number or boolean here, not ${value === undefined ? 'nothing' : JSON.stringify(value).slice(0, 40)}`,
        },
      ],
      'invalid_params',
    );
  });
  if (resolved.length > RESOLVED_KEY_MAX_CHARS) {
    throw new ValidationError(
      `the limit key at ${where} is too long`,
      [{ path: where, message: `the limit key is longer than ${RESOLVED_KEY_MAX_CHARS} characters once its params are filled in` }],
      'invalid_params',
    );
  }
  return resolved;
}

/** The limits as a plan carries them; user keys are apart from the per-API-key defaults (`api_key:`). */
export function resolveLimits(specs: LimitSpecs, params: Record<string, unknown>, where: string): KeyLimit[] | undefined {
  const limits: KeyLimit[] = [];
  if (specs.concurrency) {
    limits.push({ kind: 'c', key: `user:${resolveKey(specs.concurrency.key, params, `${where}.concurrency.key`)}`, limit: specs.concurrency.limit });
  }
  if (specs.rate_limit) {
    const perSecond = specs.rate_limit.per_second !== undefined;
    limits.push({
      kind: 'r',
      key: `user:${resolveKey(specs.rate_limit.key, params, `${where}.rate_limit.key`)}`,
      limit: perSecond ? specs.rate_limit.per_second! : specs.rate_limit.per_minute!,
      windowMs: perSecond ? 1_000 : 60_000,
    });
  }
  return limits.length > 0 ? limits : undefined;
}

/** The default limits of every API key (KEY_CONCURRENCY, KEY_RATE_PER_MINUTE), on each of its tool steps. */
export function ownerLimits(owner: string, defaults: { concurrency: number; perMinute: number }): KeyLimit[] {
  const key = `api_key:${owner || 'anonymous'}`;
  return [
    ...(defaults.concurrency > 0 ? [{ kind: 'c' as const, key, limit: defaults.concurrency }] : []),
    ...(defaults.perMinute > 0 ? [{ kind: 'r' as const, key, limit: defaults.perMinute, windowMs: 60_000 }] : []),
  ];
}

/**
 * A decision whose jobs some limits hold back: those jobs are not made, and their steps wait
 * instead of being queued (a map item held back stays queued: its map runs). `held` maps
 * `taskId/stepId` (and `taskId/stepId/item`) to the limit that holds it.
 */
export function holdBack(decision: Decision, held: ReadonlyMap<string, 'c' | 'r'>): Decision {
  if (held.size === 0) return decision;
  const keyOf = (taskId: string, stepId: string, item?: number) => (item === undefined ? `${taskId}/${stepId}` : `${taskId}/${stepId}/${item}`);
  return {
    ...decision,
    jobs: decision.jobs.filter((job) => !held.has(keyOf(job.taskId, job.stepId, job.item))),
    steps: decision.steps.map((change) => {
      const kind = held.get(keyOf(change.taskId, change.stepId));
      return kind && change.set.status === 'queued' ? { ...change, set: { ...change.set, status: 'waiting', reason: waitReason(kind) } } : change;
    }),
    transitions: decision.transitions.flatMap((transition) => {
      const kind = transition.stepId !== undefined ? held.get(keyOf(transition.taskId, transition.stepId)) : undefined;
      if (!kind || transition.status !== 'queued') return [transition];
      // Waiting again after an admission that found no room after all: nothing moved.
      if (transition.from === 'waiting') return [];
      return [{ ...transition, status: 'waiting', reason: waitReason(kind) }];
    }),
    // The history's transitions alike (historyEvent): queued becomes waiting, and a step woken only to wait again did not move.
    history: decision.history.flatMap((event) => {
      const kind = event.stepId !== undefined && event.item === undefined ? held.get(keyOf(event.taskId, event.stepId)) : undefined;
      if (!kind || event.data?.to !== 'queued' || (event.type !== 'step_queued' && event.type !== 'step_woken')) return [event];
      if (event.type === 'step_woken') return [];
      return [{ ...event, type: 'step_waiting', data: { ...event.data, to: 'waiting', reason: waitReason(kind) } }];
    }),
  };
}
