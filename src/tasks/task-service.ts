import { createHash } from 'node:crypto';
import type { Context } from '@opentelemetry/api';
import type { Config } from '../config.js';
import { finishPlan, initialSteps, planToolTask, type RunOverrides, type TaskPlan } from '../engine/plan.js';
import { isFinished } from '../engine/status.js';
import { IDENTIFIER } from '../engine/workflow-definition.js';
import { type ApiError, ConflictError, DependencyUnavailableError, GoneError, NotFoundError, ValidationError } from '../errors.js';
import type { DeadLetter } from '../generated/prisma/client.js';
import { Batcher, ItemFailure } from '../lib/batcher.js';
import { hostPolicyFor } from '../lib/host-policy.js';
import { unstorableProblems, zodProblems } from '../lib/problems.js';
import { uuidv7Time } from '../lib/uuid7.js';
import type { Logger } from '../logger.js';
import type { Metrics } from '../observability/metrics.js';
import { captureTraceContext, inSpan, SpanAttributes, type SpanHandle, withBatchTraceContext } from '../observability/tracing.js';
import type { Reachability } from '../persistence/database.js';
import { retentionCutoff } from '../persistence/partitions.js';
import { isTransientDatabaseError } from '../persistence/retry.js';
import type { CreateResult, NewTask, TaskFilter, TaskStore } from '../persistence/task-store.js';
import { publishStop } from '../queue/channels.js';
import type { EventLog } from '../queue/event-log.js';
import type { RedisClient } from '../queue/redis.js';
import type { TaskEvents } from '../queue/task-events.js';
import type { TaskQueues } from '../queue/task-queues.js';
import type { ToolRegistry } from '../tools/tool.js';
import type { TaskRequest } from './task-request.js';
import { taskView } from './task-view.js';

/** A dead letter as stored: the API shows it (src/api/routes/dead-letters.ts). */
export type { DeadLetter };

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export interface TaskServiceDeps {
  config: Config;
  logger: Logger;
  registry: ToolRegistry;
  store: TaskStore;
  queues: TaskQueues;
  /** The producer connection: fails fast while Redis is down. */
  redis: RedisClient;
  events: TaskEvents;
  eventLog: EventLog;
  metrics: Metrics;
  /** Builds the plan of a registered workflow, or returns undefined for an unknown name. */
  planWorkflow?: (name: string, params: Record<string, unknown>, overrides: RunOverrides, paramsField: string) => Promise<TaskPlan | undefined>;
  /** Names of registered workflows, for the 404 of an unknown task_type. */
  workflowNames?: () => Promise<string[]>;
  /** Whether PostgreSQL can be reached: while it cannot, requests answer 503 at once instead of waiting for a connection. */
  reachability?: Reachability;
}

export interface SubmitOptions {
  /** POST /workflows/:name/execute: only a workflow may answer to the name. */
  workflowOnly?: boolean;
  /** Where params sit in the request body, for error paths. @defaultValue 'params' */
  paramsField?: string;
  /** Id of the API key that submits the task; idempotency keys are per owner. @defaultValue '' (no authentication) */
  owner?: string;
}

/** JSON with sorted keys, so the same body hashes the same whatever its key order. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value)
      .filter(([, inner]) => inner !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([key, inner]) => `${JSON.stringify(key)}:${canonical(inner)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/**
 * What a task id that finds no task means. The id (UUIDv7) says when the task was created: past
 * RETENTION_DAYS it expired (or, for an id nobody was given, would have by now); otherwise it is
 * unknown. An id from before UUIDv7 ids holds no time, and is only ever unknown.
 */
function missing(id: string, retentionDays: number): ApiError {
  const createdAt = uuidv7Time(id);
  if (createdAt && createdAt < retentionCutoff(new Date(), retentionDays)) {
    return new GoneError(
      'task_expired',
      `task ${id} was created ${createdAt.toISOString()} and expired after RETENTION_DAYS (${retentionDays}); its record is gone`,
      {
        created_at: createdAt.toISOString(),
        retention_days: retentionDays,
      },
    );
  }
  return new NotFoundError('task_not_found', `no task with id ${JSON.stringify(id)}`);
}

function assertRedis(redis: RedisClient): void {
  if (redis.status !== 'ready') throw new DependencyUnavailableError('redis');
}

/** A submitted task. */
export interface Submitted {
  taskId: string;
  /** The idempotency key was seen before with the same request: the first task, nothing new enqueued. */
  replayed: boolean;
}

/** One page of a list, newest first; `nextCursor` asks for the next one (null on the last). */
export interface Page<T> {
  items: T[];
  nextCursor: string | null;
}

