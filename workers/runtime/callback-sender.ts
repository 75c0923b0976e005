import { randomUUID } from 'node:crypto';
import { type Job, UnrecoverableError } from 'bullmq';
import { waitsForSomeone } from '../../src/engine/status.js';
import { CALLBACK_HEADERS, callbackHostsFor, callbackSecretFor, signCallback } from '../../src/lib/callback-signing.js';
import type { Config } from '../../src/lib/config.js';
import { NonRetryableError, RetryableError, toErrorRecord } from '../../src/lib/errors.js';
import { hostPolicyFor } from '../../src/lib/host-policy.js';
import type { Logger } from '../../src/lib/logger.js';
import { outboundRequest, parseRetryAfter } from '../../src/lib/outbound-http.js';
import type { Metrics } from '../../src/observability/metrics.js';
import type { Prisma } from '../../src/persistence/database.js';
import type { TaskStore } from '../../src/persistence/task-store.js';
import type { CallbackJobData } from '../../src/queue/jobs.js';
import { taskView } from '../../src/tasks/task-view.js';
import { waitingForView } from '../../src/tasks/waits.js';
import { retryDelay } from './backoff.js';

export const SIGNATURE_HEADER = CALLBACK_HEADERS.signature;
export const TIMESTAMP_HEADER = CALLBACK_HEADERS.timestamp;
export { signCallback };

/**
 * Delay before the next delivery after `failures` failed ones: exponential from 1 s with jitter,
 * or the receiver's Retry-After when it asks for longer.
 */
export function callbackRetryDelay(failures: number, error: Error | undefined): number {
  return retryDelay({ type: 'exponential', delay_ms: 1_000 }, failures, error instanceof RetryableError ? error.retryAfterMs : undefined);
}

/**
 * Delivers a finished task's result to its callback_url. Each try is recorded in PostgreSQL
 * (shown in GET /result); BullMQ retries up to CALLBACK_MAX_ATTEMPTS, waiting callbackRetryDelay.
 * Network errors, 5xx, 408 and 429 are retried; another 4xx means the receiver refuses it, and
 * a refused host or a redirect (callbacks follow none) cannot get better by waiting.
 */
export function createCallbackSender(deps: { config: Config; logger: Logger; prisma: Prisma; store: TaskStore; metrics: Metrics }) {
  const waitingView = waitingForView(deps.config);
  return async function deliverCallback(job: Job<CallbackJobData>): Promise<{ status: number }> {
    const { taskId, run, waitingStep } = job.data;
    const attempt = job.attemptsMade + 1;
    const logger = deps.logger.child({ task_id: taskId, callback_attempt: attempt });
    const task = await deps.store.get(taskId);
    if (!task?.callbackUrl || task.run !== run) return { status: 0 };
    const root = deps.config.CALLBACK_SECRET;
    if (!root) throw new UnrecoverableError('CALLBACK_SECRET is not set on this worker: callbacks cannot be signed');
    // Signed with the owner's own secret, and naming the owner and the URL: a receiver that
    // checks them cannot be sent another client's callback, nor one meant for another URL.
    const owner = task.ownerKey;
    const secret = callbackSecretFor(root, owner);
    // A step's wait is told only while it lasts: once signalled, decided or ended there is nothing to act on.
    const waiting = waitingStep === undefined ? undefined : task.steps.find((step) => step.stepId === waitingStep);
    if (waiting && !waitsForSomeone(waiting.status, waiting.reason)) return { status: 0 };
    const event = waitingStep === undefined ? `task.${task.status}` : 'task.waiting';
    // The task.waiting callback carries the approval links only when its submitter could see them
    // (an admin key, or no authentication): a client key chooses the URL, and a link in its hands
    // would let it decide for an approver (four eyes).
    const view = taskView(task, (step) => waitingView(task, step, task.callbackLinks));
    const body = JSON.stringify({
      event,
      delivery_id: job.id,
      attempt,
      owner,
      callback_url: task.callbackUrl,
      ...(waitingStep ? { step_id: waitingStep } : {}),
      task: view,
    });
    const timestamp = Math.floor(Date.now() / 1000);
    const started = Date.now();
    let statusCode: number | undefined;
    let retryAfterMs: number | undefined;
    let failure: Error | undefined;
    try {
      const response = await outboundRequest(hostPolicyFor(callbackHostsFor(deps.config, owner), deps.config.HTTP_TOOL_PRIVATE_NAMES), {
        method: 'POST',
        url: task.callbackUrl,
        headers: {
          'content-type': 'application/json',
          'user-agent': 'orchestrator-callbacks',
          'x-orchestrator-event': event,
          'x-orchestrator-delivery': `${job.id}#${attempt}`,
          [TIMESTAMP_HEADER]: String(timestamp),
          [CALLBACK_HEADERS.owner]: encodeURIComponent(owner),
          [SIGNATURE_HEADER]: signCallback(secret, timestamp, body),
        },
        body,
        timeoutMs: 10_000,
        maxRedirects: 0,
      });
      statusCode = response.status;
      if (response.status >= 300) {
        failure = new Error(`the callback URL answered ${response.status}`);
        retryAfterMs = parseRetryAfter(response.headers['retry-after']);
      }
    } catch (error) {
      failure = error as Error;
    }
    const permanent =
      failure instanceof NonRetryableError || (statusCode !== undefined && statusCode >= 400 && statusCode < 500 && statusCode !== 408 && statusCode !== 429);
    const willRetry = failure !== undefined && !permanent && attempt < (job.opts.attempts ?? 1);
    const durationMs = Date.now() - started;
    const delivery = deps.prisma.callbackDelivery.create({
      data: {
        id: randomUUID(),
        taskId,
        taskCreatedAt: task.createdAt,
        run,
        attempt,
        url: task.callbackUrl,
        event,
        statusCode: statusCode ?? null,
        error: failure ? toErrorRecord(failure).message : null,
        delivered: !failure,
        willRetry,
        durationMs,
      },
    });
    if (deps.config.TASK_HISTORY === 'off') await delivery;
    else {
      // The task's history too, in the same transaction (docs/workflows.md "History").
      await deps.prisma.$transaction([
        delivery,
        deps.prisma.historyEvent.create({
          data: {
            taskId,
            taskCreatedAt: task.createdAt,
            run,
            type: failure ? 'callback_failed' : 'callback_delivered',
            attempt,
            at: new Date(),
            data: {
              event,
              status_code: statusCode ?? null,
              ...(failure ? { error: toErrorRecord(failure).message, will_retry: willRetry } : {}),
              duration_ms: durationMs,
            },
          },
        }),
      ]);
    }
    deps.metrics.callbackDeliveries.inc({ outcome: failure ? 'failed' : 'delivered' });
    if (!failure) {
      logger.info('callback delivered', { status: statusCode });
      return { status: statusCode! };
    }
    logger.warn('callback delivery failed', { error: failure.message, status: statusCode, will_retry: willRetry });
    throw permanent ? new UnrecoverableError(failure.message) : new RetryableError(failure.message, retryAfterMs);
  };
}
