import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import { InMemorySpanExporter, type ReadableSpan, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/lib/config.js';
import { tracesUrl, tracingEnabled } from '../../src/observability/tracing.js';
import { stepJobId } from '../../src/queue/jobs.js';
import { testTools } from '../fixtures/tools.js';
import { createHarness, type Harness, poll, waitForTask } from '../helpers/harness.js';

const JOB_ID = 'bullmq.job.id';

/** The spans of one trace, with lookups along the parent links. */
class TraceView {
  constructor(readonly spans: ReadableSpan[]) {}

  get traceId(): string {
    return this.spans[0]!.spanContext().traceId;
  }

  all(name: string): ReadableSpan[] {
    return this.spans.filter((span) => span.name === name);
  }

  one(name: string, attributes: Record<string, unknown> = {}): ReadableSpan {
    const found = this.all(name).filter((span) => Object.entries(attributes).every(([key, value]) => span.attributes[key] === value));
    expect(found, `one span ${name} ${JSON.stringify(attributes)} in ${this.names()}`).toHaveLength(1);
    return found[0]!;
  }

  parentOf(span: ReadableSpan): ReadableSpan | undefined {
    const id = span.parentSpanContext?.spanId;
    return this.spans.find((candidate) => candidate.spanContext().spanId === id);
  }

  descendsFrom(span: ReadableSpan, ancestor: ReadableSpan): boolean {
    for (let parent = this.parentOf(span); parent; parent = this.parentOf(parent)) {
      if (parent === ancestor) return true;
    }
    return false;
  }

  names(): string {
    return this.spans.map((span) => span.name).join(', ');
  }
}

describe('tracing: the span tree of a task, from the HTTP request to each adapter call', () => {
  const exporter = new InMemorySpanExporter();
  let h: Harness;

  /** Submits over HTTP and returns the task id and the request id that names its server span. */
  async function submitTraced(body: Record<string, unknown>, headers: Record<string, string> = {}) {
    const response = await h.request('POST', '/assign-task', body, headers);
    expect(response.status, JSON.stringify(response.body)).toBe(202);
    return { taskId: response.body.task_id as string, requestId: response.headers.get('x-request-id')! };
  }

  /**
   * The trace of the request `requestId`, once it holds everything `complete` asks for: BullMQ
   * ends a job's `process` span only after acknowledging it, which may be after /result shows
   * the task finished.
   */
  async function traceOf(requestId: string, complete: (view: TraceView) => boolean, label: string): Promise<TraceView> {
    return poll(
      async () => {
        await h.tracing!.forceFlush();
        const finished = exporter.getFinishedSpans();
        const server = finished.find((span) => span.kind === SpanKind.SERVER && span.attributes['orchestrator.request.id'] === requestId);
        if (!server) return undefined;
        const view = new TraceView(finished.filter((span) => span.spanContext().traceId === server.spanContext().traceId));
        return complete(view) ? view : undefined;
      },
      { label: `trace of ${label}`, timeoutMs: 15_000 },
    );
  }

  /**
   * Each named step has its consumer span, and for a workflow (`root`) the run's root job
   * (`process tasks`) ran; a one-tool task's run is its step's job alone.
   */
  const stepsDone =
    (stepIds: string[], options: { root?: boolean } = {}) =>
    (view: TraceView) =>
      stepIds.every((stepId) => view.spans.some((span) => span.name.startsWith('process tool.') && String(span.attributes[JOB_ID]).endsWith(`.${stepId}`))) &&
      (!options.root || view.spans.some((span) => span.name === 'process tasks'));

  beforeAll(async () => {
    h = await createHarness({ tools: testTools, tracing: { spanProcessors: [new SimpleSpanProcessor(exporter)] } });
    const defined = await h.request('POST', '/workflows', {
      name: 'traced_pair',
      steps: [
        { id: 'a', tool: 'echo', input: { n: 1 } },
        { id: 'b', tool: 'echo', depends_on: ['a'], input: { from_a: '{{steps.a.output.n}}' } },
      ],
    });
    expect(defined.status).toBe(201);
  });
  afterAll(async () => {
    await h?.close();
  });

  it('roots a one-step task in its HTTP span: submit, BullMQ producer and consumer, then the adapter call', async () => {
    const { taskId, requestId } = await submitTraced({ task_type: 'echo', params: { hello: 'world' } });
    expect((await waitForTask(h, taskId)).status).toBe('completed');
    const view = await traceOf(requestId, stepsDone(['echo']), 'the echo task');

    const server = view.one('POST /assign-task');
    expect(server.kind).toBe(SpanKind.SERVER);
    expect(server.parentSpanContext).toBeUndefined();
    expect(server.attributes).toMatchObject({
      'http.request.method': 'POST',
      'http.route': '/assign-task',
      'url.path': '/assign-task',
      'http.response.status_code': 202,
      'orchestrator.request.id': requestId,
    });
    expect(server.status.code).toBe(SpanStatusCode.UNSET);

    const submit = view.one('task.submit');
    expect(view.parentOf(submit)).toBe(server);
    expect(submit.attributes).toMatchObject({ 'orchestrator.task.id': taskId, 'orchestrator.task.type': 'echo' });

    // BullMQ's producer span for the task's one job (a one-tool task's run has no root job), under
    // the submission: one job is added alone (`add <queue>.<job name>`), several with addBulk.
    const produced = view.one('add tool.echo.echo');
    expect(produced.kind).toBe(SpanKind.PRODUCER);
    expect(view.descendsFrom(produced, submit)).toBe(true);
    expect(view.all('addFlow tasks')).toEqual([]);
    const jobId = stepJobId(taskId, 1, 'echo');

    // The worker's consumer span continues the producer's, and the adapter call is its child.
    const consumer = view.one('process tool.echo', { [JOB_ID]: jobId });
    expect(consumer.kind).toBe(SpanKind.CONSUMER);
    expect(view.parentOf(consumer)).toBe(produced);
    const step = view.one('step echo');
    expect(view.parentOf(step)).toBe(consumer);
    expect(step.kind).toBe(SpanKind.INTERNAL);
    expect(step.attributes).toMatchObject({
      'orchestrator.task.id': taskId,
      'orchestrator.task.run': 1,
      'orchestrator.step.id': 'echo',
      'orchestrator.step.tool': 'echo',
      'orchestrator.step.attempt': 1,
      'orchestrator.job.id': jobId,
    });
    expect(step.status.code).toBe(SpanStatusCode.UNSET);

    // Everything descends from the request: one task, one trace.
    for (const span of view.spans) if (span !== server) expect(view.descendsFrom(span, server), span.name).toBe(true);
  });

  it('keeps a workflow in one trace, including the step a worker enqueued when its dependency finished', async () => {
    const { taskId, requestId } = await submitTraced({ task_type: 'traced_pair' });
    const result = await waitForTask(h, taskId);
    expect(result.status).toBe('completed');
    const view = await traceOf(requestId, stepsDone(['a', 'b'], { root: true }), 'the traced_pair workflow');

    const server = view.one('POST /assign-task');
    const consumerA = view.one('process tool.echo', { [JOB_ID]: stepJobId(taskId, 1, 'a') });
    const consumerB = view.one('process tool.echo', { [JOB_ID]: stepJobId(taskId, 1, 'b') });
    const stepA = view.one('step echo', { 'orchestrator.step.id': 'a' });
    const stepB = view.one('step echo', { 'orchestrator.step.id': 'b' });
    expect(view.parentOf(stepA)).toBe(consumerA);
    expect(view.parentOf(stepB)).toBe(consumerB);
    expect(stepB.attributes).toMatchObject({ 'orchestrator.task.id': taskId, 'orchestrator.step.tool': 'echo', 'orchestrator.step.attempt': 1 });

    // The run is a flow added with the task (under the submission): its root in `tasks`, a's job
    // as the root's child. b's job was added by a's worker, once a's result made it ready (the
    // jobs it made continue the trace of the step that made them), and the root was processed
    // once b, its last child, completed.
    const submitted = view.one('task.submit');
    const flow = view.one('addBulkFlows');
    expect(view.parentOf(flow)).toBe(submitted);
    const rootAdd = view.one('addNode tasks');
    expect(view.parentOf(rootAdd)).toBe(flow);
    const addA = view.one('addNode tool.echo');
    expect(view.parentOf(addA)).toBe(rootAdd);
    expect(view.parentOf(consumerA)).toBe(addA);
    const addB = view.one('add tool.echo.b');
    expect(addB.kind).toBe(SpanKind.PRODUCER);
    expect(view.descendsFrom(addB, consumerA)).toBe(true);
    expect(view.parentOf(consumerB)).toBe(addB);
    expect(view.parentOf(view.one('process tasks'))).toBe(rootAdd);
    expect(view.descendsFrom(stepB, server)).toBe(true);
  });

  it('marks a failed adapter call as an error, and keeps retries in the trace', async () => {
    const failing = await submitTraced({ task_type: 'broken', params: { message: 'no luck' } });
    const flaky = await submitTraced({
      task_type: 'flaky',
      params: { succeed_on: 2, key: 'tracing' },
      retry: { attempts: 2, backoff: { type: 'fixed', delay_ms: 10 } },
    });
    expect((await waitForTask(h, failing.taskId)).status).toBe('failed');
    expect((await waitForTask(h, flaky.taskId)).status).toBe('completed');

    const broken = await traceOf(failing.requestId, stepsDone(['broken']), 'the broken task');
    const step = broken.one('step broken');
    expect(step.status).toMatchObject({ code: SpanStatusCode.ERROR, message: 'no luck' });
    expect(step.attributes['error.type']).toBe('NonRetryableError');
    expect(step.events.some((event) => event.name === 'exception' && event.attributes?.['exception.message'] === 'no luck')).toBe(true);
    expect(broken.parentOf(step)?.name).toBe('process tool.broken');

    // Two attempts of one job: the first failed, the second (after BullMQ's retry) succeeded.
    const retried = await traceOf(
      flaky.requestId,
      (view) => view.all('step flaky').length === 2 && view.all('process tool.flaky').length === 2,
      'the flaky task',
    );
    const first = retried.one('step flaky', { 'orchestrator.step.attempt': 1 });
    const second = retried.one('step flaky', { 'orchestrator.step.attempt': 2 });
    expect(first.status.code).toBe(SpanStatusCode.ERROR);
    expect(second.status.code).toBe(SpanStatusCode.UNSET);
    // Both attempts' consumer spans continue the job's producer span; the failed one scheduled the retry.
    const [firstConsumer, secondConsumer] = [retried.parentOf(first)!, retried.parentOf(second)!];
    expect([firstConsumer.name, secondConsumer.name]).toEqual(['process tool.flaky', 'process tool.flaky']);
    expect(retried.parentOf(firstConsumer)).toBe(retried.one('add tool.flaky.flaky'));
    expect(retried.parentOf(secondConsumer)).toBe(retried.parentOf(firstConsumer));
    expect(retried.parentOf(retried.one('delay tool.flaky'))).toBe(firstConsumer);
    expect(retried.descendsFrom(second, retried.one('POST /assign-task'))).toBe(true);
  });

  it("continues the caller's trace from a W3C traceparent header", async () => {
    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
    const callerSpanId = '00f067aa0ba902b7';
    const { taskId, requestId } = await submitTraced({ task_type: 'echo', params: {} }, { traceparent: `00-${traceId}-${callerSpanId}-01` });
    await waitForTask(h, taskId);
    const view = await traceOf(requestId, stepsDone(['echo']), 'the task with a traceparent');
    expect(view.traceId).toBe(traceId);
    const server = view.one('POST /assign-task');
    expect(server.parentSpanContext).toMatchObject({ traceId, spanId: callerSpanId, isRemote: true });
    expect(view.one('step echo').attributes['orchestrator.task.id']).toBe(taskId);
  });

  it('gives each of many concurrent submissions its own trace, although they are enqueued in batches', async () => {
    const submitted = await Promise.all(Array.from({ length: 12 }, (_, n) => submitTraced({ task_type: 'echo', params: { n } })));
    await Promise.all(submitted.map(({ taskId }) => waitForTask(h, taskId)));
    for (const { taskId, requestId } of submitted) {
      const view = await traceOf(requestId, stepsDone(['echo']), `concurrent task ${taskId}`);
      const taskIds = new Set(view.spans.map((span) => span.attributes['orchestrator.task.id']).filter((id) => id !== undefined));
      expect([...taskIds]).toEqual([taskId]);
      const jobIds = new Set(view.spans.map((span) => span.attributes[JOB_ID]).filter((id) => id !== undefined));
      for (const jobId of jobIds) expect(String(jobId).startsWith(taskId)).toBe(true);
      const server = view.one('POST /assign-task');
      const step = view.one('step echo');
      expect(view.parentOf(step)?.name).toBe('process tool.echo');
      expect(view.descendsFrom(step, view.one('task.submit'))).toBe(true);
      expect(view.descendsFrom(step, server)).toBe(true);
    }
    // Twelve requests at once overlap a flush, so some tasks' jobs went to Redis together: that
    // round trip belongs to no single task, and starts a trace of its own.
    const batches = exporter
      .getFinishedSpans()
      .filter((span) => span.name === 'addBulk tool.echo' && Number(span.attributes['bullmq.job.bulk.count'] ?? 0) > 1);
    expect(batches.length).toBeGreaterThan(0);
    for (const batch of batches) expect(batch.parentSpanContext).toBeUndefined();
  });

  it('names a request span after its route pattern, and marks only server errors', async () => {
    const missing = await h.request('GET', '/result/00000000-0000-4000-8000-000000000000');
    expect(missing.status).toBe(404);
    const requestId = missing.headers.get('x-request-id')!;
    const view = await traceOf(requestId, () => true, 'GET /result');
    const server = view.one('GET /result/:task_id');
    expect(server.attributes).toMatchObject({ 'http.route': '/result/:task_id', 'http.response.status_code': 404 });
    expect(server.status.code).toBe(SpanStatusCode.UNSET);
  });

  it("starts no trace for BullMQ's housekeeping (stalled-job checks, lock renewals)", async () => {
    await h.tracing!.forceFlush();
    const roots = exporter.getFinishedSpans().filter((span) => !span.parentSpanContext);
    expect(roots.length).toBeGreaterThan(0);
    expect(roots.filter((span) => span.kind === SpanKind.INTERNAL).map((span) => span.name)).toEqual([]);
    // Requests, and the batched enqueues of concurrent submissions.
    for (const root of roots) expect([SpanKind.SERVER, SpanKind.PRODUCER], root.name).toContain(root.kind);
  });
});

describe('tracing configuration', () => {
  it('takes an http(s) collector URL and derives the traces endpoint from it as OTLP does', () => {
    expect(loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' }).OTEL_EXPORTER_OTLP_ENDPOINT).toBe('http://collector:4318');
    expect(() => loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'collector:4318' })).toThrow(ConfigError);
    expect(() => loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'grpc://collector:4317' })).toThrow(/OTEL_EXPORTER_OTLP_ENDPOINT/);
    expect(loadConfig({}).OTEL_EXPORTER_OTLP_ENDPOINT).toBeUndefined();
    expect(tracesUrl('http://collector:4318')).toBe('http://collector:4318/v1/traces');
    expect(tracesUrl('https://otlp.example.com/tenant/')).toBe('https://otlp.example.com/tenant/v1/traces');
  });
});

