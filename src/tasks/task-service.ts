import { createHash } from 'node:crypto';
import { keyProblems, resolveLimits } from '../engine/key-limits.js';
import { type Plan, planToolTask, type TaskOverrides } from '../engine/plan.js';
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
import { unstorableProblems, zodProblems } from '../lib/problems.js';
import { QuotaExceededError } from '../lib/quota-exceeded-error.js';
import { uuidv7Time } from '../lib/uuid7.js';
import type { Metrics } from '../observability/metrics.js';
import { captureTraceContext, inSpan, SpanAttributes, type SpanHandle, withBatchTraceContext } from '../observability/tracing.js';
import type { Reachability } from '../persistence/database.js';
import { retentionCutoff } from '../persistence/partitions.js';
import { isTransientDatabaseError } from '../persistence/retry.js';
import type { TaskFilter, TaskRecord, TaskStore } from '../persistence/task-store.js';
import type { EventNotices } from '../queue/event-notices.js';
import type { RedisClient } from '../queue/redis.js';
import type { TaskQueues } from '../queue/task-queues.js';
import type { ToolRegistry } from '../tools/tool.js';
import type { CreateOutcome, PreparedTask, Runs } from './runs.js';
import { LOWEST_PRIORITY, type TaskRequest } from './task-request.js';
import { taskView } from './task-view.js';
import { type Sender, Waits } from './waits.js';
import { ownerClient, type QuotaClaim, type WorkGate } from './work-gate.js';

/** A dead letter as stored: the API shows it (src/api/routes/dead-letters.ts). */
export type { DeadLetter };

/** The idempotency keys of tasks that schedules make start with this. */
export const SCHEDULE_KEY_PREFIX = 'schedule:';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** Attempts GET /tasks/{id}/steps/{step}/logs returns, oldest first: a step retried more often shows its first ones. */
const STEP_LOG_ATTEMPTS_MAX = 50;
/** A long-poll that began without reading its task looks at it this long into its wait (an end whose notice was lost). */
const LOOK_AFTER_MS = 1_000;

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
    overrides: TaskOverrides,
    paramsField: string,
    version?: number,
  ) => Promise<{ plan: Plan; params: Record<string, unknown>; workflow: { name: string; version: number } } | undefined>;
  /** Names of registered workflows, for the 404 of an unknown task_type. */
  workflowNames?: () => Promise<string[]>;
  /** Whether PostgreSQL can be reached: while it cannot, requests answer 503 at once instead of waiting for a connection. */
  reachability?: Reachability;
  /** The schedule and tick that made a task (ScheduleStore.tickOf), for its view. */
  tickOf?: (taskId: string) => Promise<{ name: string; tickAt: Date } | undefined>;
  /**
   * The admission of every path that makes work (src/tasks/work-gate.ts): the policy hook and
   * the quotas per client. The same one is given to `runs` (sub-workflows' children). Undefined:
   * no policy, no quotas.
   */
  gate?: WorkGate;
}

export interface SubmitOptions {
  /** POST /workflows/:name/execute: only a workflow may answer to the name. */
  workflowOnly?: boolean;
  /** Where params sit in the request body, for error paths. @defaultValue 'params' */
  paramsField?: string;
  /** Id of the API key that submits the task; idempotency keys are per owner. @defaultValue '' (no authentication) */
  owner?: string;
  /** The asking key, when it is not the owner (an admin changing another key's schedule). @defaultValue owner */
  keyId?: string;
  /** Scope of that key, for the policy hook; undefined without authentication (and for a tick). */
  scope?: ApiKeyScope;
  /** Who the quotas count the task against (`key:<id>`, `ip:<address>`, ownerClient); undefined: not counted. */
  client?: string;
  /**
   * Admission found the client over its share while work waits (src/api/admission.ts
   * behindOthers): the task's jobs take the lowest BullMQ priority, whatever it asked for, so
   * other clients' work runs first. Its record keeps the priority asked for. @defaultValue false
   */
  behindOthers?: boolean;
  /** The submitter may hold approval links, so the task.waiting callback may carry them (src/api/access.ts holdsLinks). @defaultValue false */
  callbackLinks?: boolean;
  /** Which path submits (or, for check, defines): the policy is told. @defaultValue 'submit' (check: the policy is not asked) */
  kind?: 'submit' | 'tick' | 'schedule';
  /** The schedule that defines or ticks the task, for the policy. */
  schedule?: string;
}

