import type { StepStatus, TaskStatus, WaitReason } from '../engine/status.js';
import { type Prisma as P, Prisma as PrismaNamespace } from '../generated/prisma/client.js';
import { ATTEMPT_LOGS } from '../ledger/attempt-logs.js';
import { keyHolders } from '../ledger/create-tasks.js';
import type { SqlRunner } from '../ledger/sql.js';
import { taskById } from '../ledger/task-days.js';
import { Batcher } from '../lib/batcher.js';
import { uuidv7Time } from '../lib/uuid7.js';
import type { Prisma } from './database.js';

/** How far back the reconciler looks for ended tasks with steps left open: two days of its being down. */
const ENDED_LOOKBACK = '2 days';

/** Steps waiting for one of these reasons; by default for someone: a signal or an approval (src/engine/status.ts waitsForSomeone). */
function waitingFor(reasons: readonly WaitReason[] = ['signal', 'approval']) {
  return { status: 'waiting', reason: { in: [...reasons] } } satisfies P.StepWhereInput;
}

export interface TaskFilter {
  /** Only this owner's tasks. */
  owner?: string;
  /** `waiting`: tasks with a step waiting for someone (a signal or an approval), or for one of `waitingReasons`. */
  status?: TaskStatus | 'waiting';
  waitingReasons?: readonly WaitReason[];
  taskType?: string;
  createdAfter?: Date;
  createdBefore?: Date;
  /** Only ids in this range (uuidPrefixRange), created in `created` when given. */
  ids?: { first: string; last: string; created?: { from: Date; to: Date } };
  /** Only the children of this task. */
  parent?: string;
  /** Only tasks that are no child of another. */
  topLevel?: boolean;
  /** Only tasks whose params have these top-level values (not indexed: the caller bounds the creation window). */
  params?: Record<string, string | number | boolean>;
  limit: number;
  cursor?: { createdAt: Date; id: string };
}

/** A task's partition key where its id holds it: a lookup by task id then reads one day's partitions. */
/** How many of a task's newest ended attempts GET /result reads (the last few of each step are shown). */
const ATTEMPT_EVENTS_READ = 500;

function taskRef(taskId: string): { taskId: string; taskCreatedAt?: Date } {
  const at = uuidv7Time(taskId);
  return at ? { taskId, taskCreatedAt: at } : { taskId };
}

/** Tasks asked for at the same moment that one read statement looks up at most. */
const READ_BATCH_MAX = 100;

/** Where clause of the tasks with these ids (with their creation times, where their ids hold them). */
function tasksByIds(ids: readonly string[]): P.TaskWhereInput {
  const times = ids.map((id) => uuidv7Time(id));
  if (times.some((time) => time === undefined)) return { id: { in: [...ids] } };
  // A task's created_at is its id's time: the pair of lists finds exactly these tasks, over their days' partitions.
  return { id: { in: [...ids] }, createdAt: { in: [...new Map(times.map((time) => [time!.getTime(), time!])).values()] } };
}

/** What GET /result shows of a task: the task, its steps, its callback deliveries and its steps' last ended attempts. */
const TASK_VIEW_INCLUDE = {
  steps: { orderBy: { position: 'asc' } },
  callbacks: { orderBy: { createdAt: 'asc' } },
  // The steps' ended attempts, newest first, for their last few in GET /result (taskView).
  events: { where: { type: 'attempt_ended', item: null }, orderBy: { seq: 'desc' }, take: ATTEMPT_EVENTS_READ },
} satisfies P.TaskInclude;

/** A task as GET /result reads it (TaskStore.get, TaskStore.view). */
export type TaskRecord = NonNullable<Awaited<ReturnType<TaskStore['get']>>>;

/**
 * TASK_VIEW_INCLUDE as one statement: the tasks named in $1 (`tasks`: id and created_at), each
 * with its steps, callback deliveries and newest `events` ended attempts (prisma/functions/task_views.sql).
 */
const VIEW_SQL = 'SELECT task_views($1::jsonb) AS answer';

/** A model's fields with their columns (every column is its field's name in snake_case). */
function columns(fields: Record<string, string>): [string, string][] {
  return Object.keys(fields).map((field) => [field, field.replace(/[A-Z]/g, (letter) => `_${letter.toLowerCase()}`)]);
}

