import { createHash } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { z } from 'zod';
import { canonicalJson } from '../lib/canonical-json.js';
import type { ApiKeyScope, Config } from '../lib/config.js';
import type { Logger } from '../lib/logger.js';
import { PolicyUnavailableError } from '../lib/policy-errors.js';
import type { Metrics } from '../observability/metrics.js';

/**
 * What the policy service is asked before work is made (src/tasks/work-gate.ts): which path asks
 * (`kind`), the task type and params concerned, who asks and whose work it is.
 */
export interface PolicyInput {
  /** The path that makes the work: a submission, a schedule's definition or tick, a retry, a dead-letter replay, a sub-workflow's child, a signal. */
  kind: 'submit' | 'schedule' | 'tick' | 'retry' | 'replay' | 'child' | 'signal';
  /** The tool, or the workflow's name. */
  task_type: string;
  /** The params as validated (defaults filled in); a signal's and a retry's: the task's. */
  params: Record<string, unknown>;
  /** The asking key's id (`jwt:<owner>` for a token); a tick's and a child's: their owner's (no request asks); null without authentication. */
  key_id: string | null;
  /** That key's scope; null for a tick or a child (no request asks) and without authentication. */
  scope: ApiKeyScope | null;
  /** Whose work it is: the owner of the task or schedule (its key's id); null without authentication. */
  owner: string | null;
  /** The task concerned: the one retried, replayed or signalled, or the new child. */
  task_id?: string;
  /** The schedule defined or ticking. */
  schedule?: string;
  /** A signal: its name, its payload and who sends it (`key:<id>`, an approver's name, `link`). */
  signal?: { name: string; payload: unknown; by: string };
  /** A child: its parent task and the step that starts it. */
  parent?: { task_id: string; step_id: string };
}

/** The policy's answer; `params` (on allow) replace the submitted ones, and are validated again. */
export type PolicyDecision = { allow: true; params?: Record<string, unknown> } | { allow: false; reason?: string };

export interface PolicyHookOptions {
  url: string;
  timeoutMs: number;
  failMode: 'open' | 'closed';
  /** 0: no cache. */
  cacheTtlMs: number;
  cacheMax: number;
  maxResponseBytes: number;
}

/** Most bytes of answers the cache holds, whatever POLICY_CACHE_MAX allows: rewritten params can be large. */
const CACHE_MAX_BYTES = 64 * 1024 * 1024;
/** A reason is quoted back to the client: a few lines, not a page. */
const REASON_MAX_CHARS = 1_000;

const answerSchema = z.object({
  allow: z.boolean(),
  reason: z.string().nullish(),
  params: z.record(z.string(), z.unknown()).nullish(),
});

class PolicyCallError extends Error {
  override name = 'PolicyCallError';
}

async function readCapped(response: Response, limit: number): Promise<string> {
  const declared = Number(response.headers.get('content-length') ?? 0);
  if (declared > limit) {
    await response.body?.cancel();
    throw new PolicyCallError(`the answer is larger than POLICY_MAX_RESPONSE_BYTES (${limit})`);
  }
  if (!response.body) return '';
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel();
      throw new PolicyCallError(`the answer is larger than POLICY_MAX_RESPONSE_BYTES (${limit})`);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * Asks the policy service (POLICY_URL) whether a task may be accepted. Decisions are cached per
 * identical input for POLICY_CACHE_TTL_MS, and identical questions in flight share one call. A
 * call that times out, fails or gets no decision follows POLICY_FAIL_MODE: open allows the task
 * as submitted, closed throws PolicyUnavailableError. Failures are never cached.
 *
 * POLICY_URL is the operator's own service, like DATABASE_URL, so it is called with fetch over
 * pooled keep-alive connections, not through the host policy of user-given URLs (whose fresh
 * connection per request would add a TCP handshake to every submission).
 */
export class PolicyHook {
  private readonly cache: LRUCache<string, { decision: PolicyDecision; bytes: number }> | undefined;
  private readonly inFlight = new Map<string, Promise<PolicyDecision>>();

  constructor(
    private readonly options: PolicyHookOptions,
    private readonly metrics: Metrics,
    private readonly logger: Logger,
  ) {
    if (options.cacheTtlMs > 0) {
      this.cache = new LRUCache({
        max: options.cacheMax,
        ttl: options.cacheTtlMs,
        maxSize: CACHE_MAX_BYTES,
        sizeCalculation: (entry) => entry.bytes + 128,
      });
    }
  }

  static fromConfig(config: Config, metrics: Metrics, logger: Logger): PolicyHook | undefined {
    if (!config.POLICY_URL) return undefined;
    return new PolicyHook(
      {
        url: config.POLICY_URL,
        timeoutMs: config.POLICY_TIMEOUT_MS,
        failMode: config.POLICY_FAIL_MODE,
        cacheTtlMs: config.POLICY_CACHE_TTL_MS,
        cacheMax: config.POLICY_CACHE_MAX,
        maxResponseBytes: config.POLICY_MAX_RESPONSE_BYTES,
      },
      metrics,
      logger,
    );
  }

  /** The decision on `input`; throws PolicyUnavailableError when the service cannot decide and the mode is closed. */
  async decide(input: PolicyInput): Promise<PolicyDecision> {
    const body = canonicalJson(input);
    const key = createHash('sha256').update(body).digest('base64url');
    const cached = this.cache?.get(key);
    if (cached) {
      this.metrics.policyCacheHits.inc();
      return cached.decision;
    }
    let pending = this.inFlight.get(key);
    if (!pending) {
      pending = this.call(body, key).finally(() => this.inFlight.delete(key));
      this.inFlight.set(key, pending);
    }
    return pending;
  }

  private async call(body: string, key: string): Promise<PolicyDecision> {
    const stop = this.metrics.policyDuration.startTimer();
    try {
      const response = await fetch(this.options.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json' },
        body,
        redirect: 'error',
        signal: AbortSignal.timeout(this.options.timeoutMs),
      });
      const text = await readCapped(response, this.options.maxResponseBytes);
      if (response.status < 200 || response.status > 299) throw new PolicyCallError(`it answered HTTP ${response.status}`);
      let json: unknown;
      try {
        json = JSON.parse(text);
      } catch {
        throw new PolicyCallError('its answer is not JSON');
      }
      const parsed = answerSchema.safeParse(json);
      if (!parsed.success) throw new PolicyCallError('its answer is not a decision: {"allow": true|false, "reason"?: string, "params"?: object}');
      const { allow, reason, params } = parsed.data;
      const decision: PolicyDecision = allow
        ? { allow: true, ...(params ? { params } : {}) }
        : { allow: false, ...(reason ? { reason: reason.slice(0, REASON_MAX_CHARS) } : {}) };
      stop({ outcome: allow ? 'allow' : 'deny' });
      this.cache?.set(key, { decision, bytes: text.length });
      return decision;
    } catch (error) {
      stop({ outcome: 'error' });
      const why =
        error instanceof PolicyCallError
          ? error.message
          : (error as Error).name === 'TimeoutError'
            ? `no answer within POLICY_TIMEOUT_MS (${this.options.timeoutMs} ms)`
            : `the call failed: ${((error as Error).cause as Error | undefined)?.message ?? (error as Error).message}`;
      if (this.options.failMode === 'open') {
        this.logger.warn('policy service could not decide: the task is accepted (POLICY_FAIL_MODE=open)', { reason: why });
        return { allow: true };
      }
      this.logger.warn('policy service could not decide: the task is refused (POLICY_FAIL_MODE=closed)', { reason: why });
      throw new PolicyUnavailableError(why, error);
    }
  }
}
