import { z } from 'zod';
import type { DeadLetter } from '../../tasks/task-service.js';
import { asker } from '../access.js';
import * as ex from '../openapi-examples.js';
import { conflict, gone, invalid, notFound, policyUnavailable, resumedOverQuota, unavailable } from '../replies.js';
import * as r from '../responses.js';
import { type Route, route } from '../route.js';
import { resumedBody } from './tasks.js';

export const deadLetterIdParam = z.object({ id: z.string().meta({ description: 'The id (a UUID) of a dead letter.' }) });

export const deadLettersQuery = z
  .object({
    task_id: z.string().max(100).optional(),
    tool: z.string().max(64).optional(),
    limit: z.coerce.number().int().min(1).max(200).default(50),
    cursor: z.string().max(200).optional(),
  })
  .strict();

function deadLetterView(letter: DeadLetter) {
  return {
    id: letter.id,
    task_id: letter.taskId,
    step_id: letter.stepId,
    run: letter.run,
    tool: letter.tool,
    input: letter.input,
    error: letter.error,
    attempts: letter.attempts,
    created_at: letter.createdAt.toISOString(),
    replayed_at: letter.replayedAt?.toISOString() ?? null,
  };
}

/** Steps that exhausted their retries, with their input and error; replaying one resumes its task. */
export const DEAD_LETTER_ROUTES: Route[] = [
  route({
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
    handler: async ({ query }, { tasks }) => {
      const page = await tasks.deadLetters({
        limit: query.limit,
        ...(query.task_id ? { taskId: query.task_id } : {}),
        ...(query.tool ? { tool: query.tool } : {}),
        ...(query.cursor ? { cursor: query.cursor } : {}),
      });
      return { status: 200, body: { items: page.items.map(deadLetterView), next_cursor: page.nextCursor } };
    },
  }),
  route({
    method: 'post',
    path: '/dead-letters/{id}/replay',
    operationId: 'replayDeadLetter',
    access: 'admin',
    gated: true,
    summary: 'Replay a dead letter: resumes its task (as POST /tasks/{task_id}/retry)',
    tags: ['dead-letters'],
    params: deadLetterIdParam,
    responses: {
      202: { description: 'The task was resumed.', body: r.deadLetterReplayedSchema, examples: ex.deadLetterReplayedExamples },
      404: notFound('No such dead letter (`dead_letter_not_found`).'),
      409: conflict('Its task neither failed nor was cancelled (`task_not_retryable`).'),
      429: resumedOverQuota,
      503: policyUnavailable,
    },
    handler: async ({ params, req }, { tasks }) => {
      const { taskId, run } = await tasks.replayDeadLetter(params.id, asker(req));
      return { status: 202, body: { ...resumedBody(taskId, run), dead_letter_id: params.id } };
    },
  }),
];
