import { createHash } from 'node:crypto';
import type { Config } from '../lib/config.js';
import { ConflictError, type ErrorRecord, NotFoundError, type Problem, UpstreamError, ValidationError } from '../lib/errors.js';
import { type HostPolicy, hostPolicyFor } from '../lib/host-policy.js';
import type { Logger } from '../lib/logger.js';
import { HostRefusedError, outboundRequest } from '../lib/outbound-http.js';
import { Secrets } from '../lib/secrets.js';
import type { Metrics } from '../observability/metrics.js';
import type { Prisma } from '../persistence/database.js';
import { type FetchedDocument, type ServiceFields, type ServiceHealth, type ServiceRecord, ServiceStore } from '../persistence/service-store.js';
import {
  type Admission,
  type CircuitSettings,
  Circuits,
  type CircuitTransition,
  type CircuitView,
  DEFAULT_CIRCUIT,
  type KeyCircuitView,
} from '../queue/circuits.js';
import { type RedisClient, subscribeWhenReady } from '../queue/redis.js';
import type { SchemaBudget, ServiceOperation } from '../tools/openapi-operations.js';
import { type CallGuard, isServiceTool, type ServiceAuth, type ServiceTarget, serviceOf, serviceTool } from '../tools/openapi-tools.js';
import type { AnyTool, DynamicTools } from '../tools/tool.js';
import type { WorkflowService } from '../workflows/workflow-service.js';
import { DocumentReader } from './document-reader.js';
import type { DocumentReading } from './openapi-document.js';
import type { ServiceBody, ServicePatch } from './service-request.js';

/** The channel on which a process announces a change of the registry: every process reloads. */
export function servicesChannel(prefix: string): string {
  return `${prefix}:services`;
}

interface Installed {
  record: ServiceRecord;
  target: ServiceTarget;
  circuit: CircuitSettings;
  operations: ServiceOperation[];
  skipped: { where: string; reason: string }[];
  tools: Map<string, AnyTool>;
  sha256: string | null;
  /** Why its stored document gives no tools (read again under a lower budget, say): GET /services shows it. */
  error: string | null;
}

/** A document's operations, read (openapi-document.ts). */
type Operations = Extract<DocumentReading, { ok: true }>;
const NO_OPERATIONS: Operations = { ok: true, operations: [], skipped: [] };

/** A workflow that calls a service's operations and no longer passes its checks after a change. */
export interface AffectedWorkflow {
  name: string;
  version: number;
  problems: Problem[];
}

/** A step of an unfinished task that will call, or calls, one of a service's operations. */
export interface ServiceUse {
  taskId: string;
  run: number;
  stepId: string;
}

/**
 * The unfinished work that uses a service (DELETE /services/{name}): the API's process sets it,
 * since the tasks are not the registry's to read.
 */
export interface ServiceUsers {
  /** The steps not yet finished, of queued or running tasks, whose tool starts with `prefix`. */
  using(prefix: string): Promise<ServiceUse[]>;
  /** Fails those steps at once with `error` (their tasks fail, or go on under on_failure continue); returns the tasks of the steps it failed. */
  fail(steps: ServiceUse[], error: ErrorRecord): Promise<string[]>;
}

export interface ServiceRegistryDeps {
  store: ServiceStore;
  /** HTTP_TOOL_ALLOWED_HOSTS: services' calls, documents and health checks go only there. */
  policy: HostPolicy;
  secrets: Secrets;
  circuits: Circuits;
  logger: Logger;
  metrics: Metrics;
  /** To announce changes (publish). */
  redis: RedisClient;
  /** A connection in subscriber mode, to hear other processes' changes. */
  subscriber?: RedisClient;
  prefix: string;
  reloadMs: number;
  /** 0: no health checks from this process. */
  healthIntervalMs: number;
  documentMaxBytes: number;
  maxOperations: number;
  /** SERVICE_SCHEMA_MAX_NODES, SERVICE_SCHEMA_MAX_BYTES */
  budget: SchemaBudget;
  /** Where documents are parsed and their operations made, off the event loop. */
  reader: DocumentReader;
  /** Have the reader ready at start (the API, where documents are registered); a worker only reads stored ones. */
  warmReader?: boolean;
}

