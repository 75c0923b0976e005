import createFetchClient, { type Client } from 'openapi-fetch';
import { OrchestratorError } from './errors.js';
import { readEventStream } from './events.js';
import type { components, operations, paths } from './openapi.js';
import type { WorkflowDefinition, WorkflowParams } from './workflow.js';

/**
 * The typed client of the Orchestrator API, for browsers and Node alike (fetch only). Its types
 * come from the API description (client/openapi.d.ts, `npm run client:generate`).
 */

export { type CallbackPayload, type VerifiedCallback, type VerifyCallbackOptions, verifyCallback } from './callbacks.js';
export { OrchestratorError, type Problem } from './errors.js';
export type { components, operations, paths } from './openapi.js';
export { paramsFilter } from './params-filter.js';
export { defineWorkflow, type WorkflowDefinition, type WorkflowParams } from './workflow.js';

type Schemas = components['schemas'];
export type TaskView = Schemas['TaskView'];
export type TaskStatus = TaskView['status'];
export type TaskSummary = Schemas['TaskSummary'];
export type StoredWorkflow = Schemas['StoredWorkflow'];
export type WorkflowSummary = Schemas['WorkflowSummary'];
export type Tool = Schemas['Tool'];
export type Schedule = Schemas['Schedule'];
export type ScheduleDetail = Schemas['ScheduleDetail'];
export type ScheduleRun = Schemas['ScheduleRun'];
export type NewSchedule = Schemas['CreateScheduleRequest'];
export type ScheduleChange = Schemas['UpdateScheduleRequest'];
export type TaskQuery = NonNullable<operations['listTasks']['parameters']['query']>;
export type StepItemQuery = NonNullable<operations['listStepItems']['parameters']['query']>;
export type HistoryQuery = NonNullable<operations['getTaskHistory']['parameters']['query']>;
/** One event of a task's durable history (`history`). */
export type HistoryEvent = Schemas['HistoryEvent'];
/** What `POST /assign-task` takes besides `task_type` and `params`. */
export type SubmitOptions = Omit<Schemas['AssignTaskRequest'], 'task_type' | 'params'>;

export interface Submission extends Readonly<Schemas['TaskAssigned']> {
  /** The task already existed: an earlier request with the same `idempotency_key` and body created it (200, not 202). */
  replayed: boolean;
}

/** One event of `follow`: a task or step transition, or a progress report, with its event id. */
export type TaskEvent = Schemas['TaskStreamEvent'] & { id: string };
/** What `follow` yields: first the task as it is (`snapshot`), then its events. */
export type FollowEvent = { type: 'snapshot'; id: string; task: TaskView } | TaskEvent;

/** The statuses a task ends in. */
export const FINISHED_STATUSES: ReadonlySet<string> = new Set<TaskStatus>(['completed', 'failed', 'cancelled']);

/** The longest `?wait=` the API holds a request for. */
const MAX_WAIT_S = 30;

export interface ClientOptions {
  /** Where the API answers, e.g. `http://127.0.0.1:3000`. @defaultValue '' (the page's own origin, in a browser) */
  baseUrl?: string;
  /** Sent as `Authorization: Bearer <key>`; needed when the server has API keys. */
  apiKey?: string;
  /** @defaultValue globalThis.fetch */
  fetch?: (request: Request) => Promise<Response>;
}

export interface WaitOptions {
  /** Stops waiting: `AbortSignal.timeout(60_000)` bounds the wait. */
  signal?: AbortSignal;
}

export interface FollowOptions {
  /** Resume after this event id (an earlier event's `id`) instead of starting with a snapshot. */
  lastEventId?: string;
  /** Stops following and closes the stream. */
  signal?: AbortSignal;
}

type Answer<T> = { data?: T; error?: unknown; response: Response };

/** The data of a 2xx answer; any other answer throws an OrchestratorError with the API's code. */
async function unwrap<T>(call: Promise<Answer<T>>): Promise<{ data: T; response: Response }> {
  const { data, error, response } = await call;
  if (!response.ok) throw new OrchestratorError(response, error);
  return { data: data as T, response };
}

function pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener(
      'abort',
      () => {
        clearTimeout(timer);
        reject(signal.reason);
      },
      { once: true },
    );
  });
}

/** The `?owner=` of a schedule's operations, when given. */
function whose(owner: string | undefined): { query?: { owner: string } } {
  return owner === undefined ? {} : { query: { owner } };
}

export class OrchestratorClient {
  /**
   * Every endpoint of the API, typed (openapi-fetch): `await client.api.GET('/stats', {params: {query: {window: '1h'}}})`.
   * Answers come back as `{data, error, response}`; the methods of this class unwrap them.
   */
  readonly api: Client<paths>;

