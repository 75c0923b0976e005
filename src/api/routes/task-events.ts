import type { Response } from 'express';
import { z } from 'zod';
import { isFinished } from '../../engine/status.js';
import { ValidationError } from '../../lib/errors.js';
import { isEventId, type TaskEvent } from '../../queue/event-log.js';
import { viewer } from '../access.js';
import { clientOf, slotsFull } from '../client-slots.js';
import type { TaskEventStreamDeps } from '../event-streams.js';
import * as ex from '../openapi-examples.js';
import { gone, invalid, notFound, tooManyRequests, unavailable } from '../replies.js';
import * as r from '../responses.js';
import { route } from '../route.js';

/** The path parameter of every /tasks/{task_id}... and /result/{task_id} route. */
export const taskIdParam = z.object({
  task_id: z.string().meta({ description: 'The id (a UUID) that POST /assign-task answered. Anything else answers 404.' }),
});

function write(res: Response, event: { id: string; type: string; data: unknown }): void {
  res.write(`id: ${event.id}\nevent: ${event.type}\ndata: ${JSON.stringify(event.data)}\n\n`);
}

/**
 * How long a resumed stream whose history is still in Redis waits for a finished task's ending
 * event before sending a snapshot instead. The event is appended just after the commit that
 * ended the task, and its notice wakes the wait at once: the bound is for an append that never
 * comes (its write failed), not for a slow one (a loaded CI machine delayed one past 2 s).
 */
const END_EVENT_GRACE_MS = 10_000;

const ends = (event: TaskEvent) => event.type === 'task' && isFinished(event.status ?? '');

/**
 * GET /tasks/:id/events: Server-Sent Events, one per step and task transition (and progress
 * report), ending after the task ends. A new stream starts with a `snapshot` event (the task
 * as GET /result shows it); a client that reconnects with Last-Event-ID gets only what it missed.
 * Events come from Redis, so any API process can serve any task. A client holds at most
 * EVENT_STREAMS_PER_KEY streams, each for at most EVENT_STREAM_MAX_S: then a `reconnect` event
 * ends it, and the client resumes from its last event id.
 */
export const TASK_EVENTS_ROUTE = route({
  method: 'get',
  path: '/tasks/{task_id}/events',
  operationId: 'streamTaskEvents',
  access: 'tasks',
  summary: "Follow a task's progress (Server-Sent Events)",
  description: [
    'A new stream starts with a `snapshot` event whose data is the task as GET /result shows it (`TaskView`), then one event per',
    'task or step transition and progress report (`task`, `step`, `progress`; data: `TaskStreamEvent`). It ends after the task',
    'ends. Every event has an `id:`; reconnect with `Last-Event-ID` (or `?last_event_id=`) to receive only what was missed.',
    'A stopping server sends a `shutdown` event first. Comment lines (`: ping`) keep idle streams open.',
    'A stream lives at most EVENT_STREAM_MAX_S: then a `reconnect` event (its `id:` is the last event id) ends it, and the client resumes from that id.',
    'A key (or an address, without keys) may have EVENT_STREAMS_PER_KEY streams open at once.',
  ].join(' '),
  tags: ['tasks'],
  params: taskIdParam,
  query: z.object({ last_event_id: z.string().optional().meta({ description: 'As the Last-Event-ID header, for clients that cannot set headers.' }) }),
  headers: z.object({ 'Last-Event-ID': z.string().optional().meta({ description: 'The id of the last event received, e.g. `1700000000000-0`.' }) }),
  responses: {
    200: { description: 'The event stream.', mediaType: 'text/event-stream', body: r.taskStreamMessageSchema, examples: ex.taskEventExamples },
    400: invalid('Last-Event-ID is not an event id.'),
    404: notFound('No such task (`task_not_found`).'),
    410: gone,
    429: tooManyRequests(
      'The key already has EVENT_STREAMS_PER_KEY streams open (`too_many_streams`), or sent more than RATE_LIMIT_PER_MINUTE requests this minute (`rate_limited`).',
    ),
    503: unavailable,
  },
  handler: async ({ params, query, req, res }, { taskEvents }) => {
    const reader = viewer(req);
    const resumeFrom = req.get('last-event-id') ?? query.last_event_id;
    if (resumeFrom !== undefined && !isEventId(resumeFrom)) {
      throw new ValidationError('Last-Event-ID is not an event id', [{ path: 'Last-Event-ID', message: 'expected an id like 1700000000000-0' }]);
    }
    const release = await taskEvents.slots.acquire(clientOf(req));
    if (!release) {
      return slotsFull(
        'too_many_streams',
        'this API key (or address) has as many event streams open as EVENT_STREAMS_PER_KEY allows; close one or retry later',
      );
    }
    try {
      return await stream(taskEvents, res, params.task_id, resumeFrom, reader);
    } finally {
      release();
    }
  },
});

