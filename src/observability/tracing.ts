/**
 * Tracing (OpenTelemetry).
 *
 * Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` is set (e.g. `http://collector:4318`): spans then go
 * over OTLP/HTTP (JSON) to `<endpoint>/v1/traces`, in batches; the exporter's own variables such as
 * `OTEL_EXPORTER_OTLP_HEADERS` still apply. The service is named by `OTEL_SERVICE_NAME`, by
 * default `orchestrator-api` (npm run api), `orchestrator-worker` (npm run worker) or
 * `orchestrator` (npm start, both in one process). Off, nothing is registered and BullMQ gets no
 * telemetry option: the no-op API is all that is left on the hot path.
 *
 * One task is one trace, from the HTTP request to the last step (names, then parent):
 * - `POST /assign-task`, `POST /workflows/:name/execute`, ... (SERVER): one per request, named
 *   after the route pattern (just the method when no route matched); a W3C `traceparent` header
 *   makes it a child of the caller's span. Attributes: `http.request.method`, `http.route`,
 *   `url.path`, `http.response.status_code`, `orchestrator.request.id`; error status on 5xx.
 * - `task.submit` (INTERNAL), child of the request span: validation, the PostgreSQL insert and
 *   the enqueue. `orchestrator.task.id`, `orchestrator.task.type`.
 * - BullMQ's own spans, from bullmq-otel, which carries the trace context in each job
 *   (`opts.telemetry`): `addBulkFlows` > `addNode tasks` (the run's root) > `addNode tool.<name>`
 *   (PRODUCER) for a workflow run's flow (when concurrent submissions are enqueued together, their
 *   `addBulkFlows` round trip is a trace of its own, and each task's jobs still carry their own
 *   trace); `add tool.<name>.<job>` (PRODUCER) for one job added alone, `addBulk tool.<name>` for
 *   several at once: a one-tool task's job, and the dependents a worker enqueues once a step
 *   commits; `process tool.<name>` / `process tasks` / `process callbacks` (CONSUMER), each
 *   a child of the producer span of its job (every delivery of a job: a failed one gets a
 *   `delay tool.<name>` or `retry tool.<name>` child as BullMQ schedules the next); and under
 *   those `getNextJob <queue>`, `complete <queue>`, `fail <queue>`, `add callbacks.deliver`.
 * - `step <tool>` (INTERNAL), child of its job's `process tool.<tool>` span: the adapter call with
 *   its input and output checks. `orchestrator.task.id`, `orchestrator.task.run`,
 *   `orchestrator.step.id`, `orchestrator.step.tool`, `orchestrator.step.attempt`,
 *   `orchestrator.job.id` (`.step.attempt` is the attempt's number, as the step's `attempts`);
 *   error status and the exception when the attempt fails. An adapter's
 *   own spans (OpenTelemetry API) become its children.
 * BullMQ's housekeeping (stalled-job checks, lock renewals, close) would start a trace of its own
 * every few seconds; such parentless INTERNAL spans are not sampled.
 */
import {
  type Attributes,
  type Context,
  context,
  DiagLogLevel,
  diag,
  propagation,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  type Tracer,
  trace,
} from '@opentelemetry/api';
import type { Sampler, SpanProcessor } from '@opentelemetry/sdk-trace-base';
import type { Telemetry } from 'bullmq';
import { BullMQOtel } from 'bullmq-otel';
import type { Config } from '../lib/config.js';
import { coerceError } from '../lib/errors.js';
import type { Logger } from '../lib/logger.js';
import { PACKAGE } from '../lib/package-root.js';

/** Attributes of Orchestrator's own spans. */
export const SpanAttributes = {
  REQUEST_ID: 'orchestrator.request.id',
  TASK_ID: 'orchestrator.task.id',
  TASK_TYPE: 'orchestrator.task.type',
  TASK_RUN: 'orchestrator.task.run',
  STEP_ID: 'orchestrator.step.id',
  STEP_TOOL: 'orchestrator.step.tool',
  STEP_ATTEMPT: 'orchestrator.step.attempt',
  JOB_ID: 'orchestrator.job.id',
} as const;

/** Which process this is; names the service when OTEL_SERVICE_NAME is unset. */
export type ProcessRole = 'api' | 'worker' | 'all';

