import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Catalog, ToolSpec, WorkflowSpec } from '../engine/catalog.js';
import { checkWorkflow } from '../engine/check.js';
import { compileWorkflow } from '../engine/compile.js';
import { referencedWorkflows } from '../engine/kinds/workflow.js';
import type { Plan, TaskOverrides } from '../engine/plan.js';
import { expand } from '../engine/registry.js';
import { IDENTIFIER, type WorkflowDefinition, workflowDefinitionSchema } from '../engine/workflow-definition.js';
import { NotFoundError, type Problem, ValidationError, zodProblems } from '../lib/errors.js';
import { DEFAULT_LIMITS, type Limits } from '../lib/limits.js';
import type { Logger } from '../lib/logger.js';
import { unstorableProblems } from '../lib/problems.js';
import type { StoredWorkflow, WorkflowMetadata, WorkflowStore, WorkflowVersion } from '../persistence/workflow-store.js';
import type { ToolRegistry } from '../tools/tool.js';

export const EXAMPLES_DIR = fileURLToPath(new URL('./examples/', import.meta.url));

const CURRENT_VERSION_TTL_MS = 1_000;

/** The longest display name a workflow may have (a name posted with spaces, kept beside its id). */
export const DISPLAY_NAME_MAX = 200;

/** A compiled run of a workflow: its plan, its params (defaults filled in), and the version it runs. */
export interface PlannedRun {
  plan: Plan;
  params: Record<string, unknown>;
  workflow: { name: string; version: number };
}

/** Workflow definitions as the API sees them: checked before storing (src/engine/check.ts), compiled for each run (src/engine/compile.ts). */
export class WorkflowService {
  private readonly current = new Map<string, { workflow: StoredWorkflow | undefined; at: number }>();
  /** Stored versions never change: each is read once. */
  private readonly versionsRead = new Map<string, StoredWorkflow>();
  /** The shipped examples, read once. */
  private shipped: Promise<WorkflowDefinition[]> | undefined;

  constructor(
    private readonly store: WorkflowStore,
    private readonly registry: ToolRegistry,
    private readonly logger: Logger,
    /** Sizes templates may have in a definition; how deep sub-workflows may nest. */
    private readonly limits: Limits = DEFAULT_LIMITS,
  ) {}

  /** Parses and checks a definition; every problem is reported at once, with its JSON path. */
  async validate(body: unknown): Promise<WorkflowDefinition> {
    const parsed = workflowDefinitionSchema.safeParse(body);
    if (!parsed.success) throw new ValidationError('the workflow definition is invalid', zodProblems(parsed.error), 'invalid_workflow');
    const catalog = await this.catalogFor(parsed.data);
    // Seed-style service_call steps become the tool steps of the operations they name.
    const expanded = expand(parsed.data, catalog);
    if (expanded.problems.length > 0) throw new ValidationError('the workflow definition is invalid', expanded.problems, 'invalid_workflow');
    const problems = [...unstorableProblems(body), ...checkWorkflow(expanded.definition, catalog, this.limits)];
    if (problems.length > 0) throw new ValidationError('the workflow definition is invalid', problems, 'invalid_workflow');
    return expanded.definition;
  }

  /**
   * The checks `define` runs, without storing: every problem with its JSON path, none when the
   * definition would be stored (an editor asks as its user types).
   */
  async check(body: unknown): Promise<Problem[]> {
    try {
      await this.validate(body);
      return [];
    } catch (error) {
      if (error instanceof ValidationError && error.code === 'invalid_workflow') return error.details as Problem[];
      throw error;
    }
  }

  /** Checks and stores a definition as its name's next version, with what it carries besides (`metadata`). */
  async define(body: unknown, metadata: WorkflowMetadata = {}): Promise<StoredWorkflow> {
    const definition = await this.validate(body);
    const stored = await this.store.create(definition, metadata);
    this.current.delete(definition.name);
    this.logger.info('workflow stored', { workflow: stored.name, version: stored.version });
    return stored;
  }

  /** A workflow by its name or by the display name of its current version (a name posted with spaces). */
  async get(name: string, version?: number): Promise<StoredWorkflow> {
    let workflow = IDENTIFIER.test(name) ? await this.store.get(name, version) : undefined;
    if (!workflow) {
      const id = await this.byDisplayName(name);
      if (id !== undefined) workflow = await this.store.get(id, version);
    }
    if (!workflow) throw new NotFoundError('workflow_not_found', `no workflow ${JSON.stringify(name)}${version ? ` version ${version}` : ''}`);
    return workflow;
  }