const TASK_COLUMNS = columns(PrismaNamespace.TaskScalarFieldEnum);
const STEP_COLUMNS = columns(PrismaNamespace.StepScalarFieldEnum);
const CALLBACK_COLUMNS = columns(PrismaNamespace.CallbackDeliveryScalarFieldEnum);
const EVENT_COLUMNS = columns(PrismaNamespace.HistoryEventScalarFieldEnum);

/** A row (of pg, or of json_agg) as Prisma gives its model: fields by name, DateTime fields (`at`, `…At`) as Dates, `seq` as a BigInt. */
function record(row: Record<string, unknown>, fields: readonly [string, string][]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [field, column] of fields) {
    const value = row[column] ?? null;
    if (value !== null && (field === 'at' || field.endsWith('At'))) out[field] = value instanceof Date ? value : new Date(value as string);
    else if (value !== null && field === 'seq') out[field] = BigInt(value as string | number);
    else out[field] = value;
  }
  return out;
}

type Row = Record<string, unknown>;

/**
 * One task of task_views' answer: its row, steps, callback deliveries and ended attempts. The
 * lists are added to the task's record rather than spread with it into a new object: on Node 20
 * that copy of a 30-field record, with keys added after it, took 15-22 µs a read against 3 µs
 * (see freshState in src/engine/decide.ts).
 */
function viewRecord([task, steps, callbacks, events]: [Row, Row[], Row[], Row[]]): TaskRecord {
  const view = record(task, TASK_COLUMNS);
  view.steps = steps.map((step) => record(step, STEP_COLUMNS));
  view.callbacks = callbacks.map((callback) => record(callback, CALLBACK_COLUMNS));
  view.events = events.map((event) => record(event, EVENT_COLUMNS));
  return view as unknown as TaskRecord;
}

/**
 * What the API reads of tasks, their steps, items and dead letters. Every change to a run goes
 * through the ledger (src/tasks/runs.ts).
 */
export class TaskStore {
  /**
   * GET /result's reads, group-committed: those a busy process asks for while one is on its way
   * go out together in the next statement (one round trip, one plan), an idle process's at once.
   */
  private readonly views = new Batcher((ids: string[]) => this.getMany(ids), { maxSize: READ_BATCH_MAX });

  constructor(
    private readonly prisma: Prisma,
    /** Where the ledger's statements run: the pool's plain SQL in the service (Database.sql). */
    private readonly sql: SqlRunner = prisma,
  ) {}

  /** The tasks that hold these (owner, idempotency key) pairs, and the request each was made with. */
  keyHolders(keys: { owner: string; key: string }[]) {
    return keyHolders(this.sql, keys);
  }

  /** The task and its steps, read in one statement so they show one moment. */
  get(id: string) {
    return this.prisma.task.findFirst({ where: taskById(id), include: TASK_VIEW_INCLUDE, relationLoadStrategy: 'join' });
  }

  /** As get, read together with the other tasks asked for at the same moment (GET /result). */
  async view(id: string): Promise<TaskRecord | undefined> {
    return this.views.add(id);
  }

  /**
   * Each task of `ids` as get reads it, in one statement on the pool's plain SQL (task_views);
   * undefined where none is found. The seed's loop reads here once or twice per task, and through
   * Prisma's client (about 8 % of the API's CPU) a read cost 1.5-2.5 times the API's CPU of this
   * one and 1.3-1.4 times PostgreSQL's (docs/performance.md, "This round: the submit path"). The
   * records are Prisma's, field for field (test/api/result-read.test.ts compares them with get's).
   */
  private async getMany(ids: readonly string[]): Promise<(TaskRecord | undefined)[]> {
    const unique = [...new Set(ids)];
    const times = unique.map((id) => uuidv7Time(id));
    // Ids that hold no time (not UUIDv7) are looked up as Prisma would, without the partition key.
    if (times.some((time) => time === undefined)) {
      const rows = await this.prisma.task.findMany({ where: tasksByIds(unique), include: TASK_VIEW_INCLUDE, relationLoadStrategy: 'join' });
      const byId = new Map(rows.map((row) => [row.id, row]));
      return ids.map((id) => byId.get(id));
    }
    const [{ answer }] = await this.sql.$queryRawUnsafe<[{ answer: [Row, Row[], Row[], Row[]][] }]>(
      VIEW_SQL,
      JSON.stringify({ tasks: unique.map((id, index) => ({ id, created_at: times[index]!.toISOString() })), events: ATTEMPT_EVENTS_READ }),
    );
    const byId = new Map(answer.map((view) => [view[0].id as string, viewRecord(view)]));
    return ids.map((id) => byId.get(id));
  }

