import { z } from 'zod';
import { parameterSchema, retryPolicySchema, stepSchema, workflowDefinitionSchema } from '../engine/workflow-definition.js';
import { runningStepSchema, workerViewSchema } from '../fleet/protocol.js';
import { API_KEY_SCOPES } from '../lib/config.js';
import { PACKAGE } from '../lib/package-root.js';
import { catchUpSchema, createScheduleSchema, updateScheduleSchema } from '../schedules/schedule-request.js';
import { circuitSchema, serviceAuthSchema, serviceBodySchema, serviceHeadersSchema, serviceRateLimitSchema } from '../services/service-request.js';
import { taskRequestSchema } from '../tasks/task-request.js';
import { callbackSchema, errorRecordSchema, stepViewSchema, taskSummarySchema, taskViewSchema, timestamp } from '../tasks/task-view.js';
import { ACCESS } from './access.js';
import { invalid, text, tooManyRequests, unavailableOrOverloaded } from './replies.js';
import * as r from './responses.js';
import type { ApiReply, Route } from './route.js';
import { seed001ActionSchema, seed001ParameterSchema, seed001WorkflowSchema } from './routes/compat/seed-001-format.js';
import { COMPAT_TAGS } from './routes/compat/tags.js';
import { ROUTES } from './routes/index.js';
import { executeWorkflowBody } from './routes/workflows.js';

/**
 * The OpenAPI 3.1 description of the API, generated from the routes (src/api/routes/*.ts): the
 * zod schemas they validate requests with, the response schemas (src/api/responses.ts) and their
 * answers, so the document cannot drift from the code. Served at /openapi.json.
 */

type JsonSchema = Record<string, unknown>;

/** Answers every operation can give besides its own: a body that is not JSON, keys, rate limits. */
function commonReplies(operation: Route): Record<number, ApiReply> {
  const replies: Record<number, ApiReply> = {};
  // A page's own form (served by its handler) is not JSON: its answers are its own.
  if ((operation.method === 'post' || operation.method === 'put' || operation.method === 'patch') && !operation.serve) {
    replies[400] = invalid('The body is not valid JSON (`invalid_json`).');
    replies[413] = { description: 'The body is larger than BODY_LIMIT (`payload_too_large`).', body: r.errorBodySchema };
    replies[415] = { description: 'A body was sent that is not `application/json` (`unsupported_media_type`).', body: r.errorBodySchema };
  }
  if (!operation.open) {
    replies[401] = {
      description:
        'API keys (or identity tokens) are configured and no valid key or token was sent (`unauthorized`; for a token, the message says why it was refused).',
      body: r.errorBodySchema,
      headers: { 'WWW-Authenticate': { description: 'The scheme to use: Bearer, or Basic on browser pages.', schema: text } },
    };
    if (operation.access && ACCESS[operation.access].length < API_KEY_SCOPES.length) {
      replies[403] = {
        description: `The key's scope may not do this (\`forbidden\`): it needs ${ACCESS[operation.access].join(' or ')}.`,
        body: r.errorBodySchema,
      };
    }
  }
  if (operation.method === 'post') {
    const csrf =
      'A POST without a bearer key and with neither `Content-Type: application/json` nor an `X-Requested-With` header (`csrf_header_required`): what a cross-site form sends.';
    replies[403] = { description: replies[403] ? `${replies[403].description} ${csrf}` : csrf, body: r.errorBodySchema };
  }
  if (operation.admission || operation.gated) {
    const policy =
      'With POLICY_URL, the policy service refused the work (`policy_denied`, its reason in the message and in `details.reason`); nothing was created or changed.';
    replies[403] = { description: replies[403] ? `${replies[403].description} ${policy}` : policy, body: r.errorBodySchema };
  }
  if (!operation.open) {
    replies[429] = tooManyRequests(
      'More than RATE_LIMIT_PER_MINUTE requests this minute with this key, or more than AUTH_FAILURES_PER_MINUTE wrong keys from this address (`rate_limited`).',
    );
  }
  if (operation.admission) {
    replies[429] = tooManyRequests(
      'This key (or address, without keys) is at one of its quotas: QUOTA_MAX_BACKLOG_PER_KEY unfinished tasks or QUOTA_MAX_BYTES_PER_KEY bytes of their params (`quota_exceeded`, `details.limit` names it), or has ADMISSION_MAX_IN_FLIGHT_PER_KEY submissions in flight in this process (`too_many_in_flight`); or `rate_limited` as on every endpoint. Nothing was created.',
    );
    replies[503] = unavailableOrOverloaded;
  }
  return replies;
}