/** Tasks named in a 409 service_in_use (the count says how many there are). */
const MAX_NAMED_TASKS = 100;

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

/**
 * The registered services and their operations as tools (`<service>.<operationId>`), in every
 * process: read from PostgreSQL at start, again when a process announces a change on Redis
 * (servicesChannel), and every SERVICES_RELOAD_MS in case a notice was missed; a worker that
 * meets an unknown service tool reads them at once (DynamicTools.refresh).
 */
export class ServiceRegistry implements DynamicTools, CallGuard {
  private readonly installed = new Map<string, Installed>();
  private loaded = new Map<string, number>();
  private reloadTimer: NodeJS.Timeout | undefined;
  private healthTimer: NodeJS.Timeout | undefined;
  private loading: Promise<void> | undefined;
  /**
   * Counts this process's own changes (a registration, an update, a delete, a reload's install),
   * and when each service last changed here: a reload whose reading began before a change
   * leaves that service as the change made it (its reading is older), so that a service
   * registered while a reload was on its way is not taken out again for a moment.
   */
  private changes = 0;
  private readonly changedAt = new Map<string, number>();
  private stopped = false;
  /** For POST /services/{name}/refresh and DELETE: the workflows a change breaks (set once made: they need these tools). */
  workflows: WorkflowService | undefined;
  /** For DELETE: the unfinished tasks that use a service (unset: none are looked for). */
  users: ServiceUsers | undefined;

  constructor(private readonly deps: ServiceRegistryDeps) {}

