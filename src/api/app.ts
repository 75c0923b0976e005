import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { ExpressAdapter } from '@bull-board/express';
import express, { type Express } from 'express';
import type { Config } from '../config.js';
import type { Logger } from '../logger.js';
import { errorBody, errorMiddleware } from './http.js';
import { systemRoutes, type SystemInfo } from './routes/system.js';
import { taskRoutes } from './routes/tasks.js';
import { toolRoutes } from './routes/tools.js';
import { workflowRoutes } from './routes/workflows.js';
import { deadLetterRoutes } from './routes/dead-letters.js';
import type { WorkflowService } from '../workflows/workflow-service.js';
import { taskEventRoutes, type EventStreams } from './routes/task-events.js';
import type { EventLog } from '../queue/event-log.js';
import type { TaskEvents } from '../queue/task-events.js';
import type { TaskService } from '../tasks/task-service.js';
import type { ToolRegistry } from '../tools/tool.js';
import type { TaskQueues } from '../queue/task-queues.js';

export interface AppDeps {
  config: Config;
  logger: Logger;
  registry: ToolRegistry;
  tasks: TaskService;
  workflows: WorkflowService;
  queues: TaskQueues;
  eventLog: EventLog;
  events: TaskEvents;
  streams: EventStreams;
  system: SystemInfo;
}

const BODY_METHODS = new Set(['POST', 'PUT', 'PATCH']);

export function createApp(deps: AppDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('trust proxy', false);

  // A body that is not JSON is refused up front rather than read as empty.
  app.use((req, res, next) => {
    const hasBody = Number(req.headers['content-length'] ?? 0) > 0 || req.headers['transfer-encoding'] !== undefined;
    if (BODY_METHODS.has(req.method) && hasBody && !req.is('application/json') && !req.path.startsWith('/admin/')) {
      res.status(415).json(errorBody('unsupported_media_type', 'send the body as application/json'));
      return;
    }
    next();
  });
  app.use(express.json({ limit: deps.config.BODY_LIMIT, strict: true }));

  app.use(systemRoutes(deps.system));
  app.use(taskRoutes(deps.tasks));
  app.use(taskEventRoutes({ tasks: deps.tasks, eventLog: deps.eventLog, events: deps.events, logger: deps.logger }, deps.streams));
  app.use(toolRoutes(deps.registry));
  app.use(workflowRoutes(deps.workflows, deps.tasks));
  app.use(deadLetterRoutes(deps.tasks));

  const board = new ExpressAdapter();
  board.setBasePath('/admin/queues');
  createBullBoard({ queues: deps.queues.all().map((queue) => new BullMQAdapter(queue)), serverAdapter: board });
  app.use('/admin/queues', board.getRouter());

  app.use((req, res) => {
    res.status(404).json(errorBody('route_not_found', `no route for ${req.method} ${req.path}`));
  });
  app.use(errorMiddleware(deps.logger));
  return app;
}
