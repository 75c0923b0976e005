import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { ExpressAdapter } from '@bull-board/express';
import type { Queue } from 'bullmq';
import type express from 'express';
import { z } from 'zod';
import type { TaskQueues } from '../../queue/task-queues.js';
import * as ex from '../openapi-examples.js';
import { plainRoute, type Route } from '../route.js';

const BASE_PATH = '/admin/queues';

function bullBoard(queues: TaskQueues, others: Queue[], readOnlyMode: boolean): express.Router {
  const adapter = new ExpressAdapter();
  adapter.setBasePath(BASE_PATH);
  // With several shards each queue appears once per shard, named after its shard ("2.tool.echo").
  const adapters = queues.shards.flatMap((shard) =>
    shard.all().map((queue) => new BullMQAdapter(queue, { readOnlyMode, ...(queues.shards.length > 1 ? { prefix: `${shard.index}.` } : {}) })),
  );
  // Queues outside the shards (the schedules' ticks) appear once.
  createBullBoard({ queues: [...adapters, ...others.map((queue) => new BullMQAdapter(queue, { readOnlyMode }))], serverAdapter: adapter });
  return adapter.getRouter() as express.Router;
}

/**
 * Bull Board shows every task's job data: admin and read keys only. Its API changes queues with
 * anything but GET, so those need admin; a read key gets a board in read-only mode too, so the
 * page offers no buttons it could not use.
 */
export const BOARD_ROUTES: Route[] = [
  plainRoute({
    method: 'get',
    path: BASE_PATH,
    operationId: 'queuesUi',
    access: 'monitor',
    writeAccess: 'admin',
    summary: 'Bull Board: the queues and their jobs, live',
    description: 'A browser UI; its own API and assets live under `/admin/queues/`. Not a stable interface for programs.',
    tags: ['system'],
    browser: true,
    mount: true,
    responses: { 200: { description: 'The Bull Board page.', mediaType: 'text/html', body: z.string(), examples: ex.boardPageExamples } },
    serve: ({ queues, schedules, keysConfigured }) => {
      const others = [schedules.queue] as Queue[];
      const board = bullBoard(queues, others, false);
      const readOnlyBoard = keysConfigured ? bullBoard(queues, others, true) : board;
      return (req, res, next) => (req.apiKeyScope === undefined || req.apiKeyScope === 'admin' ? board : readOnlyBoard)(req, res, next);
    },
  }),
];