  async start(): Promise<void> {
    if (this.deps.warmReader) this.deps.reader.warm();
    await this.reload().catch((error: Error) => this.deps.logger.warn('could not read the service registry; retried later', { error: error.message }));
    if (this.deps.subscriber) {
      const channel = servicesChannel(this.deps.prefix);
      this.deps.subscriber.on('message', (from: string) => {
        if (from === channel) void this.reload().catch(() => undefined);
      });
      // With Redis down the subscription waits for it, and a process must start without Redis
      // (it answers 503 meanwhile). Once subscribed, and after every reconnect, it reads again:
      // a change announced before or meanwhile is otherwise unseen until the next reload.
      subscribeWhenReady(
        this.deps.subscriber,
        channel,
        (error) => this.deps.logger.warn('could not subscribe to service changes', { error: error.message }),
        () => void this.reload().catch(() => undefined),
      );
    }
    this.reloadTimer = setInterval(() => void this.reload().catch(() => undefined), this.deps.reloadMs);
    this.reloadTimer.unref();
    if (this.deps.healthIntervalMs > 0) {
      this.healthTimer = setInterval(() => void this.checkHealth().catch(() => undefined), this.deps.healthIntervalMs);
      this.healthTimer.unref();
    }
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.reloadTimer);
    clearInterval(this.healthTimer);
    this.deps.subscriber?.disconnect();
    void this.deps.reader.stop();
  }

  // DynamicTools

  get(name: string): AnyTool | undefined {
    if (!isServiceTool(name)) return undefined;
    return this.installed.get(serviceOf(name))?.tools.get(name);
  }

  list(): AnyTool[] {
    return [...this.installed.values()].flatMap((service) => [...service.tools.values()]);
  }

  async refresh(name: string): Promise<AnyTool | undefined> {
    if (!isServiceTool(name)) return undefined;
    await this.reload();
    // The reading joined may have begun before the service was registered (by another process): once more, from now.
    if (!this.get(name)) await this.reload();
    return this.get(name);
  }

  // CallGuard: how calls ended, for the circuit breaker.

  async record(service: string, failed: boolean, caller?: string): Promise<void> {
    const installed = this.installed.get(service);
    if (!installed) return;
    try {
      await this.deps.circuits.record(service, installed.circuit, failed, caller);
    } catch (error) {
      this.deps.logger.warn('could not record a call in the circuit breaker', { service, error: (error as Error).message });
    }
  }

  /**
   * Whether a step calling `tool` for `caller` (the key that submitted its task) may run now, or
   * when to ask again (its service's shared circuit, or the caller's own, is open). Redis away: it may run.
   */
  async admit(tool: string, caller?: string): Promise<Admission> {
    const installed = this.installed.get(serviceOf(tool));
    if (!installed) return { ok: true, probe: false };
    try {
      return await this.deps.circuits.acquire(installed.record.name, installed.circuit, installed.target.timeoutMs + 5_000, caller);
    } catch (error) {
      this.deps.logger.warn('could not read the circuit breaker; the call goes through', { tool, error: (error as Error).message });
      return { ok: true, probe: false };
    }
  }

  /** Metrics and logs of a circuit's transition (Circuits' onTransition). */
  static transitionReporter(metrics: Metrics, logger: Logger): (transition: CircuitTransition) => void {
    return (transition) => {
      // A key's own circuit: logged, not a metric (one series per key would be unbounded).
      if (transition.key !== undefined) {
        logger.info("a key's circuit breaker transition", { service: transition.service, key: transition.key, from: transition.from, to: transition.to });
        return;
      }
      metrics.circuitTransitions.inc({ service: transition.service, from: transition.from, to: transition.to });
      for (const state of ['closed', 'open', 'half_open']) metrics.circuitState.set({ service: transition.service, state }, state === transition.to ? 1 : 0);
      logger.info('circuit breaker transition', { service: transition.service, from: transition.from, to: transition.to });
    };
  }

  // Reading the registry

  /** Reads the services that changed since the last reading (one at a time). */
  reload(): Promise<void> {
    this.loading ??= this.readChanges().finally(() => {
      this.loading = undefined;
    });
    return this.loading;
  }

  private async readChanges(): Promise<void> {
    const began = this.changes;
    const changedSince = (name: string) => (this.changedAt.get(name) ?? 0) > began;
    const versions = await this.deps.store.versions();
    for (const name of [...this.installed.keys()]) {
      if (!versions.has(name) && !changedSince(name)) this.forget(name);
    }
    for (const [name, at] of versions) {
      if (this.loaded.get(name) === at || changedSince(name)) continue;
      const record = await this.deps.store.get(name);
      if (!record || changedSince(name)) continue;
      const stored = record.documentVersion > 0 ? await this.deps.store.document(name, record.documentVersion) : undefined;
      const reading = stored ? await this.read(name, stored.text, true) : NO_OPERATIONS;
      if (changedSince(name)) continue;
      // Marked read either way: a document over the budget is logged once, not at every reload.
      this.loaded.set(name, record.updatedAt.getTime());
      if (!reading.ok) {
        this.deps.logger.error('a stored OpenAPI document cannot be used: the service has no tools until it is refreshed or its document fixed', {
          service: name,
          document_version: record.documentVersion,
          error: reading.message,
        });
        this.install(record, NO_OPERATIONS, stored?.sha256 ?? null, reading.message);
        continue;
      }
      this.install(record, reading, stored?.sha256 ?? null);
    }
  }

  private read(service: string, text: string, stored = false): Promise<DocumentReading> {
    return this.deps.reader.read({ service, text, maxOperations: this.deps.maxOperations, budget: this.deps.budget, stored });
  }

  /** The operations of a fetched document; a 400 saying why when it cannot be used. */
  private async operationsOf(service: string, fetched: FetchedDocument): Promise<Operations> {
    const reading = await this.read(service, fetched.text);
    if (!reading.ok) throw new ValidationError(reading.message, reading.problems, reading.code);
    return reading;
  }

  private forget(name: string): void {
    this.installed.delete(name);
    this.loaded.delete(name);
    this.changedAt.set(name, ++this.changes);
  }

  private install(record: ServiceRecord, { operations, skipped }: Operations, hash: string | null, error: string | null = null): Installed {
    const target = targetOf(record);
    const tools = new Map(
      operations.map((operation) => [operation.tool, serviceTool(target, operation, { policy: this.deps.policy, secrets: this.deps.secrets, guard: this })]),
    );
    const installed: Installed = {
      record,
      target,
      circuit: { ...DEFAULT_CIRCUIT, ...(record.circuit ?? {}) },
      operations,
      skipped,
      tools,
      sha256: hash,
      error,
    };
    this.installed.set(record.name, installed);
    this.changedAt.set(record.name, ++this.changes);
    return installed;
  }

  private async announce(name: string): Promise<void> {
    await this.deps.redis
      .publish(servicesChannel(this.deps.prefix), name)
      .catch((error: Error) =>
        this.deps.logger.warn('could not announce a service change; other processes see it within SERVICES_RELOAD_MS', { service: name, error: error.message }),
      );
  }

  // The API's operations

  async register(body: ServiceBody): Promise<{ service: ServiceView; imported: ImportSummary }> {
    if (await this.deps.store.get(body.name)) throw new ConflictError('service_exists', `a service is named ${body.name}; PATCH it, or DELETE it first`);
    const fields = fieldsOf(body);
    const fetched = fields.openapiUrl ? await this.fetchDocument(fields) : undefined;
    // Read before it is stored: a document that cannot be used is never stored.
    const operations = fetched ? await this.operationsOf(body.name, fetched) : NO_OPERATIONS;
    const record = await this.deps.store.create(body.name, fields, fetched);
    if (!record) throw new ConflictError('service_exists', `a service is named ${body.name}; PATCH it, or DELETE it first`);
    this.loaded.set(record.name, record.updatedAt.getTime());
    const installed = this.install(record, operations, fetched?.sha256 ?? null);
    await this.announce(record.name);
    this.deps.logger.info('service registered', { service: record.name, operations: installed.operations.length });
    return { service: await this.view(installed), imported: importSummary(installed) };
  }

  /** `keys`: show each key's own circuit too (admins only: it names the keys that call the service). */
  async listServices(options: { keys?: boolean } = {}): Promise<ServiceView[]> {
    await this.reload();
    return Promise.all([...this.installed.values()].sort((a, b) => (a.record.name < b.record.name ? -1 : 1)).map((installed) => this.view(installed, options)));
  }

  async describe(name: string, options: { keys?: boolean } = {}): Promise<ServiceView> {
    return this.view(await this.found(name), options);
  }

  async update(name: string, patch: ServicePatch): Promise<ServiceView> {
    const current = await this.found(name);
    const merged = mergePatch(current.record, patch);
    // A new document address is read at once; otherwise the document stays (POST .../refresh reads it again).
    const fetched = patch.openapi_url ? await this.fetchDocument(merged) : undefined;
    const operations = fetched ? await this.operationsOf(name, fetched) : undefined;
    const record = await this.deps.store.update(name, merged, fetched);
    if (!record) throw new NotFoundError('service_not_found', `no service is named ${JSON.stringify(name)}`);
    this.loaded.set(name, record.updatedAt.getTime());
    const installed =
      fetched && operations
        ? this.install(record, operations, fetched.sha256)
        : this.install(record, { ok: true, operations: current.operations, skipped: current.skipped }, current.sha256, current.error);
    await this.announce(name);
    return this.view(installed);
  }

  /**
   * Deletes a service and its tools. While steps of unfinished tasks use it (to call one of its
   * operations, now or later), it is refused (409 `service_in_use`, naming the tasks) unless
   * `force`: then it is deleted and those steps fail at once, saying why, instead of failing
   * later as calls of an unknown tool.
   */
  async delete(name: string, force = false): Promise<{ deleted: string; affected_workflows: AffectedWorkflow[]; failed_tasks: string[] }> {
    await this.found(name);
    const prefix = `${name}.`;
    const using = (await this.users?.using(prefix)) ?? [];
    if (using.length > 0 && !force) {
      const tasks = [...new Set(using.map((use) => use.taskId))];
      throw new ConflictError(
        'service_in_use',
        `${tasks.length} unfinished task(s) use the service ${name}: nothing was deleted (?force=true deletes it and fails their steps that call it)`,
        { task_count: tasks.length, tasks: tasks.slice(0, MAX_NAMED_TASKS) },
      );
    }
    const affected = (await this.workflows?.affectedBy(prefix, new Map())) ?? [];
    if (!(await this.deps.store.delete(name))) throw new NotFoundError('service_not_found', `no service is named ${JSON.stringify(name)}`);
    this.forget(name);
    await this.deps.circuits.forget(name).catch(() => undefined);
    await this.announce(name);
    let failed: string[] = [];
    if (force && this.users) {
      // Read again once it is gone: a task accepted meanwhile is among them.
      const steps = await this.users.using(prefix);
      const error = { name: 'ServiceDeleted', message: `the service ${name} was deleted (DELETE /services/${name}?force=true)`, retryable: false };
      failed = await this.users.fail(steps, error);
      if (failed.length > 0) this.deps.logger.warn('service deleted by force: steps that used it failed', { service: name, tasks: failed.length });
    }
    return { deleted: name, affected_workflows: affected, failed_tasks: failed };
  }

  /**
   * Reads the service's OpenAPI document again. When it changed, its next version is stored and
   * its tools follow it; the answer lists the operations added, removed and changed, and the
   * workflows the change breaks (an operation they call is gone, or its schemas no longer fit
   * their inputs or templates), each with its problems. A change that breaks workflows is refused
   * (409 `breaking_change`, with the same report) and nothing is stored, unless `force`.
   */
  async refreshService(name: string, force = false): Promise<RefreshOutcome> {
    const current = await this.found(name);
    // Nothing to read: a service without a document has no operations, now as before.
    if (!current.record.openapiUrl) {
      return { name, version: current.record.documentVersion, changed: false, operations: { added: [], removed: [], changed: [] }, affected_workflows: [] };
    }
    const fields = mergePatch(current.record, {});
    const fetched = await this.fetchDocument(fields);
    if (fetched.sha256 === current.sha256) {
      return { name, version: current.record.documentVersion, changed: false, operations: { added: [], removed: [], changed: [] }, affected_workflows: [] };
    }
    const { operations, skipped } = await this.operationsOf(name, fetched);
    const before = new Map(current.operations.map((operation) => [operation.tool, operation]));
    const after = new Map(operations.map((operation) => [operation.tool, operation]));
    const signature = (operation: ServiceOperation) => JSON.stringify([operation.method, operation.path, operation.inputSchema, operation.outputSchema]);
    const diff = {
      added: [...after.keys()].filter((tool) => !before.has(tool)).sort(),
      removed: [...before.keys()].filter((tool) => !after.has(tool)).sort(),
      changed: [...after.keys()].filter((tool) => before.has(tool) && signature(before.get(tool)!) !== signature(after.get(tool)!)).sort(),
    };
    const target = current.target;
    const next = new Map(
      operations.map((operation) => [operation.tool, serviceTool(target, operation, { policy: this.deps.policy, secrets: this.deps.secrets })]),
    );
    const affected = (await this.workflows?.affectedBy(`${name}.`, next)) ?? [];
    if (affected.length > 0 && !force) {
      throw new ConflictError(
        'breaking_change',
        `the new document of ${name} breaks ${affected.length} workflow(s): nothing was changed (?force=true applies it)`,
        { version: current.record.documentVersion, operations: diff, affected_workflows: affected },
      );
    }
    const record = await this.deps.store.update(name, fields, fetched);
    if (!record) throw new NotFoundError('service_not_found', `no service is named ${JSON.stringify(name)}`);
    this.loaded.set(name, record.updatedAt.getTime());
    this.install(record, { ok: true, operations, skipped }, fetched.sha256);
    await this.announce(name);
    if (affected.length > 0)
      this.deps.logger.warn('a service change breaks workflows', { service: name, workflows: affected.map((workflow) => workflow.name) });
    return { name, version: record.documentVersion, changed: true, operations: diff, affected_workflows: affected };
  }

  private async found(name: string): Promise<Installed> {
    let installed = this.installed.get(name);
    if (!installed) {
      await this.reload();
      installed = this.installed.get(name);
    }
    if (!installed) throw new NotFoundError('service_not_found', `no service is named ${JSON.stringify(name)}`);
    return installed;
  }

  /** Fetches a service's OpenAPI document (its text: it is read on the reader's thread), within SERVICE_DOCUMENT_MAX_BYTES. */
  private async fetchDocument(fields: ServiceFields): Promise<FetchedDocument> {
    const url = fields.openapiUrl!;
    // Credentials go only to the service's own origin.
    const sameOrigin = new URL(url).origin === new URL(fields.baseUrl).origin;
    let text: string;
    try {
      const response = await outboundRequest(this.deps.policy, {
        method: 'GET',
        url,
        headers: { accept: 'application/json', ...(sameOrigin ? { ...fields.headers, ...authHeader(fields.auth, this.deps.secrets) } : {}) },
        timeoutMs: fields.timeoutMs,
        maxRedirects: 0,
        maxResponseBytes: this.deps.documentMaxBytes,
      });
      if (response.status !== 200) throw new Error(`HTTP ${response.status}`);
      text = response.body.toString('utf8');
    } catch (error) {
      const message = (error as Error).message;
      if (error instanceof HostRefusedError) {
        throw new ValidationError(
          'the OpenAPI document is on a host this deployment may not call',
          [{ path: 'openapi_url', message: `${message} (HTTP_TOOL_ALLOWED_HOSTS)` }],
          'host_not_allowed',
        );
      }
      if (/larger than/.test(message)) {
        throw new ValidationError(
          'the OpenAPI document is too large',
          [{ path: 'openapi_url', message: `${message} (SERVICE_DOCUMENT_MAX_BYTES)` }],
          'invalid_openapi_document',
        );
      }
      throw new UpstreamError('openapi_fetch_failed', `could not fetch the OpenAPI document from ${url}: ${message}`, { openapi_url: url });
    }
    return { sha256: sha256(text), text };
  }

  // Health

  /** Checks every service with a health_path once; each result is stored and counted. */
  async checkHealth(): Promise<void> {
    for (const installed of [...this.installed.values()]) {
      if (this.stopped) return;
      const { record } = installed;
      if (!record.healthPath) continue;
      const health = await this.probeHealth(installed);
      this.deps.metrics.serviceUp.set({ service: record.name }, health.status === 'up' ? 1 : 0);
      // A service that fails its health check is down for every caller: its shared circuit opens.
      if (health.status === 'down') await this.deps.circuits.trip(record.name, installed.circuit).catch(() => undefined);
      installed.record = { ...record, health };
      await this.deps.store.setHealth(record.name, health).catch(() => undefined);
    }
  }

  private async probeHealth({ record, target }: Installed): Promise<ServiceHealth> {
    const checkedAt = new Date().toISOString();
    try {
      const response = await outboundRequest(this.deps.policy, {
        method: 'GET',
        url: target.baseUrl.replace(/\/+$/, '') + record.healthPath,
        headers: { ...target.headers, ...authHeader(target.auth, this.deps.secrets) },
        timeoutMs: Math.min(target.timeoutMs, 5_000),
        maxRedirects: 0,
        maxResponseBytes: 64 * 1024,
      });
      return { status: response.status >= 200 && response.status < 300 ? 'up' : 'down', checked_at: checkedAt, http_status: response.status };
    } catch (error) {
      return { status: 'down', checked_at: checkedAt, error: (error as Error).message.slice(0, 500) };
    }
  }

  /** Each service's last health, for /ready (information only: a service down does not make this one unready). */
  healthSummary(): Record<string, 'up' | 'down' | 'unknown'> {
    return Object.fromEntries([...this.installed.values()].map(({ record }) => [record.name, record.health?.status ?? 'unknown']));
  }

  private async view(installed: Installed, options: { keys?: boolean } = {}): Promise<ServiceView> {
    const { record } = installed;
    const circuit = await this.deps.circuits.view(record.name).catch(() => undefined);
    const keys = options.keys ? await this.deps.circuits.keyViews(record.name).catch(() => undefined) : undefined;
    const at = (time: number | null) => (time === null ? null : new Date(time).toISOString());
    return {
      name: record.name,
      base_url: record.baseUrl,
      openapi_url: record.openapiUrl,
      headers: record.headers,
      auth: record.auth ? { ...record.auth, secret_set: this.deps.secrets.has(record.auth.secret_ref) } : null,
      health_path: record.healthPath,
      timeout_ms: record.timeoutMs,
      circuit: installed.circuit,
      concurrency: record.concurrency,
      rate_limit: record.rateLimit,
      document_version: record.documentVersion,
      operations: installed.operations.map((operation) => ({
        tool: operation.tool,
        method: operation.method,
        path: operation.path,
        summary: operation.summary,
      })),
      health: record.health,
      error: installed.error,
      circuit_state: circuit
        ? {
            ...circuit,
            transitions: circuit.transitions.map((transition) => ({ from: transition.from, to: transition.to, at: new Date(transition.at).toISOString() })),
            since: at(circuit.since),
            open_until: at(circuit.open_until),
            ...(keys ? { keys: keys.map((key) => ({ ...key, since: at(key.since), open_until: at(key.open_until) })) } : {}),
          }
        : null,
      created_at: record.createdAt.toISOString(),
      updated_at: record.updatedAt.toISOString(),
    };
  }
}