describe('tracing off (no OTEL_EXPORTER_OTLP_ENDPOINT)', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness({ tracing: {} });
  });
  afterAll(async () => {
    await h?.close();
  });

  it('registers nothing, adds no trace context to jobs, and the service works as before', async () => {
    expect(h.tracing?.enabled).toBe(false);
    expect(tracingEnabled()).toBe(false);
    expect(trace.getTracer('probe').startSpan('probe').isRecording()).toBe(false);

    const response = await h.request(
      'POST',
      '/assign-task',
      { task_type: 'echo', params: { quiet: true } },
      { traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' },
    );
    expect(response.status).toBe(202);
    const taskId = response.body.task_id as string;
    expect((await waitForTask(h, taskId)).result).toEqual({ quiet: true });
    // BullMQ got no telemetry option: the job's options carry no trace context (`tm`).
    const opts = JSON.parse((await h.redis.hget(`${h.config.QUEUE_PREFIX}:tool.echo:${stepJobId(taskId, 1, 'echo')}`, 'opts'))!) as Record<string, unknown>;
    expect(opts).not.toHaveProperty('tm');
    expect(opts).toHaveProperty('attempts');
  });
});

describe('tracing over OTLP/HTTP', () => {
  let h: Harness;
  let collector: http.Server;
  const requests: { path: string; contentType: string; body: any }[] = [];

  beforeAll(async () => {
    // A stand-in collector: records what the exporter posts.
    collector = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (chunk: Buffer) => chunks.push(chunk));
      req.on('end', () => {
        requests.push({ path: req.url ?? '', contentType: req.headers['content-type'] ?? '', body: JSON.parse(Buffer.concat(chunks).toString('utf8')) });
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      });
    });
    collector.listen(0, '127.0.0.1');
    await once(collector, 'listening');
    const { port } = collector.address() as AddressInfo;
    h = await createHarness({
      env: { OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}/otlp/`, OTEL_SERVICE_NAME: 'orchestrator-under-test' },
      tracing: {},
    });
  });
  afterAll(async () => {
    await h?.close();
    collector?.close();
  });

  it('exports the spans of a task to <endpoint>/v1/traces with the service name', async () => {
    expect(h.tracing?.enabled).toBe(true);
    expect(h.tracing?.serviceName).toBe('orchestrator-under-test');
    const response = await h.request('POST', '/assign-task', { task_type: 'echo', params: {} });
    await waitForTask(h, response.body.task_id);
    const expected = ['POST /assign-task', 'task.submit', 'add tool.echo.echo', 'process tool.echo', 'step echo'];
    const exported = await poll(
      async () => {
        await h.tracing!.forceFlush();
        const spans = requests.flatMap(({ body }) =>
          (body.resourceSpans ?? []).flatMap((resource: any) =>
            resource.scopeSpans.flatMap((scope: any) =>
              scope.spans.map((span: any) => ({
                name: span.name as string,
                service: resource.resource.attributes.find((a: any) => a.key === 'service.name')?.value.stringValue,
              })),
            ),
          ),
        );
        // Every span, not only the step's: the job's consumer span ends after the step span inside
        // it, so a flush can carry the step without its parent (seen once in a full run).
        const names = new Set(spans.map((span) => span.name));
        return expected.every((name) => names.has(name)) ? spans : undefined;
      },
      { label: `the spans ${expected.join(', ')} at the collector` },
    );
    expect(requests.every((request) => request.path === '/otlp/v1/traces' && request.contentType.startsWith('application/json'))).toBe(true);
    expect(new Set(exported.map((span) => span.service))).toEqual(new Set(['orchestrator-under-test']));
  });
});
