import { isDeepStrictEqual } from 'node:util';
import type { JsonSchema } from '../engine/catalog.js';
import type { RetryPolicy } from '../engine/types.js';
import type { PrismaClient } from '../generated/prisma/client.js';
import { ConflictError, NotFoundError } from '../lib/errors.js';
import type { Logger } from '../lib/logger.js';
import { runtimeType } from '../tools/openapi-tools.js';
import type { AnyTool, DynamicTools } from '../tools/tool.js';
import type { FleetWorkerView, RunningStep, ToolRegistration, WorkerRegistration } from './protocol.js';

/** How often a worker registers again; one silent for LIVE_HEARTBEATS of these is not live. */
export const HEARTBEAT_MS = 5_000;
const LIVE_HEARTBEATS = 3;
/** Other API processes read tools registered through another one at least this often (and at once when a name is unknown). */
const RELOAD_MS = 5_000;

interface StoredTool {
  name: string;
  version: number;
  description: string;
  inputSchema: unknown;
  outputSchema: unknown;
  retry: unknown;
  timeoutMs: number;
}

/** The parts of a registration that make a tool's version: a change to any of them is a new version. */
function shapeOf(tool: ToolRegistration | StoredTool) {
  return 'input_schema' in tool
    ? { description: tool.description, input: tool.input_schema, output: tool.output_schema, retry: tool.retry, timeout_ms: tool.timeout_ms }
    : { description: tool.description, input: tool.inputSchema, output: tool.outputSchema, retry: tool.retry, timeout_ms: tool.timeoutMs };
}

/** What changed between two shapes, named for the message of a refused registration. */
function differences(before: ReturnType<typeof shapeOf>, after: ReturnType<typeof shapeOf>): string[] {
  return (Object.keys(before) as (keyof typeof before)[]).filter((key) => !isDeepStrictEqual(before[key], after[key]));
}

/**
 * Workers of users' own and the tools they register (issue 30). A tool is stored at its first
 * registration and outlives its workers: tasks of it queue until a worker serves it again. Its
 * JSON Schemas are what the API validates params with (interpreted, patterns on RE2: see
 * runtimeType) and what the workflow checks read. The tools are dynamic tools of every process
 * (the API's and the built-in worker's registries), never run here: a user's worker runs them.
 */
export class WorkerFleet implements DynamicTools {
  private tools = new Map<string, { stored: StoredTool; tool: AnyTool }>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly prisma: PrismaClient,
    private readonly logger: Logger,
  ) {}

  /** Reads the tools now, and again every RELOAD_MS; PostgreSQL away at start delays them, it does not stop the process. */
  async start(): Promise<void> {
    const reload = () => this.reload().catch((error: Error) => this.logger.warn('could not read the workers’ tools', { error: error.message }));
    await reload();
    this.timer = setInterval(reload, RELOAD_MS);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  private async reload(): Promise<void> {
    const rows = (await this.prisma.workerTool.findMany()) as StoredTool[];
    const next = new Map<string, { stored: StoredTool; tool: AnyTool }>();
    for (const stored of rows) {
      const known = this.tools.get(stored.name);
      next.set(stored.name, known && known.stored.version === stored.version ? known : { stored, tool: toolOf(stored) });
    }
    this.tools = next;
  }

  // DynamicTools

  get(name: string): AnyTool | undefined {
    return this.tools.get(name)?.tool;
  }

  list(): AnyTool[] {
    return [...this.tools.values()].map((entry) => entry.tool);
  }

  async refresh(name: string): Promise<AnyTool | undefined> {
    await this.reload();
    return this.get(name);
  }

  /** The tool's version, for GET /tools. */
  version(name: string): number | undefined {
    return this.tools.get(name)?.stored.version;
  }

  /**
   * Registers worker `id` and its tools (again: a heartbeat). A tool whose shape differs from
   * the stored one becomes a new version, unless a live worker other than this one serves the
   * stored one and the registration does not ask to replace: then it is refused (409
   * `tool_conflict`), naming what differs, and nothing is stored.
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
        'SELECT name, version, description, input_schema AS "inputSchema", output_schema AS "outputSchema", retry, timeout_ms AS "timeoutMs" FROM worker_tools WHERE name = ANY($1::text[])',
        names,
      )) as StoredTool[];
      const byName = new Map(stored.map((row) => [row.name, row]));
      const liveSince = new Date(Date.now() - HEARTBEAT_MS * LIVE_HEARTBEATS);
      const answer: { name: string; version: number; changed: boolean }[] = [];
      for (const tool of body.tools) {
        const before = byName.get(tool.name);
        const data = {
          description: tool.description,
          inputSchema: tool.input_schema as object,
          outputSchema: tool.output_schema as object,
          retry: tool.retry as object,
          timeoutMs: tool.timeout_ms,
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
            where: { id: { not: id }, tools: { has: tool.name }, lastSeenAt: { gte: liveSince } },
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
      };
      await tx.fleetWorker.upsert({ where: { id }, create: { id, ...worker }, update: worker });
      return answer;
    });
    if (outcome.some((tool) => tool.changed)) await this.reload();
    return outcome;
  }

  /** Every worker that registered, live or not (a dead one stays until forgotten). */
  async workers(): Promise<FleetWorkerView[]> {
    const liveSince = Date.now() - HEARTBEAT_MS * LIVE_HEARTBEATS;
    const rows = await this.prisma.fleetWorker.findMany({ orderBy: { startedAt: 'asc' } });
    return rows.map((row) => ({
      worker_id: row.id,
      owner: row.owner,
      host: row.host,
      pid: row.pid,
      version: row.version,
      concurrency: row.concurrency,
      tools: row.tools,
      started_at: row.startedAt.toISOString(),
      last_heartbeat_at: row.lastSeenAt.toISOString(),
      live: row.lastSeenAt.getTime() >= liveSince,
      // What it ran at its last heartbeat: a worker that is not live runs nothing we know of.
      running: row.lastSeenAt.getTime() >= liveSince ? (row.running as RunningStep[]) : [],
      running_count: row.lastSeenAt.getTime() >= liveSince ? row.runningCount : 0,
    }));
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

/** A stored tool as the registries hold it: checked by its JSON Schemas, run only by a user's worker. */
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
    schemas: { input, output },
    run: () => Promise.reject(new Error(`the ${stored.name} tool runs in a worker of its own (registered through /workers), not here`)),
  });
}
