import { isDeepStrictEqual } from 'node:util';
import type { JsonSchema } from '../engine/catalog.js';
import type { RetryPolicy } from '../engine/types.js';
import { Prisma, type PrismaClient } from '../generated/prisma/client.js';
import { ConflictError, NotFoundError } from '../lib/errors.js';
import type { Logger } from '../lib/logger.js';
import { type RedisClient, subscribeWhenReady } from '../queue/redis.js';
import { runtimeType } from '../tools/openapi-tools.js';
import type { AnyTool, DynamicTools, RateLimit } from '../tools/tool.js';
import type { FleetWorkerView, RunningStep, ToolRegistration, WorkerRegistration } from './protocol.js';

/** How often a worker registers again; one silent for LIVE_HEARTBEATS of these is not live. */
export const HEARTBEAT_MS = 5_000;
const LIVE_HEARTBEATS = 3;
/** Other processes read tools registered through another one at least this often (at once when told, or when a name is unknown). */
const RELOAD_MS = 5_000;

/**
 * The owner of the built-in worker's registrations (workers/main.ts: echo, http, sleep, …), which
 * register through this class directly rather than over HTTP. No API key's id can be it: a key's
 * name has letters, digits and `_ . -` only, other ids start with `key:` or `jwt:`.
 */
export const BUILT_IN_OWNER = 'orchestrator:built-in';

/** The channel on which a process announces that tools were registered or changed: every process reads them again. */
export function fleetChannel(prefix: string): string {
  return `${prefix}:fleet`;
}

/** Where a fleet announces its changes and hears other processes' (Redis pub/sub). */
export interface FleetNotices {
  redis: RedisClient;
  subscriber: RedisClient;
  prefix: string;
}

interface StoredTool {
  name: string;
  version: number;
  description: string;
  inputSchema: unknown;
  outputSchema: unknown;
  retry: unknown;
  timeoutMs: number;
  concurrency: number | null;
  rateLimit: unknown;
}

/** The parts of a registration that make a tool's version: a change to any of them is a new version. */
function shapeOf(tool: ToolRegistration | StoredTool) {
  return 'input_schema' in tool
    ? {
        description: tool.description,
        input: tool.input_schema,
        output: tool.output_schema,
        retry: tool.retry,
        timeout_ms: tool.timeout_ms,
        concurrency: tool.concurrency ?? null,
        rate_limit: tool.rate_limit ?? null,
      }
    : {
        description: tool.description,
        input: tool.inputSchema,
        output: tool.outputSchema,
        retry: tool.retry,
        timeout_ms: tool.timeoutMs,
        concurrency: tool.concurrency,
        rate_limit: tool.rateLimit ?? null,
      };
}

/** What changed between two shapes, named for the message of a refused registration. */
function differences(before: ReturnType<typeof shapeOf>, after: ReturnType<typeof shapeOf>): string[] {
  return (Object.keys(before) as (keyof typeof before)[]).filter((key) => !isDeepStrictEqual(before[key], after[key]));
}

/**
 * Worker processes and the tools they register (issue 30): workers of users' own over HTTP
 * (src/api/routes/workers.ts), and the built-in worker directly (BUILT_IN_OWNER, see
 * workers/runtime/registration.ts). A tool is stored at its first registration and outlives its
 * workers: tasks of it queue until a worker serves it again. Its JSON Schemas are what the API
 * validates params with (interpreted, patterns on RE2: see runtimeType) and what the workflow
 * checks read. The tools are dynamic tools of every process, never run here.
 *
 * As DynamicTools this class answers for users' tools only (what the /workers routes accept
 * reports on); `builtIns` answers for the built-in worker's. A tool is built-in while a built-in
 * worker's row lists it, live or not: such rows are only deleted once a live built-in worker
 * serves each of their tools (sweepBuiltIns), so the name stays reserved when every built-in
 * worker is stopped.
 */
export class WorkerFleet implements DynamicTools {
  private tools = new Map<string, { stored: StoredTool; tool: AnyTool }>();
  /** Names that built-in workers registered (BUILT_IN_OWNER). */
  private builtInNames = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  /**
   * Readings begun and the latest one applied: readings overlap (the timer's, a notice's, a
   * registration's), and one that began earlier may end later with what was stored before a
   * registration; it is dropped rather than put the registered tool out of sight until the next.
   */
  private readingsBegun = 0;
  private readingApplied = 0;