  /** Workflow definitions: store, read, archive, execute. */
  readonly workflows = {
    /** Stores the definition as the workflow's next version (201); an invalid one throws `invalid_workflow` with every problem's path. */
    push: async (definition: WorkflowDefinition): Promise<StoredWorkflow> =>
      // The readonly arrays defineWorkflow keeps are sent as they are.
      (await unwrap(this.api.POST('/workflows', { body: definition as Schemas['WorkflowDefinition'] }))).data,
    list: async (): Promise<WorkflowSummary[]> => (await unwrap(this.api.GET('/workflows'))).data.workflows,
    /** The current version, or `version`. */
    get: async (name: string, version?: number): Promise<StoredWorkflow> =>
      (await unwrap(this.api.GET('/workflows/{name}', { params: { path: { name }, query: version === undefined ? {} : { version } } }))).data,
    versions: async (name: string) => (await unwrap(this.api.GET('/workflows/{name}/versions', { params: { path: { name } } }))).data.versions,
    /** Archives the name; its versions and tasks stay. */
    archive: async (name: string) => (await unwrap(this.api.DELETE('/workflows/{name}', { params: { path: { name } } }))).data,
    /** As `submit(name, parameters)`, through `POST /workflows/:name/execute`. */
    execute: async (name: string, parameters: Record<string, unknown> = {}, options: SubmitOptions = {}): Promise<Submission> => {
      const { data, response } = await unwrap(this.api.POST('/workflows/{name}/execute', { params: { path: { name } }, body: { ...options, parameters } }));
      return { ...data, replayed: response.status === 200 };
    },
  };

  constructor(options: ClientOptions = {}) {
    this.api = createFetchClient<paths>({
      baseUrl: options.baseUrl?.replace(/\/+$/, '') ?? '',
      // X-Requested-With: the API refuses a POST without it or a JSON body (its CSRF rule).
      headers: { 'x-requested-with': 'orchestrator-client', ...(options.apiKey ? { authorization: `Bearer ${options.apiKey}` } : {}) },
      ...(options.fetch ? { fetch: options.fetch } : {}),
    });
  }

  /**
   * Schedules: a task on every tick of a cron expression or an interval (docs/workflows.md "Schedules").
   * Names are unique per owner: `owner` (a key id) says whose schedule of a name an admin or read
   * key means when several keys use it; a client key's is always its own.
   */
  readonly schedules = {
    /** Creates a schedule (201); a bad cron or time zone throws `invalid_schedule` with the reason at its path, a name of yours `schedule_exists`. */
    create: async (schedule: NewSchedule): Promise<Schedule> => (await unwrap(this.api.POST('/schedules', { body: schedule }))).data,
    list: async (): Promise<Schedule[]> => (await unwrap(this.api.GET('/schedules'))).data.schedules,
    /** The schedule with its next 5 fire times and its latest runs (tick, outcome, task). */
    get: async (name: string, owner?: string): Promise<ScheduleDetail> =>
      (await unwrap(this.api.GET('/schedules/{name}', { params: { path: { name }, ...whose(owner) } }))).data,
    /** Changes only the fields given. */
    update: async (name: string, change: ScheduleChange, owner?: string): Promise<Schedule> =>
      (await unwrap(this.api.PATCH('/schedules/{name}', { params: { path: { name }, ...whose(owner) }, body: change }))).data,
    pause: async (name: string, owner?: string): Promise<Schedule> => this.schedules.update(name, { paused: true }, owner),
    /** Resumes it; the ticks missed meanwhile run as its `catch_up` says. */
    resume: async (name: string, owner?: string): Promise<Schedule> => this.schedules.update(name, { paused: false }, owner),
    delete: async (name: string, owner?: string) => (await unwrap(this.api.DELETE('/schedules/{name}', { params: { path: { name }, ...whose(owner) } }))).data,
  };

  /**
   * Submits a task: a tool or a workflow by name, or a workflow declared with `defineWorkflow`
   * (then `params` is typed by its parameters). Invalid params throw `invalid_params` with one
   * problem per path; an unknown type throws `unknown_task_type`.
   */
  submit(taskType: string, params?: Record<string, unknown>, options?: SubmitOptions): Promise<Submission>;
  submit<const D extends WorkflowDefinition>(workflow: D, params: WorkflowParams<D>, options?: SubmitOptions): Promise<Submission>;
  async submit(type: string | WorkflowDefinition, params: Record<string, unknown> = {}, options: SubmitOptions = {}): Promise<Submission> {
    const taskType = typeof type === 'string' ? type : type.name;
    const { data, response } = await unwrap(this.api.POST('/assign-task', { body: { ...options, task_type: taskType, params } }));
    return { ...data, replayed: response.status === 200 };
  }

  /** The task with its steps. `wait` (seconds, at most 30) holds the answer until the task ends or that time passes. */
  async result(taskId: string, options: WaitOptions & { wait?: number } = {}): Promise<TaskView> {
    const query = options.wait ? { wait: Math.min(options.wait, MAX_WAIT_S) } : {};
    return (await unwrap(this.api.GET('/result/{task_id}', { params: { path: { task_id: taskId }, query }, signal: options.signal }))).data;
  }

