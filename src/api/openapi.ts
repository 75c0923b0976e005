import { z } from 'zod';
import { PACKAGE } from '../bootstrap.js';
import { API_KEY_SCOPES } from '../config.js';
import { parameterSchema, stepSchema, workflowDefinitionSchema } from '../workflows/definition.js';
import { ACCESS, type Access } from './access.js';
import * as ex from './openapi-examples.js';
import { type ApiExample } from './openapi-examples.js';
import * as r from './responses.js';
import { deadLettersQuery } from './routes/dead-letters.js';
import { statsQuery } from './routes/stats.js';
import { executeWorkflowBody, versionQuery } from './routes/workflows.js';
import { assignTaskBody, deadLetterIdParam, listTasksQuery, resultQuery, retryPolicySchema, taskIdParam, workflowNameParam } from './schemas.js';

/**
 * The OpenAPI 3.1 description of the API, generated from the zod schemas the handlers validate
 * requests with (src/api/schemas.ts, src/api/routes/*.ts) and the response schemas
 * (src/api/responses.ts), so the document cannot drift from the code. Served at /openapi.json.
 */

type JsonSchema = Record<string, unknown>;
export type HttpMethod = 'get' | 'post' | 'delete';

/** One answer of an operation. A JSON body unless `mediaType` says otherwise. */
export interface ApiReply {
  description: string;
  body?: z.ZodType;
  /** @defaultValue 'application/json' when `body` is set */
  mediaType?: string;
  headers?: Record<string, { description: string; schema: JsonSchema }>;
  /** Examples of the body, by name (src/api/openapi-examples.ts); each must fit `body`. */
  examples?: Record<string, ApiExample>;
}

export interface ApiOperation {
  method: HttpMethod;
  /** In OpenAPI form: `/result/{task_id}`. */
  path: string;
  operationId: string;
  summary: string;
  description?: string;
  tags: string[];
  params?: z.ZodObject;
  query?: z.ZodObject;
  /** Request headers the operation reads. */
  headers?: z.ZodObject;
  body?: z.ZodType;
  /**
   * Examples of the body, by name. The first is what Swagger UI's "Try it out" pre-fills: each
   * must pass `body` and succeed on a default install (test/api/openapi-examples.test.ts).
   */
  bodyExamples?: Record<string, ApiExample>;
  /** Example values of path and query parameters, by name: what "Try it out" pre-fills. */
  paramExamples?: Record<string, string | number>;
  /** Open to anyone even when API_KEYS is set (load balancers, scrapers). */
  open?: boolean;
  /** Which keys may call it (src/api/access.ts); every operation that is not open names one, and its route checks the same. */
  access?: Access;
  /** Browser pages: basic auth (any user name, the key as password) works as well as a bearer key. */
  browser?: boolean;
  responses: Record<number, ApiReply>;
}

const text = { type: 'string' } as const;

const invalid = (what: string): ApiReply => ({ description: what, body: r.validationErrorBodySchema });
const notFound = (what: string): ApiReply => ({ description: what, body: r.errorBodySchema });
const gone: ApiReply = {
  description: 'The task was created more than RETENTION_DAYS ago and its record is gone (`task_expired`); `details` has its `created_at` and the `retention_days`.',
  body: r.errorBodySchema,
};
const conflict = (what: string): ApiReply => ({ description: what, body: r.errorBodySchema });
const unavailable: ApiReply = {
  description: 'Redis or PostgreSQL does not answer (`service_unavailable`, `details.dependency`); nothing was changed. Try again later.',
  body: r.errorBodySchema,
};
/** The answers of an endpoint that creates tasks, which admission control may refuse. */
const unavailableOrOverloaded: ApiReply = {
  description:
    'Redis or PostgreSQL does not answer (`service_unavailable`, `details.dependency`), or admission control refuses new work while the backlog is more than the workers finish in ADMISSION_MAX_WAIT_MS (`overloaded`, `details.backlog` and `details.limit`, with `Retry-After` in seconds); nothing was created. Try again later.',
  body: r.errorBodySchema,
};
const assigned = (status: string, examples: Record<string, ApiExample>): ApiReply => ({ description: status, body: r.assignedSchema, examples });

