import type { Response } from 'express';
import type { Logger } from '../lib/logger.js';
import type { EventLog } from '../queue/event-log.js';
import type { EventNotices } from '../queue/event-notices.js';
import type { TaskService } from '../tasks/task-service.js';
import type { ClientSlots } from './client-slots.js';

/*
 * What GET /tasks/{task_id}/events (src/api/routes/task-events.ts) works with, apart from its
 * route: the route context (src/api/route.ts) names these, so they cannot live in the route's
 * module without an import cycle.
 */

export interface TaskEventStreamDeps {
  tasks: TaskService;
  eventLog: EventLog;
  events: EventNotices;
  logger: Logger;
  /** A comment line this often keeps proxies from closing an idle stream. @defaultValue 15000 */
  heartbeatMs?: number;
  /** Open streams per client (EVENT_STREAMS_PER_KEY). */
  slots: ClientSlots;
  /** A stream older than this ends with a `reconnect` event (EVENT_STREAM_MAX_S). */
  maxLifetimeMs: number;
  /** The open streams, which a stopping API ends. */
  streams: EventStreams;
}

/** Open event streams, so a stopping API can end them with a final event. */
export class EventStreams {
  private readonly open = new Set<Response>();

  add(res: Response): () => void {
    this.open.add(res);
    return () => this.open.delete(res);
  }

  /** Sends every open stream a `shutdown` event and ends it; clients reconnect with Last-Event-ID. */
  closeAll(): void {
    for (const res of this.open) {
      res.write(`event: shutdown\ndata: ${JSON.stringify({ message: 'the server is restarting; reconnect with Last-Event-ID' })}\n\n`);
      res.end();
    }
    this.open.clear();
  }
}
