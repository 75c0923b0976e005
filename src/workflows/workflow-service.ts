import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { RunOverrides, TaskPlan } from '../engine/plan.js';
import { IDENTIFIER, type WorkflowDefinition, workflowDefinitionSchema } from '../engine/workflow-definition.js';
import { NotFoundError, ValidationError } from '../errors.js';
import { unstorableProblems, zodProblems } from '../lib/problems.js';
import { DEFAULT_LIMITS, type Limits } from '../limits.js';
import type { Logger } from '../logger.js';
import type { StoredWorkflow, WorkflowStore, WorkflowVersion } from '../persistence/workflow-store.js';
import type { ToolRegistry } from '../tools/tool.js';
import { checkWorkflow } from './check.js';
import { compileWorkflow } from './compile.js';

export const EXAMPLES_DIR = fileURLToPath(new URL('./examples/', import.meta.url));

const CURRENT_VERSION_TTL_MS = 1_000;

/** Workflow definitions as the API sees them: checked before storing, compiled for each run. */
export class WorkflowService {
  private readonly current = new Map<string, { workflow: StoredWorkflow; at: number }>();

  constructor(
    private readonly store: WorkflowStore,
    private readonly registry: ToolRegistry,
    private readonly logger: Logger,
    /** Sizes templates may have in a definition. */
    private readonly limits: Limits = DEFAULT_LIMITS,
  ) {}

  /** Parses and checks a definition; every problem is reported at once, with its JSON path. */
  validate(body: unknown): WorkflowDefinition {
    const parsed = workflowDefinitionSchema.safeParse(body);
    if (!parsed.success) throw new ValidationError('the workflow definition is invalid', zodProblems(parsed.error), 'invalid_workflow');
    const problems = [...unstorableProblems(body), ...checkWorkflow(parsed.data, this.registry, this.limits)];
    if (problems.length > 0) throw new ValidationError('the workflow definition is invalid', problems, 'invalid_workflow');
    return parsed.data;
  }

  async define(body: unknown): Promise<StoredWorkflow> {
    const definition = this.validate(body);
    const stored = await this.store.create(definition);
    this.current.delete(definition.name);
    this.logger.info('workflow stored', { workflow: stored.name, version: stored.version });
    return stored;
  }

  async get(name: string, version?: number): Promise<StoredWorkflow> {
    const workflow = IDENTIFIER.test(name) ? await this.store.get(name, version) : undefined;
    if (!workflow) throw new NotFoundError('workflow_not_found', `no workflow ${JSON.stringify(name)}${version ? ` version ${version}` : ''}`);
    return workflow;
  }

  /** The current version of every active workflow. */
  list(): Promise<StoredWorkflow[]> {
    return this.store.list();
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

  /** The plan of a run of the current version, or undefined when no such workflow is active. */
  async plan(name: string, params: Record<string, unknown>, overrides: RunOverrides, paramsField = 'params'): Promise<TaskPlan | undefined> {
    const workflow = await this.currentVersion(name);
    if (!workflow) return undefined;
    return compileWorkflow(workflow.definition, workflow.version, params, overrides, this.registry, paramsField);
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
    // Only workflows that exist are kept, so unknown names cannot grow the map.
    if (workflow) this.current.set(name, { workflow, at: Date.now() });
    else this.current.delete(name);
    return workflow;
  }

  names(): Promise<string[]> {
    return this.store.names();
  }

  /**
   * Stores each example shipped with the service unless a workflow of that name exists (even
   * archived). An example the configured limits refuse (TEMPLATE_MAX_REFERENCES set very low)
   * is left out with a warning rather than stopping the service.
   */
  async loadExamples(dir = EXAMPLES_DIR): Promise<string[]> {
    const loaded: string[] = [];
    for (const file of (await readdir(dir)).filter((name) => name.endsWith('.json')).sort()) {
      let definition: WorkflowDefinition;
      try {
        definition = this.validate(JSON.parse(await readFile(path.join(dir, file), 'utf8')));
      } catch (error) {
        if (!(error instanceof ValidationError)) throw error;
        this.logger.warn('example workflow left out: it does not pass the checks', { file, problems: error.details });
        continue;
      }
      if (await this.store.createIfAbsent(definition)) loaded.push(definition.name);
    }
    if (loaded.length > 0) this.logger.info('loaded example workflows', { workflows: loaded });
    return loaded;
  }
}