export interface ImportSummary {
  version: number;
  tools: string[];
  skipped: { where: string; reason: string }[];
}

export interface RefreshOutcome {
  name: string;
  version: number;
  changed: boolean;
  operations: { added: string[]; removed: string[]; changed: string[] };
  affected_workflows: AffectedWorkflow[];
}

export interface ServiceView {
  name: string;
  base_url: string;
  openapi_url: string | null;
  headers: Record<string, string>;
  auth: (ServiceAuth & { secret_set: boolean }) | null;
  health_path: string | null;
  timeout_ms: number;
  circuit: CircuitSettings;
  concurrency: number | null;
  rate_limit: { per_minute?: number; per_second?: number } | null;
  document_version: number;
  operations: { tool: string; method: string; path: string; summary: string }[];
  health: ServiceHealth | null;
  /** Why the stored document gives no tools; null when it is in use. */
  error: string | null;
  circuit_state:
    | (Omit<CircuitView, 'transitions' | 'since' | 'open_until'> & {
        since: string | null;
        open_until: string | null;
        transitions: { from: string; to: string; at: string }[];
        /** Admins: each calling key's own circuit. */
        keys?: (Omit<KeyCircuitView, 'since' | 'open_until'> & { since: string | null; open_until: string | null })[];
      })
    | null;
  created_at: string;
  updated_at: string;
}

