import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { ExpressAdapter } from '@bull-board/express';
import type { Queue } from 'bullmq';
import type express from 'express';
import { z } from 'zod';
import type { WorkerFleet } from '../../fleet/worker-fleet.js';
import type { TaskQueues } from '../../queue/task-queues.js';
import * as ex from '../openapi-examples.js';
import { plainRoute, type Route } from '../route.js';

const BASE_PATH = '/admin/queues';

/**
 * The board, whose queue list follows the tools: a tool's queue is made when it is first needed,
 * and workers register tools after the API started (on a fresh database, the built-in ones too),
 * so each page load first makes the queues of the tools registered since, and the board takes in
 * any queue it does not show yet.
 */
function bullBoard(queues: TaskQueues, others: Queue[], fleet: WorkerFleet, readOnlyMode: boolean): express.Router {
  const adapter = new ExpressAdapter();
  adapter.setBasePath(BASE_PATH);
  // With several shards each queue appears once per shard, named after its shard ("2.tool.echo").
  // Queues outside the shards (the schedules' ticks) appear once.
  const adapters = () => [
    ...queues.shards.flatMap((shard) =>
      shard.all().map((queue) => new BullMQAdapter(queue, { readOnlyMode, ...(queues.shards.length > 1 ? { prefix: `${shard.index}.` } : {}) })),
    ),
    ...others.map((queue) => new BullMQAdapter(queue, { readOnlyMode })),
  ];
  let shown = queues.all().length;
  const board = createBullBoard({ queues: adapters(), serverAdapter: adapter });
  const router = adapter.getRouter() as express.Router;
  return ((req, res, next) => {
    for (const tool of [...fleet.builtIns.list(), ...fleet.list()]) for (const shard of queues.shards) shard.toolQueue(tool.name);
    const count = queues.all().length;
    if (count !== shown) {
      shown = count;
      board.replaceQueues(adapters());
    }
    router(req, res, next);
  }) as express.Router;
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
    serve: ({ queues, schedules, fleet, keysConfigured }) => {
      const others = [schedules.queue] as Queue[];
      const board = bullBoard(queues, others, fleet, false);
      const readOnlyBoard = keysConfigured ? bullBoard(queues, others, fleet, true) : board;
      return (req, res, next) => (req.apiKeyScope === undefined || req.apiKeyScope === 'admin' ? board : readOnlyBoard)(req, res, next);
    },
  }),
];
