import { z } from 'zod';
import { ValidationError } from '../../lib/errors.js';
import type { StoredWorkflow } from '../../persistence/workflow-store.js';
import { taskRequestSchema } from '../../tasks/task-request.js';
import type { Submitted } from '../../tasks/task-service.js';
import { submission, submitter } from '../access.js';
import type { Reply } from '../http.js';
import * as ex from '../openapi-examples.js';
import { conflict, invalid, notFound, unavailable } from '../replies.js';
import * as r from '../responses.js';
import { type Route, route } from '../route.js';
import { seed001DefineExamples, seed001StoredExamples } from './compat/seed-001-examples.js';
import { type PostedForm, refuseReservedName, storeSeed001 } from './compat/seed-001-format.js';
import { SEED_001_TAG } from './compat/tags.js';
import { assignedReply } from './tasks.js';

/** The body of POST /workflows/:name/execute: the run's parameters and the same options as /assign-task. */
export const executeWorkflowBody = taskRequestSchema
  .omit({ task_type: true, params: true })
  .extend({ parameters: z.record(z.string(), z.unknown()).default({}) })
  .strict();

export const workflowNameParam = z.object({ name: z.string().meta({ description: 'The name of a workflow.' }) });

export const versionQuery = z
  .object({ version: z.coerce.number().int().min(1).optional().meta({ description: 'A version of the workflow; without it, the current one.' }) })
  .strict();

/** The metadata a workflow carries besides its definition, in the answers' words. */
function metadataView(workflow: StoredWorkflow) {
  return {
    workflow_id: workflow.name,
    display_name: workflow.displayName,
    tags: workflow.tags,
    created_by: workflow.createdBy,
    status: workflow.archivedAt ? ('archived' as const) : ('active' as const),
  };
}

export function workflowView(workflow: StoredWorkflow): r.StoredWorkflowBody {
  const posted = workflow.postedForm as PostedForm | null;
  return {
    ...workflow.definition,
    version: workflow.version,
    created_at: workflow.createdAt.toISOString(),
    archived_at: workflow.archivedAt?.toISOString() ?? null,
    ...metadataView(workflow),
    ...(posted?.format === 'seed-001' ? { actions: posted.actions } : {}),
  };
}

export function workflowSummary(workflow: StoredWorkflow): r.WorkflowSummaryBody {
  return {
    name: workflow.name,
    version: workflow.version,
    description: workflow.description,
    parameters: workflow.definition.parameters,
    steps: workflow.definition.steps.length,
    created_at: workflow.createdAt.toISOString(),
    ...metadataView(workflow),
  };
}

/**
 * The body of POST /workflows: a WorkflowDefinition, or a workflow in seed 001's format (with
 * `actions`), told apart by `actions`. Each is parsed by what stores it, so that its problems
 * are reported at their paths in the form that was posted.
 */
export const workflowBodySchema = z.record(z.string(), z.unknown()).meta({
  description: "A WorkflowDefinition, or a workflow in seed 001's format (Seed001Workflow: it has `actions`).",
  oneOf: [{ $ref: '#/components/schemas/WorkflowDefinition' }, { $ref: '#/components/schemas/Seed001Workflow' }],
} as Record<string, unknown>);

export const listWorkflowsQuery = z
  .object({
    status: z.enum(['active', 'archived']).optional().meta({ description: 'active (the default): the workflows that run; archived: those that no longer do.' }),
    created_by: z.string().min(1).max(200).optional().meta({ description: 'Only the workflows whose first version this key stored.' }),
    page: z.coerce
      .number()
      .int()
      .min(1)
      .max(1_000_000)
      .optional()
      .meta({ description: 'With page_size: the page (from 1); the answer counts them all in `total`.' }),
    page_size: z.coerce
      .number()
      .int()
      .min(1)
      .max(200)
      .optional()
      .meta({ description: 'With page: how many per page (default 20); without either, all of them.' }),
  })
  .strict();

/** The answer to a run of a workflow: as POST /assign-task's, with seed 001's `execution_id` and `workflow_id` besides. */
export function executedReply(submitted: Submitted, workflowId: string): Reply {
  const reply = assignedReply(submitted, workflowId);
  return { ...reply, body: { ...(reply.body as object), execution_id: submitted.taskId, workflow_id: workflowId } };
}

const workflowsTag = ['workflows'];