/** What a POST without a JSON body sends to pass the CSRF rule (src/api/middleware.ts csrfGuard). */
const CSRF_PARAMETER = {
  name: 'X-Requested-With',
  in: 'header',
  required: false,
  description: 'Any value. A POST needs it unless it sends `Content-Type: application/json` (a cross-site form can send neither).',
  schema: { type: 'string' },
  example: 'orchestrator-client',
};

/** Shared schemas, under components/schemas. Requests are described as clients send them (zod input). */
const REQUEST_COMPONENTS: [string, z.ZodType][] = [
  ['AssignTaskRequest', taskRequestSchema],
  ['ExecuteWorkflowRequest', executeWorkflowBody],
  ['RetryPolicy', retryPolicySchema],
  ['WorkflowDefinition', workflowDefinitionSchema],
  ['WorkflowParameter', parameterSchema],
  ['WorkflowStep', stepSchema],
  ['CreateScheduleRequest', createScheduleSchema],
  ['UpdateScheduleRequest', updateScheduleSchema],
  ['ScheduleCatchUp', catchUpSchema],
  ['ServiceRegistration', serviceBodySchema],
  ['ServiceAuth', serviceAuthSchema],
  ['ServiceCircuit', circuitSchema],
  ['ServiceRateLimit', serviceRateLimitSchema],
  ['ServiceHeaders', serviceHeadersSchema],
  ['Seed001Workflow', seed001WorkflowSchema],
  ['Seed001Action', seed001ActionSchema],
  ['Seed001Parameter', seed001ParameterSchema],
];