  /**
   * The name of the active workflow that `name` designates: itself when a workflow has it, else
   * the one whose current version has it as its display name; undefined when none.
   */
  async resolve(name: string): Promise<string | undefined> {
    if (IDENTIFIER.test(name) && (await this.currentVersion(name))) return name;
    return this.byDisplayName(name);
  }

  private byDisplayName(name: string): Promise<string | undefined> {
    // A display name is at most DISPLAY_NAME_MAX characters, and storable: anything else is no workflow's.
    const possible = name.length <= DISPLAY_NAME_MAX && unstorableProblems(name).length === 0;
    return possible ? this.store.findByDisplayName(name) : Promise.resolve(undefined);
  }

  /** Changes the display name of a workflow's current version: metadata, no new version. */
  async rename(workflow: StoredWorkflow, displayName: string | null): Promise<StoredWorkflow> {
    await this.store.rename(workflow.name, workflow.version, displayName);
    this.current.delete(workflow.name);
    return { ...workflow, displayName };
  }

  /** The current version of every active workflow (with `archived`: of every archived one). */
  list(options: { archived?: boolean } = {}): Promise<StoredWorkflow[]> {
    return this.store.list(options);
  }

  /** The examples shipped with the service (src/workflows/examples), as their files hold them: seed 001's templates. */
  async examples(dir = EXAMPLES_DIR): Promise<WorkflowDefinition[]> {
    if (!this.shipped) {
      this.shipped = (async () => {
        const files = (await readdir(dir)).filter((name) => name.endsWith('.json')).sort();
        const definitions: WorkflowDefinition[] = [];
        for (const file of files) {
          const parsed = workflowDefinitionSchema.safeParse(JSON.parse(await readFile(path.join(dir, file), 'utf8')));
          if (parsed.success) definitions.push(parsed.data);
        }
        return definitions;
      })();
    }
    return this.shipped;
  }

  /** Every version of a workflow, archived ones included. */
  async versions(name: string): Promise<WorkflowVersion[]> {
    const versions = IDENTIFIER.test(name) ? await this.store.versions(name) : [];
    if (versions.length === 0) throw new NotFoundError('workflow_not_found', `no workflow ${JSON.stringify(name)}`);
    return versions;
  }

  async archive(name: string) {
    const outcome = IDENTIFIER.test(name) ? await this.store.archive(name) : { versions: 0, archived: false };
    this.current.delete(name);
    if (outcome.versions === 0) throw new NotFoundError('workflow_not_found', `no workflow ${JSON.stringify(name)}`);
    return outcome;
  }

  /**
   * The plan of a run of an active workflow (`version`, or its current one), or undefined when
   * no such workflow is active.
   */
  async plan(
    name: string,
    params: Record<string, unknown>,
    overrides: TaskOverrides,
    paramsField = 'params',
    version?: number,
  ): Promise<PlannedRun | undefined> {
    const workflow = await this.runnable(name, version);
    if (!workflow) return undefined;
    const catalog = await this.catalogFor(workflow.definition);
    return { ...compileWorkflow(workflow.definition, params, overrides, catalog, paramsField), workflow: { name: workflow.name, version: workflow.version } };
  }

  /** A sub-workflow's child: the version its parent pinned, with the params the parent's step gives. */
  async planChild(workflow: { name: string; version: number }, params: Record<string, unknown>): Promise<{ plan: Plan; params: Record<string, unknown> }> {
    const stored = await this.version(workflow.name, workflow.version);
    if (!stored) throw new ValidationError(`workflow ${workflow.name} v${workflow.version} is gone`, [{ path: 'workflow', message: 'no such version' }]);
    return compileWorkflow(stored.definition, params, {}, await this.catalogFor(stored.definition), 'input');
  }

  /** An active workflow's version: archived names run no more. */
  private async runnable(name: string, version?: number): Promise<StoredWorkflow | undefined> {
    const current = await this.currentVersion(name);
    if (!current) return undefined;
    return version === undefined ? current : this.version(name, version);
  }

  private async version(name: string, version: number): Promise<StoredWorkflow | undefined> {
    const key = `${name}@${version}`;
    let found = this.versionsRead.get(key);
    if (!found) {
      found = await this.store.get(name, version);
      if (found) this.versionsRead.set(key, found);
    }
    return found;
  }

  /**
   * The current version of a workflow, read at most once a second per name: running a workflow
   * must not cost a database read per task. This process sees its own changes at once; another
   * API process's new version or archive is seen within CURRENT_VERSION_TTL_MS.
   */
  private async currentVersion(name: string): Promise<StoredWorkflow | undefined> {
    const cached = this.current.get(name);
    if (cached && Date.now() - cached.at < CURRENT_VERSION_TTL_MS) return cached.workflow;
    const workflow = await this.store.get(name);
    // Unknown names are kept briefly too, but only while the map is small: they cannot grow it without bound.
    if (workflow || this.current.size < 10_000) this.current.set(name, { workflow, at: Date.now() });
    return workflow;
  }

