import { z } from 'zod';
import { parameterSchema, type WorkflowDefinition } from '../../../engine/workflow-definition.js';
import { effectiveConfig } from '../../../lib/config.js';
import { ApiError, NotFoundError, type Problem, ValidationError } from '../../../lib/errors.js';
import type { StoredWorkflow } from '../../../persistence/workflow-store.js';
import { serviceBodySchema } from '../../../services/service-request.js';
import { errorRecordSchema, stepViewSchema, type TaskViewBody, type taskStatus, timestamp } from '../../../tasks/task-view.js';
import { asker, ownerScope, submitter, viewer } from '../../access.js';
import { errorBody } from '../../http.js';
import * as ex from '../../openapi-examples.js';
import { conflict, gone, invalid, notFound, policyUnavailable, resumedOverQuota, unavailable } from '../../replies.js';
import * as r from '../../responses.js';
import { plainRoute, type Route, route } from '../../route.js';
import { SERVICE_LINKS } from '../../service-links.js';
import { statsQuery, windowStats } from '../stats.js';
import { checks } from '../system.js';
import { taskIdParam } from '../task-events.js';
import { workflowSummary, workflowView } from '../workflows.js';
import * as sx from './seed-001-examples.js';
import {
  ensureDisplayNameFree,
  idOf,
  type PostedForm,
  refuseReservedName,
  refuseUnstorable,
  seed001Parameter,
  seed001UpdateSchema,
  storeSeed001,
  translateParameters,
} from './seed-001-format.js';
import { SEED_001_TAG } from './tags.js';

/**
 * Seed 001's endpoints, each onto the service this product already has: workflows (the format
 * itself is in seed-001-format.ts, read by POST /workflows), tasks as executions, services as
 * the registry, dead letters as the DLQ. Nothing is implemented twice: each handler calls what
 * the native route calls, so access, admission, the policy gate, quotas and idempotency apply
 * unchanged. docs/compat/seed-001.md maps each route.
 */

const tags = [SEED_001_TAG];

// Named `name` as on the native routes of the same paths (seed 001 calls it the workflow's id).
const workflowIdParam = z.object({
  name: z.string().max(1000).meta({ description: "A workflow's id (its name), or its display name (seed 001's name with spaces)." }),
});
const executionIdParam = z.object({ execution_id: taskIdParam.shape.task_id });

/** Seed 001's words for a task's status: `queued` is `pending` there. */
const EXECUTION_STATUSES = ['pending', 'running', 'completed', 'failed', 'cancelled'] as const;
const executionStatus = (status: z.output<typeof taskStatus>): (typeof EXECUTION_STATUSES)[number] => (status === 'queued' ? 'pending' : status);

const executionSummarySchema = z.object({
  execution_id: z.uuid(),
  workflow_id: z.string().meta({ description: 'The workflow run (a one-tool task: its tool).' }),
  workflow_version: z.int().min(1).nullable(),
  status: z.enum(EXECUTION_STATUSES).meta({ description: '`pending` is a queued task; the others are as GET /result says.' }),
  created_at: timestamp,
  started_at: timestamp.nullable(),
  completed_at: timestamp.nullable().meta({ description: 'When it ended, however it ended.' }),
});

const executionSchema = executionSummarySchema.extend({
  task_id: z.uuid().meta({ description: 'The same id: GET /result/{task_id} and GET /tasks/{task_id}/history read it too.' }),
  result: z.unknown().optional(),
  error: errorRecordSchema.optional().meta({ description: "Why it failed or was cancelled (as GET /result's `error`)." }),
  progress: z.object({ completed: z.int().min(0), total: z.int().min(0) }),
  steps: z.array(stepViewSchema),
  timestamp,
});

function executionView(task: TaskViewBody) {
  return {
    execution_id: task.task_id,
    task_id: task.task_id,
    workflow_id: task.workflow?.name ?? task.task_type,
    workflow_version: task.workflow?.version ?? null,
    status: executionStatus(task.status),
    ...(task.result !== undefined ? { result: task.result } : {}),
    ...(task.error !== undefined ? { error: task.error } : {}),
    progress: task.progress,
    steps: task.steps,
    created_at: task.created_at,
    started_at: task.started_at,
    completed_at: task.finished_at,
    timestamp: task.timestamp,
  };
}