/** The probes read no body, but a request's body is parsed before any route sees it. */
const BODY_ON_A_PROBE = 'A body was sent and it is not valid JSON (`invalid_json`). Probes need none.';

const taskParams = { params: taskIdParam };
const workflowParams = { params: workflowNameParam };

/** Every endpoint the API serves. The route test checks this list against Express's routes. */
export const OPERATIONS: readonly ApiOperation[] = [
  // Tasks
  {
    method: 'post',
    path: '/assign-task',
    operationId: 'assignTask',
    access: 'submit',
    summary: 'Submit a task',
    description:
      '`task_type` names a tool (a one-step task) or a registered workflow; `params` is checked against its input schema before anything is enqueued. Also answers on `/assign-task/`.',
    tags: ['tasks'],
    body: assignTaskBody,
    bodyExamples: ex.assignTaskExamples,
    responses: {
      202: assigned('Accepted: the task is stored and enqueued.', ex.assignedExamples),
      200: assigned('The same `idempotency_key` with the same body was seen before: the first task, nothing new enqueued.', ex.replayedExamples),
      400: {
        ...invalid(
          'The body does not fit the contract (`validation_error`), or `params` do not fit the input schema (`invalid_params`): one entry per problem. A `callback_url` on a server without CALLBACK_SECRET: `callbacks_disabled`.',
        ),
        examples: ex.assignTaskInvalidExamples,
      },
      404: { ...notFound('No tool or workflow has that name (`unknown_task_type`); `details` lists the known ones.'), examples: ex.unknownTaskTypeExamples },
      409: conflict('The `idempotency_key` was used with a different body (`idempotency_conflict`).'),
      503: unavailableOrOverloaded,
    },
  },
  {
    method: 'get',
    path: '/result/{task_id}',
    operationId: 'getResult',
    access: 'tasks',
    summary: 'Read a task, its steps and its result',
    description:
      'With `?wait=N` the answer waits until the task ends or N seconds pass (at most RESULT_WAIT_MAX_S, 30 by default). A key (or an address, without keys) may have LONG_POLLS_PER_KEY such waiting requests open at once.',
    tags: ['tasks'],
    ...taskParams,
    query: resultQuery,
    responses: {
      200: { description: 'The task.', body: r.taskViewSchema, examples: ex.taskViewExamples },
      400: invalid('The query is invalid.'),
      404: notFound('No such task (`task_not_found`).'),
      410: gone,
      429: {
        description: 'The key already has LONG_POLLS_PER_KEY waiting requests open (`too_many_long_polls`), or sent more than RATE_LIMIT_PER_MINUTE requests this minute (`rate_limited`).',
        body: r.errorBodySchema,
        headers: { 'Retry-After': { description: 'Seconds to wait before trying again.', schema: { type: 'integer' } } },
      },
      503: unavailable,
    },
  },
  {
    method: 'get',
    path: '/tasks',
    operationId: 'listTasks',
    access: 'tasks',
    summary: 'List tasks, newest first',
    tags: ['tasks'],
    query: listTasksQuery,
    responses: {
      200: { description: 'A page of tasks.', body: r.taskListSchema, examples: ex.taskListExamples },
      400: invalid('The query or the cursor is invalid.'),
      503: unavailable,
    },
  },
  {
    method: 'get',
    path: '/tasks/{task_id}',
    operationId: 'getTask',
    access: 'tasks',
    summary: 'Read a task (as GET /result, without waiting)',
    tags: ['tasks'],
    ...taskParams,
    responses: {
      200: { description: 'The task.', body: r.taskViewSchema, examples: ex.taskViewExamples },
      404: notFound('No such task (`task_not_found`).'),
      410: gone,
      503: unavailable,
    },
  },
  {
    method: 'get',
    path: '/tasks/{task_id}/events',
    operationId: 'streamTaskEvents',
    access: 'tasks',
    summary: "Follow a task's progress (Server-Sent Events)",
    description: [
      'A new stream starts with a `snapshot` event whose data is the task as GET /result shows it (`TaskView`), then one event per',
      'task or step transition and progress report (`task`, `step`, `progress`; data: `TaskStreamEvent`). It ends after the task',
      'ends. Every event has an `id:`; reconnect with `Last-Event-ID` (or `?last_event_id=`) to receive only what was missed.',
      'A stopping server sends a `shutdown` event first. Comment lines (`: ping`) keep idle streams open.',
      'A stream lives at most EVENT_STREAM_MAX_S: then a `reconnect` event (its `id:` is the last event id) ends it, and the client resumes from that id.',
      'A key (or an address, without keys) may have EVENT_STREAMS_PER_KEY streams open at once.',
    ].join(' '),
    tags: ['tasks'],
    ...taskParams,
    query: z.object({ last_event_id: z.string().optional().meta({ description: 'As the Last-Event-ID header, for clients that cannot set headers.' }) }),
    headers: z.object({ 'Last-Event-ID': z.string().optional().meta({ description: 'The id of the last event received, e.g. `1700000000000-0`.' }) }),
    responses: {
      200: { description: 'The event stream.', mediaType: 'text/event-stream', body: r.taskStreamMessageSchema, examples: ex.taskEventExamples },
      400: invalid('Last-Event-ID is not an event id.'),
      404: notFound('No such task (`task_not_found`).'),
      410: gone,
      429: {
        description: 'The key already has EVENT_STREAMS_PER_KEY streams open (`too_many_streams`), or sent more than RATE_LIMIT_PER_MINUTE requests this minute (`rate_limited`).',
        body: r.errorBodySchema,
        headers: { 'Retry-After': { description: 'Seconds to wait before trying again.', schema: { type: 'integer' } } },
      },
      503: unavailable,
    },
  },
  {
    method: 'post',
    path: '/tasks/{task_id}/cancel',
    operationId: 'cancelTask',
    access: 'manageTasks',
    summary: 'Cancel a task',
    description: 'No further step starts, and running steps are aborted on whichever worker holds them.',
    tags: ['tasks'],
    ...taskParams,
    responses: {
      200: { description: 'Cancelled.', body: r.taskCancelledSchema, examples: ex.taskCancelledExamples },
      404: notFound('No such task (`task_not_found`).'),
      410: gone,
      409: conflict('The task already ended (`task_finished`).'),
      503: unavailable,
    },
  },
  {
    method: 'post',
    path: '/tasks/{task_id}/retry',
    operationId: 'retryTask',
    access: 'manageTasks',
    summary: 'Resume a failed or cancelled task',
    description: 'Steps that completed are not run again.',
    tags: ['tasks'],
    ...taskParams,
    responses: {
      202: { description: 'Resumed: its unfinished steps are enqueued again.', body: r.taskResumedSchema, examples: ex.taskResumedExamples },
      404: notFound('No such task (`task_not_found`).'),
      410: gone,
      409: conflict('The task neither failed nor was cancelled (`task_not_retryable`).'),
      503: unavailable,
    },
  },

  // Tools
  {
    method: 'get',
    path: '/tools',
    operationId: 'listTools',
    access: 'catalog',
    summary: 'List the tool adapters, with their input and output JSON Schemas and defaults',
    tags: ['tools'],
    responses: { 200: { description: 'Every tool this deployment knows.', body: r.toolListSchema, examples: ex.toolListExamples } },
  },

  // Workflows
  {
    method: 'post',
    path: '/workflows',
    operationId: 'defineWorkflow',
    access: 'admin',
    summary: 'Store a workflow definition (a new version when the name exists)',
    description:
      'Checked before storing: unique step ids, known tools, existing dependencies, no cycles, template references that resolve, literal inputs that fit the tool. Running tasks keep the version they started with.',
    tags: ['workflows'],
    body: workflowDefinitionSchema,
    bodyExamples: ex.defineWorkflowExamples,
    responses: {
      201: { description: 'Stored; the answer holds its version.', body: r.storedWorkflowSchema, examples: ex.storedWorkflowExamples },
      400: invalid('The definition is invalid (`invalid_workflow`): every problem with its JSON path.'),
      503: unavailable,
    },
  },
  {
    method: 'get',
    path: '/workflows',
    operationId: 'listWorkflows',
    access: 'catalog',
    summary: 'List the active workflows (current versions)',
    tags: ['workflows'],
    responses: { 200: { description: 'The workflows.', body: r.workflowListSchema, examples: ex.workflowListExamples }, 503: unavailable },
  },
  {
    method: 'get',
    path: '/workflows/{name}',
    operationId: 'getWorkflow',
    access: 'catalog',
    summary: 'Read a workflow definition',
    tags: ['workflows'],
    ...workflowParams,
    query: versionQuery,
    paramExamples: { name: ex.LOADED_WORKFLOW },
    responses: {
      200: { description: 'The definition.', body: r.storedWorkflowSchema, examples: ex.storedWorkflowExamples },
      400: invalid('The query is invalid.'),
      404: notFound('No such workflow or version (`workflow_not_found`).'),
      503: unavailable,
    },
  },
  {
    method: 'get',
    path: '/workflows/{name}/versions',
    operationId: 'listWorkflowVersions',
    access: 'catalog',
    summary: 'List the versions of a workflow, archived ones included',
    tags: ['workflows'],
    ...workflowParams,
    paramExamples: { name: ex.LOADED_WORKFLOW },
    responses: {
      200: { description: 'The versions, oldest first.', body: r.workflowVersionsSchema, examples: ex.workflowVersionsExamples },
      404: notFound('No such workflow (`workflow_not_found`).'),
      503: unavailable,
    },
  },
  {
    method: 'delete',
    path: '/workflows/{name}',
    operationId: 'archiveWorkflow',
    access: 'admin',
    summary: 'Archive a workflow',
    description: 'It can no longer be run; its versions and tasks are kept.',
    tags: ['workflows'],
    ...workflowParams,
    paramExamples: { name: ex.EXAMPLE_WORKFLOW },
    responses: {
      200: { description: 'Archived.', body: r.workflowArchivedSchema, examples: ex.workflowArchivedExamples },
      404: notFound('No such workflow (`workflow_not_found`).'),
      503: unavailable,
    },
  },
  {
    method: 'post',
    path: '/workflows/{name}/execute',
    operationId: 'executeWorkflow',
    access: 'submit',
    summary: 'Run a workflow (the same answers as POST /assign-task)',
    tags: ['workflows'],
    ...workflowParams,
    body: executeWorkflowBody,
    bodyExamples: ex.executeWorkflowExamples,
    paramExamples: { name: ex.EXAMPLE_WORKFLOW },
    responses: {
      202: assigned('Accepted: the task is stored and enqueued.', ex.executedExamples),
      200: assigned('The same `idempotency_key` with the same body was seen before: the first task.', ex.replayedExamples),
      400: invalid('The body is invalid, or `parameters` do not fit the workflow (`invalid_params`).'),
      404: notFound('No active workflow has that name (`workflow_not_found`).'),
      409: conflict('The `idempotency_key` was used with a different body (`idempotency_conflict`).'),
      503: unavailableOrOverloaded,
    },
  },

  // Dead letters
  {
    method: 'get',
    path: '/dead-letters',
    operationId: 'listDeadLetters',
    access: 'monitor',
    summary: 'List steps that exhausted their retries, with their input and error',
    tags: ['dead-letters'],
    query: deadLettersQuery,
    responses: {
      200: { description: 'A page of dead letters, newest first.', body: r.deadLetterListSchema, examples: ex.deadLetterListExamples },
      400: invalid('The query or the cursor is invalid.'),
      410: gone,
      503: unavailable,
    },
  },
  {
    method: 'post',
    path: '/dead-letters/{id}/replay',
    operationId: 'replayDeadLetter',
    access: 'admin',
    summary: "Replay a dead letter: resumes its task (as POST /tasks/{task_id}/retry)",
    tags: ['dead-letters'],
    params: deadLetterIdParam,
    responses: {
      202: { description: 'The task was resumed.', body: r.deadLetterReplayedSchema, examples: ex.deadLetterReplayedExamples },
      404: notFound('No such dead letter (`dead_letter_not_found`).'),
      409: conflict('Its task neither failed nor was cancelled (`task_not_retryable`).'),
      503: unavailable,
    },
  },

  // Statistics
  {
    method: 'get',
    path: '/stats',
    operationId: 'stats',
    access: 'monitor',
    summary: 'Counts by status and task type, duration percentiles per task type and per tool',
    description:
      'Of the tasks created in the window (and their steps), computed in PostgreSQL. The window spans at most STATS_MAX_WINDOW_DAYS; the queries run under STATS_STATEMENT_TIMEOUT_MS.',
    tags: ['system'],
    query: statsQuery,
    responses: {
      200: { description: 'The statistics of the window.', body: r.statsSchema, examples: ex.statsExamples },
      400: invalid('The query is invalid, or the window is empty or wider than STATS_MAX_WINDOW_DAYS (path `window` or `since`).'),
      503: { description: '`stats_timeout`: the queries took longer than STATS_STATEMENT_TIMEOUT_MS (ask for a shorter window); or `service_unavailable`.', body: r.errorBodySchema },
    },
  },

  // System
  {
    method: 'get',
    path: '/',
    operationId: 'serviceInfo',
    access: 'catalog',
    summary: 'Name, version, uptime and links',
    tags: ['system'],
    responses: { 200: { description: 'About this service.', body: r.serviceInfoSchema, examples: ex.serviceInfoExamples } },
  },
  {
    method: 'get',
    path: '/health',
    operationId: 'health',
    summary: 'Liveness, with the status of Redis and PostgreSQL',
    description: 'Answers 200 while the process runs, even when a dependency is down (then `status` is `degraded`).',
    tags: ['system'],
    open: true,
    responses: {
      200: { description: 'The process is alive.', body: r.healthSchema, examples: ex.healthExamples },
      400: invalid(BODY_ON_A_PROBE),
    },
  },
  {
    method: 'get',
    path: '/ready',
    operationId: 'ready',
    summary: 'Readiness: 200 only when Redis and PostgreSQL answer',
    tags: ['system'],
    open: true,
    responses: {
      200: { description: 'Ready for traffic.', body: r.readySchema, examples: ex.readyExamples },
      400: invalid(BODY_ON_A_PROBE),
      503: { description: 'Redis or PostgreSQL does not answer (`not_ready`).', body: r.notReadySchema, examples: ex.notReadyExamples },
    },
  },
  {
    method: 'get',
    path: '/metrics',
    operationId: 'metrics',
    summary: 'Prometheus metrics of this API process',
    description:
      'Outside API_KEYS. When METRICS_TOKEN is set, it needs `Authorization: Bearer <METRICS_TOKEN>` (else 401 `unauthorized`). Queue, task and dead-letter gauges are read at most once per METRICS_CACHE_MS.',
    tags: ['system'],
    open: true,
    responses: {
      200: { description: 'The Prometheus text exposition format.', mediaType: 'text/plain', body: z.string(), examples: ex.metricsExamples },
      401: {
        description: 'METRICS_TOKEN is set and the request does not carry it (`unauthorized`).',
        body: r.errorBodySchema,
        headers: { 'WWW-Authenticate': { description: '`Bearer realm="metrics"`', schema: text } },
      },
    },
  },
  {
    method: 'get',
    path: '/openapi.json',
    operationId: 'openApiDocument',
    access: 'catalog',
    summary: 'This API description (OpenAPI 3.1)',
    tags: ['system'],
    responses: { 200: { description: 'The OpenAPI document.', body: z.record(z.string(), z.unknown()), examples: ex.openApiExamples } },
  },
  {
    method: 'get',
    path: '/docs',
    operationId: 'apiDocsUi',
    access: 'catalog',
    summary: 'Interactive API documentation (Swagger UI)',
    description: 'The page is served at `/docs/`, its scripts and styles under it; it reads /openapi.json.',
    tags: ['system'],
    browser: true,
    responses: {
      200: { description: 'The page (at `/docs/`).', mediaType: 'text/html', body: z.string(), examples: ex.swaggerPageExamples },
      301: {
        description: '`/docs` redirects to `/docs/`, so the relative URLs of the page resolve.',
        headers: { Location: { description: '`/docs/`', schema: text } },
      },
    },
  },
  {
    method: 'get',
    path: '/redoc',
    operationId: 'apiReferenceUi',
    access: 'catalog',
    summary: 'API reference documentation (ReDoc)',
    description: 'Reads /openapi.json. Its script, ReDoc\'s standalone bundle, is served by this server at `/redoc/redoc.standalone.js`: the page loads nothing from elsewhere.',
    tags: ['system'],
    browser: true,
    responses: { 200: { description: 'The page.', mediaType: 'text/html', body: z.string(), examples: ex.redocPageExamples } },
  },
  {
    method: 'get',
    path: '/admin/queues',
    operationId: 'queuesUi',
    access: 'monitor',
    summary: 'Bull Board: the queues and their jobs, live',
    description: 'A browser UI; its own API and assets live under `/admin/queues/`. Not a stable interface for programs.',
    tags: ['system'],
    browser: true,
    responses: { 200: { description: 'The Bull Board page.', mediaType: 'text/html', body: z.string(), examples: ex.boardPageExamples } },
  },
];

