import { createHash } from 'node:crypto';
import { keyProblems, resolveLimits } from '../engine/key-limits.js';
import { type Plan, planToolTask, type RunOverrides } from '../engine/plan.js';
import { isFinished, type StepStatus } from '../engine/status.js';
import { IDENTIFIER } from '../engine/workflow-definition.js';
import type { DeadLetter } from '../generated/prisma/client.js';
import { Batcher, ItemFailure } from '../lib/batcher.js';
import { CALLBACK_HEADERS, callbackHostsFor, callbackSecretFor } from '../lib/callback-signing.js';
import { canonicalJson } from '../lib/canonical-json.js';
import type { ApiKeyScope, Config } from '../lib/config.js';
import {
  type ApiError,
  ConflictError,
  DependencyUnavailableError,
  type ErrorRecord,
  GoneError,
  NotFoundError,
  type Problem,
  ValidationError,
} from '../lib/errors.js';
import { hostPolicyFor } from '../lib/host-policy.js';
import type { Logger } from '../lib/logger.js';
import { PolicyDeniedError } from '../lib/policy-errors.js';
import { unstorableProblems, zodProblems } from '../lib/problems.js';
import { QuotaExceededError } from '../lib/quota-exceeded-error.js';
import { uuidv7Time } from '../lib/uuid7.js';
import type { Metrics } from '../observability/metrics.js';
import { captureTraceContext, inSpan, SpanAttributes, type SpanHandle, withBatchTraceContext } from '../observability/tracing.js';
import type { Reachability } from '../persistence/database.js';
import { retentionCutoff } from '../persistence/partitions.js';
import { isTransientDatabaseError } from '../persistence/retry.js';
import type { TaskFilter, TaskStore } from '../persistence/task-store.js';
import type { EventNotices } from '../queue/event-notices.js';
import type { KeyQuotas } from '../queue/key-quotas.js';
import type { RedisClient } from '../queue/redis.js';
import { isRedisUnavailable } from '../queue/redis.js';
import type { TaskQueues } from '../queue/task-queues.js';
import type { ToolRegistry } from '../tools/tool.js';
import type { PolicyHook } from './policy-hook.js';
import type { CreateOutcome, PreparedTask, Runs } from './runs.js';
import type { TaskRequest } from './task-request.js';
import { taskView } from './task-view.js';
import { Waits } from './waits.js';

/** A dead letter as stored: the API shows it (src/api/routes/dead-letters.ts). */
export type { DeadLetter };

/** The idempotency keys of tasks that schedules make start with this. */
export const SCHEDULE_KEY_PREFIX = 'schedule:';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export interface TaskServiceDeps {
  config: Config;
  logger: Logger;
  registry: ToolRegistry;
  store: TaskStore;
  queues: TaskQueues;
  /** The producer connection: fails fast while Redis is down. */
  redis: RedisClient;
  events: EventNotices;
  metrics: Metrics;
  /** Where runs start, end and change (the ledger and the engine). */
  runs: Runs;
  /**
   * Builds the plan of a registered workflow (of `version`, or the current one), or returns
   * undefined for an unknown name.
   */
  planWorkflow?: (
    name: string,
    params: Record<string, unknown>,
    overrides: RunOverrides,
    paramsField: string,
    version?: number,
  ) => Promise<{ plan: Plan; params: Record<string, unknown>; workflow: { name: string; version: number } } | undefined>;
  /** Names of registered workflows, for the 404 of an unknown task_type. */
  workflowNames?: () => Promise<string[]>;
  /** Whether PostgreSQL can be reached: while it cannot, requests answer 503 at once instead of waiting for a connection. */
  reachability?: Reachability;
  /** Quotas per client on unfinished tasks and their bytes (QUOTA_*); counted when `SubmitOptions.client` is given. */
  quotas?: KeyQuotas;
  /** The schedule and tick that made a task (ScheduleStore.tickOf), for its view. */
  tickOf?: (taskId: string) => Promise<{ name: string; tickAt: Date } | undefined>;
  /** Asked before a task is accepted (POLICY_URL); undefined: no policy. */
  policy?: PolicyHook;
}