  constructor(
    private readonly prisma: PrismaClient,
    private readonly logger: Logger,
    private readonly notices?: FleetNotices,
  ) {}

  /**
   * Reads the tools now, again every RELOAD_MS, and at once when another process announces a
   * change; PostgreSQL away at start delays them, it does not stop the process.
   */
  async start(): Promise<void> {
    const reload = () => this.reload().catch((error: Error) => this.logger.warn('could not read the workers’ tools', { error: error.message }));
    await reload();
    if (this.notices) {
      const channel = fleetChannel(this.notices.prefix);
      this.notices.subscriber.on('message', (from: string) => {
        if (from === channel) void reload();
      });
      // Read again once subscribed, and after every reconnect: a registration announced before
      // (a built-in worker that started first) or meanwhile is otherwise unseen until the next
      // RELOAD_MS, and its tools' tasks are refused as unknown until then.
      subscribeWhenReady(
        this.notices.subscriber,
        channel,
        (error) => this.logger.warn('could not subscribe to tool registrations', { error: error.message }),
        () => void reload(),
      );
    }
    this.timer = setInterval(reload, RELOAD_MS);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  private async reload(): Promise<void> {
    const reading = ++this.readingsBegun;
    const [rows, builtIn] = await Promise.all([
      this.prisma.workerTool.findMany() as Promise<StoredTool[]>,
      this.prisma.$queryRawUnsafe('SELECT DISTINCT unnest(tools) AS name FROM workers WHERE owner = $1', BUILT_IN_OWNER) as Promise<{ name: string }[]>,
    ]);
    if (reading < this.readingApplied) return;
    this.readingApplied = reading;
    const next = new Map<string, { stored: StoredTool; tool: AnyTool }>();
    for (const stored of rows) {
      const known = this.tools.get(stored.name);
      next.set(stored.name, known && known.stored.version === stored.version ? known : { stored, tool: toolOf(stored) });
    }
    this.tools = next;
    this.builtInNames = new Set(builtIn.map((row) => row.name));
  }

  private stored(builtIn: boolean): AnyTool[] {
    return [...this.tools.values()].filter((entry) => this.builtInNames.has(entry.stored.name) === builtIn).map((entry) => entry.tool);
  }

  // DynamicTools: the users' tools

  get(name: string): AnyTool | undefined {
    return this.builtInNames.has(name) ? undefined : this.tools.get(name)?.tool;
  }

  list(): AnyTool[] {
    return this.stored(false);
  }

  async refresh(name: string): Promise<AnyTool | undefined> {
    await this.reload();
    return this.get(name);
  }

  /** The built-in worker's tools, as registered: how the API knows them without importing them. */
  readonly builtIns: DynamicTools = {
    get: (name) => (this.builtInNames.has(name) ? this.tools.get(name)?.tool : undefined),
    list: () => this.stored(true),
    refresh: async (name) => {
      await this.reload();
      return this.builtIns.get(name);
    },
  };

  /** The tool's version, users' and built-in tools alike, for GET /tools. */
  version(name: string): number | undefined {
    return this.tools.get(name)?.stored.version;
  }

  /**
   * Registers worker `id` and its tools (again: a heartbeat). A tool whose shape differs from
   * the stored one becomes a new version, unless a live worker other than this one serves the
   * stored one and the registration does not ask to replace: then it is refused (409
   * `tool_conflict`), naming what differs, and nothing is stored. A user's worker (any owner but
   * BUILT_IN_OWNER) may not register a built-in tool's name, nor one of `builtIn` (the process's
   * own adapters, the registered services' operations).
   */
  async register(
    id: string,
    owner: string,
    body: WorkerRegistration,
    builtIn: ReadonlySet<string>,
  ): Promise<{ name: string; version: number; changed: boolean }[]> {
    const clashing = body.tools.filter((tool) => builtIn.has(tool.name)).map((tool) => tool.name);
    if (clashing.length > 0)
      throw new ConflictError('tool_conflict', `these names are built-in tools or registered services: ${clashing.join(', ')}`, { tools: clashing });
    const names = body.tools.map((tool) => tool.name);
    if (new Set(names).size !== names.length) throw new ConflictError('tool_conflict', 'two tools of the registration have the same name');
    const outcome = await this.prisma.$transaction(async (tx) => {
      // One registration at a time per tool name, taken in name order (no deadlock between two
      // workers): a row lock alone would not cover a name not stored yet, and two workers
      // registering a new tool at once both inserted it (a unique violation, a 500).
      await tx.$executeRawUnsafe(
        `SELECT pg_advisory_xact_lock(key) FROM (SELECT hashtext('worker_tool:' || name) AS key FROM unnest($1::text[]) AS name ORDER BY name) AS names`,
        names,
      );
      const stored = (await tx.$queryRawUnsafe(
        'SELECT name, version, description, input_schema AS "inputSchema", output_schema AS "outputSchema", retry, timeout_ms AS "timeoutMs", concurrency, rate_limit AS "rateLimit" FROM worker_tools WHERE name = ANY($1::text[])',
        names,
      )) as StoredTool[];
      const liveSince = new Date(Date.now() - HEARTBEAT_MS * LIVE_HEARTBEATS);
      if (owner !== BUILT_IN_OWNER) {
        // Read under the names' locks: a built-in worker registering one of them at the same moment waits, or went first.
        const reserved = (await tx.$queryRawUnsafe(
          'SELECT DISTINCT name FROM workers, unnest(tools) AS name WHERE owner = $1 AND name = ANY($2::text[]) ORDER BY name',
          BUILT_IN_OWNER,
          names,
        )) as { name: string }[];
        if (reserved.length > 0)
          throw new ConflictError('tool_conflict', `these names are built-in tools: ${reserved.map((row) => row.name).join(', ')}`, {
            tools: reserved.map((row) => row.name),
          });
      }
      const byName = new Map(stored.map((row) => [row.name, row]));
      const answer: { name: string; version: number; changed: boolean }[] = [];
      for (const tool of body.tools) {
        const before = byName.get(tool.name);
        const data = {
          description: tool.description,
          inputSchema: tool.input_schema as object,
          outputSchema: tool.output_schema as object,
          retry: tool.retry as object,
          timeoutMs: tool.timeout_ms,
          concurrency: tool.concurrency ?? null,
          rateLimit: tool.rate_limit ?? Prisma.DbNull,
        };
        if (!before) {
          await tx.workerTool.create({ data: { name: tool.name, ...data } });
          answer.push({ name: tool.name, version: 1, changed: true });
          continue;
        }
        const changed = differences(shapeOf(before), shapeOf(tool));
        if (changed.length === 0) {
          answer.push({ name: tool.name, version: before.version, changed: false });
          continue;
        }
        if (!body.replace) {
          const others = await tx.fleetWorker.findMany({
            where: { id: { not: id }, tools: { has: tool.name }, lastSeenAt: { gte: liveSince }, stoppedAt: null },
            select: { id: true },
          });
          if (others.length > 0)
            throw new ConflictError(
              'tool_conflict',
              `the ${tool.name} tool differs from version ${before.version}, which live workers serve (${others.map((other) => other.id).join(', ')}), in: ${changed.join(', ')}; stop them, or register with replace: true`,
              { tool: tool.name, version: before.version, differs_in: changed, workers: others.map((other) => other.id) },
            );
        }
        await tx.workerTool.update({ where: { name: tool.name }, data: { ...data, version: before.version + 1, updatedAt: new Date() } });
        answer.push({ name: tool.name, version: before.version + 1, changed: true });
      }
      const running = body.running ?? [];
      const worker = {
        owner,
        host: body.host,
        pid: body.pid,
        version: body.version,
        concurrency: body.concurrency,
        tools: names,
        running,
        runningCount: Math.max(body.running_count ?? 0, running.length),
        lastSeenAt: new Date(),
        stoppedAt: null,
      };
      await tx.fleetWorker.upsert({ where: { id }, create: { id, ...worker }, update: worker });
      if (owner === BUILT_IN_OWNER) await this.sweepBuiltIns(tx, liveSince);
      return answer;
    });
    // A built-in worker's first registration may make names built-in that were stored already: announced too.
    if (outcome.some((tool) => tool.changed) || (owner === BUILT_IN_OWNER && body.replace)) {
      await this.reload();
      this.announce();
    }
    return outcome;
  }

  /**
   * Deletes the rows of built-in workers that are not live (`leaving`: that one, live or not)
   * when a live built-in worker serves each of their tools: a crashed or stopped one disappears
   * once it is replaced, and the last one serving a tool stays (not live), so that the tool's
   * name stays built-in.
   */
  private async sweepBuiltIns(tx: Pick<PrismaClient, '$executeRawUnsafe'>, liveSince: Date, leaving?: string): Promise<void> {
    await tx.$executeRawUnsafe(
      `DELETE FROM workers AS w
        WHERE w.owner = $1 AND (w.id = $3::text OR ($3::text IS NULL AND (w.last_seen_at < $2::timestamptz OR w.stopped_at IS NOT NULL)))
          AND NOT EXISTS (
            SELECT 1 FROM unnest(w.tools) AS tool
             WHERE NOT EXISTS (
               SELECT 1 FROM workers AS o
                WHERE o.owner = $1 AND o.id <> w.id AND o.last_seen_at >= $2::timestamptz AND o.stopped_at IS NULL AND tool = ANY(o.tools)))`,
      BUILT_IN_OWNER,
      liveSince,
      leaving ?? null,
    );
  }

  /**
   * A built-in worker stopping: its row goes when live built-in workers serve all of its tools
   * (a rolling deploy's old worker), and stays otherwise, so that its tools stay built-in, but
   * marked stopped: not live from now on, rather than for three more heartbeats.
   */
  async leave(id: string): Promise<void> {
    await this.prisma.fleetWorker.updateMany({ where: { id }, data: { stoppedAt: new Date() } });
    await this.sweepBuiltIns(this.prisma, new Date(Date.now() - HEARTBEAT_MS * LIVE_HEARTBEATS), id);
  }

  /** Tells every process to read the tools again now rather than at its next RELOAD_MS. */
  private announce(): void {
    if (!this.notices) return;
    // Not awaited: with Redis away the reload timer covers it.
    this.notices.redis.publish(fleetChannel(this.notices.prefix), '1').catch((error: Error) => {
      this.logger.warn('could not announce a tool registration; other processes see it within 5 s', { error: error.message });
    });
  }

  /** Every worker that registered, live or not (a dead one stays until forgotten; a built-in one, until others serve its tools). */
  async workers(): Promise<FleetWorkerView[]> {
    const liveSince = Date.now() - HEARTBEAT_MS * LIVE_HEARTBEATS;
    const rows = await this.prisma.fleetWorker.findMany({ orderBy: { startedAt: 'asc' } });
    return rows.map((row) => {
      const live = row.stoppedAt === null && row.lastSeenAt.getTime() >= liveSince;
      return {
        worker_id: row.id,
        owner: row.owner,
        host: row.host,
        pid: row.pid,
        version: row.version,
        concurrency: row.concurrency,
        tools: row.tools,
        started_at: row.startedAt.toISOString(),
        last_heartbeat_at: row.lastSeenAt.toISOString(),
        live,
        // What it ran at its last heartbeat: a worker that is not live runs nothing we know of.
        running: live ? (row.running as RunningStep[]) : [],
        running_count: live ? row.runningCount : 0,
      };
    });
  }

  /** Live workers per tool, for GET /tools. */
  async servedBy(): Promise<Map<string, number>> {
    const counts = new Map<string, number>();
    for (const worker of await this.workers()) if (worker.live) for (const tool of worker.tools) counts.set(tool, (counts.get(tool) ?? 0) + 1);
    return counts;
  }

  /** Forgets worker `id`; with `owner`, only if that key registered it (a worker forgetting itself). */
  async forget(id: string, owner?: string): Promise<void> {
    const { count } = await this.prisma.fleetWorker.deleteMany({ where: { id, ...(owner !== undefined ? { owner } : {}) } });
    if (count === 0) throw new NotFoundError('worker_not_found', `no worker ${id} has registered`);
  }
}

/** A stored tool as the registries hold it: checked by its JSON Schemas, run only by a worker that registered it. */
function toolOf(stored: StoredTool): AnyTool {
  const input = stored.inputSchema as JsonSchema;
  const output = stored.outputSchema as JsonSchema;
  return Object.freeze({
    name: stored.name,
    description: stored.description,
    input: runtimeType(input),
    output: runtimeType(output),
    retry: stored.retry as RetryPolicy,
    timeout_ms: stored.timeoutMs,
    ...(stored.concurrency !== null ? { concurrency: stored.concurrency } : {}),
    ...(stored.rateLimit ? { rate_limit: stored.rateLimit as RateLimit } : {}),
    schemas: { input, output },
    run: () => Promise.reject(new Error(`the ${stored.name} tool runs in a worker that registered it, not in this process`)),
  });
}