  /**
   * Waits for the task to end (completed, failed or cancelled) and resolves with it, by long
   * polls of 30 s. A busy server's 429 or 503 is waited out as its Retry-After asks. Waits as long
   * as it takes unless `signal` stops it.
   */
  async waitForResult(taskId: string, options: WaitOptions = {}): Promise<TaskView> {
    for (;;) {
      try {
        const task = await this.result(taskId, { wait: MAX_WAIT_S, signal: options.signal });
        if (FINISHED_STATUSES.has(task.status)) return task;
      } catch (error) {
        if (!(error instanceof OrchestratorError) || (error.status !== 429 && error.status !== 503)) throw error;
        await pause((error.retryAfterS ?? 1) * 1000, options.signal);
      }
    }
  }

  /**
   * Follows a task live (`GET /tasks/:id/events`): yields a `snapshot` (the task as it is), then
   * one event per step and task transition and per progress report, and ends after the task
   * ends. When the server ends a stream early (its lifetime, a restart) it resumes from the last
   * event id, so nothing is missed. Stop early with `break` or `signal`.
   *
   * ```ts
   * for await (const event of client.follow(id)) {
   *   if (event.type === 'step') console.log(event.step_id, event.status);
   * }
   * ```
   */
  async *follow(taskId: string, options: FollowOptions = {}): AsyncGenerator<FollowEvent, void, undefined> {
    let lastEventId = options.lastEventId;
    for (;;) {
      const { data: body } = await unwrap(
        this.api.GET('/tasks/{task_id}/events', {
          params: { path: { task_id: taskId }, header: lastEventId === undefined ? {} : { 'Last-Event-ID': lastEventId } },
          headers: { accept: 'text/event-stream' },
          parseAs: 'stream',
          signal: options.signal,
        }),
      );
      if (!body) throw new Error(`GET /tasks/${taskId}/events answered without a body`);
      for await (const message of readEventStream(body)) {
        // `reconnect` (the stream's lifetime) and `shutdown` (the API restarts) end the stream: resume below.
        if (message.event !== 'snapshot' && message.event !== 'task' && message.event !== 'step' && message.event !== 'progress') continue;
        const id = message.id ?? lastEventId ?? '';
        lastEventId = id;
        const data = JSON.parse(message.data) as unknown;
        if (message.event === 'snapshot') {
          const task = data as TaskView;
          yield { type: 'snapshot', id, task };
          // A resumed stream whose history expired ends with the task's final snapshot.
          if (FINISHED_STATUSES.has(task.status)) return;
        } else {
          const event = { ...(data as Schemas['TaskStreamEvent']), id };
          yield event;
          if (event.type === 'task' && FINISHED_STATUSES.has(event.status ?? '')) return;
        }
      }
    }
  }

  /** Tasks, newest first; pass `next_cursor` back as `cursor` for the next page. */
  async tasks(query: TaskQuery = {}) {
    return (await unwrap(this.api.GET('/tasks', { params: { query } }))).data;
  }

  /** A for_each step's items, in order, with their status, output or error; pass `next_cursor` back as `cursor`. */
  async items(taskId: string, stepId: string, query: StepItemQuery = {}) {
    return (await unwrap(this.api.GET('/tasks/{task_id}/steps/{step_id}/items', { params: { path: { task_id: taskId, step_id: stepId }, query } }))).data;
  }

  /**
   * A page of the task's durable history, oldest first: every state change, attempt, retry and
   * callback delivery; `step` keeps one step's events. Pass `next_cursor` back as `after`.
   */
  async history(taskId: string, query: HistoryQuery = {}) {
    return (await unwrap(this.api.GET('/tasks/{task_id}/history', { params: { path: { task_id: taskId }, query } }))).data;
  }

  /** Cancels the task; its running steps are aborted wherever they run. A finished task throws `task_finished`. */
  async cancel(taskId: string) {
    return (await unwrap(this.api.POST('/tasks/{task_id}/cancel', { params: { path: { task_id: taskId } } }))).data;
  }

  /** Resumes a failed or cancelled task as a new run; completed steps are not run again. */
  async retry(taskId: string) {
    return (await unwrap(this.api.POST('/tasks/{task_id}/retry', { params: { path: { task_id: taskId } } }))).data;
  }

  /**
   * Sends signal `name` to the wait step of the task that waits for it; `payload` becomes the
   * step's output (an approval's: `{decision: "approved" | "rejected", comment?, fields?}`).
   * Throws `already_signalled` when the step got its signal first, `not_waiting` before it waits.
   */
  async signal(taskId: string, name: string, payload: unknown = {}) {
    return (await unwrap(this.api.POST('/tasks/{task_id}/signals/{name}', { params: { path: { task_id: taskId, name } }, body: payload as never }))).data;
  }

  /** This key's callback secret, for `verifyCallback`; throws `callbacks_disabled` when the server signs none. */
  async callbackSecret() {
    return (await unwrap(this.api.GET('/callback-secret'))).data;
  }

  /** The tool adapters, with their input and output JSON Schemas. */
  async tools(): Promise<Tool[]> {
    return (await unwrap(this.api.GET('/tools'))).data.tools;
  }
}

/** `createClient({baseUrl: 'http://127.0.0.1:3000', apiKey})`: the same as `new OrchestratorClient(options)`. */
export function createClient(options: ClientOptions = {}): OrchestratorClient {
  return new OrchestratorClient(options);
}