function importSummary(installed: Installed): ImportSummary {
  return { version: installed.record.documentVersion, tools: installed.operations.map((operation) => operation.tool), skipped: installed.skipped };
}

function targetOf(record: ServiceRecord): ServiceTarget {
  return {
    name: record.name,
    baseUrl: record.baseUrl,
    headers: record.headers,
    ...(record.auth ? { auth: record.auth } : {}),
    timeoutMs: record.timeoutMs,
    ...(record.concurrency !== null ? { concurrency: record.concurrency } : {}),
    ...(record.rateLimit ? { rateLimit: record.rateLimit } : {}),
  };
}

function fieldsOf(body: ServiceBody): ServiceFields {
  return {
    baseUrl: body.base_url,
    openapiUrl: body.openapi_url ?? null,
    headers: body.headers,
    auth: body.auth ?? null,
    healthPath: body.health_path ?? null,
    timeoutMs: body.timeout_ms,
    circuit: body.circuit ?? null,
    concurrency: body.concurrency ?? null,
    rateLimit: body.rate_limit ?? null,
  };
}

function mergePatch(record: ServiceRecord, patch: ServicePatch): ServiceFields {
  const pick = <T>(value: T | null | undefined, current: T | null): T | null => (value === undefined ? current : value);
  return {
    baseUrl: patch.base_url ?? record.baseUrl,
    openapiUrl: pick(patch.openapi_url, record.openapiUrl),
    headers: patch.headers ?? record.headers,
    auth: pick(patch.auth, record.auth),
    healthPath: pick(patch.health_path, record.healthPath),
    timeoutMs: patch.timeout_ms ?? record.timeoutMs,
    circuit: pick(patch.circuit, record.circuit),
    concurrency: pick(patch.concurrency, record.concurrency),
    rateLimit: pick(patch.rate_limit, record.rateLimit),
  };
}