/** Answers every operation can give besides its own: a body that is not JSON, keys, rate limits. */
function commonReplies(operation: ApiOperation): Record<number, ApiReply> {
  const replies: Record<number, ApiReply> = {};
  if (operation.method === 'post') {
    replies[400] = invalid('The body is not valid JSON (`invalid_json`).');
    replies[413] = { description: 'The body is larger than BODY_LIMIT (`payload_too_large`).', body: r.errorBodySchema };
    replies[415] = { description: 'A body was sent that is not `application/json` (`unsupported_media_type`).', body: r.errorBodySchema };
  }
  if (!operation.open) {
    replies[401] = {
      description: 'API keys are configured and no valid key was sent (`unauthorized`).',
      body: r.errorBodySchema,
      headers: { 'WWW-Authenticate': { description: 'The scheme to use: Bearer, or Basic on browser pages.', schema: text } },
    };
    if (operation.access && ACCESS[operation.access].length < API_KEY_SCOPES.length) {
      replies[403] = { description: `The key's scope may not do this (\`forbidden\`): it needs ${ACCESS[operation.access].join(' or ')}.`, body: r.errorBodySchema };
    }
    replies[429] = {
      description: 'More than RATE_LIMIT_PER_MINUTE requests this minute with this key, or more than AUTH_FAILURES_PER_MINUTE wrong keys from this address (`rate_limited`).',
      body: r.errorBodySchema,
      headers: { 'Retry-After': { description: 'Seconds to wait before trying again.', schema: { type: 'integer' } } },
    };
  }
  return replies;
}