  /** The owner only, to refuse another owner's task before waiting for it. */
  async ownerOf(id: string): Promise<string | undefined> {
    const row = await this.prisma.task.findFirst({ where: taskById(id), select: { ownerKey: true } });
    return row?.ownerKey;
  }

  /** What the gate asks about a task that is to run again (a retry, a replay): its owner, type, params and status. */
  async summary(id: string): Promise<{ ownerKey: string; taskType: string; params: Record<string, unknown>; status: TaskStatus; run: number } | undefined> {
    const row = await this.prisma.task.findFirst({ where: taskById(id), select: { ownerKey: true, taskType: true, params: true, status: true, run: true } });
    return row ? { ...row, params: (row.params ?? {}) as Record<string, unknown> } : undefined;
  }

  /** Whose task it is, and whether it has ended. */
  async ownerAndStatus(id: string): Promise<{ ownerKey: string; status: TaskStatus } | undefined> {
    return (await this.prisma.task.findFirst({ where: taskById(id), select: { ownerKey: true, status: true } })) ?? undefined;
  }

  /** Newest first; the cursor is the last row of the previous page. */
  list(filter: TaskFilter) {
    const where: P.TaskWhereInput = {
      ...(filter.owner !== undefined ? { ownerKey: filter.owner } : {}),
      ...(filter.status === 'waiting'
        ? { status: { in: ['queued', 'running'] as TaskStatus[] }, steps: { some: waitingFor(filter.waitingReasons) } }
        : filter.status
          ? { status: filter.status }
          : {}),
      ...(filter.taskType ? { taskType: filter.taskType } : {}),
      ...(filter.parent ? { parentTaskId: filter.parent } : filter.topLevel ? { parentTaskId: null } : {}),
      ...(filter.params ? { AND: Object.entries(filter.params).map(([name, value]) => ({ params: { path: [name], equals: value } })) } : {}),
      ...(filter.createdAfter || filter.createdBefore
        ? { createdAt: { ...(filter.createdAfter ? { gte: filter.createdAfter } : {}), ...(filter.createdBefore ? { lt: filter.createdBefore } : {}) } }
        : {}),
    };
    const ids = filter.ids;
    // Both bounds: the id's on the primary key, its creation time's to prune the partitions (and as an index range on created_at).
    const byId: P.TaskWhereInput[] = ids
      ? [{ id: { gte: ids.first, lte: ids.last } }, ...(ids.created ? [{ createdAt: { gte: ids.created.from, lte: ids.created.to } }] : [])]
      : [];
    const cursor = filter.cursor;
    const conditions: P.TaskWhereInput[] = [
      where,
      ...byId,
      ...(cursor ? [{ OR: [{ createdAt: { lt: cursor.createdAt } }, { createdAt: cursor.createdAt, id: { lt: cursor.id } }] }] : []),
    ];
    return this.prisma.task.findMany({
      where: conditions.length === 1 ? where : { AND: conditions },
      orderBy: [{ createdAt: 'desc' }, { id: 'desc' }],
      take: filter.limit,
      select: {
        id: true,
        taskType: true,
        status: true,
        createdAt: true,
        startedAt: true,
        finishedAt: true,
        stepsTotal: true,
        workflowName: true,
        parentTaskId: true,
        workflowVersion: true,
        // What each waits for (someone: a signal or an approval), so that any list shows a waiting task as waiting.
        steps: { where: waitingFor(filter.status === 'waiting' ? filter.waitingReasons : undefined), select: { stepId: true, reason: true, wakeAt: true } },
      },
    });
  }