/** Responses are described as the API sends them (zod output: defaults filled in). */
const RESPONSE_COMPONENTS: [string, z.ZodType][] = [
  ['Timestamp', timestamp],
  ['ErrorBody', r.errorBodySchema],
  ['ValidationErrorBody', r.validationErrorBodySchema],
  ['Problem', r.problemSchema],
  ['ErrorRecord', errorRecordSchema],
  ['TaskAssigned', r.assignedSchema],
  ['TaskView', taskViewSchema],
  ['TaskStep', stepViewSchema],
  ['TaskCallback', callbackSchema],
  ['TaskSummary', taskSummarySchema],
  ['TaskStreamEvent', r.taskStreamEventSchema],
  ['HistoryEvent', r.historyEventSchema],
  ['Tool', r.toolSchema],
  ['AppliedRetryPolicy', retryPolicySchema],
  ['StoredWorkflow', r.storedWorkflowSchema],
  ['StoredWorkflowParameter', parameterSchema],
  ['StoredWorkflowStep', stepSchema],
  ['WorkflowSummary', r.workflowSummarySchema],
  ['DeadLetter', r.deadLetterSchema],
  ['DependencyChecks', r.dependencyChecksSchema],
  ['Schedule', r.scheduleSchema],
  ['ScheduleDetail', r.scheduleDetailSchema],
  ['ScheduleRun', r.scheduleRunSchema],
  ['Service', r.serviceSchema],
  ['Worker', workerViewSchema],
  ['RunningStep', runningStepSchema],
  ['AffectedWorkflows', r.affectedWorkflowsSchema],
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

export interface OpenApiOptions {
  /**
   * The service requires API keys: every operation but the open ones lists the key it needs
   * (bearer, or basic on browser pages) and nothing else. Without keys no operation lists any,
   * since none is needed. Tools that import the document (Postman, Portman) take the first
   * requirement, so an optional `{}` first would make them send no key. @defaultValue true
   */
  keys?: boolean;
}

const COMPAT_TAG_NAMES: ReadonlySet<string> = new Set(COMPAT_TAGS.map((tag) => tag.name));

/** Builds the document from the routes. Use `openApiDocument()`, which builds it once. */
export function buildOpenApiDocument(operations: readonly Route[] = ROUTES, options: OpenApiOptions = {}): OpenApiDocument {
  const keys = options.keys ?? true;
  const requests = new Converter('input', REQUEST_COMPONENTS);
  const responses = new Converter('output', RESPONSE_COMPONENTS);

  // The compatibility routes are mounted before the native ones whose paths they share a prefix
  // with (/workflows/search is not a workflow), but a reader (and an importer that runs the
  // operations in order, as Postman does) meets the native API first.
  const compat = (operation: Route) => operation.tags.every((tag) => COMPAT_TAG_NAMES.has(tag));
  const ordered = [...operations.filter((operation) => !compat(operation)), ...operations.filter(compat)];

  // Register everything first, then convert each direction once, then assemble.
  const pending = ordered.map((operation) => {
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
      ...(operation.method === 'post' ? [CSRF_PARAMETER] : []),
    ];
    // OpenAPI 3.1 lets a bearer or basic requirement list the roles it needs: here the key scopes.
    const scopes = operation.access ? [...ACCESS[operation.access]] : [];
    const schemes = operation.browser ? [{ bearerAuth: scopes }, { basicAuth: scopes }] : [{ bearerAuth: scopes }];
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
            ...(schema
              ? { content: { [reply.mediaType ?? 'application/json']: { schema: schema(), ...(reply.examples ? { examples: reply.examples } : {}) } } }
              : {}),
          },
        ]),
      ),
      // What the running service requires: with keys, a key on every operation but the open ones.
      security: operation.open || !keys ? [] : schemes,
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
      { name: 'schedules', description: 'Tasks made on every tick of a cron expression or an interval.' },
      { name: 'services', description: 'The service registry: third-party HTTP services whose OpenAPI operations are tools, each with a circuit breaker.' },
      {
        name: 'workers',
        description: 'Workers of users’ own: they register their tools and report their steps with a `worker` key, and never hold the database.',
      },
      { name: 'tools', description: 'The tool adapters workers run.' },
      { name: 'dead-letters', description: 'Steps that exhausted their retries.' },
      { name: 'system', description: 'Health, metrics and documentation.' },
      ...COMPAT_TAGS,
    ],
    paths,
    components: {
      schemas: { ...requestSchemas, ...responseSchemas },
      securitySchemes: {
        bearerAuth: {
          type: 'http',
          scheme: 'bearer',
          description:
            'One of the keys in API_KEYS or API_KEYS_FILE, or, with AUTH_JWKS_URL or AUTH_JWT_SECRET, an identity token: a JWT whose signature, issuer (AUTH_JWT_ISSUER), audience (AUTH_JWT_AUDIENCE), `exp` and `nbf` are checked, and whose scope (AUTH_JWT_SCOPE_CLAIM, exactly one of admin, client, read) and owner (AUTH_JWT_OWNER_CLAIM) come from its claims. A token that is not accepted answers 401 `unauthorized`, saying why.',
        },
        basicAuth: { type: 'http', scheme: 'basic', description: 'Browser pages: any user name, one of the keys in API_KEYS or API_KEYS_FILE as password.' },
      },
    },
  };
}

const cached = new Map<boolean, { document: OpenApiDocument; json: string }>();

function built(keys: boolean) {
  let entry = cached.get(keys);
  if (!entry) {
    const document = buildOpenApiDocument(ROUTES, { keys });
    entry = { document, json: JSON.stringify(document) };
    cached.set(keys, entry);
  }
  return entry;
}

/** The document, built on first use: schemas do not change while the process runs. `keys`: see OpenApiOptions. */
export function openApiDocument(keys = true): OpenApiDocument {
  return built(keys).document;
}

/** The document as JSON text, serialised once. */
export function openApiJson(keys = true): string {
  return built(keys).json;
}