/** Shared schemas, under components/schemas. Requests are described as clients send them (zod input). */
const REQUEST_COMPONENTS: [string, z.ZodType][] = [
  ['AssignTaskRequest', assignTaskBody],
  ['ExecuteWorkflowRequest', executeWorkflowBody],
  ['RetryPolicy', retryPolicySchema],
  ['WorkflowDefinition', workflowDefinitionSchema],
  ['WorkflowParameter', parameterSchema],
  ['WorkflowStep', stepSchema],
];

/** Responses are described as the API sends them (zod output: defaults filled in). */
const RESPONSE_COMPONENTS: [string, z.ZodType][] = [
  ['Timestamp', r.timestamp],
  ['ErrorBody', r.errorBodySchema],
  ['ValidationErrorBody', r.validationErrorBodySchema],
  ['Problem', r.problemSchema],
  ['ErrorRecord', r.errorRecordSchema],
  ['TaskAssigned', r.assignedSchema],
  ['TaskView', r.taskViewSchema],
  ['TaskStep', r.stepViewSchema],
  ['TaskCallback', r.callbackSchema],
  ['TaskSummary', r.taskSummarySchema],
  ['TaskStreamEvent', r.taskStreamEventSchema],
  ['Tool', r.toolSchema],
  ['AppliedRetryPolicy', retryPolicySchema],
  ['StoredWorkflow', r.storedWorkflowSchema],
  ['StoredWorkflowParameter', parameterSchema],
  ['StoredWorkflowStep', stepSchema],
  ['WorkflowSummary', r.workflowSummarySchema],
  ['DeadLetter', r.deadLetterSchema],
  ['DependencyChecks', r.dependencyChecksSchema],
];