  /** A map's items, in order, after `after` (a page of `limit`); with `status`, only those. */
  items(taskId: string, stepId: string, page: { limit: number; after?: number; status?: StepStatus }) {
    return this.prisma.stepItem.findMany({
      where: {
        ...taskRef(taskId),
        stepId,
        ...(page.after !== undefined ? { item: { gt: page.after } } : {}),
        ...(page.status ? { status: page.status } : {}),
      },
      orderBy: { item: 'asc' },
      take: page.limit,
    });
  }

  /** A page of a task's history, in order, after the event `after` (its seq); of one step with `stepId`. */
  history(taskId: string, page: { limit: number; after?: bigint; stepId?: string }) {
    return this.prisma.historyEvent.findMany({
      where: {
        ...taskRef(taskId),
        ...(page.after !== undefined ? { seq: { gt: page.after } } : {}),
        ...(page.stepId !== undefined ? { stepId: page.stepId } : {}),
        // A step's log lines have their own route (attemptLogs): the history stays a list of changes.
        type: { not: ATTEMPT_LOGS },
      },
      orderBy: { seq: 'asc' },
      take: page.limit,
    });
  }

  /** What a step's tool logged, attempt by attempt, oldest first (at most `limit` attempts). */
  attemptLogs(taskId: string, stepId: string, limit: number) {
    return this.prisma.historyEvent.findMany({
      where: { ...taskRef(taskId), stepId, type: ATTEMPT_LOGS },
      orderBy: { seq: 'asc' },
      take: limit,
      select: { run: true, item: true, attempt: true, at: true, data: true },
    });
  }

  async hasStep(taskId: string, stepId: string): Promise<boolean> {
    return (await this.prisma.step.count({ where: { ...taskRef(taskId), stepId } })) > 0;
  }

  /** The child tasks of a task's sub-workflow steps. */
  children(taskId: string) {
    return this.prisma.task.findMany({
      where: { parentTaskId: taskId },
      select: { id: true, taskType: true, status: true, parentStepId: true, workflowVersion: true, createdAt: true },
      orderBy: { createdAt: 'asc' },
    });
  }

  /** Newest first, optionally for one task or tool; the cursor is the last row's (created_at, id). */
  listDeadLetters(filter: { taskId?: string; tool?: string; limit: number; cursor?: { createdAt: Date; id: string } }) {
    const where: P.DeadLetterWhereInput = {
      ...(filter.taskId ? taskRef(filter.taskId) : {}),
      ...(filter.tool ? { tool: filter.tool } : {}),
    };
    const cursor = filter.cursor;
    return this.prisma.deadLetter.findMany({
      where: cursor ? { AND: [where, { OR: [{ createdAt: { lt: cursor.createdAt } }, { createdAt: cursor.createdAt, id: { lt: cursor.id } }] }] } : where,
      orderBy: [{ createdAt: 'desc' }, { id: 'desc' }],
      take: filter.limit,
    });
  }

  /**
   * The steps not yet finished, of queued or running tasks, whose tool starts with `prefix` (a
   * service's `<name>.`): what deleting a service would strand. Compared with left(), not LIKE,
   * since a service's name may hold `_`.
   */
  async unfinishedStepsCalling(prefix: string): Promise<{ taskId: string; run: number; stepId: string }[]> {
    const rows = await this.sql.$queryRawUnsafe<{ task_id: string; run: number; step_id: string }[]>(
      `SELECT t.id::text AS task_id, t.run, s.step_id FROM tasks t
         JOIN steps s ON s.task_id = t.id AND s.task_created_at = t.created_at
        WHERE t.status IN ('queued', 'running') AND s.status IN ('pending', 'queued', 'running', 'waiting') AND left(s.tool, $2) = $1
        ORDER BY t.created_at, t.id, s.step_id`,
      prefix,
      prefix.length,
    );
    return rows.map((row) => ({ taskId: row.task_id, run: row.run, stepId: row.step_id }));
  }