const executionListQuery = z
  .object({
    limit: z.coerce.number().int().min(1).max(200).default(50),
    cursor: z.string().max(200).optional().meta({ description: "The previous page's `next_cursor`." }),
  })
  .strict();

const fromTemplateBody = z
  .object({
    template_name: z.string().min(1).max(64).meta({ description: 'One of GET /workflows/templates.' }),
    customizations: z
      .object({
        name: z.string().min(1).max(200).meta({ description: "The new workflow's name: its id, or a display name whose slug is the id." }),
        description: z.string().max(5000).optional(),
        tags: z.array(z.string().min(1).max(64)).max(50).optional(),
        parameters: z
          .record(z.string(), z.unknown())
          .optional()
          .meta({ description: "New defaults of the template's parameters, by name (a parameter given one is no longer required)." }),
      })
      .strict(),
  })
  .strict();

const searchQuery = z
  .object({
    q: z.string().min(1).max(200).meta({ description: 'Text found (case-insensitive) in the name, display name, description or a tag.' }),
    limit: z.coerce.number().int().min(1).max(100).default(20),
  })
  .strict();

const dlqRetryBody = z
  .object({
    ids: z.array(z.uuid()).min(1).max(100).optional().meta({ description: 'Dead letters to replay.' }),
    all_for_tool: z
      .string()
      .min(1)
      .max(129)
      .optional()
      .meta({ description: 'A tool: its dead letters not replayed yet (at most 100 a call; `more` says whether others are left).' }),
  })
  .strict()
  .refine((body) => (body.ids === undefined) !== (body.all_for_tool === undefined), { message: 'give ids or all_for_tool, one of them', path: ['ids'] });

/** Most dead letters one call of /infrastructure/dlq/retry replays. */
const DLQ_RETRY_MAX = 100;

const storedWithVersionSchema = r.storedWorkflowSchema.extend({
  new_version: z.boolean().meta({ description: 'Whether a version was stored (false: the display name alone changed).' }),
});

/** A stored workflow's parameters as seed 001 writes them, and its actions, for a PUT that changes one of them. */
function postedOf(workflow: StoredWorkflow): PostedForm | undefined {
  const posted = workflow.postedForm as PostedForm | null;
  return posted?.format === 'seed-001' ? posted : undefined;
}