/** Workflow definitions: versioned DAGs of tool steps. */
export const WORKFLOW_ROUTES: Route[] = [
  route({
    method: 'post',
    path: '/workflows',
    operationId: 'defineWorkflow',
    access: 'admin',
    summary: 'Store a workflow definition (a new version when the name exists)',
    description:
      'Checked before storing: unique step ids, known tools, existing dependencies, no cycles, template references that resolve, literal inputs that fit the tool. Running tasks keep the version they started with.',
    tags: [...workflowsTag, SEED_001_TAG],
    body: workflowBodySchema,
    invalidBody: { code: 'invalid_workflow', message: 'the workflow definition is invalid' },
    bodyExamples: { ...ex.defineWorkflowExamples, ...seed001DefineExamples },
    responses: {
      201: {
        description: 'Stored; the answer holds its version.',
        body: r.storedWorkflowSchema,
        examples: { ...ex.storedWorkflowExamples, ...seed001StoredExamples },
      },
      400: invalid(
        "The definition is invalid (`invalid_workflow`): every problem with its JSON path, in the form posted (seed 001's: `actions[1].config.parameters.url`).",
      ),
      409: conflict("Seed 001's format: another workflow already answers to its name as a display name (`workflow_name_taken`)."),
      503: unavailable,
    },
    handler: async ({ body, req }, { workflows }) => {
      const createdBy = submitter(req);
      if (!('actions' in body)) {
        refuseReservedName(body.name);
        return { status: 201, body: workflowView(await workflows.define(body, { createdBy })) };
      }
      if ('steps' in body) {
        throw new ValidationError(
          'the workflow definition is invalid',
          [{ path: 'actions', message: "steps (this service's form) or actions (seed 001's), not both" }],
          'invalid_workflow',
        );
      }
      return { status: 201, body: workflowView(await storeSeed001(workflows, body, { createdBy })) };
    },
  }),
  route({
    method: 'post',
    path: '/workflows/check',
    operationId: 'checkWorkflow',
    // It changes nothing and tells no more than GET /tools and GET /workflows do: any key that may read the catalog.
    access: 'catalog',
    summary: 'Check a workflow definition without storing it',
    description:
      'Runs the checks of POST /workflows (the same problems at the same JSON paths) and stores nothing: what an editor asks as its user types. A definition that does not fit the schema is an answer too (200, `valid: false`), not a 400; only a body that is not a JSON object is refused. The same body limits as POST /workflows (BODY_LIMIT).',
    tags: workflowsTag,
    // Loose on purpose: a half-typed definition is what this answers about; WorkflowDefinition is what passes.
    body: z.record(z.string(), z.unknown()).meta({ description: 'A workflow definition (WorkflowDefinition), valid or not.' }),
    bodyExamples: ex.checkWorkflowExamples,
    responses: {
      200: { description: 'The problems, none when POST /workflows would store it.', body: r.workflowCheckSchema, examples: ex.workflowCheckExamples },
      400: invalid('The body is not a JSON object (`validation_error`).'),
      503: unavailable,
    },
    handler: async ({ body }, { workflows }) => {
      const problems = await workflows.check(body);
      return { status: 200, body: { valid: problems.length === 0, problems } };
    },
  }),
  route({
    method: 'get',
    path: '/workflows',
    operationId: 'listWorkflows',
    access: 'catalog',
    summary: 'List the active workflows (current versions)',
    description:
      "By name. `status=archived` lists the archived ones instead, `created_by` those a key created; `page` and `page_size` (seed 001's paging) cut the list in pages and count them all in `total`.",
    tags: [...workflowsTag, SEED_001_TAG],
    query: listWorkflowsQuery,
    responses: {
      200: { description: 'The workflows.', body: r.workflowListSchema, examples: ex.workflowListExamples },
      400: invalid('The query is invalid.'),
      503: unavailable,
    },
    handler: async ({ query }, { workflows }) => {
      const found = (await workflows.list({ archived: query.status === 'archived' })).filter(
        (workflow) => query.created_by === undefined || workflow.createdBy === query.created_by,
      );
      if (query.page === undefined && query.page_size === undefined) return { status: 200, body: { workflows: found.map(workflowSummary) } };
      const page = query.page ?? 1;
      const size = query.page_size ?? 20;
      return {
        status: 200,
        body: { workflows: found.slice((page - 1) * size, page * size).map(workflowSummary), total: found.length, page, page_size: size },
      };
    },
  }),
  route({
    method: 'get',
    path: '/workflows/{name}',
    operationId: 'getWorkflow',
    access: 'catalog',
    summary: 'Read a workflow definition',
    description:
      "By its name, or by its display name (seed 001's name with spaces: `Simple Notification`). Posted in seed 001's format, it shows its `actions` as posted beside the steps they became.",
    tags: [...workflowsTag, SEED_001_TAG],
    params: workflowNameParam,
    query: versionQuery,
    paramExamples: { name: ex.LOADED_WORKFLOW },
    responses: {
      200: { description: 'The definition.', body: r.storedWorkflowSchema, examples: ex.storedWorkflowExamples },
      400: invalid('The query is invalid.'),
      404: notFound('No such workflow or version (`workflow_not_found`).'),
      503: unavailable,
    },
    handler: async ({ params, query }, { workflows }) => ({ status: 200, body: workflowView(await workflows.get(params.name, query.version)) }),
  }),
  route({
    method: 'get',
    path: '/workflows/{name}/versions',
    operationId: 'listWorkflowVersions',
    access: 'catalog',
    summary: 'List the versions of a workflow, archived ones included',
    tags: workflowsTag,
    params: workflowNameParam,
    paramExamples: { name: ex.LOADED_WORKFLOW },
    responses: {
      200: { description: 'The versions, oldest first.', body: r.workflowVersionsSchema, examples: ex.workflowVersionsExamples },
      404: notFound('No such workflow (`workflow_not_found`).'),
      503: unavailable,
    },
    handler: async ({ params }, { workflows }) => ({
      status: 200,
      body: {
        name: params.name,
        versions: (await workflows.versions(params.name)).map((version) => ({
          version: version.version,
          description: version.description,
          created_at: version.createdAt.toISOString(),
          archived_at: version.archivedAt?.toISOString() ?? null,
        })),
      },
    }),
  }),
  route({
    method: 'delete',
    path: '/workflows/{name}',
    operationId: 'archiveWorkflow',
    access: 'admin',
    summary: 'Archive a workflow',
    description: 'It can no longer be run; its versions and tasks are kept.',
    tags: workflowsTag,
    params: workflowNameParam,
    paramExamples: { name: ex.EXAMPLE_WORKFLOW },
    responses: {
      200: { description: 'Archived.', body: r.workflowArchivedSchema, examples: ex.workflowArchivedExamples },
      404: notFound('No such workflow (`workflow_not_found`).'),
      503: unavailable,
    },
    handler: async ({ params }, { workflows }) => {
      const outcome = await workflows.archive(params.name);
      return {
        status: 200,
        body: { name: params.name, archived: true, versions: outcome.versions, message: 'Workflow archived; its versions and tasks are kept' },
      };
    },
  }),
  route({
    method: 'post',
    path: '/workflows/{name}/execute',
    operationId: 'executeWorkflow',
    access: 'submit',
    admission: true,
    summary: 'Run a workflow (the same answers as POST /assign-task)',
    description: "By its name or its display name. The answer has seed 001's `execution_id` (the task id) and `workflow_id` besides.",
    tags: [...workflowsTag, SEED_001_TAG],
    params: workflowNameParam,
    body: executeWorkflowBody,
    bodyExamples: ex.executeWorkflowExamples,
    paramExamples: { name: ex.LOADED_WORKFLOW },
    responses: {
      202: { description: 'Accepted: the task is stored and enqueued.', body: r.executedSchema, examples: ex.executedExamples },
      200: {
        description: 'The same `idempotency_key` with the same body was seen before: the first task.',
        body: r.executedSchema,
        examples: ex.reexecutedExamples,
      },
      400: invalid(
        'The body is invalid, or `parameters` do not fit the workflow (`invalid_params`; also when a policy service rewrote them into parameters that do not fit).',
      ),
      404: notFound('No active workflow has that name (`workflow_not_found`).'),
      409: conflict('The `idempotency_key` was used with a different body (`idempotency_conflict`).'),
    },
    handler: async ({ params, body, req }, { tasks, workflows }) => {
      const { parameters, ...options } = body;
      const name = (await workflows.resolve(params.name)) ?? params.name;
      const submitted = await tasks.submit(
        { ...options, task_type: name, params: parameters },
        { workflowOnly: true, paramsField: 'parameters', ...submission(req) },
      );
      return executedReply(submitted, name);
    },
  }),
];
