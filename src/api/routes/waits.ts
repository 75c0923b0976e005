import express, { type RequestHandler } from 'express';
import { z } from 'zod';
import { IDENTIFIER } from '../../engine/workflow-definition.js';
import type { Waits } from '../../tasks/waits.js';
import { asker } from '../access.js';
import { approvalForm, decidedPage, refusedPage } from '../approval-page.js';
import * as ex from '../openapi-examples.js';
import { conflict, gone, invalid, notFound, policyUnavailable } from '../replies.js';
import * as r from '../responses.js';
import { plainRoute, type Route, route } from '../route.js';
import { taskIdParam } from './task-events.js';

export const signalParams = taskIdParam.extend({
  name: z.string().regex(IDENTIFIER, 'a signal name starts with a letter and holds only letters, digits, _ and - (at most 64)').meta({
    description: 'The signal a wait step of the task waits for (an approval: its step id, unless it names one).',
  }),
});

const tokenParam = z.object({ token: z.string().max(1000).meta({ description: 'The signed token of an approval link.' }) });

const TOKEN = /^[A-Za-z0-9_-]{1,800}\.[A-Za-z0-9_-]{1,100}$/;
const FORM_LIMIT = '64kb';

function html(res: express.Response, status: number, page: string): void {
  res.status(status).type('html').setHeader('cache-control', 'no-store').send(page);
}

/** The fields of a posted approval form: `fields.NAME` inputs become `fields`; an unchecked box is false. */
function formFields(body: Record<string, unknown>, form: Record<string, unknown> | undefined): Record<string, unknown> {
  const fields: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(body)) {
    if (name.startsWith('fields.') && typeof value === 'string' && value !== '') fields[name.slice('fields.'.length)] = value;
  }
  const properties = (form?.properties ?? {}) as Record<string, { type?: string }>;
  for (const [name, field] of Object.entries(properties)) if (field.type === 'boolean' && !(name in fields)) fields[name] = false;
  return fields;
}

function approvalPages(waits: Waits): RequestHandler {
  const parseForm = express.urlencoded({ extended: false, limit: FORM_LIMIT, parameterLimit: 100 });
  return (req, res, next) => {
    const token = String(req.params.token ?? '');
    if (!TOKEN.test(token)) {
      const refused = refusedPage('malformed');
      return html(res, refused.status, refused.html);
    }
    const work = async () => {
      const page = await waits.page(token);
      if (!page.ok) {
        const refused = refusedPage(page.problem);
        return html(res, refused.status, refused.html);
      }
      if (req.method === 'GET' || req.method === 'HEAD') return html(res, 200, approvalForm(page));
      await new Promise<void>((resolve, reject) => parseForm(req, res, (error?: unknown) => (error ? reject(error) : resolve())));
      const body = (req.body ?? {}) as Record<string, unknown>;
      const fields = formFields(body, page.form);
      const outcome = await waits.decide(token, { decision: body.decision, comment: body.comment, fields, name: body.name });
      if (outcome.ok) return html(res, 200, decidedPage(outcome.decision));
      if ('problems' in outcome)
        return html(
          res,
          400,
          approvalForm(page, { problems: outcome.problems, values: fields, ...(typeof body.comment === 'string' ? { comment: body.comment } : {}) }),
        );
      const refused = refusedPage(outcome.problem.problem);
      return html(res, refused.status, refused.html);
    };
    work().catch(next);
  };
}

const pageResponses = {
  200: {
    description: 'The approval page (HTML): what is to be approved, the form, Approve and Reject.',
    mediaType: 'text/html',
    body: z.string(),
    examples: ex.approvalPageExamples,
  },
  400: { description: 'A malformed link, or (POST) a form that does not fit: the page again, with the problems.', mediaType: 'text/html', body: z.string() },
  403: {
    description: 'A link whose signature does not match, or (POST) a decision the policy service refused (POLICY_URL, kind `signal`).',
    mediaType: 'text/html',
    body: z.string(),
  },
  404: { description: 'The task or its step is gone.', mediaType: 'text/html', body: z.string() },
  409: { description: 'Already decided (single use), or the task moved on: nothing is changed.', mediaType: 'text/html', body: z.string() },
  410: { description: 'The link expired.', mediaType: 'text/html', body: z.string() },
  503: {
    description:
      'This server makes no approval links (production without APPROVAL_SECRET or CALLBACK_SECRET), PostgreSQL is away, or (POST) the policy service could not decide (POLICY_FAIL_MODE=closed).',
    mediaType: 'text/html',
    body: z.string(),
  },
};