/** The 410 of a seed route that means nothing here, naming the routes to use instead. */
function goneRoute(declaration: { path: string; operationId: string; summary: string; why: string; use: string[] }): Route {
  return plainRoute({
    method: 'get',
    path: declaration.path,
    operationId: declaration.operationId,
    summary: declaration.summary,
    description: `Any method, this path and any below it: 410 \`gone\`, ${declaration.why}. \`details.use\` names the routes to use: ${declaration.use.map((use) => `\`${use}\``).join(', ')}.`,
    tags,
    access: 'catalog',
    params: z.object(Object.fromEntries([...declaration.path.matchAll(/\{(\w+)\}/g)].map(([, name]) => [name!, z.string()]))),
    paramExamples: { rest: 'status' },
    mount: true,
    responses: { 410: { description: `Gone: ${declaration.why}.`, body: r.errorBodySchema } },
    serve: () => (req, res) => {
      res
        .status(410)
        .json(errorBody('gone', `${req.method} ${req.originalUrl.split('?')[0]} means nothing here: ${declaration.why}`, { use: declaration.use }));
    },
  });
}

export const SEED_001_ROUTES: Route[] = [
  route({
    method: 'put',
    path: '/workflows/{name}',
    operationId: 'updateWorkflow',
    access: 'admin',
    summary: 'Change a workflow (seed 001): a new version, or its display name alone',
    description:
      "Description, tags, parameters or actions make a new version (running tasks keep theirs); a `name` alone changes the display name of the current version, no new version. Fields replace the stored ones; the others are kept. A workflow posted in seed 001's format keeps its actions unless new ones are given; one posted natively keeps its steps (actions, if given, replace them).",
    tags,
    params: workflowIdParam,
    body: seed001UpdateSchema,
    invalidBody: { code: 'invalid_workflow', message: 'the workflow definition is invalid' },
    bodyExamples: sx.updateWorkflowExamples,
    paramExamples: { name: ex.LOADED_WORKFLOW },
    responses: {
      200: { description: 'Changed.', body: storedWithVersionSchema, examples: sx.updatedWorkflowExamples },
      400: invalid('The change is invalid (`invalid_workflow`, each problem at its path), or changes nothing (`validation_error`).'),
      404: notFound('No active workflow has this id or display name (`workflow_not_found`).'),
      409: conflict('Another workflow already answers to the new name (`workflow_name_taken`).'),
      503: unavailable,
    },
    handler: async ({ params, body, req }, { workflows }) => {
      refuseUnstorable(body);
      const current = await workflows.get(params.name);
      const displayName = body.name === undefined ? current.displayName : body.name === current.name ? null : body.name;
      if (body.name !== undefined && displayName !== null) await ensureDisplayNameFree(workflows, displayName, current.name);
      const versioned = body.description !== undefined || body.tags !== undefined || body.parameters !== undefined || body.actions !== undefined;
      if (!versioned) {
        if (body.name === undefined) {
          throw new ValidationError('the change changes nothing', [{ path: '$', message: 'give one of name, description, tags, parameters, actions' }]);
        }
        return { status: 200, body: { ...workflowView(await workflows.rename(current, displayName)), new_version: false } };
      }
      const description = body.description ?? current.description ?? undefined;
      const workflowTags = body.tags ?? current.tags;
      const createdBy = submitter(req);
      const posted = postedOf(current);
      if (body.actions !== undefined || posted) {
        // In seed 001's format: each part from the change, or as posted before (a native workflow's parameters as seed 001 writes them).
        const seed = {
          name: current.name,
          ...(description !== undefined ? { description } : {}),
          parameters: body.parameters ?? posted?.parameters ?? current.definition.parameters.map(seed001Parameter),
          actions: body.actions ?? posted!.actions,
          tags: workflowTags,
        };
        const stored = await storeSeed001(workflows, seed, { createdBy, id: current.name, displayName });
        return { status: 200, body: { ...workflowView(stored), new_version: true } };
      }
      const problems: Problem[] = [];
      const parameters = body.parameters ? translateParameters(body.parameters, problems) : current.definition.parameters;
      if (problems.length > 0) throw new ValidationError('the workflow definition is invalid', problems, 'invalid_workflow');
      const definition: WorkflowDefinition = { ...current.definition, ...(description !== undefined ? { description } : {}), parameters };
      const stored = await workflows.define(definition, { displayName, tags: workflowTags, createdBy });
      return { status: 200, body: { ...workflowView(stored), new_version: true } };
    },
  }),
  route({
    method: 'get',
    path: '/workflows/executions/{execution_id}',
    operationId: 'getExecution',
    access: 'tasks',
    summary: "Read an execution (seed 001): a task, in seed 001's words",
    description:
      'As GET /result/{task_id} (a client key: its own tasks only), with `execution_id`, `workflow_id` and `completed_at`; `pending` is a queued task.',
    tags,
    params: executionIdParam,
    responses: {
      200: { description: 'The execution.', body: executionSchema, examples: sx.executionExamples },
      404: notFound('No such execution (`task_not_found`).'),
      410: gone,
      503: unavailable,
    },
    handler: async ({ params, req }, { tasks }) => ({ status: 200, body: executionView(await tasks.result(params.execution_id, 0, undefined, viewer(req))) }),
  }),
  route({
    method: 'get',
    path: '/workflows/{name}/executions',
    operationId: 'listExecutions',
    access: 'tasks',
    summary: "List a workflow's executions (seed 001), newest first",
    description: 'The tasks of the workflow (GET /tasks?task_type=ID; a client key: its own), a page of `limit` at a time.',
    tags,
    params: workflowIdParam,
    query: executionListQuery,
    paramExamples: { name: ex.LOADED_WORKFLOW },
    responses: {
      200: {
        description: 'A page of executions.',
        body: z.object({ workflow_id: z.string(), executions: z.array(executionSummarySchema), next_cursor: z.string().nullable() }),
        examples: sx.executionListExamples,
      },
      400: invalid('The query or the cursor is invalid.'),
      404: notFound('No workflow has this id or display name, archived ones included (`workflow_not_found`).'),
      503: unavailable,
    },
    handler: async ({ params, query, req }, { tasks, workflows }) => {
      const id = (await workflows.resolve(params.name)) ?? params.name;
      // An archived workflow's runs are listed too; a name no workflow ever had is a 404.
      await workflows.versions(id);
      const owner = ownerScope(req);
      const page = await tasks.list({
        limit: query.limit,
        taskType: id,
        ...(owner !== undefined ? { owner } : {}),
        ...(query.cursor ? { cursor: query.cursor } : {}),
      });
      return {
        status: 200,
        body: {
          workflow_id: id,
          executions: page.items.map((task) => ({
            execution_id: task.id,
            workflow_id: task.workflowName ?? task.taskType,
            workflow_version: task.workflowVersion ?? null,
            status: executionStatus(task.status),
            created_at: task.createdAt.toISOString(),
            started_at: task.startedAt?.toISOString() ?? null,
            completed_at: task.finishedAt?.toISOString() ?? null,
          })),
          next_cursor: page.nextCursor,
        },
      };
    },
  }),
  route({
    method: 'post',
    path: '/workflows/executions/{execution_id}/cancel',
    operationId: 'cancelExecution',
    access: 'manageTasks',
    summary: 'Cancel an execution (seed 001): POST /tasks/{task_id}/cancel',
    tags,
    params: executionIdParam,
    responses: {
      200: {
        description: 'Cancelled.',
        body: z.object({ execution_id: z.uuid(), task_id: z.uuid(), status: z.literal('cancelled'), message: z.string(), timestamp }),
        examples: sx.executionCancelledExamples,
      },
      404: notFound('No such execution (`task_not_found`; a client key: not one of its own).'),
      409: conflict('It already ended (`task_finished`).'),
      410: gone,
      503: unavailable,
    },
    handler: async ({ params, req }, { tasks }) => {
      await tasks.cancel(params.execution_id, ownerScope(req), submitter(req));
      return {
        status: 200,
        body: {
          execution_id: params.execution_id,
          task_id: params.execution_id,
          status: 'cancelled',
          message: 'Execution cancelled; running steps are being stopped',
          timestamp: new Date().toISOString(),
        },
      };
    },
  }),
  route({
    method: 'post',
    path: '/workflows/from-template',
    operationId: 'workflowFromTemplate',
    access: 'admin',
    summary: 'Store a workflow made from a template (seed 001): a shipped example, customized',
    description:
      "The templates are the examples this service ships (GET /workflows/templates). `customizations.name` names the new workflow (a name with spaces: its slug is the id, the name its display name); `description` and `tags` replace the template's; `parameters` gives new defaults by name. Stored as POST /workflows stores (a name that exists gets a new version).",
    tags,
    body: fromTemplateBody,
    invalidBody: { code: 'invalid_workflow', message: 'the workflow definition is invalid' },
    bodyExamples: sx.fromTemplateExamples,
    responses: {
      201: { description: 'Stored.', body: r.storedWorkflowSchema.extend({ template_name: z.string() }), examples: sx.fromTemplateStoredExamples },
      400: invalid('The body is invalid, or the customized workflow does not pass the checks (`invalid_workflow`).'),
      404: notFound('No template has this name (`template_not_found`; `details.templates` lists them).'),
      409: conflict('Another workflow already answers to the name (`workflow_name_taken`).'),
      503: unavailable,
    },
    handler: async ({ body, req }, { workflows }) => {
      const templates = await workflows.examples();
      const template = templates.find((candidate) => candidate.name === body.template_name);
      if (!template) {
        throw new NotFoundError('template_not_found', `no template is named ${JSON.stringify(body.template_name)}`, {
          templates: templates.map((candidate) => candidate.name),
        });
      }
      refuseUnstorable(body.customizations, ['customizations']);
      const { name, description, tags: chosenTags, parameters: defaults = {} } = body.customizations;
      const named = idOf(name);
      if (!named)
        throw new ValidationError(
          'the workflow definition is invalid',
          [{ path: 'customizations.name', message: 'no letter or digit to make an id from' }],
          'invalid_workflow',
        );
      refuseReservedName(named.id, 'customizations.name');
      const problems: Problem[] = Object.keys(defaults)
        .filter((key) => !template.parameters.some((parameter) => parameter.name === key))
        .map((key) => ({ path: `customizations.parameters[${JSON.stringify(key)}]`, message: `the template has no parameter ${key}` }));
      if (problems.length > 0) throw new ValidationError('the workflow definition is invalid', problems, 'invalid_workflow');
      const parameters = template.parameters.map((parameter) =>
        Object.hasOwn(defaults, parameter.name) ? { ...parameter, required: false, default: defaults[parameter.name] } : parameter,
      );
      if (named.displayName !== null) await ensureDisplayNameFree(workflows, named.displayName, named.id);
      const stored = await workflows.define(
        { ...template, name: named.id, ...(description !== undefined ? { description } : {}), parameters },
        { displayName: named.displayName, tags: chosenTags ?? [], createdBy: submitter(req) },
      );
      return { status: 201, body: { ...workflowView(stored), template_name: template.name } };
    },
  }),
  route({
    method: 'get',
    path: '/workflows/templates',
    operationId: 'listWorkflowTemplates',
    access: 'catalog',
    summary: 'List the workflow templates (seed 001): the examples this service ships',
    tags,
    responses: {
      200: {
        description: 'The templates.',
        body: z.object({
          templates: z.array(
            z.object({ template_name: z.string(), description: z.string().nullable(), parameters: z.array(parameterSchema), steps: z.int().min(1) }),
          ),
        }),
        examples: sx.templateListExamples,
      },
      503: unavailable,
    },
    handler: async (_input, { workflows }) => ({
      status: 200,
      body: {
        templates: (await workflows.examples()).map((template) => ({
          template_name: template.name,
          description: template.description ?? null,
          parameters: template.parameters,
          steps: template.steps.length,
        })),
      },
    }),
  }),
  route({
    method: 'get',
    path: '/workflows/search',
    operationId: 'searchWorkflows',
    access: 'catalog',
    summary: 'Search the active workflows (seed 001) by name, display name, description and tags',
    tags,
    query: searchQuery,
    paramExamples: { q: 'diamond' },
    responses: {
      200: {
        description: 'The workflows found, by name; `total` counts them all.',
        body: z.object({ query: z.string(), results: z.array(r.workflowSummarySchema), total: z.int().min(0) }),
        examples: sx.searchExamples,
      },
      400: invalid('The query is invalid (`q` is required).'),
      503: unavailable,
    },
    handler: async ({ query }, { workflows }) => {
      const needle = query.q.toLowerCase();
      const holds = (text: string | null) => text?.toLowerCase().includes(needle) ?? false;
      const found = (await workflows.list()).filter(
        (workflow) => holds(workflow.name) || holds(workflow.displayName) || holds(workflow.description) || workflow.tags.some(holds),
      );
      return { status: 200, body: { query: query.q, results: found.slice(0, query.limit).map(workflowSummary), total: found.length } };
    },
  }),
  route({
    method: 'get',
    path: '/workflows/statistics',
    operationId: 'workflowStatistics',
    access: 'monitor',
    summary: 'Runs of each active workflow (seed 001): by status, p50 and p95 duration, the last run',
    description:
      'Computed as GET /stats computes them (the same queries, bounds and STATS_MAX_CONCURRENT), over the tasks created in the window: by default the widest one allowed, STATS_MAX_WINDOW_DAYS. Durations run from acceptance to end, of finished tasks only.',
    tags,
    query: statsQuery,
    responses: {
      200: {
        description: 'Each active workflow, runs or none.',
        body: z.object({
          window: z.object({ from: timestamp, to: timestamp }),
          workflows: z.array(
            z.object({
              workflow_id: z.string(),
              display_name: z.string().nullable(),
              runs: z.object({ total: z.int().min(0), by_status: z.record(z.string(), z.int().min(0)) }),
              duration_ms: z.object({ p50: z.number().nullable(), p95: z.number().nullable() }),
              last_run_at: timestamp.nullable().meta({ description: 'When the newest run in the window was accepted.' }),
            }),
          ),
          timestamp,
        }),
        examples: sx.statisticsExamples,
      },
      400: invalid('The query is invalid, or the window is empty or wider than STATS_MAX_WINDOW_DAYS.'),
      503: { description: 'As GET /stats: `stats_timeout`, `stats_busy` or `service_unavailable`.', body: r.errorBodySchema },
    },
    handler: async ({ query }, ctx) => {
      const computed = await windowStats(query, ctx, `${ctx.statsMaxWindowDays}d`);
      if ('busy' in computed) return computed.busy;
      const byType = new Map(computed.stats.tasks.by_type.map((entry) => [entry.task_type, entry]));
      const workflows = (await ctx.workflows.list()).map((workflow) => {
        const runs = byType.get(workflow.name);
        return {
          workflow_id: workflow.name,
          display_name: workflow.displayName,
          runs: { total: runs?.total ?? 0, by_status: runs?.by_status ?? {} },
          duration_ms: { p50: runs?.duration_ms.p50 ?? null, p95: runs?.duration_ms.p95 ?? null },
          last_run_at: runs?.last_created_at ?? null,
        };
      });
      return { status: 200, body: { window: computed.window, workflows, timestamp: new Date().toISOString() } };
    },
  }),
  route({
    method: 'get',
    path: '/workflows/health',
    operationId: 'workflowHealth',
    access: 'catalog',
    summary: 'Whether workflows can run (seed 001): Redis and PostgreSQL, and how many workflows are active',
    description: '`healthy` when Redis and PostgreSQL answer, else `degraded` (still 200, as GET /health). GET /ready is the probe to route traffic by.',
    tags,
    responses: {
      200: {
        description: 'The health of the workflow service.',
        body: z.object({
          status: z.enum(['healthy', 'degraded']),
          checks: r.dependencyChecksSchema,
          workflows: z.object({ active: z.int().min(0).nullable().meta({ description: 'null while PostgreSQL does not answer.' }) }),
          timestamp,
        }),
        examples: sx.workflowHealthExamples,
      },
    },
    handler: async (_input, { system, workflows }) => {
      const dependencies = await checks(system);
      const up = dependencies.redis === 'up' && dependencies.database === 'up';
      const active = dependencies.database === 'up' ? ((await workflows.list().catch(() => undefined))?.length ?? null) : null;
      return {
        status: 200,
        body: { status: up ? 'healthy' : 'degraded', checks: dependencies, workflows: { active }, timestamp: new Date().toISOString() },
      };
    },
  }),
  // The legacy table.
  route({
    method: 'get',
    path: '/health/system',
    operationId: 'legacySystemHealth',
    // Behind a key, unlike GET /health: probes have /health and /ready, which need none.
    access: 'catalog',
    summary: 'GET /health, by its legacy name (seed 001), with the name and version',
    tags,
    responses: {
      200: { description: 'As GET /health.', body: r.healthSchema.extend({ name: z.string(), version: z.string() }), examples: sx.systemHealthExamples },
      400: invalid('A body was sent and it is not valid JSON (`invalid_json`). Probes need none.'),
    },
    handler: async (_input, { system }) => {
      const dependencies = await checks(system);
      return {
        status: 200,
        body: {
          status: dependencies.redis === 'up' && dependencies.database === 'up' ? 'ok' : 'degraded',
          uptime_s: Math.round((Date.now() - system.startedAt) / 1000),
          checks: dependencies,
          timestamp: new Date().toISOString(),
          name: system.name,
          version: system.version,
        },
      };
    },
  }),
  route({
    method: 'get',
    path: '/info',
    operationId: 'legacyInfo',
    access: 'catalog',
    summary: 'GET /, by its legacy name (seed 001): name, version, uptime and links',
    tags,
    responses: { 200: { description: 'About this service.', body: r.serviceInfoSchema, examples: ex.serviceInfoExamples } },
    handler: async (_input, { system }) => ({
      status: 200,
      body: { name: system.name, version: system.version, uptime_s: Math.round((Date.now() - system.startedAt) / 1000), links: SERVICE_LINKS },
    }),
  }),
  route({
    method: 'get',
    path: '/config/effective',
    operationId: 'effectiveConfig',
    access: 'admin',
    summary: 'The settings in effect (seed 001): every variable, secrets only as set or not set',
    description:
      'Keys, tokens, secrets, passwords and header sets show `set` or `not set`; a password inside a URL shows as `***`. Settings are read from the environment once, at start.',
    tags,
    responses: {
      200: {
        description: 'The settings, by variable name.',
        body: z.object({ settings: z.record(z.string(), z.unknown()), timestamp }),
        examples: sx.effectiveConfigExamples,
      },
    },
    handler: async (_input, { config }) => ({ status: 200, body: { settings: effectiveConfig(config), timestamp: new Date().toISOString() } }),
  }),
  route({
    method: 'post',
    path: '/registry/register',
    operationId: 'legacyRegisterService',
    access: 'admin',
    summary: 'POST /services, by its legacy name (seed 001): register a service; its OpenAPI operations become tools',
    description: 'The body and the answers of POST /services: a service is registered by its OpenAPI document.',
    tags,
    body: serviceBodySchema,
    invalidBody: { code: 'invalid_service', message: 'the service is invalid' },
    bodyExamples: sx.registerExamples,
    responses: {
      201: { description: 'Registered.', body: r.registeredServiceSchema, examples: ex.registeredServiceExamples },
      400: invalid('As POST /services: `invalid_service`, `invalid_openapi_document`, `document_too_complex` or `host_not_allowed`.'),
      409: conflict('A service has this name (`service_exists`).'),
      502: { description: 'The OpenAPI document could not be fetched (`openapi_fetch_failed`).', body: r.errorBodySchema },
      503: unavailable,
    },
    handler: async ({ body }, { services }) => ({ status: 201, body: await services.register(body) }),
  }),
  route({
    method: 'get',
    path: '/registry',
    operationId: 'legacyListServices',
    access: 'monitor',
    summary: 'GET /services, by its legacy name (seed 001): the registered services, their health and circuits',
    tags,
    responses: { 200: { description: 'The services.', body: r.serviceListSchema, examples: ex.serviceListExamples }, 503: unavailable },
    handler: async ({ req }, { services }) => ({
      status: 200,
      body: { services: await services.listServices({ keys: req.apiKeyScope === undefined || req.apiKeyScope === 'admin' }) },
    }),
  }),
  route({
    method: 'get',
    path: '/infrastructure/dlq/stats',
    operationId: 'deadLetterStats',
    access: 'monitor',
    summary: "Dead letters counted by tool (seed 001's DLQ): how many, how many not replayed, the oldest and newest",
    description: 'GET /dead-letters lists them one by one.',
    tags,
    responses: {
      200: {
        description: 'The counts.',
        body: z.object({
          total: z.int().min(0),
          open: z.int().min(0).meta({ description: 'Not replayed yet.' }),
          by_tool: z.array(z.object({ tool: z.string(), total: z.int().min(0), open: z.int().min(0), oldest_at: timestamp, newest_at: timestamp })),
          timestamp,
        }),
        examples: sx.deadLetterStatsExamples,
      },
      503: unavailable,
    },
    handler: async (_input, { tasks }) => {
      const byTool = await tasks.deadLetterCounts();
      return {
        status: 200,
        body: {
          total: byTool.reduce((sum, entry) => sum + entry.total, 0),
          open: byTool.reduce((sum, entry) => sum + entry.open, 0),
          by_tool: byTool.map((entry) => ({
            tool: entry.tool,
            total: entry.total,
            open: entry.open,
            oldest_at: entry.oldest.toISOString(),
            newest_at: entry.newest.toISOString(),
          })),
          timestamp: new Date().toISOString(),
        },
      };
    },
  }),
  route({
    method: 'post',
    path: '/infrastructure/dlq/retry',
    operationId: 'retryDeadLetters',
    access: 'admin',
    gated: true,
    summary: "Replay dead letters (seed 001's DLQ retry): given ones, or a tool's, each as POST /dead-letters/{id}/replay",
    description:
      "Each dead letter resumes its task as POST /dead-letters/{id}/replay does: through the policy (kind `replay`) and its owner's quotas. Each is answered on its own: `retried`, or `failed` with the error that replay answered (a task already resumed by another of its letters: `task_not_retryable`). `all_for_tool`: that tool's letters not replayed yet, oldest first, at most 100 a call (`more`: others are left).",
    tags,
    body: dlqRetryBody,
    bodyExamples: sx.deadLetterRetryExamples,
    responses: {
      200: {
        description: 'What each replay did.',
        body: z.object({
          retried: z.array(z.object({ id: z.uuid(), task_id: z.uuid(), run: z.int().min(1) })),
          failed: z.array(z.object({ id: z.string(), error: z.object({ code: z.string(), message: z.string() }) })),
          more: z.boolean().meta({ description: '`all_for_tool`: whether letters of the tool are left to replay.' }),
          timestamp,
        }),
        examples: sx.deadLetterRetriedExamples,
      },
      400: invalid('Neither or both of `ids` and `all_for_tool` (`validation_error`).'),
      429: resumedOverQuota,
      503: policyUnavailable,
    },
    handler: async ({ body, req }, { tasks }) => {
      let ids = body.ids ?? [];
      let more = false;
      if (body.all_for_tool !== undefined) {
        // One more than a call replays tells whether others are left.
        const open = await tasks.openDeadLetters(body.all_for_tool, DLQ_RETRY_MAX + 1);
        ids = open.slice(0, DLQ_RETRY_MAX);
        more = open.length > DLQ_RETRY_MAX;
      }
      const retried: { id: string; task_id: string; run: number }[] = [];
      const failed: { id: string; error: { code: string; message: string } }[] = [];
      for (const id of ids) {
        try {
          const { taskId, run } = await tasks.replayDeadLetter(id, asker(req));
          retried.push({ id, task_id: taskId, run });
        } catch (error) {
          if (!(error instanceof ApiError)) throw error;
          failed.push({ id, error: { code: error.code, message: error.message } });
        }
      }
      return { status: 200, body: { retried, failed, more, timestamp: new Date().toISOString() } };
    },
  }),
  // What means nothing here: 410 with the routes to use, never 404.
  goneRoute({
    path: '/workflows/executions/{execution_id}/{rest}',
    operationId: 'goneExecutionRoutes',
    summary: "Seed 001's other execution routes: gone (410)",
    why: 'an execution is a task here; its steps, history and events are read through the task routes',
    use: [
      'GET /workflows/executions/{execution_id}',
      'POST /workflows/executions/{execution_id}/cancel',
      'GET /tasks/{task_id}/history',
      'GET /tasks/{task_id}/events',
      'POST /tasks/{task_id}/retry',
    ],
  }),
  goneRoute({
    path: '/registry/{rest}',
    operationId: 'goneRegistryRoutes',
    summary: "Seed 001's other registry routes: gone (410)",
    why: 'the registry is the service registry, which knows services by their OpenAPI documents (no heartbeats, no agents)',
    use: ['POST /registry/register', 'GET /registry', 'GET /services/{name}', 'PATCH /services/{name}', 'DELETE /services/{name}'],
  }),
  goneRoute({
    path: '/infrastructure/{rest}',
    operationId: 'goneInfrastructureRoutes',
    summary: "Seed 001's other infrastructure routes: gone (410)",
    why: 'the queues are BullMQ queues, watched in Bull Board and /stats/queues, and failed steps are dead letters',
    use: ['GET /infrastructure/dlq/stats', 'POST /infrastructure/dlq/retry', 'GET /dead-letters', 'GET /stats/queues', 'GET /admin/queues'],
  }),
  goneRoute({
    path: '/config/{rest}',
    operationId: 'goneConfigRoutes',
    summary: "Seed 001's other configuration routes: gone (410)",
    why: 'settings are environment variables, read once at start (change them and restart)',
    use: ['GET /config/effective'],
  }),
  goneRoute({
    path: '/health/{rest}',
    operationId: 'goneHealthRoutes',
    summary: "Seed 001's other health routes: gone (410)",
    why: 'liveness and readiness are two probes here',
    use: ['GET /health', 'GET /ready', 'GET /health/system', 'GET /workflows/health'],
  }),
];