export interface SubmitOptions {
  /** POST /workflows/:name/execute: only a workflow may answer to the name. */
  workflowOnly?: boolean;
  /** Where params sit in the request body, for error paths. @defaultValue 'params' */
  paramsField?: string;
  /** Id of the API key that submits the task; idempotency keys are per owner. @defaultValue '' (no authentication) */
  owner?: string;
  /** Scope of that key, for the policy hook; undefined without authentication. */
  scope?: ApiKeyScope;
  /** Who the quotas count the task against (`key:<id>` or `ip:<address>`); undefined: not counted. */
  client?: string;
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

/** What storing a submission did: stored it, or found the task its idempotency key names. */
type CreateResult = { created: true } | { created: false; id: string; requestHash: string | null };

/** Tasks as the API sees them: submit, read, list, cancel, retry. Knows nothing of HTTP. */
export class TaskService {
  private readonly submissions: Batcher<PreparedTask, CreateResult>;

  /** Wait steps from the outside: signals, approval links and pages. */
  readonly waits: Waits;

  constructor(private readonly deps: TaskServiceDeps) {
    this.waits = new Waits({ config: deps.config, store: deps.store, runs: deps.runs });
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

  private async plan(
    body: TaskRequest,
    options: SubmitOptions,
  ): Promise<{ plan: Plan; params: Record<string, unknown>; workflow?: { name: string; version: number } }> {
    const overrides: RunOverrides = {
      ...(body.retry ? { retry: body.retry } : {}),
      ...(body.timeout_ms ? { timeout_ms: body.timeout_ms } : {}),
      ...(body.priority ? { priority: body.priority } : {}),
    };
    const paramsField = options.paramsField ?? 'params';
    const nul = unstorableProblems(body.params, [paramsField]);
    if (nul.length > 0) throw new ValidationError('params hold characters that cannot be stored', nul, 'invalid_params');
    const tool = options.workflowOnly ? undefined : this.deps.registry.get(body.task_type);
    if (tool) {
      if (body.version !== undefined) {
        throw new ValidationError('a tool has no versions', [{ path: 'version', message: `${tool.name} is a tool; version is for workflows` }]);
      }
      const params = tool.input.safeParse(body.params);
      if (!params.success) {
        throw new ValidationError(`params do not fit the input schema of tool '${tool.name}'`, zodProblems(params.error, [paramsField]), 'invalid_params');
      }
      const input = params.data as Record<string, unknown>;
      const problems = (['concurrency', 'rate_limit'] as const).flatMap((field) =>
        body[field] ? keyProblems(body[field].key, Object.keys(input)).map((message) => ({ path: `${field}.key`, message })) : [],
      );
      if (problems.length > 0) throw new ValidationError('a limit key cannot be made from these params', problems, 'invalid_params');
      const limits = resolveLimits(body, input, 'task');
      return { plan: planToolTask(tool, input, { ...overrides, ...(limits ? { limits } : {}) }), params: input };
    }
    // A name that cannot be a workflow's is not looked up.
    const workflow = IDENTIFIER.test(body.task_type)
      ? await this.database(async () => this.deps.planWorkflow?.(body.task_type, body.params, overrides, paramsField, body.version))
      : undefined;
    if (workflow && (body.concurrency || body.rate_limit)) {
      const field = body.concurrency ? 'concurrency' : 'rate_limit';
      throw new ValidationError('a workflow sets its limits per key in its definition', [
        { path: field, message: `${field} on a request is for a one-tool task; give the workflow (or its steps) a ${field}` },
      ]);
    }
    if (workflow) return workflow;
    if (options.workflowOnly || body.version !== undefined) {
      throw new NotFoundError(
        'workflow_not_found',
        `no workflow is named ${JSON.stringify(body.task_type)}${body.version !== undefined ? ` with a version ${body.version}` : ''}`,
      );
    }
    const workflows = (await this.database(async () => this.deps.workflowNames?.())) ?? [];
    throw new NotFoundError('unknown_task_type', `no tool or workflow is named ${JSON.stringify(body.task_type)}`, {
      known_task_types: [...this.deps.registry.names(), ...workflows].sort(),
      tools: this.deps.registry.names(),
      workflows,
    });
  }

  /** Checks a request as submit does (known task type, params that fit), storing and enqueuing nothing. */
  async check(body: TaskRequest, options: SubmitOptions = {}): Promise<void> {
    await this.plan(body, options);
  }

  /**
   * Asks the policy about a validated task: a refusal throws PolicyDeniedError; params the policy
   * rewrote are validated and planned again, as if submitted (400 when they do not fit). A
   * workflow is planned again at the version found first.
   */
  private async applyPolicy(policy: PolicyHook, body: TaskRequest, options: SubmitOptions, planned: Awaited<ReturnType<TaskService['plan']>>) {
    const taskType = planned.workflow?.name ?? body.task_type;
    const decision = await policy.decide({ task_type: taskType, params: planned.params, key_id: options.owner || null, scope: options.scope ?? null });
    if (!decision.allow) throw new PolicyDeniedError(decision.reason);
    if (!decision.params) return planned;
    const rewritten: TaskRequest = {
      ...body,
      task_type: taskType,
      params: decision.params,
      ...(planned.workflow ? { version: planned.workflow.version } : {}),
    };
    try {
      return await this.plan(rewritten, options);
    } catch (error) {
      if (error instanceof ValidationError) {
        throw new ValidationError(`the params as the policy rewrote them do not fit: ${error.message}`, error.details as Problem[], error.code);
      }
      throw error;
    }
  }

  async submit(body: TaskRequest, options: SubmitOptions = {}): Promise<Submitted> {
    return inSpan('task.submit', { [SpanAttributes.TASK_TYPE]: body.task_type }, (span) => this.submitInSpan(body, options, span));
  }

  private async submitInSpan(body: TaskRequest, options: SubmitOptions, span: SpanHandle): Promise<Submitted> {
    const receivedAt = new Date();
    if (body.callback_url) this.checkCallback(body.callback_url, options.owner ?? '');
    const validated = await this.plan(body, options);
    const planned = this.deps.policy ? await this.applyPolicy(this.deps.policy, body, options, validated) : validated;
    // Known down: answer at once, before writing anything.
    assertRedis(this.deps.redis);
    if (this.deps.reachability && !this.deps.reachability.reachable) throw new DependencyUnavailableError('database');
    // The one place task ids are made for clients: the id holds the task's creation time
    // (src/ledger/task-days.ts) and, through its hash, the queue shard of its jobs.
    const taskType = planned.workflow?.name ?? body.task_type;
    const id = this.deps.queues.newTaskId(receivedAt, taskType);
    span.setAttributes({ [SpanAttributes.TASK_ID]: id });
    const requestHash = createHash('sha256')
      .update(canonicalJson({ ...body, idempotency_key: undefined }))
      .digest('hex');
    // The engine starts the task (which steps start at once): a first step whose input is too large is a 400 now.
    const prepared = this.deps.runs.prepare(
      {
        id,
        createdAt: uuidv7Time(id)!,
        taskType,
        ...(planned.workflow ? { workflow: planned.workflow } : {}),
        params: planned.params,
        requestHash,
        priority: body.priority ?? 0,
        delayMs: body.delay_ms ?? 0,
        owner: options.owner ?? '',
        ...(body.idempotency_key ? { idempotencyKey: body.idempotency_key } : {}),
        ...(body.callback_url ? { callbackUrl: body.callback_url } : {}),
      },
      planned.plan,
      options.paramsField,
    );
    const trace = captureTraceContext();
    const quotas = options.client !== undefined && this.deps.quotas?.enabled ? this.deps.quotas : undefined;
    if (quotas) {
      // Only Redis is asked here: a lost connection is Redis away (a master failing over), not the database.
      const refused = await quotas
        .reserve(options.client!, id, Buffer.byteLength(JSON.stringify(planned.params)), body.delay_ms ?? 0)
        .catch((error: unknown) => {
          // Unanswered is not undone: the client may resend the reservation once Redis is back
          // (an in-flight command is replayed on reconnect), so it is released as well.
          quotas.release(id);
          throw isRedisUnavailable(error) ? new DependencyUnavailableError('redis', error) : error;
        });
      if (refused) {
        throw new QuotaExceededError(
          refused.limit,
          refused.max,
          refused.held,
          refused.limit === 'QUOTA_MAX_BYTES_PER_KEY' ? 'bytes of params' : 'unfinished tasks',
        );
      }
    }
    const created = await this.submissions.add({ ...prepared, ...(trace ? { trace } : {}) }).catch((error: unknown) => {
      quotas?.release(id);
      throw error;
    });
    if (!created.created) {
      quotas?.release(id);
      span.setAttributes({ [SpanAttributes.TASK_ID]: created.id, 'orchestrator.task.deduplicated': true });
      if (created.requestHash !== requestHash) {
        throw new ConflictError('idempotency_conflict', 'this idempotency_key was used with a different request body', {
          task_id: created.id,
        });
      }
      return { taskId: created.id, replayed: true };
    }
    this.deps.metrics.tasksSubmitted.inc({ task_type: taskType });
    this.deps.logger.debug('task assigned', { task_id: id, task_type: taskType, steps: planned.plan.steps.length });
    return { taskId: id, replayed: false };
  }

  /**
   * Stores a batch of concurrent submissions in one statement and adds their jobs in one round
   * trip per queue shard (Runs.create). Tasks a shard refused are removed again and their
   * clients hear 503 (nothing is left half-created); a task whose idempotency key is taken
   * names the task that holds it.
   */
  private async persistAndEnqueue(batch: PreparedTask[]): Promise<(CreateResult | ItemFailure)[]> {
    const outcomes: CreateOutcome[] = await withBatchTraceContext(
      batch.map(({ trace }) => trace),
      () => this.database(() => this.deps.runs.create(batch)),
    );
    const taken = batch.filter(({ task }, index) => {
      const outcome = outcomes[index]!;
      return 'created' in outcome && !outcome.created && task.idempotencyKey;
    });
    const holders =
      taken.length > 0
        ? await this.database(() => this.deps.store.keyHolders(taken.map(({ task }) => ({ owner: task.owner ?? '', key: task.idempotencyKey! }))))
        : [];
    // JSON of the pair: no separator that a key could contain.
    const pair = (owner: string, key: string) => JSON.stringify([owner, key]);
    const byKey = new Map(holders.map((row) => [pair(row.owner_key, row.idempotency_key), row]));
    return batch.map(({ task }, index): CreateResult | ItemFailure => {
      const outcome = outcomes[index]!;
      if ('refused' in outcome) return new ItemFailure(new DependencyUnavailableError('redis', outcome.refused));
      if (outcome.created) return { created: true };
      const holder = byKey.get(pair(task.owner ?? '', task.idempotencyKey ?? ''));
      if (!holder) return new ItemFailure(new Error(`task ${task.id} was neither stored nor found by its idempotency key`));
      return { created: false, id: holder.id, requestHash: holder.request_hash };
    });
  }

  /** A callback must be signable and go to a host its owner's callbacks may reach. */
  private checkCallback(url: string, owner: string): void {
    if (!this.deps.config.CALLBACK_SECRET) {
      throw new ValidationError(
        'callbacks are not enabled on this server',
        [{ path: 'callback_url', message: 'set CALLBACK_SECRET to sign callbacks' }],
        'callbacks_disabled',
      );
    }
    const refused = hostPolicyFor(callbackHostsFor(this.deps.config, owner)).checkUrl(new URL(url));
    if (refused) throw new ValidationError('the callback URL is not allowed', [{ path: 'callback_url', message: refused }], 'callback_url_not_allowed');
  }

  /** What `owner` needs to verify its callbacks: the secret derived for it, and how it signs. */
  callbackSecret(owner: string) {
    const root = this.deps.config.CALLBACK_SECRET;
    if (!root) throw new NotFoundError('callbacks_disabled', 'callbacks are not enabled on this server: there is no secret to verify them with');
    return {
      owner,
      secret: callbackSecretFor(root, owner),
      algorithm: 'HMAC-SHA256' as const,
      signature_header: CALLBACK_HEADERS.signature,
      timestamp_header: CALLBACK_HEADERS.timestamp,
      signed_content: '<timestamp header>.<raw body>',
    };
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
    // Only a schedule's tasks carry its idempotency keys (src/schedules/schedule-service.ts): no lookup for the others.
    const tick = task.idempotencyKey?.startsWith(SCHEDULE_KEY_PREFIX) ? await this.database(async () => this.deps.tickOf?.(id)) : undefined;
    const view = taskView(task, (step) => this.waits.waitingFor(task, step));
    return tick ? { ...view, schedule: { name: tick.name, tick_at: tick.tickAt.toISOString() } } : view;
  }

  /** Sends signal `name` to the wait step of task `id` that waits for it; `by`: the sender's key id. */
  async signal(id: string, name: string, payload: unknown, by: string, owner?: string): Promise<{ stepId: string }> {
    if (!UUID.test(id)) throw this.missing(id);
    const task = await this.database(() => this.deps.store.get(id));
    if (!task || (owner !== undefined && task.ownerKey !== owner)) throw this.missing(id);
    return this.database(() => this.waits.signal(task, name, payload, by));
  }

  /** A page of a for_each step's items, in item order; `cursor` is the last item of the previous page. */
  async items(id: string, stepId: string, page: { limit: number; status?: StepStatus; cursor?: string }, owner?: string) {
    if (!UUID.test(id)) throw this.missing(id);
    const after = page.cursor === undefined ? undefined : Number(page.cursor);
    if (after !== undefined && (!Number.isInteger(after) || after < 0)) {
      throw new ValidationError('the cursor is invalid', [{ path: 'cursor', message: 'not a cursor returned by this endpoint' }]);
    }
    const task = await this.database(() => this.deps.store.ownerOf(id));
    if (task === undefined || (owner !== undefined && task !== owner)) throw this.missing(id);
    const rows = await this.database(() =>
      this.deps.store.items(id, stepId, { limit: page.limit + 1, ...(after !== undefined ? { after } : {}), ...(page.status ? { status: page.status } : {}) }),
    );
    if (rows.length === 0 && after === undefined && !(await this.database(() => this.deps.store.hasStep(id, stepId)))) {
      throw new NotFoundError('step_not_found', `task ${id} has no step ${JSON.stringify(stepId)}`);
    }
    const items = rows.slice(0, page.limit);
    return {
      task_id: id,
      step_id: stepId,
      items: items.map((row) => ({
        item: row.item,
        status: row.status,
        attempts: row.attempts,
        run: row.run,
        ...(row.input !== null ? { input: row.input } : {}),
        ...(row.output !== null ? { output: row.output } : {}),
        ...(row.error !== null ? { error: row.error as unknown as ErrorRecord } : {}),
        started_at: row.startedAt?.toISOString() ?? null,
        finished_at: row.finishedAt?.toISOString() ?? null,
        duration_ms: row.startedAt && row.finishedAt ? row.finishedAt.getTime() - row.startedAt.getTime() : null,
      })),
      next_cursor: rows.length > page.limit ? String(items.at(-1)!.item) : null,
    };
  }

  /**
   * A page of a task's durable history, in order (README "History"); `after` is the cursor of
   * the previous page, `stepId` keeps one step's events. A task of another owner is not found.
   */
  async history(id: string, page: { limit: number; after?: string; stepId?: string }, owner?: string) {
    if (!UUID.test(id)) throw this.missing(id);
    const after = page.after === undefined ? undefined : decodeHistoryCursor(page.after);
    const task = await this.database(() => this.deps.store.ownerOf(id));
    if (task === undefined || (owner !== undefined && task !== owner)) throw this.missing(id);
    const rows = await this.database(() =>
      this.deps.store.history(id, {
        limit: page.limit + 1,
        ...(after !== undefined ? { after } : {}),
        ...(page.stepId !== undefined ? { stepId: page.stepId } : {}),
      }),
    );
    const events = rows.slice(0, page.limit);
    const last = events.at(-1);
    return {
      task_id: id,
      events: events.map((row) => ({
        seq: Number(row.seq),
        type: row.type,
        at: row.at.toISOString(),
        run: row.run,
        ...(row.stepId !== null ? { step_id: row.stepId } : {}),
        ...(row.item !== null ? { item: row.item } : {}),
        ...(row.attempt !== null ? { attempt: row.attempt } : {}),
        ...(row.data !== null ? { data: row.data as Record<string, unknown> } : {}),
      })),
      next_cursor: rows.length > page.limit && last ? encodeHistoryCursor(last.seq) : null,
    };
  }

  async list(filter: Omit<TaskFilter, 'cursor'> & { cursor?: string }) {
    const cursor: TaskFilter['cursor'] = filter.cursor ? decodeCursor(filter.cursor) : undefined;
    const rows = await this.database(() => this.deps.store.list({ ...filter, cursor, limit: filter.limit + 1 }));
    return page(rows, filter.limit);
  }

  /**
   * Cancels a task and its sub-workflows' children: no further step starts, waiting steps end,
   * and the workers holding its running steps are told to abort them.
   */
  /** `by`: who asks (an API key's id, '' without keys), recorded in the task's history. */
  async cancel(id: string, owner?: string, by?: string): Promise<void> {
    if (!UUID.test(id)) throw this.missing(id);
    const outcome = await this.database(() => this.deps.runs.cancel(id, owner, by));
    if (!outcome) throw this.missing(id);
    if (outcome.outcome === 'finished') {
      throw new ConflictError('task_finished', `the task already ended (${outcome.status}); nothing to cancel`, { status: outcome.status });
    }
    this.deps.logger.info('task cancelled', { task_id: id });
  }

  /** Resumes a failed or cancelled task from its unfinished steps (and its children's); returns its new run. */
  async retry(id: string, owner?: string, by?: string): Promise<{ run: number }> {
    if (!UUID.test(id)) throw this.missing(id);
    assertRedis(this.deps.redis);
    let outcome: Awaited<ReturnType<Runs['resume']>>;
    try {
      outcome = await this.database(() => this.deps.runs.resume(id, owner, by));
    } catch (error) {
      if (error instanceof DependencyUnavailableError || isTransientDatabaseError(error)) throw error;
      // Adding the new run's jobs failed (the transaction rolled back): Redis is away.
      if (this.deps.redis.status !== 'ready') throw new DependencyUnavailableError('redis', error);
      throw error;
    }
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

/** A history cursor: the last event's seq, opaque to clients. */
function encodeHistoryCursor(seq: bigint): string {
  return Buffer.from(`e${seq}`).toString('base64url');
}

function decodeHistoryCursor(cursor: string): bigint {
  const text = /^[A-Za-z0-9_-]{1,40}$/.test(cursor) ? Buffer.from(cursor, 'base64url').toString('utf8') : '';
  const match = /^e(\d{1,19})$/.exec(text);
  if (!match) throw new ValidationError('the cursor is invalid', [{ path: 'after', message: 'not a cursor returned by this endpoint' }]);
  return BigInt(match[1]!);
}