interface Submission {
  plan: TaskPlan;
  task: NewTask;
  delayMs: number;
  /** The submitter's trace (tracing on): a batch's jobs each continue their own. */
  trace?: Context;
}

/** Tasks as the API sees them: submit, read, list, cancel, retry. Knows nothing of HTTP. */
export class TaskService {
  private readonly submissions: Batcher<Submission, CreateResult>;

  constructor(private readonly deps: TaskServiceDeps) {
    this.submissions = new Batcher((batch) => this.persistAndEnqueue(batch), { maxSize: 200 });
  }

  /** Runs a PostgreSQL call; a database known to be unreachable, or lost meanwhile, answers 503. */
  private async database<T>(work: () => Promise<T>): Promise<T> {
    if (this.deps.reachability && !this.deps.reachability.reachable) throw new DependencyUnavailableError('database');
    try {
      return await work();
    } catch (error) {
      if (isTransientDatabaseError(error)) throw new DependencyUnavailableError('database', error);
      throw error;
    }
  }

  private async plan(body: TaskRequest, options: SubmitOptions): Promise<TaskPlan> {
    const overrides: RunOverrides = {
      ...(body.retry ? { retry: body.retry } : {}),
      ...(body.timeout_ms ? { timeout_ms: body.timeout_ms } : {}),
      ...(body.priority ? { priority: body.priority } : {}),
    };
    const nul = unstorableProblems(body.params, [options.paramsField ?? 'params']);
    if (nul.length > 0) throw new ValidationError('params hold characters that cannot be stored', nul, 'invalid_params');
    const tool = options.workflowOnly ? undefined : this.deps.registry.get(body.task_type);
    if (tool) {
      const params = tool.input.safeParse(body.params);
      if (!params.success) {
        throw new ValidationError(
          `params do not fit the input schema of tool '${tool.name}'`,
          zodProblems(params.error, [options.paramsField ?? 'params']),
          'invalid_params',
        );
      }
      return planToolTask(tool, params.data as Record<string, unknown>, overrides);
    }
    // A name that cannot be a workflow's is not looked up.
    const workflow = IDENTIFIER.test(body.task_type)
      ? await this.database(async () => this.deps.planWorkflow?.(body.task_type, body.params, overrides, options.paramsField ?? 'params'))
      : undefined;
    if (workflow) return workflow;
    if (options.workflowOnly) throw new NotFoundError('workflow_not_found', `no workflow is named ${JSON.stringify(body.task_type)}`);
    const workflows = (await this.database(async () => this.deps.workflowNames?.())) ?? [];
    throw new NotFoundError('unknown_task_type', `no tool or workflow is named ${JSON.stringify(body.task_type)}`, {
      known_task_types: [...this.deps.registry.names(), ...workflows].sort(),
      tools: this.deps.registry.names(),
      workflows,
    });
  }

  async submit(body: TaskRequest, options: SubmitOptions = {}): Promise<Submitted> {
    return inSpan('task.submit', { [SpanAttributes.TASK_TYPE]: body.task_type }, (span) => this.submitInSpan(body, options, span));
  }

  private async submitInSpan(body: TaskRequest, options: SubmitOptions, span: SpanHandle): Promise<Submitted> {
    const receivedAt = new Date();
    if (body.callback_url) this.checkCallback(body.callback_url);
    const plan = finishPlan(await this.plan(body, options), this.deps.config, options.paramsField);
    // Known down: answer at once, before writing anything.
    assertRedis(this.deps.redis);
    if (this.deps.reachability && !this.deps.reachability.reachable) throw new DependencyUnavailableError('database');
    // The one place task ids are made: the id holds the task's creation time (src/ledger/task-days.ts)
    // and, through its hash, the queue shard of its jobs.
    const id = this.deps.queues.newTaskId(receivedAt, plan.taskType);
    span.setAttributes({ [SpanAttributes.TASK_ID]: id });
    const requestHash = createHash('sha256')
      .update(canonical({ ...body, idempotency_key: undefined }))
      .digest('hex');
    const created = await this.submissions.add({
      plan,
      delayMs: body.delay_ms ?? 0,
      trace: captureTraceContext(),
      task: {
        id,
        requestHash,
        priority: body.priority ?? 0,
        delayMs: body.delay_ms ?? 0,
        owner: options.owner ?? '',
        ...(body.idempotency_key ? { idempotencyKey: body.idempotency_key } : {}),
        ...(body.callback_url ? { callbackUrl: body.callback_url } : {}),
      },
    });
    if (!created.created) {
      span.setAttributes({ [SpanAttributes.TASK_ID]: created.id, 'orchestrator.task.deduplicated': true });
      if (created.requestHash !== requestHash) {
        throw new ConflictError('idempotency_conflict', 'this idempotency_key was used with a different request body', {
          task_id: created.id,
        });
      }
      return { taskId: created.id, replayed: true };
    }
    this.deps.metrics.tasksSubmitted.inc({ task_type: plan.taskType });
    this.deps.logger.debug('task assigned', { task_id: id, task_type: plan.taskType, steps: plan.steps.length });
    return { taskId: id, replayed: false };
  }