const SERVICE_NAMES: Record<ProcessRole, string> = { api: 'orchestrator-api', worker: 'orchestrator-worker', all: 'orchestrator' };

export interface TracingOptions {
  /** @defaultValue 'all' */
  role?: ProcessRole;
  /**
   * Span processors to use instead of the OTLP exporter, e.g. a SimpleSpanProcessor over an
   * InMemorySpanExporter in tests. Given, they turn tracing on whatever the configuration says.
   */
  spanProcessors?: SpanProcessor[];
}

export interface Tracing {
  /** Whether this process records spans. */
  readonly enabled: boolean;
  readonly serviceName?: string;
  /** Hands every ended span to the processors now (and, for OTLP, sends them). */
  forceFlush(): Promise<void>;
  /** Flushes, stops exporting and unregisters everything initTracing registered. Call it last on close. */
  shutdown(): Promise<void>;
}

interface ActiveTracing {
  tracer: Tracer;
  telemetry: Telemetry;
}

let active: ActiveTracing | undefined;

const OFF: Tracing = { enabled: false, forceFlush: async () => undefined, shutdown: async () => undefined };

/** `<endpoint>/v1/traces`, as the OTLP specification derives it from OTEL_EXPORTER_OTLP_ENDPOINT. */
export function tracesUrl(endpoint: string): string {
  return `${endpoint.replace(/\/+$/, '')}/v1/traces`;
}

/**
 * Sets up tracing for this process: call it once at start, before the API or a worker is built.
 * Without an endpoint (and without injected processors) it registers nothing.
 */
export async function initTracing(
  config: Pick<Config, 'OTEL_EXPORTER_OTLP_ENDPOINT' | 'OTEL_SERVICE_NAME'>,
  logger: Logger,
  options: TracingOptions = {},
): Promise<Tracing> {
  const endpoint = config.OTEL_EXPORTER_OTLP_ENDPOINT;
  if (!endpoint && !options.spanProcessors) return OFF;
  if (active) throw new Error('tracing is already set up in this process');
  // Loaded only when tracing is on, so a process without it does not even load the SDK.
  const [sdk, core, resources, { AsyncLocalStorageContextManager }, semconv] = await Promise.all([
    import('@opentelemetry/sdk-trace-base'),
    import('@opentelemetry/core'),
    import('@opentelemetry/resources'),
    import('@opentelemetry/context-async-hooks'),
    import('@opentelemetry/semantic-conventions'),
  ]);
  let processors = options.spanProcessors;
  if (!processors) {
    const { OTLPTraceExporter } = await import('@opentelemetry/exporter-trace-otlp-http');
    processors = [new sdk.BatchSpanProcessor(new OTLPTraceExporter({ url: tracesUrl(endpoint!) }))];
  }
  const serviceName = config.OTEL_SERVICE_NAME ?? SERVICE_NAMES[options.role ?? 'all'];
  const housekeepingDropped: Sampler = {
    shouldSample: (_context, _traceId, _name, kind) => ({
      decision: kind === SpanKind.INTERNAL ? sdk.SamplingDecision.NOT_RECORD : sdk.SamplingDecision.RECORD_AND_SAMPLED,
    }),
    toString: () => 'ParentlessInternalSpansDropped',
  };
  const provider = new sdk.BasicTracerProvider({
    resource: resources
      .defaultResource()
      .merge(resources.resourceFromAttributes({ [semconv.ATTR_SERVICE_NAME]: serviceName, [semconv.ATTR_SERVICE_VERSION]: PACKAGE.version })),
    sampler: new sdk.ParentBasedSampler({ root: housekeepingDropped }),
    spanProcessors: processors,
  });
  // Export failures (collector down) are reported through diag: make them log lines.
  diag.setLogger(
    {
      error: (message, ...args) => logger.warn(`tracing: ${message}`, { details: args.map(String) }),
      warn: (message, ...args) => logger.warn(`tracing: ${message}`, { details: args.map(String) }),
      info: () => undefined,
      debug: () => undefined,
      verbose: () => undefined,
    },
    DiagLogLevel.WARN,
  );
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new core.CompositePropagator({ propagators: [new core.W3CTraceContextPropagator(), new core.W3CBaggagePropagator()] }));
  if (!trace.setGlobalTracerProvider(provider)) throw new Error('another OpenTelemetry tracer provider is already registered');
  active = { tracer: provider.getTracer('orchestrator', PACKAGE.version), telemetry: new BullMQOtel({ tracerName: 'bullmq' }) };
  logger.info('tracing on', { service: serviceName, exporter: options.spanProcessors ? 'injected' : tracesUrl(endpoint!) });

  let closed = false;
  return {
    enabled: true,
    serviceName,
    forceFlush: () => provider.forceFlush(),
    async shutdown() {
      if (closed) return;
      closed = true;
      active = undefined;
      try {
        await provider.shutdown();
      } catch (error) {
        logger.warn('tracing: could not export the last spans', { error: coerceError(error).message });
      } finally {
        trace.disable();
        propagation.disable();
        context.disable();
        diag.disable();
      }
    },
  };
}