/** Who asks, on a path that changes an existing task (retry, replay, signal). */
export interface Asker {
  /** Only a task of this owner is found (a client key's view); undefined: any task. */
  owner?: string;
  /** The asking key's id; '' or undefined without authentication. */
  keyId?: string;
  scope?: ApiKeyScope;
  /** The asking client (`key:<id>`, `ip:<address>`): what a resumed task without an owner counts against. */
  client?: string;
}

/** What a reader of tasks may see: only its own (a client key), and approval links only where it may hand them out (an admin key). */
export interface Viewer {
  /** Only a task of this owner is found; undefined: any task. */
  owner?: string;
  /** Whether approval links are shown. */
  links: boolean;
  /** Whether the answer carries the task's params (GET /result?include=params). */
  params?: boolean;
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
    this.waits = new Waits({ config: deps.config, store: deps.store, runs: deps.runs, ...(deps.gate ? { gate: deps.gate } : {}) });
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
    const overrides: TaskOverrides = {
      ...(body.retry ? { retry: body.retry } : {}),
      ...(body.timeout_ms ? { timeout_ms: body.timeout_ms } : {}),
      ...(options.behindOthers ? { priority: LOWEST_PRIORITY } : body.priority ? { priority: body.priority } : {}),
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

  /**
   * Checks a request as submit does (known task type, params that fit), storing and enqueuing
   * nothing. With `kind` (a schedule's definition) the gate is asked too; params the policy
   * rewrites are not kept (each tick asks again, and its rewrite applies).
   */
  async check(body: TaskRequest, options: SubmitOptions = {}): Promise<void> {
    const planned = await this.plan(body, options);
    if (options.kind && this.deps.gate) await this.deps.gate.admit(this.workRequest(body, options, planned));
  }

  private workRequest(body: TaskRequest, options: SubmitOptions, planned: Awaited<ReturnType<TaskService['plan']>>) {
    const owner = options.owner ?? '';
    return {
      kind: options.kind ?? 'submit',
      taskType: planned.workflow?.name ?? body.task_type,
      params: planned.params,
      // A tick acts for its schedule's owner: no request asks.
      keyId: (options.keyId ?? owner) || null,
      scope: options.scope ?? null,
      owner,
      ...(options.schedule !== undefined ? { schedule: options.schedule } : {}),
    };
  }

  /**
   * Admits a validated task through the gate (the policy, then its quota when `claim` is
   * given): params the policy rewrote are validated and planned again, as if submitted (400
   * when they do not fit, the quota given back). A workflow is planned again at the version
   * found first. The quota's reservation of a client far from its limits is returned on its way
   * (`reserving`): the task is stored meanwhile, and enqueued only once it is counted (Runs.create).
   */
  private async admit(body: TaskRequest, options: SubmitOptions, planned: Awaited<ReturnType<TaskService['plan']>>, claim: QuotaClaim | undefined) {
    const gate = this.deps.gate;
    if (!gate) return { planned };
    const { rewritten, reserving } = await gate.admit(this.workRequest(body, options, planned), claim, { inFlight: true });
    if (!rewritten) return { planned, reserving };
    const again: TaskRequest = {
      ...body,
      task_type: planned.workflow?.name ?? body.task_type,
      params: rewritten,
      ...(planned.workflow ? { version: planned.workflow.version } : {}),
    };
    try {
      return { planned: await this.plan(again, options), reserving };
    } catch (error) {
      if (claim) gate.release(claim, reserving);
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
    // Known down: answer at once, before asking anyone or writing anything.
    assertRedis(this.deps.redis);
    if (this.deps.reachability && !this.deps.reachability.reachable) throw new DependencyUnavailableError('database');
    // The one place task ids are made for clients: the id holds the task's creation time
    // (src/ledger/task-days.ts) and, through its hash, the queue shard of its jobs.
    const taskType = validated.workflow?.name ?? body.task_type;
    const id = this.deps.queues.newTaskId(receivedAt, taskType);
    span.setAttributes({ [SpanAttributes.TASK_ID]: id });
    const claim = options.client !== undefined && this.deps.gate?.counts ? { client: options.client, taskId: id, delayMs: body.delay_ms ?? 0 } : undefined;
    const { planned, reserving } = await this.admit(body, options, validated, claim);
    const release = () => claim && this.deps.gate?.release(claim, reserving);
    // What a replay of the key is checked against (409 when it differs); a task without a key is
    // never replayed, so it keeps none (as a sub-workflow's child), and its body is not hashed.
    const requestHash = body.idempotency_key
      ? createHash('sha256')
          .update(canonicalJson({ ...body, idempotency_key: undefined }))
          .digest('hex')
      : '';
    let prepared: PreparedTask;
    try {
      // The engine starts the task (which steps start at once): a first step whose input is too large is a 400 now.
      prepared = this.deps.runs.prepare(
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
          ...(body.callback_url ? { callbackUrl: body.callback_url, callbackLinks: options.callbackLinks ?? false } : {}),
        },
        planned.plan,
        options.paramsField,
      );
    } catch (error) {
      release();
      throw error;
    }
    const trace = captureTraceContext();
    // Before its job is added, so that its end's notice cannot come first: a long-poll of it here need not read it before waiting.
    this.deps.events.submitting(id, options.owner ?? '');
    const created = await this.submissions
      .add({ ...prepared, ...(trace ? { trace } : {}), ...(reserving !== undefined ? { reserving } : {}) })
      .catch((error: unknown) => {
        this.deps.events.forget(id);
        release();
        throw error;
      });
    if (!created.created) {
      this.deps.events.forget(id);
      release();
      span.setAttributes({ [SpanAttributes.TASK_ID]: created.id, 'orchestrator.task.deduplicated': true });
      if (created.requestHash !== requestHash) {
        throw new ConflictError('idempotency_conflict', 'this idempotency_key was used with a different request body', {
          task_id: created.id,
        });
      }
      return { taskId: created.id, replayed: true };
    }
    this.deps.metrics.tasksSubmitted.inc({ task_type: taskType });
    if (this.deps.logger.isLevelEnabled('debug'))
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
      // The quota's own refusal (its reservation answered beside the insert), or a shard's.
      if ('refused' in outcome)
        return new ItemFailure(
          outcome.refused instanceof QuotaExceededError || outcome.refused instanceof DependencyUnavailableError
            ? outcome.refused
            : new DependencyUnavailableError('redis', outcome.refused),
        );
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

  /**
   * `viewer`: whose tasks may be found, and whether approval links are shown (by default: any task, no links).
   * `hold`: asked once the task is found unfinished, before the answer waits for its end (a
   * long-poll's slot, LONG_POLLS_PER_KEY); what it throws is thrown from here. A task that already
   * ended (or is not found) answers without it.
   */
  async result(id: string, waitSeconds = 0, signal?: AbortSignal, viewer: Viewer = { links: false }, hold?: () => Promise<void>) {
    const owner = viewer.owner;
    if (!UUID.test(id)) throw this.missing(id);
    const waitMs = Math.min(waitSeconds, this.deps.config.RESULT_WAIT_MAX_S) * 1000;
    let found: TaskRecord | undefined;
    let read = false;
    if (waitMs > 0) {
      // Submitted through this process, and no notice has said that it ended: whose it is is
      // known, and the wait begins without a read (the seed's loop polls each task just after
      // submitting it: a read of PostgreSQL per task less); it looks once LOOK_AFTER_MS in, in
      // case the end's notice was lost. Otherwise one read, once listening has begun (an end just
      // before it is not missed), says whether to wait and whose task it is. Either way another
      // owner's task is not found, and not waited for either, since how long the answer takes
      // would tell that it exists. The read is of the whole task, so that one that already ended
      // is answered from it.
      const submittedBy = this.deps.events.unfinishedHere(id);
      if (submittedBy !== undefined && owner !== undefined && submittedBy !== owner) throw this.missing(id);
      await this.deps.events.waitForEnd(
        id,
        waitMs,
        async () => {
          if (submittedBy === undefined) {
            const first = await this.database(() => this.deps.store.view(id));
            if (first && owner !== undefined && first.ownerKey !== owner) throw this.missing(id);
            if (first === undefined || isFinished(first.status)) {
              found = first;
              read = true;
              return true;
            }
          }
          // Listening already: an end while the slot is taken is not missed.
          await hold?.();
          return false;
        },
        signal,
        // After a lost subscription (or LOOK_AFTER_MS in): whether it ended meanwhile (its answer is then read below).
        async () => {
          const now = await this.database(() => this.deps.store.view(id));
          return now === undefined || isFinished(now.status);
        },
        submittedBy !== undefined ? LOOK_AFTER_MS : undefined,
      );
    }
    if (!read) found = await this.database(() => this.deps.store.view(id));
    const task = found;
    if (!task || (owner !== undefined && task.ownerKey !== owner)) throw this.missing(id);
    // Only a schedule's tasks carry its idempotency keys (src/schedules/schedule-service.ts): no lookup for the others.
    const tick = task.idempotencyKey?.startsWith(SCHEDULE_KEY_PREFIX) ? await this.database(async () => this.deps.tickOf?.(id)) : undefined;
    const view = taskView(task, (step) => this.waits.waitingFor(task, step, viewer.links));
    // The seed's loop polls here: the view as built, unless something is added to it.
    if (!viewer.params && !tick) return view;
    return {
      ...view,
      ...(viewer.params ? { params: (task.params ?? {}) as Record<string, unknown> } : {}),
      ...(tick ? { schedule: { name: tick.name, tick_at: tick.tickAt.toISOString() } } : {}),
    };
  }

  /** Sends signal `name` to the wait step of task `id` that waits for it, through the gate (Waits.signal). */
  async signal(id: string, name: string, payload: unknown, asker: Asker = {}): Promise<{ stepId: string; buffered: boolean }> {
    if (!UUID.test(id)) throw this.missing(id);
    const task = await this.database(() => this.deps.store.get(id));
    if (!task || (asker.owner !== undefined && task.ownerKey !== asker.owner)) throw this.missing(id);
    const sender: Sender = { keyId: asker.keyId || null, scope: asker.scope ?? null };
    return this.database(() => this.waits.signal(task, name, payload, sender));
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
        ...(row.childTaskId ? { child_task_id: row.childTaskId } : {}),
      })),
      next_cursor: rows.length > page.limit ? String(items.at(-1)!.item) : null,
    };
  }

  /**
   * A page of a task's durable history, in order (docs/workflows.md "History"); `after` is the cursor of
   * the previous page, `stepId` keeps one step's events. A task of another owner is not found.
   */
  /** What a step's tool logged through ctx.logger, attempt by attempt (GET /tasks/{id}/steps/{step}/logs). */
  async stepLogs(id: string, stepId: string, owner?: string) {
    if (!UUID.test(id)) throw this.missing(id);
    const task = await this.database(() => this.deps.store.ownerOf(id));
    if (task === undefined || (owner !== undefined && task !== owner)) throw this.missing(id);
    if (!(await this.database(() => this.deps.store.hasStep(id, stepId))))
      throw new NotFoundError('step_not_found', `task ${id} has no step ${JSON.stringify(stepId)}`);
    const rows = await this.database(() => this.deps.store.attemptLogs(id, stepId, STEP_LOG_ATTEMPTS_MAX));
    return {
      task_id: id,
      step_id: stepId,
      attempts: rows.map((row) => {
        const data = (row.data ?? {}) as { try?: number; lines?: unknown[]; dropped?: number };
        return {
          run: row.run,
          ...(row.item !== null ? { item: row.item } : {}),
          attempt: row.attempt ?? 0,
          ...(data.try !== undefined ? { try: data.try } : {}),
          at: row.at.toISOString(),
          lines: (data.lines ?? []) as { at: string; level: string; message: string; fields?: unknown }[],
          dropped: data.dropped ?? 0,
        };
      }),
    };
  }

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

  /**
   * Resumes a failed or cancelled task from its unfinished steps (and its children's); returns
   * its new run. The gate is asked first (`kind` retry, or replay for a dead letter's): a
   * resumed task is work again, counted against its owner's quotas. A rewrite of the params by
   * the policy does not apply: a retry resumes the task as it was submitted.
   */
  async retry(id: string, asker: Asker = {}, kind: 'retry' | 'replay' = 'retry'): Promise<{ run: number }> {
    if (!UUID.test(id)) throw this.missing(id);
    assertRedis(this.deps.redis);
    const gate = this.deps.gate;
    let claim: QuotaClaim | undefined;
    // The run this retry was admitted (and counted) for: another retry that made it first leaves
    // this one nothing to make (moved_on), not a run after it that nothing counts.
    let expectedRun: number | undefined;
    if (gate) {
      const task = await this.database(() => this.deps.store.summary(id));
      if (!task || (asker.owner !== undefined && task.ownerKey !== asker.owner)) throw this.missing(id);
      // Only what can be resumed is put to the policy: the 409 needs no decision.
      if (task.status !== 'failed' && task.status !== 'cancelled') throw notRetryable(task.status);
      const taskId = id;
      expectedRun = task.run + 1;
      // Counted for the run it is to make: the release of the run that ended, if still on its
      // way, then leaves the count to it (KeyQuotas.release).
      claim = gate.counts ? { client: task.ownerKey ? ownerClient(task.ownerKey) : (asker.client ?? ownerClient('')), taskId, run: expectedRun } : undefined;
      await gate.admit(
        { kind, taskType: task.taskType, params: task.params, keyId: asker.keyId || null, scope: asker.scope ?? null, owner: task.ownerKey, taskId },
        claim,
      );
    }
    const release = () => claim && gate?.release(claim);
    let outcome: Awaited<ReturnType<Runs['resume']>>;
    try {
      outcome = await this.database(() => this.deps.runs.resume(id, asker.owner, asker.keyId ?? '', expectedRun));
    } catch (error) {
      if (claim) await this.releaseUnlessResumed(claim);
      if (error instanceof DependencyUnavailableError || isTransientDatabaseError(error)) throw error;
      // Adding the new run's jobs failed (the transaction rolled back): Redis is away.
      if (this.deps.redis.status !== 'ready') throw new DependencyUnavailableError('redis', error);
      throw error;
    }
    if (!outcome) {
      release();
      throw this.missing(id);
    }
    if (outcome.outcome === 'not_resumable') {
      // Resumed meanwhile by another retry, or not resumable at all: this retry's claim on the run
      // goes back either way, and the other retry's claim keeps the task counted (KeyQuotas.undo).
      release();
      throw notRetryable(outcome.status);
    }
    if (outcome.outcome === 'moved_on') {
      release();
      throw new ConflictError('task_not_retryable', `another retry made run ${outcome.run} of this task meanwhile; this one made nothing`, {
        status: outcome.status,
        run: outcome.run,
      });
    }
    this.deps.logger.info('task resumed', { task_id: id, run: outcome.run });
    return { run: outcome.run };
  }

  /**
   * Gives back the claim of a retry whose resume failed, unless the task runs in the run it was
   * counted for: its commit may have gone through with only the answer lost (a connection cut).
   * Another retry of the same run still committing when this reads keeps the task counted by its
   * own claim. One read before the error is answered (bounded by the pool's connection timeout);
   * a task that cannot be read (PostgreSQL away) is given back: a quota fails open.
   */
  private async releaseUnlessResumed(claim: QuotaClaim): Promise<void> {
    const task = this.deps.reachability?.reachable === false ? undefined : await this.deps.store.summary(claim.taskId).catch(() => undefined);
    if (!task || task.run < (claim.run ?? 1) || isFinished(task.status)) this.deps.gate?.release(claim);
  }

  async deadLetters(filter: { taskId?: string; tool?: string; limit: number; cursor?: string }): Promise<Page<DeadLetter>> {
    const cursor = filter.cursor ? decodeCursor(filter.cursor) : undefined;
    if (filter.taskId && !UUID.test(filter.taskId)) return { items: [], nextCursor: null };
    const rows = await this.database(() => this.deps.store.listDeadLetters({ ...filter, cursor, limit: filter.limit + 1 }));
    // An expired task's dead letters went with it: say so, as GET /result does.
    if (filter.taskId && rows.length === 0 && this.missing(filter.taskId) instanceof GoneError) throw this.missing(filter.taskId);
    return page(rows, filter.limit);
  }

  /** The task `owner` submitted with this idempotency key; undefined when none. */
  async byIdempotencyKey(owner: string, key: string): Promise<string | undefined> {
    const [holder] = await this.database(() => this.deps.store.keyHolders([{ owner, key }]));
    return holder?.id;
  }

  /** The ids of a tool's dead letters not replayed yet, oldest first, at most `limit`. */
  async openDeadLetters(tool: string, limit: number): Promise<string[]> {
    return (await this.database(() => this.deps.store.openDeadLettersOf(tool, limit))).map((letter) => letter.id);
  }

  /** Dead letters counted by tool (GET /infrastructure/dlq/stats). */
  deadLetterCounts() {
    return this.database(() => this.deps.store.deadLetterCounts());
  }

  /** Replaying a dead letter resumes its task, as POST /tasks/:id/retry does (the policy is told it is a replay). */
  async replayDeadLetter(id: string, asker: Asker = {}): Promise<{ taskId: string; run: number }> {
    if (!UUID.test(id)) throw new NotFoundError('dead_letter_not_found', `no dead letter with id ${JSON.stringify(id)}`);
    const letter = await this.database(() => this.deps.store.getDeadLetter(id));
    if (!letter) throw new NotFoundError('dead_letter_not_found', `no dead letter with id ${JSON.stringify(id)}`);
    const { run } = await this.retry(letter.taskId, asker, 'replay');
    await this.database(() => this.deps.store.markReplayed(id));
    return { taskId: letter.taskId, run };
  }
}

function notRetryable(status: string): ConflictError {
  return new ConflictError('task_not_retryable', `only a failed or cancelled task can be retried; this one is ${status}`, { status });
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