function authHeader(auth: ServiceAuth | null | undefined, secrets: Secrets): Record<string, string> {
  if (!auth) return {};
  const secret = secrets.get(auth.secret_ref);
  if (secret === undefined) return {};
  if (auth.type === 'bearer') return { authorization: `Bearer ${secret}` };
  if (auth.type === 'basic') return { authorization: `Basic ${Buffer.from(secret, 'utf8').toString('base64')}` };
  return { [auth.header_name ?? 'X-API-Key']: secret };
}

/** A process's service registry, its parts made from the configuration. Call start(), and stop() at shutdown. */
export function openServiceRegistry(options: {
  config: Config;
  prisma: Prisma;
  redis: RedisClient;
  subscriber?: RedisClient;
  logger: Logger;
  metrics: Metrics;
  /** The API checks health; workers do not. */
  checksHealth: boolean;
}): ServiceRegistry {
  const { config, logger, metrics } = options;
  return new ServiceRegistry({
    store: new ServiceStore(options.prisma),
    policy: hostPolicyFor(config.HTTP_TOOL_ALLOWED_HOSTS, config.HTTP_TOOL_PRIVATE_NAMES),
    secrets: new Secrets(process.env, config.SERVICE_SECRETS_FILE),
    circuits: new Circuits(options.redis, config.QUEUE_PREFIX, ServiceRegistry.transitionReporter(metrics, logger)),
    logger,
    metrics,
    redis: options.redis,
    ...(options.subscriber ? { subscriber: options.subscriber } : {}),
    prefix: config.QUEUE_PREFIX,
    reloadMs: config.SERVICES_RELOAD_MS,
    healthIntervalMs: options.checksHealth ? config.SERVICE_HEALTH_INTERVAL_MS : 0,
    documentMaxBytes: config.SERVICE_DOCUMENT_MAX_BYTES,
    maxOperations: config.SERVICE_MAX_OPERATIONS,
    budget: { maxNodes: config.SERVICE_SCHEMA_MAX_NODES, maxBytes: config.SERVICE_SCHEMA_MAX_BYTES },
    reader: new DocumentReader(),
    warmReader: options.checksHealth,
  });
}