const INLINE = '__inline_';
const REF_PREFIX = '#/components/schemas/';

/**
 * Converts every schema of one direction in a single pass, so nested component schemas become
 * `$ref`s. Schemas that are not components get a temporary id and are placed inline.
 */
class Converter {
  private readonly registry = z.registry<{ id: string }>();
  private converted: Record<string, JsonSchema> | undefined;
  private next = 0;

  constructor(
    private readonly io: 'input' | 'output',
    components: [string, z.ZodType][],
  ) {
    for (const [id, schema] of components) this.registry.add(schema, { id });
  }

  /** Registers a schema now; its JSON Schema is ready after `convert()`. */
  use(schema: z.ZodType): () => JsonSchema {
    if (!this.registry.has(schema)) this.registry.add(schema, { id: `${INLINE}${this.next++}` });
    const { id } = this.registry.get(schema)!;
    return () => {
      if (!this.converted) throw new Error('convert() first');
      return id.startsWith(INLINE) ? this.converted[id]! : { $ref: `${REF_PREFIX}${id}` };
    };
  }

  convert(): Record<string, JsonSchema> {
    const { schemas } = z.toJSONSchema(this.registry, { target: 'draft-2020-12', io: this.io, uri: (id) => `${REF_PREFIX}${id}` });
    this.converted = {};
    for (const [id, schema] of Object.entries(schemas)) {
      if (id === '__shared') throw new Error('a schema is used in a way that needs shared $defs; give it a component name');
      const { $schema: _dialect, $id: _id, ...rest } = schema as JsonSchema;
      this.converted[id] = rest;
    }
    const components = Object.fromEntries(Object.entries(this.converted).filter(([id]) => !id.startsWith(INLINE)));
    const dangling = JSON.stringify(this.converted).match(new RegExp(`"${REF_PREFIX}${INLINE}\\d+"`));
    if (dangling) throw new Error(`an inline schema is nested in another (${dangling[0]}); give it a component name`);
    return components;
  }
}

