import { z } from 'zod';
import { workflowDefinitionSchema } from '../../engine/workflow-definition.js';
import type { StoredWorkflow } from '../../persistence/workflow-store.js';
import { taskRequestSchema } from '../../tasks/task-request.js';
import { submitter } from '../access.js';
import { clientOf } from '../client-slots.js';
import * as ex from '../openapi-examples.js';
import { assigned, conflict, invalid, notFound, unavailable } from '../replies.js';
import * as r from '../responses.js';
import { type Route, route } from '../route.js';
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

export function workflowView(workflow: StoredWorkflow): r.StoredWorkflowBody {
  return {
    ...workflow.definition,
    version: workflow.version,
    created_at: workflow.createdAt.toISOString(),
    archived_at: workflow.archivedAt?.toISOString() ?? null,
  };
}

function workflowSummary(workflow: StoredWorkflow): r.WorkflowSummaryBody {
  return {
    name: workflow.name,
    version: workflow.version,
    description: workflow.description,
    parameters: workflow.definition.parameters,
    steps: workflow.definition.steps.length,
    created_at: workflow.createdAt.toISOString(),
  };
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
    tags: workflowsTag,
    body: workflowDefinitionSchema,
    invalidBody: { code: 'invalid_workflow', message: 'the workflow definition is invalid' },
    bodyExamples: ex.defineWorkflowExamples,
    responses: {
      201: { description: 'Stored; the answer holds its version.', body: r.storedWorkflowSchema, examples: ex.storedWorkflowExamples },
      400: invalid('The definition is invalid (`invalid_workflow`): every problem with its JSON path.'),
      503: unavailable,
    },
    handler: async ({ body }, { workflows }) => ({ status: 201, body: workflowView(await workflows.define(body)) }),
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
    tags: workflowsTag,
    responses: { 200: { description: 'The workflows.', body: r.workflowListSchema, examples: ex.workflowListExamples }, 503: unavailable },
    handler: async (_input, { workflows }) => ({ status: 200, body: { workflows: (await workflows.list()).map(workflowSummary) } }),
  }),
  route({
    method: 'get',
    path: '/workflows/{name}',
    operationId: 'getWorkflow',
    access: 'catalog',
    summary: 'Read a workflow definition',
    tags: workflowsTag,
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
    tags: workflowsTag,
    params: workflowNameParam,
    body: executeWorkflowBody,
    bodyExamples: ex.executeWorkflowExamples,
    paramExamples: { name: ex.LOADED_WORKFLOW },
    responses: {
      202: assigned('Accepted: the task is stored and enqueued.', ex.executedExamples),
      200: assigned('The same `idempotency_key` with the same body was seen before: the first task.', ex.replayedExamples),
      400: invalid(
        'The body is invalid, or `parameters` do not fit the workflow (`invalid_params`; also when a policy service rewrote them into parameters that do not fit).',
      ),
      404: notFound('No active workflow has that name (`workflow_not_found`).'),
      409: conflict('The `idempotency_key` was used with a different body (`idempotency_conflict`).'),
    },
    handler: async ({ params, body, req }, { tasks }) => {
      const { parameters, ...options } = body;
      const submitted = await tasks.submit(
        { ...options, task_type: params.name, params: parameters },
        { workflowOnly: true, paramsField: 'parameters', owner: submitter(req), scope: req.apiKeyScope, client: clientOf(req) },
      );
      return assignedReply(submitted, params.name);
    },
  }),
];