  /**
   * The active workflows (current versions) that call a tool named `<prefix>...` and that would
   * not pass the checks if the tools were as `tools` says (a service's operations after a
   * refresh: one gone, or its schemas changed so that an input or a template no longer fits),
   * each with its problems. Tools named `<prefix>...` are looked up in `tools` alone.
   */
  async affectedBy(prefix: string, tools: ReadonlyMap<string, ToolSpec>): Promise<{ name: string; version: number; problems: Problem[] }[]> {
    const affected: { name: string; version: number; problems: Problem[] }[] = [];
    for (const workflow of await this.list()) {
      if (!workflow.definition.steps.some((step) => step.tool?.startsWith(prefix))) continue;
      const catalog = await this.catalogFor(workflow.definition, (name) => (name.startsWith(prefix) ? tools.get(name) : this.registry.get(name)));
      const problems = checkWorkflow(workflow.definition, catalog, this.limits);
      if (problems.length > 0) affected.push({ name: workflow.name, version: workflow.version, problems });
    }
    return affected;
  }

  /** The tools, and every workflow `definition` reaches through its sub-workflow steps (read before the pure check or compile). */
  private async catalogFor(definition: WorkflowDefinition, tools?: (name: string) => ToolSpec | undefined): Promise<Catalog> {
    const found = new Map<string, WorkflowSpec | undefined>();
    const key = (name: string, version?: number) => (version === undefined ? name : `${name}@${version}`);
    let frontier = referencedWorkflows(definition);
    for (let depth = 0; frontier.length > 0 && depth <= this.limits.SUBWORKFLOW_MAX_DEPTH + 1; depth += 1) {
      const next: { name: string; version?: number }[] = [];
      for (const ref of frontier) {
        if (found.has(key(ref.name, ref.version))) continue;
        const stored = ref.version === undefined ? await this.currentVersion(ref.name) : await this.runnable(ref.name, ref.version);
        found.set(key(ref.name, ref.version), stored);
        // A pinned version that is missing: whether the name has others says which problem it is.
        if (ref.version !== undefined && !found.has(ref.name)) found.set(ref.name, await this.currentVersion(ref.name));
        if (stored) next.push(...referencedWorkflows(stored.definition));
      }
      frontier = next;
    }
    const registry = this.registry;
    return {
      tool: tools ?? ((name) => registry.get(name)),
      toolNames: () => registry.names(),
      workflow: (name, version) => found.get(key(name, version)),
    };
  }

  names(): Promise<string[]> {
    return this.store.names();
  }

  /**
   * Stores each example shipped with the service unless a workflow of that name exists (even
   * archived). An example the configured limits refuse (TEMPLATE_MAX_REFERENCES set very low)
   * is left out with a warning rather than stopping the service. Examples that run others are
   * stored after those (in file order, retried once the others are in). An example whose tools
   * no worker has registered yet (a fresh database, the API up before the built-in worker) waits
   * without a warning: the built-in worker loads the examples once it registered its tools.
   */
  async loadExamples(dir = EXAMPLES_DIR): Promise<string[]> {
    const loaded: string[] = [];
    const waiting: string[] = [];
    let left = (await readdir(dir)).filter((name) => name.endsWith('.json')).sort();
    for (let pass = 0; left.length > 0 && pass < 3; pass += 1) {
      const later: string[] = [];
      for (const file of left) {
        let definition: WorkflowDefinition;
        try {
          definition = await this.validate(JSON.parse(await readFile(path.join(dir, file), 'utf8')));
        } catch (error) {
          if (!(error instanceof ValidationError)) throw error;
          const messages = Array.isArray(error.details) ? (error.details as Problem[]).map((problem) => problem.message) : [];
          const noWorkflow = (message: string) => message.startsWith('no active workflow');
          if (pass < 2 && messages.some(noWorkflow)) later.push(file);
          // Its tools unknown, or a sub-workflow example that waits for its own.
          else if (messages.length > 0 && messages.every((message) => message.startsWith('unknown tool ') || noWorkflow(message))) waiting.push(file);
          else this.logger.warn('example workflow left out: it does not pass the checks', { file, problems: error.details });
          continue;
        }
        if (await this.store.createIfAbsent(definition)) loaded.push(definition.name);
        this.current.delete(definition.name);
      }
      left = later;
    }
    if (waiting.length > 0) this.logger.info('example workflows wait for their tools: a worker that registers them loads them', { files: waiting });
    if (loaded.length > 0) this.logger.info('loaded example workflows', { workflows: loaded });
    return loaded;
  }
}