  /** Active tasks accepted more than `olderThanMs` ago, oldest first, after `after` (paging): what the reconciler looks at. */
  async activeRuns(olderThanMs: number, limit: number, after?: { createdAt: Date; id: string }): Promise<{ id: string; createdAt: Date }[]> {
    const rows = await this.sql.$queryRawUnsafe<{ id: string; created_at: Date }[]>(
      `SELECT id::text AS id, created_at FROM tasks
        WHERE status IN ('queued', 'running') AND created_at < now() - make_interval(secs => $1)
          AND ($2::timestamptz IS NULL OR (created_at, id) > ($2::timestamptz, $3::uuid))
        ORDER BY created_at, id LIMIT $4`,
      olderThanMs / 1000,
      after?.createdAt ?? null,
      after?.id ?? null,
      limit,
    );
    return rows.map((row) => ({ id: row.id, createdAt: row.created_at }));
  }

  /**
   * Failed or cancelled tasks of the last ENDED_LOOKBACK with a step still queued or running,
   * oldest first, after `after` (paging): a tool step running when its task ended finishes on its
   * own, unless its job went missing or BullMQ failed it meanwhile; the reconciler closes those.
   */
  async endedWithOpenSteps(olderThanMs: number, limit: number, after?: { createdAt: Date; id: string }): Promise<{ id: string; createdAt: Date }[]> {
    const rows = await this.sql.$queryRawUnsafe<{ id: string; created_at: Date }[]>(
      `SELECT t.id::text AS id, t.created_at FROM tasks t
        WHERE t.status IN ('failed', 'cancelled')
          AND t.created_at >= now() - interval '${ENDED_LOOKBACK}' AND t.created_at < now() - make_interval(secs => $1)
          AND ($2::timestamptz IS NULL OR (t.created_at, t.id) > ($2::timestamptz, $3::uuid))
          AND EXISTS (SELECT 1 FROM steps s WHERE s.task_id = t.id AND s.task_created_at = t.created_at AND s.status IN ('queued', 'running'))
        ORDER BY t.created_at, t.id LIMIT $4`,
      olderThanMs / 1000,
      after?.createdAt ?? null,
      after?.id ?? null,
      limit,
    );
    return rows.map((row) => ({ id: row.id, createdAt: row.created_at }));
  }

  /**
   * Queued and running tasks, for the active-tasks gauge. This and openDeadLetters are plain SQL:
   * through Prisma's client each query was compiled in the API's event loop, which held it up to
   * 80 ms on a scrape (a busy machine, the first one).
   */
  async activeCounts(): Promise<{ status: string; count: number }[]> {
    return this.sql.$queryRawUnsafe<{ status: string; count: number }[]>(
      `SELECT status, count(*)::int AS count FROM tasks WHERE status IN ('queued', 'running') GROUP BY status`,
    );
  }

  /** Dead letters not replayed yet, for the open-dead-letters gauge. */
  async openDeadLetters(): Promise<number> {
    const [row] = await this.sql.$queryRawUnsafe<[{ n: number }]>('SELECT count(*)::int AS n FROM dead_letters WHERE replayed_at IS NULL');
    return row.n;
  }

  /** A tool's dead letters not replayed yet, oldest first (through the index of the open ones). */
  openDeadLettersOf(tool: string, limit: number) {
    return this.prisma.deadLetter.findMany({
      where: { tool, replayedAt: null },
      orderBy: [{ createdAt: 'asc' }, { id: 'asc' }],
      take: limit,
      select: { id: true },
    });
  }

  /** Dead letters by tool: how many, how many not replayed yet, the oldest and newest. */
  async deadLetterCounts(): Promise<{ tool: string; total: number; open: number; oldest: Date; newest: Date }[]> {
    const rows = await this.prisma.deadLetter.groupBy({
      by: ['tool'],
      _count: { _all: true, replayedAt: true },
      _min: { createdAt: true },
      _max: { createdAt: true },
      orderBy: { tool: 'asc' },
    });
    return rows.map((row) => ({
      tool: row.tool,
      total: row._count._all,
      open: row._count._all - row._count.replayedAt,
      oldest: row._min.createdAt!,
      newest: row._max.createdAt!,
    }));
  }

  getDeadLetter(id: string) {
    // Its id holds no time (dead letters are few, and off the hot path): every day's index is probed.
    return this.prisma.deadLetter.findFirst({ where: { id } });
  }

  async markReplayed(id: string): Promise<void> {
    await this.prisma.deadLetter.updateMany({ where: { id }, data: { replayedAt: new Date() } });
  }
}