  /**
   * Writes a batch of concurrent submissions to PostgreSQL in one transaction, then creates their
   * flows in Redis in one round trip per queue shard. The tasks of a shard that Redis refused
   * are deleted again and their clients hear 503 (nothing is left half-created); the others
   * are accepted.
   */
  private async persistAndEnqueue(batch: Submission[]): Promise<(CreateResult | ItemFailure)[]> {
    const results = await this.database(() => this.deps.store.createMany(batch));
    const fresh = batch.filter((_, index) => results[index]!.created);
    if (fresh.length === 0) return results;
    let refused: Map<string, unknown>;
    try {
      refused = await withBatchTraceContext(
        fresh.map(({ trace }) => trace),
        () =>
          this.deps.queues.startRuns(
            fresh.map(({ plan, task, delayMs, trace }) => ({
              ref: { taskId: task.id, run: 1, taskType: plan.taskType, single: !plan.workflow },
              steps: initialSteps(plan, delayMs),
              trace,
            })),
          ),
      );
    } catch (error) {
      refused = new Map(fresh.map(({ task }) => [task.id, error]));
    }
    if (refused.size === 0) return results;
    const ids = [...refused.keys()];
    await this.deps.store
      .removeMany(ids)
      .catch((cleanup: Error) => this.deps.logger.error('could not remove tasks that failed to enqueue', { task_ids: ids, error: cleanup.message }));
    return results.map((result, index) => {
      const id = batch[index]!.task.id;
      return result.created && refused.has(id) ? new ItemFailure(new DependencyUnavailableError('redis', refused.get(id))) : result;
    });
  }

  /** A callback must be signable and go to a host the http tool may call. */
  private checkCallback(url: string): void {
    if (!this.deps.config.CALLBACK_SECRET) {
      throw new ValidationError(
        'callbacks are not enabled on this server',
        [{ path: 'callback_url', message: 'set CALLBACK_SECRET to sign callbacks' }],
        'callbacks_disabled',
      );
    }
    const refused = hostPolicyFor(this.deps.config.HTTP_TOOL_ALLOWED_HOSTS).checkUrl(new URL(url));
    if (refused) throw new ValidationError('the callback URL is not allowed', [{ path: 'callback_url', message: refused }], 'callback_url_not_allowed');
  }

  private missing(id: string): ApiError {
    return missing(id, this.deps.config.RETENTION_DAYS);
  }

  /** `owner`: only a task of this owner is found (a client key's view); undefined: any task. */
  async result(id: string, waitSeconds = 0, signal?: AbortSignal, owner?: string) {
    if (!UUID.test(id)) throw this.missing(id);
    // Another owner's task is not found, and not waited for either: how long the answer takes
    // would tell that it exists.
    if (owner !== undefined && waitSeconds > 0 && (await this.database(() => this.deps.store.ownerOf(id))) !== owner) throw this.missing(id);
    const waitMs = Math.min(waitSeconds, this.deps.config.RESULT_WAIT_MAX_S) * 1000;
    if (waitMs > 0) {
      await this.deps.events.waitForEnd(
        id,
        waitMs,
        async () => {
          const status = await this.database(() => this.deps.store.status(id));
          return status === undefined || isFinished(status);
        },
        signal,
      );
    }
    const task = await this.database(() => this.deps.store.get(id));
    if (!task || (owner !== undefined && task.ownerKey !== owner)) throw this.missing(id);
    return taskView(task);
  }

  async list(filter: Omit<TaskFilter, 'cursor'> & { cursor?: string }) {
    const cursor: TaskFilter['cursor'] = filter.cursor ? decodeCursor(filter.cursor) : undefined;
    const rows = await this.database(() => this.deps.store.list({ ...filter, cursor, limit: filter.limit + 1 }));
    return page(rows, filter.limit);
  }

