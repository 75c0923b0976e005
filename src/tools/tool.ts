import { z } from 'zod';
import type { JsonSchema, ServiceOperationRef } from '../engine/catalog.js';
import type { DependencyResult, KeyLimit, RetryPolicy } from '../engine/types.js';
import type { Config } from '../lib/config.js';
import type { Logger } from '../lib/logger.js';

// Defined in the engine, which plans and resolves steps without knowing the SDK; part of the SDK
// all the same.
export type { DependencyResult, RetryPolicy } from '../engine/types.js';
// The errors an adapter throws are part of the SDK: an adapter imports this module and nothing
// else of the service (the import-boundary rules in .dependency-cruiser.cjs hold it to that).
export { NonRetryableError, RetryableError } from '../lib/errors.js';

/** At most `max` steps of this tool start per `duration_ms`, across all worker processes. */
export interface RateLimit {
  max: number;
  duration_ms: number;
}

export interface ToolContext<Settings = unknown> {
  /** Fires when the step times out, the task is cancelled, or the worker is forced to stop. */
  signal: AbortSignal;
  taskId: string;
  stepId: string;
  /**
   * The retry policy's try, 1 for the first (docs/architecture.md "Words, once": a redelivery after a lost lock
   * keeps it, so an adapter may see one try twice; the step's `attempts` count both).
   */
  attempt: number;
  /** Carries task id, step id, tool, attempt and try on every line. */
  logger: Logger;
  /**
   * The settings the tool declares (Tool.settings), read from its worker's environment: frozen.
   * The tool sees nothing else of the environment or the configuration (no database URL, no API
   * keys).
   */
  settings: Settings;
  /**
   * Results of the steps this step depends on, by step id: status, error, and the output when
   * it is small (see DependencyResult); read what the step needs through its input's templates.
   */
  dependencies: Readonly<Record<string, DependencyResult>>;
  /**
   * Reports how far the step is (0-100) and, optionally, what it is doing. Shown in
   * GET /result, the task's event stream and Bull Board. Cheap to call often: reports are
   * coalesced.
   */
  progress(percent: number, message?: string): void;
  /**
   * The key (its id) that submitted the task; absent without authentication. A registered
   * service's circuits count its calls by it: one key's failures open its own circuit first.
   */
  caller?: string;
}

/**
 * A tool adapter: one file under workers/adapters that names a tool, declares its input and
 * output with zod, and runs it. See workers/adapters/approve-batches.ts for a small example.
 */
export interface Tool<In extends z.ZodType = z.ZodType, Out extends z.ZodType = z.ZodType, Settings extends z.ZodType = z.ZodType> {
  /** Letters, digits, `_` and `-`; it is also the task_type that runs this tool alone. */
  name: string;
  description: string;
  input: In;
  output: Out;
  /** @defaultValue `{attempts: 3, backoff: {type: 'exponential', delay_ms: 1000}}` */
  retry: RetryPolicy;
  /** Each attempt is aborted after this long. @defaultValue 30000 */
  timeout_ms: number;
  /** @defaultValue none */
  rate_limit?: RateLimit;
  /** Most steps of this tool one worker process runs at once. @defaultValue WORKER_CONCURRENCY */
  concurrency?: number;
  /**
   * What the tool needs from its worker's environment (an allowlist, a bucket, a webhook secret):
   * a `z.object` whose keys are the environment variables it reads (`{ IMAGE_BUCKET: z.string() }`),
   * received parsed as `ctx.settings`. Only those variables reach the tool, and a worker does not
   * start when they do not fit (ToolRegistry.settings). @defaultValue none
   */
  settings?: Settings;
  run(input: z.output<In>, ctx: ToolContext<z.output<Settings>>): Promise<z.input<Out>>;
  /**
   * The JSON Schemas of input and output as written, when the tool was made from them (a
   * service's OpenAPI operation, src/tools/openapi-tools.ts); GET /tools and the checks show
   * and read these. @defaultValue made from `input` and `output`
   */
  schemas?: { input: JsonSchema; output: JsonSchema };
  /** Limits per key every step of the tool is under (a service's concurrency and rate limit). @defaultValue none */
  limits?: readonly KeyLimit[];
  /** A registered service's operation this tool calls (`service_call` steps name it so). @defaultValue none */
  operation?: ServiceOperationRef;
}