/** Signals to wait steps, and approval pages. */
export const WAIT_ROUTES: Route[] = [
  route({
    method: 'post',
    path: '/tasks/{task_id}/signals/{name}',
    operationId: 'signalTask',
    access: 'manageTasks',
    gated: true,
    summary: 'Send a signal to a wait step',
    description:
      'The JSON body is the payload, checked against the step\'s `wait.schema` (an approval: `{"decision": "approved" | "rejected", "comment"?, "fields"?}`); it becomes the step\'s output. The first signal stands: a later one gets 409. One sent before the step waits, while the task runs, is kept for it (202 `buffered`; an approval that does not wait yet gets 409 `not_waiting`). The policy is asked first (POLICY_URL, kind `signal`). An approval is decided by someone other than the task\'s submitter: the key that submitted the task gets 403 `approval_by_submitter`, and another key\'s decision is recorded as `key:<id>`.',
    tags: ['tasks'],
    params: signalParams,
    body: z.unknown(),
    bodyExamples: ex.signalExamples,
    paramExamples: { name: 'approval' },
    responses: {
      200: { description: 'Recorded: the step completed with the payload as its output.', body: r.signalRecordedSchema, examples: ex.signalRecordedExamples },
      202: {
        description:
          'Kept: the step does not wait yet (its task runs). It takes the signal when it starts waiting, checked against its schema then (a payload that does not fit fails the step, `InvalidSignalPayload`). One per step: a second gets 409 `already_signalled`. Approvals are not kept.',
        body: r.signalBufferedSchema,
      },
      400: invalid("The payload does not fit the signal's schema (`invalid_payload`), with one entry per problem."),
      403: {
        description:
          "The key's scope may not do this (`forbidden`: it needs admin or client); the key submitted the task and the step is an approval (`approval_by_submitter`: an approver decides through their link, or another admin key); with POLICY_URL, the policy refused the signal (`policy_denied`, `details.reason`); or a POST the CSRF rule refuses (`csrf_header_required`).",
        body: r.errorBodySchema,
      },
      404: notFound('No such task (`task_not_found`), or no step of it waits for that signal (`signal_not_found`).'),
      409: conflict(
        'The step already got (or, not waiting yet, keeps) its signal or decision, timed out or ended (`already_signalled`), is an approval that does not wait yet (`not_waiting`), or the task ended (`task_finished`).',
      ),
      410: gone,
      503: policyUnavailable,
    },
    handler: async ({ params, body, req }, { tasks }) => {
      const { stepId, buffered } = await tasks.signal(params.task_id, params.name, body, asker(req));
      const timestamp = new Date().toISOString();
      if (buffered) return { status: 202, body: { task_id: params.task_id, step_id: stepId, signal: params.name, status: 'buffered', timestamp } };
      return { status: 200, body: { task_id: params.task_id, step_id: stepId, signal: params.name, status: 'recorded', timestamp } };
    },
  }),
  plainRoute({
    method: 'get',
    path: '/approvals/{token}',
    operationId: 'approvalPage',
    open: true,
    summary: 'The approval page of a signed link (HTML, for people)',
    description:
      'Opened from an approval link (GET /result shows them under `waiting_for.approval.links`). No API key: the signed link is the authority. Works without JavaScript.',
    tags: ['tasks'],
    params: tokenParam,
    responses: pageResponses,
    serve: ({ tasks }) => approvalPages(tasks.waits),
  }),
  plainRoute({
    method: 'post',
    path: '/approvals/{token}',
    operationId: 'decideApproval',
    open: true,
    beforeBody: true,
    summary: "Decide an approval through its link (the page's form)",
    description:
      'An HTML form post (`application/x-www-form-urlencoded`): `decision` (`approved` or `rejected`), `comment`, `name` (a link without an approver), and `fields.NAME` for the form. Recorded once; any later use of the link changes nothing.',
    tags: ['tasks'],
    params: tokenParam,
    responses: {
      ...pageResponses,
      413: { description: `The form is larger than ${FORM_LIMIT} (\`payload_too_large\`).`, body: r.errorBodySchema },
      200: { description: 'The decision was recorded.', mediaType: 'text/html', body: z.string(), examples: ex.approvalDecidedExamples },
    },
    serve: ({ tasks }) => approvalPages(tasks.waits),
  }),
];