function parametersOf(where: 'path' | 'query' | 'header', schema: JsonSchema, examples: Record<string, unknown> = {}): JsonSchema[] {
  const properties = (schema.properties ?? {}) as Record<string, JsonSchema>;
  const required = new Set((schema.required ?? []) as string[]);
  return Object.entries(properties).map(([name, property]) => {
    const { description, ...rest } = property;
    return {
      name,
      in: where,
      required: where === 'path' || required.has(name),
      ...(description !== undefined ? { description } : {}),
      schema: rest,
      ...(examples[name] !== undefined ? { example: examples[name] } : {}),
    };
  });
}

export interface OpenApiDocument {
  openapi: '3.1.0';
  info: JsonSchema;
  servers: { url: string }[];
  tags: JsonSchema[];
  paths: Record<string, Record<string, JsonSchema>>;
  components: { schemas: Record<string, JsonSchema>; securitySchemes: Record<string, JsonSchema> };
}

/** Builds the document from OPERATIONS. Use `openApiDocument()`, which builds it once. */
export function buildOpenApiDocument(operations: readonly ApiOperation[] = OPERATIONS): OpenApiDocument {
  const requests = new Converter('input', REQUEST_COMPONENTS);
  const responses = new Converter('output', RESPONSE_COMPONENTS);

  // Register everything first, then convert each direction once, then assemble.
  const pending = operations.map((operation) => {
    const replies = { ...commonReplies(operation), ...operation.responses };
    return {
      operation,
      params: operation.params && requests.use(operation.params),
      query: operation.query && requests.use(operation.query),
      headers: operation.headers && requests.use(operation.headers),
      body: operation.body && requests.use(operation.body),
      replies: Object.entries(replies)
        .sort(([a], [b]) => Number(a) - Number(b))
        .map(([status, reply]) => ({ status, reply, schema: reply.body && responses.use(reply.body) })),
    };
  });
  const requestSchemas = requests.convert();
  const responseSchemas = responses.convert();
  for (const name of Object.keys(requestSchemas)) {
    if (name in responseSchemas) throw new Error(`component ${name} is both a request and a response schema`);
  }

  const paths: OpenApiDocument['paths'] = {};
  for (const { operation, params, query, headers, body, replies } of pending) {
    const parameters = [
      ...(params ? parametersOf('path', params(), operation.paramExamples) : []),
      ...(query ? parametersOf('query', query(), operation.paramExamples) : []),
      ...(headers ? parametersOf('header', headers()) : []),
    ];
    // OpenAPI 3.1 lets a bearer or basic requirement list the roles it needs: here the key scopes.
    const scopes = operation.access ? [...ACCESS[operation.access]] : [];
    const schemes = operation.browser ? [{}, { bearerAuth: scopes }, { basicAuth: scopes }] : [{}, { bearerAuth: scopes }];
    const pathItem = paths[operation.path] ?? {};
    paths[operation.path] = pathItem;
    pathItem[operation.method] = {
      operationId: operation.operationId,
      summary: operation.summary,
      ...(operation.description ? { description: operation.description } : {}),
      tags: operation.tags,
      ...(parameters.length > 0 ? { parameters } : {}),
      // Handlers read a missing body as {}: the body is required only when {} is not enough.
      ...(body
        ? {
            requestBody: {
              required: !operation.body!.safeParse({}).success,
              content: { 'application/json': { schema: body(), ...(operation.bodyExamples ? { examples: operation.bodyExamples } : {}) } },
            },
          }
        : {}),
      responses: Object.fromEntries(
        replies.map(({ status, reply, schema }) => [
          status,
          {
            description: reply.description,
            ...(reply.headers ? { headers: reply.headers } : {}),
            ...(schema ? { content: { [reply.mediaType ?? 'application/json']: { schema: schema(), ...(reply.examples ? { examples: reply.examples } : {}) } } } : {}),
          },
        ]),
      ),
      // Optional until API_KEYS is set: then every operation but the open ones needs a key.
      security: operation.open ? [] : schemes,
    };
  }

  return {
    openapi: '3.1.0',
    info: {
      title: 'Orchestrator API',
      version: PACKAGE.version,
      description: [
        'Dependable background work on BullMQ: submit a task (a tool or a workflow), follow it, read its result.',
        'Every error body is `{"error": {"code", "message", "details"?}}` with a stable snake_case `code`.',
        'Every answer carries `X-Request-Id` (the one sent, or a new one).',
        'When the server has API keys, every endpoint but /health, /ready and /metrics needs `Authorization: Bearer <key>`,',
        'and a key of a scope the operation allows (`admin`, `client`, `read`; listed in its security requirement). A `client` key sees only the tasks it submitted.',
      ].join(' '),
    },
    servers: [{ url: '/' }],
    tags: [
      { name: 'tasks', description: 'Submit tasks and follow them.' },
      { name: 'workflows', description: 'Workflow definitions: versioned DAGs of tool steps.' },
      { name: 'tools', description: 'The tool adapters workers run.' },
      { name: 'dead-letters', description: 'Steps that exhausted their retries.' },
      { name: 'system', description: 'Health, metrics and documentation.' },
    ],
    paths,
    components: {
      schemas: { ...requestSchemas, ...responseSchemas },
      securitySchemes: {
        bearerAuth: { type: 'http', scheme: 'bearer', description: 'One of the keys in API_KEYS or API_KEYS_FILE.' },
        basicAuth: { type: 'http', scheme: 'basic', description: 'Browser pages: any user name, one of the keys in API_KEYS or API_KEYS_FILE as password.' },
      },
    },
  };
}

let cached: { document: OpenApiDocument; json: string } | undefined;

/** The document, built on first use: schemas do not change while the process runs. */
export function openApiDocument(): OpenApiDocument {
  cached ??= (() => {
    const document = buildOpenApiDocument();
    return { document, json: JSON.stringify(document) };
  })();
  return cached.document;
}

/** The document as JSON text, serialised once. */
export function openApiJson(): string {
  openApiDocument();
  return cached!.json;
}