export const DEFAULT_RETRY: RetryPolicy = Object.freeze({
  attempts: 3,
  backoff: Object.freeze({ type: 'exponential', delay_ms: 1000 }),
}) as RetryPolicy;
export const DEFAULT_TIMEOUT_MS = 30_000;

type ToolSpec<In extends z.ZodType, Out extends z.ZodType, Settings extends z.ZodType> = Omit<Tool<In, Out, Settings>, 'retry' | 'timeout_ms'> &
  Partial<Pick<Tool<In, Out, Settings>, 'retry' | 'timeout_ms'>>;

export const TOOL_NAME = /^[A-Za-z][A-Za-z0-9_-]{0,63}$/;

/** Fills in the defaults and checks the name, so a registry only ever holds complete tools. */
export function defineTool<In extends z.ZodType, Out extends z.ZodType, Settings extends z.ZodType = z.ZodType>(
  spec: ToolSpec<In, Out, Settings>,
): Tool<In, Out, Settings> {
  if (!TOOL_NAME.test(spec.name)) throw new Error(`tool name ${JSON.stringify(spec.name)} must match ${TOOL_NAME}`);
  return Object.freeze({ ...spec, retry: spec.retry ?? DEFAULT_RETRY, timeout_ms: spec.timeout_ms ?? DEFAULT_TIMEOUT_MS });
}

export type AnyTool = Tool<z.ZodType, z.ZodType, z.ZodType>;

/**
 * Picks one tool's settings out of the parsed configuration, in place of its worker's environment:
 * for a tool that needs what the configuration makes of the variables (the test doubles, which
 * record where a test's Redis is). The tools of the service and of users' workers have none.
 */
export type SettingsChooser = (config: Config) => unknown;

/** A worker's environment, as process.env holds it. */
export type Environment = Readonly<Record<string, string | undefined>>;

/** Each tool's ctx.settings, by tool name (ToolRegistry.settings). */
export type ToolSettings = ReadonlyMap<string, unknown>;

const NO_SETTINGS = Object.freeze({});

/** The variables of `env` that `declared` (a z.object) names, set and not empty: nothing else of the environment reaches the tool. */
function variables(tool: AnyTool, declared: z.ZodType, env: Environment): Record<string, string> {
  const shape = (declared as { shape?: unknown }).shape;
  if (shape === null || typeof shape !== 'object') throw new Error(`the ${tool.name} tool's settings must be a z.object of the environment variables it reads`);
  const picked: Record<string, string> = {};
  for (const name of Object.keys(shape)) {
    const value = env[name];
    if (value !== undefined && value !== '') picked[name] = value;
  }
  return picked;
}

/** Freezes a settings value all the way down: steps running at once share it. */
function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}

/**
 * Tools that come and go while the process runs, read from PostgreSQL: the operations of
 * registered services (`<service>.<operationId>`, src/services/service-registry.ts) and the tools
 * workers registered (src/fleet/worker-fleet.ts), the built-in worker's included.
 */
export interface DynamicTools {
  get(name: string): AnyTool | undefined;
  list(): AnyTool[];
  /** Reads the tools again and looks `name` up: a service registered through another process a moment ago. */
  refresh(name: string): Promise<AnyTool | undefined>;
}

/** Several sources of dynamic tools as one: the first that knows a name answers. */
export function dynamicTools(...sources: DynamicTools[]): DynamicTools {
  return {
    get: (name) => sources.map((source) => source.get(name)).find((tool) => tool !== undefined),
    list: () => sources.flatMap((source) => source.list()),
    async refresh(name) {
      for (const source of sources) {
        const tool = await source.refresh(name);
        if (tool) return tool;
      }
      return undefined;
    },
  };
}