  /** Cancels a task: no further step starts, and running ones are told to stop. */
  async cancel(id: string, owner?: string): Promise<void> {
    if (!UUID.test(id)) throw this.missing(id);
    const outcome = await this.database(() => this.deps.store.cancel(id, owner));
    if (!outcome) throw this.missing(id);
    if (outcome.outcome === 'finished') {
      throw new ConflictError('task_finished', `the task already ended (${outcome.status}); nothing to cancel`, { status: outcome.status });
    }
    // PostgreSQL has the cancellation, so no further step starts. Now stop what is running.
    const { redis, queues, config, logger } = this.deps;
    await Promise.all([
      publishStop(redis, config.QUEUE_PREFIX, { taskId: id, reason: 'cancelled' }),
      // A one-tool task's step is named after its tool (see planToolTask).
      queues.dropUnstartedSteps({ taskId: id, run: outcome.run, ...(outcome.single ? { single: { tool: outcome.taskType, stepId: outcome.taskType } } : {}) }),
      this.deps.eventLog.append([{ taskId: id, status: 'cancelled', at: new Date().toISOString() }]),
    ]).catch((error: Error) => logger.warn('task cancelled, but running steps could not be told', { task_id: id, error: error.message }));
    this.deps.metrics.tasksFinished.inc({ task_type: outcome.taskType, status: 'cancelled' });
    this.deps.metrics.taskDuration.observe({ task_type: outcome.taskType, status: 'cancelled' }, (Date.now() - outcome.createdAt.getTime()) / 1000);
    logger.info('task cancelled', { task_id: id });
  }

  /** Resumes a failed or cancelled task from its unfinished steps; returns its new run. */
  async retry(id: string, owner?: string): Promise<{ run: number }> {
    if (!UUID.test(id)) throw this.missing(id);
    assertRedis(this.deps.redis);
    const outcome = await this.database(() =>
      this.deps.store.resume(
        id,
        async ({ run, taskType, single, ready }) => {
          try {
            await this.deps.queues.startRun({ taskId: id, run, taskType, single }, ready);
          } catch (error) {
            throw new DependencyUnavailableError('redis', error);
          }
        },
        owner,
      ),
    );
    if (!outcome) throw this.missing(id);
    if (outcome.outcome === 'not_resumable') {
      throw new ConflictError('task_not_retryable', `only a failed or cancelled task can be retried; this one is ${outcome.status}`, {
        status: outcome.status,
      });
    }
    this.deps.logger.info('task resumed', { task_id: id, run: outcome.run });
    return { run: outcome.run };
  }

  async deadLetters(filter: { taskId?: string; tool?: string; limit: number; cursor?: string }): Promise<Page<DeadLetter>> {
    const cursor = filter.cursor ? decodeCursor(filter.cursor) : undefined;
    if (filter.taskId && !UUID.test(filter.taskId)) return { items: [], nextCursor: null };
    const rows = await this.database(() => this.deps.store.listDeadLetters({ ...filter, cursor, limit: filter.limit + 1 }));
    // An expired task's dead letters went with it: say so, as GET /result does.
    if (filter.taskId && rows.length === 0 && this.missing(filter.taskId) instanceof GoneError) throw this.missing(filter.taskId);
    return page(rows, filter.limit);
  }

  /** Replaying a dead letter resumes its task, as POST /tasks/:id/retry does. */
  async replayDeadLetter(id: string): Promise<{ taskId: string; run: number }> {
    if (!UUID.test(id)) throw new NotFoundError('dead_letter_not_found', `no dead letter with id ${JSON.stringify(id)}`);
    const letter = await this.database(() => this.deps.store.getDeadLetter(id));
    if (!letter) throw new NotFoundError('dead_letter_not_found', `no dead letter with id ${JSON.stringify(id)}`);
    const { run } = await this.retry(letter.taskId);
    await this.database(() => this.deps.store.markReplayed(id));
    return { taskId: letter.taskId, run };
  }
}

/** `rows`: up to `limit` + 1, so that one more than the page tells that another page follows. */
function page<T extends { createdAt: Date; id: string }>(rows: T[], limit: number): Page<T> {
  const items = rows.slice(0, limit);
  const last = items.at(-1);
  return { items, nextCursor: rows.length > limit && last ? encodeCursor(last.createdAt, last.id) : null };
}

function encodeCursor(createdAt: Date, id: string): string {
  return Buffer.from(`${createdAt.toISOString()}|${id}`).toString('base64url');
}

function decodeCursor(cursor: string): { createdAt: Date; id: string } {
  const [at, id] = Buffer.from(cursor, 'base64url').toString('utf8').split('|');
  const createdAt = new Date(at ?? '');
  if (!id || !UUID.test(id) || Number.isNaN(createdAt.getTime())) {
    throw new ValidationError('the cursor is invalid', [{ path: 'cursor', message: 'not a cursor returned by this endpoint' }]);
  }
  return { createdAt, id };
}