export function tracingEnabled(): boolean {
  return active !== undefined;
}

/** Orchestrator's tracer, or undefined when tracing is off. */
export function activeTracer(): Tracer | undefined {
  return active?.tracer;
}

/**
 * BullMQ's `telemetry` option, to spread into Queue, FlowProducer and Worker options. Empty when
 * tracing is off, so BullMQ skips its tracing code (and adds no trace context to jobs).
 */
export function bullmqTelemetry(): { telemetry?: Telemetry } {
  return active ? { telemetry: active.telemetry } : {};
}

/** The active trace context, to carry a submission's trace through a batch; undefined when tracing is off. */
export function captureTraceContext(): Context | undefined {
  return active ? context.active() : undefined;
}

/**
 * Job options that make a job's consumer span continue the trace of `traceContext` although the
 * job is added in another context (BullMQ stores it as the job's telemetry metadata). Empty when
 * `traceContext` is the active one: BullMQ then parents the consumer on its producer span itself.
 */
export function jobTraceOptions(traceContext: Context | undefined): { telemetry?: { metadata: string } } {
  if (!active || !traceContext || traceContext === context.active()) return {};
  return { telemetry: { metadata: active.telemetry.contextManager.getMetadata(traceContext) } };
}

/**
 * Runs `work` in the trace of a batch's only item, or outside every trace when the batch holds
 * items of several: no task's trace then shows the others' work (their jobs still carry their
 * own context through jobTraceOptions).
 */
export function withBatchTraceContext<T>(traceContexts: (Context | undefined)[], work: () => T): T {
  if (!active) return work();
  const [only] = traceContexts;
  return context.with(traceContexts.length === 1 && only ? only : ROOT_CONTEXT, work);
}

/** A span of Orchestrator's own, or a no-op stand-in when tracing is off. */
export interface SpanHandle {
  /** Runs `fn` with this span active, so spans started inside (BullMQ's, an adapter's) are its children. */
  run<T>(fn: () => T): T;
  setAttributes(attributes: Attributes): void;
  end(): void;
  /** Records `error`, marks the span failed and ends it. */
  fail(error: unknown): void;
}

const NO_SPAN: SpanHandle = { run: (fn) => fn(), setAttributes: () => undefined, end: () => undefined, fail: () => undefined };

function markFailed(span: Span, error: unknown): void {
  const failure = coerceError(error);
  span.recordException(failure);
  span.setStatus({ code: SpanStatusCode.ERROR, message: failure.message });
  span.setAttribute('error.type', failure.name);
}

/** Starts an INTERNAL span under the active one. */
export function startSpan(name: string, attributes: Attributes): SpanHandle {
  if (!active) return NO_SPAN;
  const parent = context.active();
  const span = active.tracer.startSpan(name, { kind: SpanKind.INTERNAL, attributes }, parent);
  const inSpan = trace.setSpan(parent, span);
  return {
    run: (fn) => context.with(inSpan, fn),
    setAttributes: (more) => void span.setAttributes(more),
    end: () => span.end(),
    fail: (error) => {
      markFailed(span, error);
      span.end();
    },
  };
}

/** Runs `work` in a span that ends with it, failed when it throws. */
export async function inSpan<T>(name: string, attributes: Attributes, work: (span: SpanHandle) => Promise<T>): Promise<T> {
  const span = startSpan(name, attributes);
  if (span === NO_SPAN) return work(span);
  try {
    const value = await span.run(() => work(span));
    span.end();
    return value;
  } catch (error) {
    span.fail(error);
    throw error;
  }
}