/** The tools a process knows, by name, and where each one's settings come from. */
export class ToolRegistry {
  private readonly tools = new Map<string, AnyTool>();

  constructor(
    tools: Iterable<AnyTool>,
    private readonly choosers: Readonly<Record<string, SettingsChooser>> = {},
    private readonly dynamic?: DynamicTools,
  ) {
    for (const tool of tools) {
      if (this.tools.has(tool.name)) throw new Error(`two tools are named ${tool.name}`);
      this.tools.set(tool.name, tool);
    }
  }

  /** The same adapters, and the tools of `dynamic` (registered services' operations, workers' tools) besides. */
  withDynamic(dynamic: DynamicTools): ToolRegistry {
    return new ToolRegistry(this.tools.values(), this.choosers, dynamic);
  }

  get(name: string): AnyTool | undefined {
    return this.tools.get(name) ?? this.dynamic?.get(name);
  }

  /** As get, but a tool not known yet is looked for again (a service registered through another process). */
  async resolve(name: string): Promise<AnyTool | undefined> {
    return this.get(name) ?? (await this.dynamic?.refresh(name));
  }

  has(name: string): boolean {
    return this.get(name) !== undefined;
  }

  names(): string[] {
    return this.list().map((tool) => tool.name);
  }

  list(): AnyTool[] {
    // A dynamic tool named like an adapter is that adapter as a worker registered it (a built-in worker's tools in its own process, or in a test's API): the adapter answers.
    const dynamic = (this.dynamic?.list() ?? []).filter((tool) => !this.tools.has(tool.name));
    return [...this.adapters(), ...dynamic].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /** The tool adapters alone (each with a queue of its own), without the dynamic tools. */
  adapters(): AnyTool[] {
    return [...this.tools.keys()].sort().map((name) => this.tools.get(name)!);
  }

  /** Only the named adapters (the dynamic tools stay); an unknown name is an error (a typo in WORKER_TOOLS must not pass). */
  only(names: readonly string[]): ToolRegistry {
    if (names.length === 0) return this;
    const unknown = names.filter((name) => !this.tools.has(name));
    if (unknown.length > 0) throw new Error(`unknown tools: ${unknown.join(', ')} (known: ${[...this.tools.keys()].sort().join(', ')})`);
    return new ToolRegistry(
      names.map((name) => this.tools.get(name)!),
      this.choosers,
      this.dynamic,
    );
  }

  /**
   * Each tool's settings: the variables of `env` its settings declare (unset or empty ones left
   * out, as the configuration leaves them out: the declaration's default applies), or what its
   * chooser picks from `config`; parsed by the tool's settings schema and frozen. A tool that
   * declares none gets an empty object. Throws, naming the tool, when a tool's settings do not fit
   * (naming the variable) or are not an object of variables, or when a chooser serves a tool that
   * declares no settings, so a worker stops at boot rather than at the first step.
   */
  settings(config: Config, env: Environment = process.env): ToolSettings {
    const settings = new Map<string, unknown>();
    for (const tool of this.adapters()) {
      const chooser = Object.hasOwn(this.choosers, tool.name) ? this.choosers[tool.name] : undefined;
      if (!tool.settings) {
        if (chooser) throw new Error(`the registry chooses settings for the ${tool.name} tool, which declares none`);
        settings.set(tool.name, NO_SETTINGS);
        continue;
      }
      const parsed = tool.settings.safeParse(chooser ? chooser(config) : variables(tool, tool.settings, env));
      if (!parsed.success) throw new Error(`the ${tool.name} tool's settings do not fit its declaration: ${z.prettifyError(parsed.error)}`);
      settings.set(tool.name, deepFreeze(parsed.data));
    }
    return settings;
  }
}