/** `reader`: a client key may only follow its own tasks, and only an admin key sees approval links. */
async function stream(
  deps: TaskEventStreamDeps,
  res: Response,
  id: string,
  resumeFrom: string | undefined,
  reader: { owner?: string; links: boolean },
): Promise<undefined> {
  const heartbeatMs = deps.heartbeatMs ?? 15_000;
  let wake: () => void = () => undefined;
  // Set by every notice and cleared before each read, so a notice that lands between a read
  // and the wait after it is not slept through.
  let notified = false;
  const stopListening = deps.events.listen(id, () => {
    notified = true;
    wake();
  });
  let closed = false;
  res.on('close', () => {
    closed = true;
    wake();
  });
  let expired = false;
  const lifetime = setTimeout(() => {
    expired = true;
    wake();
  }, deps.maxLifetimeMs);
  const pause = (ms: number, onTimeout?: () => void) =>
    new Promise<void>((resolve) => {
      if (notified || closed || expired) return resolve();
      const timer = setTimeout(() => {
        onTimeout?.();
        resolve();
      }, ms);
      wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  let awaitedEnd = false;
  // A step that starts waiting for someone says for what (an approval: its links, to an admin key), as GET /result does.
  const withWaitingFor = async (data: Omit<TaskEvent, 'id'>) => {
    if (data.type !== 'step' || data.status !== 'waiting' || (data.reason !== 'signal' && data.reason !== 'approval')) return data;
    const view = await deps.tasks.result(id, 0, undefined, reader);
    const waiting = view.steps.find((step) => step.id === data.step_id)?.waiting_for;
    return waiting ? { ...data, waiting_for: waiting } : data;
  };
  try {
    // Before the snapshot, so nothing that happens while it is read is missed.
    let cursor = resumeFrom ?? (await deps.eventLog.lastId(id));
    // Answers 404 (before any byte of the stream) for an unknown task.
    const snapshot = await deps.tasks.result(id, 0, undefined, reader);
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      connection: 'keep-alive',
      // nginx and similar proxies must not buffer the stream.
      'x-accel-buffering': 'no',
    });
    const forget = deps.streams.add(res);
    try {
      if (resumeFrom === undefined) {
        write(res, { id: cursor, type: 'snapshot', data: snapshot });
        if (isFinished(snapshot.status)) return undefined;
      }
      for (;;) {
        notified = false;
        const batch = await deps.eventLog.read(id, cursor);
        for (const event of batch) {
          const { id: eventId, ...data } = event;
          write(res, { id: eventId, type: event.type, data: await withWaitingFor(data) });
          cursor = eventId;
          if (ends(event)) return undefined;
        }
        if (closed) return undefined;
        if (expired) {
          write(res, {
            id: cursor,
            type: 'reconnect',
            data: { reason: 'max_lifetime', message: 'the stream reached its maximum lifetime; reconnect with Last-Event-ID' },
          });
          return undefined;
        }
        if (batch.length === 0 && resumeFrom !== undefined) {
          // The history may have expired: if the task ended, say so instead of waiting forever.
          const current = await deps.tasks.result(id, 0, undefined, reader);
          if (isFinished(current.status)) {
            // A history that expired went as a whole (its key): the snapshot at once. One still
            // there has the ending event on its way, appended just after the commit that ended
            // the task; its notice ends the wait.
            if (!awaitedEnd && (await deps.eventLog.exists(id))) {
              awaitedEnd = true;
              await pause(END_EVENT_GRACE_MS);
              continue;
            }
            write(res, { id: cursor, type: 'snapshot', data: current });
            return undefined;
          }
        }
        if (batch.length > 0) continue;
        await pause(heartbeatMs, () => {
          if (!closed) res.write(': ping\n\n');
        });
        if (closed) return undefined;
      }
    } finally {
      forget();
      if (!res.writableEnded) res.end();
    }
  } finally {
    clearTimeout(lifetime);
    stopListening();
  }
}
