import { Router } from 'express';
import { z } from 'zod';
import type { TaskService } from '../../tasks/task-service.js';
import type { WorkflowService } from '../../workflows/workflow-service.js';
import { requireAccess, submitter } from '../access.js';
import { handle, parseOrThrow } from '../http.js';
import { assignTaskBody } from '../schemas.js';

/** The body of POST /workflows/:name/execute: the run's parameters and the same options as /assign-task. */
export const executeWorkflowBody = assignTaskBody
  .omit({ task_type: true, params: true })
  .extend({ parameters: z.record(z.string(), z.unknown()).default({}) })
  .strict();

export const versionQuery = z
  .object({ version: z.coerce.number().int().min(1).optional().meta({ description: 'A version of the workflow; without it, the current one.' }) })
  .strict();

export function workflowRoutes(workflows: WorkflowService, tasks: TaskService): Router {
  const router = Router();

  router.post(
    '/workflows',
    requireAccess('admin'),
    handle(async (req) => ({ status: 201, body: await workflows.define(req.body ?? {}) })),
  );

  router.get(
    '/workflows',
    requireAccess('catalog'),
    handle(async () => ({ status: 200, body: { workflows: await workflows.list() } })),
  );

  router.get(
    '/workflows/:name',
    requireAccess('catalog'),
    handle(async (req) => {
      const { version } = parseOrThrow(versionQuery, req.query, 'the query');
      return { status: 200, body: await workflows.get(String(req.params.name), version) };
    }),
  );

  router.get(
    '/workflows/:name/versions',
    requireAccess('catalog'),
    handle(async (req) => {
      const name = String(req.params.name);
      return { status: 200, body: { name, versions: await workflows.versions(name) } };
    }),
  );

  router.delete(
    '/workflows/:name',
    requireAccess('admin'),
    handle(async (req) => {
      const name = String(req.params.name);
      const outcome = await workflows.archive(name);
      return { status: 200, body: { name, archived: true, versions: outcome.versions, message: 'Workflow archived; its versions and tasks are kept' } };
    }),
  );

  router.post(
    '/workflows/:name/execute',
    requireAccess('submit'),
    handle(async (req) => {
      const { parameters, ...options } = parseOrThrow(executeWorkflowBody, req.body ?? {}, 'the request body');
      return tasks.submit({ ...options, task_type: String(req.params.name), params: parameters }, { workflowOnly: true, paramsField: 'parameters', owner: submitter(req) });
    }),
  );

  return router;
}
