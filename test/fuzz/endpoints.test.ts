import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Queue } from 'bullmq';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Route } from '../../src/api/route.js';
import { ROUTES } from '../../src/api/routes/index.js';
import { TIMERS_QUEUE, toolQueueName } from '../../src/queue/jobs.js';
import { testTools } from '../fixtures/tools.js';
import { createHarness, type Harness, submit } from '../helpers/harness.js';

/**
 * Bad input, property-based (fast-check), against every endpoint of ROUTES (the list the app
 * and the OpenAPI document are built from): malformed JSON, wrong types, huge and deeply nested values, `__proto__` / `constructor` keys, unicode edge cases (lone surrogates,
 * NUL, RTL, emoji), template syntax inside params, oversized bodies, invalid ids, odd methods,
 * content types and query strings. For every input:
 * - never a 5xx, and an answer within a bound (no hanging request);
 * - every error (4xx) has the contract's body {error: {code, message}};
 * - a refused request stores nothing: tasks, steps, workflows and dead letters are counted
 *   before and after it, and so are the run roots in BullMQ.
 * Among them: template syntax that made the old template scanner backtrack for seconds, text
 * that made regular expressions quadratic, and size amplification (hundreds of references to a
 * large parameter). GET /health is polled all along and never takes more than 100 ms beyond
 * its idle latency; enough requests are accepted (2xx) that the suite cannot pass by refusing
 * everything. Afterwards the process still answers GET /health, and no prototype was polluted.
 *
 * Sizes: FUZZ_RUNS inputs per property (FUZZ_PROFILE=full, i.e. npm run test:fuzz, runs 600).
 * CI runs 25 per operation: there are about 120 operations (with the seeds' aliases), each
 * request is checked against the counts of everything stored, and at 60 this file alone took
 * 274 s of a loaded machine's CI run; the worst inputs (pathological templates, deep nesting,
 * surrogates, parser errors) are their own tests below and run whole at any size.
 */

const FULL = process.env.FUZZ_PROFILE === 'full';
const RUNS = Number(process.env.FUZZ_RUNS ?? (FULL ? 600 : 25));
const SEED = process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : undefined;
const BODY_LIMIT_BYTES = 64 * 1024;
/** No request may take longer (none of these inputs makes the API wait on purpose). */
const ANSWER_MS = 5_000;
const ERROR_CODE = /^[a-z][a-z0-9_]*$/;
/** Between two GET /health probes: a stall (100 ms over idle) still lands on at least one of them. */
const PROBE_GAP_MS = 10;

interface RawRequest {
  method: string;
  /** Path and query, already percent-encoded where the HTTP client needs it (or deliberately not). */
  path: string;
  headers: Record<string, string>;
  body?: Buffer;
}

interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  ms: number;
}

// -------------------------------------------------------------------------------------------
// Arbitraries

/**
 * Text that costs a backtracking regular expression seconds: `{{` and thousands of spaces (the
 * old template scanner), long runs of `!` before a letter (text_stats), long template paths,
 * an error word repeated.
 */
function pathologicalString(): fc.Arbitrary<string> {
  return fc
    .tuple(
      fc.constantFrom('{{ ', '{{', '{{{', '{{x}', '!', '.?!', '[0]', '.a', 'ECONNREFUSED ', '\t\n\u00a0'),
      fc.integer({ min: 500, max: 4_000 }),
      fc.constantFrom('', 'x', '}}', '{{params.x', 'params.x}}'),
    )
    .map(([unit, count, tail]) => `${unit === '[0]' || unit === '.a' ? '{{params.x' : unit === '\t\n\u00a0' ? '{{' : ''}${unit.repeat(count)}${tail}`);
}

/** Strings that break naive code: lone surrogates, NUL, bidi overrides, emoji, escapes. */
const nastyString = fc.oneof(
  fc.constantFrom(
    '\uD800',
    '\uDFFF',
    'a\uD83D',
    '\uDE00b',
    '\u0000',
    'nul\u0000inside',
    '\u202Eevil\u202C',
    '\u200B\u200D',
    '👩‍👩‍👧‍👦',
    '𝕏🚀',
    'e\u0301\u0301\u0301',
    '\uFFFF',
    '\uFEFF',
    '\\',
    '"',
    "'",
    '\n\r\t',
    '',
    ' ',
    '%00',
    '%ZZ',
    '../..',
    '<script>alert(1)</script>',
    "'; DROP TABLE tasks; --",
    // biome-ignore lint/suspicious/noTemplateCurlyInString: a template literal's syntax, sent as text
    '${process.exit(1)}',
    '{{params.secret}}',
    '{{steps.a.output.token}}',
    '{{constructor.constructor}}',
    '{{__proto__}}',
    '{{ params.x }}{{',
    '}}{{',
    '{{steps.x.output.a[0].b}}',
    '__proto__',
    'constructor',
    'prototype',
    'toString',
  ),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.string({ maxLength: 40 }),
);

const nastyKey = fc.oneof(
  fc.constantFrom('__proto__', 'constructor', 'prototype', 'hasOwnProperty', 'toString', '', '\u0000', '$ref', 'a.b', 'a[0]'),
  nastyString,
);

/** JSON values of every type, with nasty strings (pathological ones too: bodies only, URLs stay short) and keys. */
const nastyValue: fc.Arbitrary<unknown> = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    nastyString,
    pathologicalString(),
    fc.integer(),
    fc.double(),
    fc.constantFrom(null, true, false, 0, -1, 2 ** 53, -(2 ** 63), 1e308, 4.9e-324),
    fc.array(tie('value'), { maxLength: 4 }),
    fc.dictionary(nastyKey, tie('value'), { maxKeys: 4 }),
  ),
})).value;

/** Values that fit, values of the wrong type, and nasty ones. */
const field = <T>(good: fc.Arbitrary<T>) => fc.oneof(good, nastyValue);

const KNOWN_TYPES = ['echo', 'sleep', 'http', 'notify', 'text_stats', 'approve_batches', 'flaky', 'record', 'broken', 'diamond', 'fan_out_fan_in'];
const taskType = fc.oneof(fc.constantFrom(...KNOWN_TYPES), nastyString);
const paramsValue = fc.dictionary(nastyKey, nastyValue, { maxKeys: 5 });

/** Every field of the contract, each right, of the wrong type, or nasty; unknown keys too. */
const messyAssignBody = fc.record(
  {
    task_type: field(taskType),
    params: field(paramsValue),
    idempotency_key: field(fc.string({ maxLength: 300 })),
    priority: field(fc.integer({ min: -5, max: 3_000_000 })),
    delay_ms: field(fc.integer({ min: -5, max: 10 })),
    callback_url: field(fc.constantFrom('http://127.0.0.1:1/x', 'http://169.254.169.254/', 'file:///etc/passwd', 'javascript:alert(1)')),
    retry: field(
      fc.record({
        attempts: field(fc.integer({ min: -1, max: 200 })),
        backoff: field(fc.record({ type: field(fc.constantFrom('fixed', 'exponential', 'linear')), delay_ms: field(fc.integer()) })),
      }),
    ),
    timeout_ms: field(fc.integer({ min: -1, max: 100_000_000 })),
    ['__proto__']: nastyValue,
    constructor: nastyValue,
  },
  { requiredKeys: [] },
);

/** A well-formed submission whose params (and idempotency key) are nasty: it gets past the schema. */
const wellFormedAssignBody = fc.record(
  {
    task_type: fc.constantFrom('echo', 'echo', 'record', 'diamond'),
    params: paramsValue,
    idempotency_key: fc.option(
      nastyString.filter((text) => text.length > 0),
      { nil: undefined },
    ),
  },
  { requiredKeys: ['task_type', 'params'] },
);

const assignBody = fc.oneof({ arbitrary: messyAssignBody, weight: 1 }, { arbitrary: wellFormedAssignBody, weight: 2 });

const stepArb = fc.record(
  {
    id: field(fc.constantFrom('a', 'b', 'c', 'a b', '__proto__', '')),
    tool: field(taskType),
    input: field(paramsValue),
    depends_on: field(fc.array(fc.constantFrom('a', 'b', 'c', 'missing', '__proto__'), { maxLength: 3 })),
    retry: nastyValue,
    timeout_ms: field(fc.integer({ min: -1, max: 100_000_000 })),
    on_failure: field(fc.constantFrom('fail', 'continue', 'explode')),
  },
  { requiredKeys: [] },
);

const messyWorkflowBody = fc.record(
  {
    name: field(fc.oneof(fc.constantFrom('fuzz_flow', 'diamond', 'echo', 'a'.repeat(300), 'Bad Name!', '__proto__'), nastyString)),
    description: field(fc.string()),
    parameters: field(
      fc.array(
        fc.record(
          { name: field(nastyString), type: field(fc.constantFrom('string', 'integer', 'object', 'date')), required: nastyValue, default: nastyValue },
          { requiredKeys: [] },
        ),
        { maxLength: 3 },
      ),
    ),
    steps: field(fc.array(stepArb, { maxLength: 4 })),
    output: nastyValue,
  },
  { requiredKeys: [] },
);

/** A valid definition carrying nasty text: description, literal inputs, output. */
const wellFormedWorkflowBody = fc.record({
  name: fc.stringMatching(/^[a-z][a-z0-9_]{0,20}$/).map((name) => `fuzz_${name}`),
  description: nastyString,
  steps: fc.tuple(paramsValue, paramsValue).map(([a, b]) => [
    { id: 'a', tool: 'echo', input: a },
    { id: 'b', tool: 'echo', depends_on: ['a'], input: b },
  ]),
  output: fc.option(paramsValue, { nil: undefined }),
});

const workflowBody = fc.oneof({ arbitrary: messyWorkflowBody, weight: 1 }, { arbitrary: wellFormedWorkflowBody, weight: 2 });

const executeBody = fc.oneof(
  fc.record(
    { parameters: field(paramsValue), idempotency_key: field(fc.string()), priority: nastyValue, retry: nastyValue, task_type: nastyValue },
    { requiredKeys: [] },
  ),
  fc.record({ parameters: fc.record({ value: nastyString }) }),
);

/** Deeply nested JSON, as text: arrays or objects, up to 60,000 levels (still under the body limit). */
const deepJson = fc.tuple(fc.integer({ min: 100, max: 30_000 }), fc.boolean(), fc.boolean()).map(([depth, objects, wrapped]) => {
  const open = objects ? '{"a":' : '[';
  const close = objects ? '}' : ']';
  const deep = `${open.repeat(depth)}1${close.repeat(depth)}`;
  return wrapped ? `{"task_type":"echo","params":{"deep":${deep}}}` : deep;
});

const malformedJson = fc.constantFrom(
  '',
  '{',
  '}',
  '{"task_type":',
  '{"task_type":"echo",}',
  "{'task_type':'echo'}",
  '{"task_type":"echo" "params":{}}',
  'NaN',
  '{"a":NaN}',
  '{"a":Infinity}',
  '{"a":1e999}',
  '/* c */{}',
  '\uFEFF{"task_type":"echo"}',
  'null',
  'true',
  '"echo"',
  '[]',
  '[{"task_type":"echo"}]',
  '{"a":"\\ud800"}',
  '{"a":"\\u0000"}',
  '{"task_type":"echo","params":{"\\u0000":1}}',
  '{"task_type":"echo","params":{"x":"\\uDFFF\\uD800"}}',
  '{"__proto__":{"polluted":1}}',
  '{"task_type":"echo","params":{"__proto__":{"polluted":1},"constructor":{"prototype":{"polluted":1}}}}',
  '{"task_type":"echo","task_type":"sleep"}',
  '{"task_type":"echo","params":{"a":1,"a":2}}',
  '{"task_type":"\\"}',
  '{"x":"\\q"}',
  '0x10',
  '01',
  '-',
  '{"a":.5}',
);

/** Bodies around and over the body limit. */
const hugeJson = fc
  .integer({ min: BODY_LIMIT_BYTES - 200, max: BODY_LIMIT_BYTES * 4 })
  .map((size) => `{"task_type":"echo","params":{"blob":"${'x'.repeat(size)}"}}`);

/** Bytes that are not UTF-8 at all. */
const invalidUtf8 = fc
  .uint8Array({ minLength: 1, maxLength: 64 })
  .map((bytes) => Buffer.concat([Buffer.from('{"task_type":"echo","params":{"x":"'), Buffer.from([0xff, 0xfe, ...bytes]), Buffer.from('"}}')]));

function bodyFor(operation: Route): fc.Arbitrary<Buffer> {
  const targeted =
    operation.path === '/assign-task'
      ? assignBody
      : operation.path === '/workflows'
        ? workflowBody
        : operation.path.endsWith('/execute')
          ? executeBody
          : fc.dictionary(nastyKey, nastyValue, { maxKeys: 3 });
  return fc
    .oneof(
      { arbitrary: targeted.map((value) => JSON.stringify(value) ?? 'null'), weight: 10 },
      { arbitrary: nastyValue.map((value) => JSON.stringify(value) ?? 'null'), weight: 2 },
      { arbitrary: malformedJson, weight: 2 },
      { arbitrary: deepJson, weight: 2 },
      { arbitrary: hugeJson, weight: 1 },
    )
    .map((text) => Buffer.from(text, 'utf8'))
    .chain((buffer) => fc.oneof({ arbitrary: fc.constant(buffer), weight: 9 }, { arbitrary: invalidUtf8, weight: 1 }));
}

/** A path segment: arbitrary text percent-encoded, or deliberately broken encodings and shapes. */
const segment = fc.oneof(
  { arbitrary: nastyString.map((text) => encodeURIComponent(text.replace(/[\uD800-\uDFFF]/g, 'x'))), weight: 4 },
  {
    arbitrary: fc.constantFrom(
      '%',
      '%ZZ',
      '%E0%A4%A',
      '%C0%AF',
      '%00',
      '%2F',
      '%2e%2e',
      '..',
      '.',
      '~',
      'null',
      'undefined',
      '0',
      '-1',
      'NaN',
      '00000000-0000-0000-0000-000000000000',
      '00000000-0000-4000-8000-000000000000',
      'ffffffff-ffff-ffff-ffff-ffffffffffff',
      'g0000000-0000-4000-8000-000000000000',
      'diamond',
      'echo',
      '__proto__',
      'constructor',
      `${'a'.repeat(4_000)}`,
      '%F0%9F%92%A9',
      '%ED%A0%80',
    ),
    weight: 3,
  },
  { arbitrary: fc.uuid().map(String), weight: 2 },
);

const queryValue = fc.oneof(
  nastyString.map((text) => encodeURIComponent(text.replace(/[\uD800-\uDFFF]/g, 'x'))),
  fc.constantFrom(
    '%',
    '%ZZ',
    '1e999',
    '-1',
    '0',
    '31',
    '1.5',
    'NaN',
    'true',
    '',
    'queued',
    'completed',
    '__proto__',
    '2020-01-01T00:00:00Z',
    'not-a-date',
    '1h',
    '0s',
    '999999d',
    'eyJ4IjoxfQ',
    `${'z'.repeat(500)}`,
  ),
  fc.constantFrom('0000-01-01T00:00:00Z', '0001-01-01T00:00:00%2B14:00', '9999-12-31T23:59:59Z', '2020-02-30T00:00:00Z', '2020-01-01T00:00:00.123456789Z'),
);

function queryFor(operation: Route): fc.Arbitrary<string> {
  const known = Object.keys(operation.query?.shape ?? {});
  const name = fc.oneof(...(known.length > 0 ? [{ arbitrary: fc.constantFrom(...known), weight: 4 }] : []), {
    arbitrary: fc.constantFrom('__proto__', 'constructor', '__proto__[polluted]', 'constructor[prototype][polluted]', 'a[]', 'a[b]', 'wait', 'limit', 'status'),
    weight: 1,
  });
  return fc
    .array(fc.tuple(name, queryValue), { maxLength: 4 })
    .map((pairs) => (pairs.length === 0 ? '' : `?${pairs.map(([key, value]) => `${encodeURIComponent(key)}=${value}`).join('&')}`));
}

const contentType = fc.constantFrom(
  'application/json',
  'application/json',
  'application/json; charset=utf-8',
  'application/json; charset=latin1',
  'application/json; charset=utf-16',
  'application/json; charset=nonsense',
  'text/plain',
  'application/x-www-form-urlencoded',
  'multipart/form-data; boundary=x',
  'application/xml',
  'application/merge-patch+json',
  'application/vnd.api+json',
  '*/*',
  'application/json, text/plain',
  '',
);

/** Methods Node's HTTP parser knows, so the request reaches the application. */
const ODD_METHODS = ['PUT', 'PATCH', 'DELETE', 'OPTIONS', 'HEAD', 'PROPFIND', 'PURGE', 'SEARCH', 'LOCK', 'MKCOL', 'COPY', 'REPORT', 'TRACE', 'LINK', 'QUERY'];

function requestFor(operation: Route, params: { ids: string[] }): fc.Arbitrary<RawRequest> {
  const template = operation.path;
  const pathArb = fc
    .array(fc.oneof({ arbitrary: segment, weight: 4 }, { arbitrary: fc.constantFrom(...params.ids), weight: 1 }), { minLength: 4, maxLength: 4 })
    .map((values) => {
      let index = 0;
      return template.replace(/\{[^}]+\}/g, () => values[index++]!);
    });
  const method = fc.oneof({ arbitrary: fc.constant(operation.method.toUpperCase()), weight: 8 }, { arbitrary: fc.constantFrom(...ODD_METHODS), weight: 2 });
  // Mostly what a client sends, so that most bodies reach the handlers; sometimes not.
  const headers = fc.record({
    'content-type': fc.oneof({ arbitrary: fc.constant('application/json'), weight: 5 }, { arbitrary: contentType, weight: 1 }),
    'last-event-id': fc.option(
      fc.oneof(fc.constantFrom('0-0', '1-1', '-1', 'abc', '9'.repeat(40), '1700000000000-0'), fc.string({ unit: 'grapheme-ascii', maxLength: 20 })),
      { nil: undefined },
    ),
    'content-encoding': fc.oneof(
      { arbitrary: fc.constant(undefined), weight: 9 },
      { arbitrary: fc.constantFrom('gzip', 'deflate', 'br', 'identity', 'nonsense'), weight: 1 },
    ),
    accept: fc.option(fc.constantFrom('text/html', 'application/xml', '*/*', 'text/event-stream'), { nil: undefined }),
  });
  return fc
    .record({ method, path: pathArb, query: queryFor(operation), headers, body: fc.option(bodyFor(operation), { nil: undefined, freq: 3 }) })
    .map(({ method: verb, path, query, headers: extra, body }) => {
      const carriesBody = body !== undefined && verb !== 'GET' && verb !== 'HEAD';
      const finalHeaders: Record<string, string> = Object.fromEntries(
        Object.entries(extra).filter((entry): entry is [string, string] => entry[1] !== undefined && (carriesBody || entry[0] !== 'content-type')),
      );
      // A body that claims a compression it does not have, only sometimes.
      if (!carriesBody) delete finalHeaders['content-encoding'];
      return { method: verb, path: `${path}${query}`, headers: finalHeaders, ...(carriesBody ? { body } : {}) };
    });
}

// -------------------------------------------------------------------------------------------

/** Writes raw bytes to the server and returns everything it answers before closing. */
function rawExchange(url: URL, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(url.port), url.hostname, () => socket.write(text));
    let answer = '';
    socket.setTimeout(ANSWER_MS, () => socket.destroy(new Error(`no answer within ${ANSWER_MS} ms`)));
    socket.on('data', (chunk: Buffer) => (answer += chunk.toString('utf8')));
    socket.on('end', () => resolve(answer));
    socket.on('error', reject);
  });
}

/**
 * Polls GET /health back to back while the fuzzing runs. The API runs in this process, so a
 * request that holds the event loop (a backtracking regular expression, a huge copy) shows as a
 * slow /health answer; the requests being handled meanwhile are kept, to be tried again.
 */
class HealthProbe<R> {
  /** Answers that took 100 ms more than the slowest idle one, with the requests handled meanwhile. */
  readonly stalls: { ms: number; during: R[] }[] = [];
  private readonly latencies: number[] = [];
  private running = true;
  private loop: Promise<void> = Promise.resolve();
  private inFlight: R | undefined;

  private constructor(
    private readonly h: Harness,
    /** The slowest of 30 answers before the fuzzing started. */
    readonly idleMs: number,
  ) {}

  static async start<R>(h: Harness): Promise<HealthProbe<R>> {
    const idle: number[] = [];
    for (let i = 0; i < 30; i += 1) idle.push(await HealthProbe.answer(h));
    const probe = new HealthProbe<R>(h, Math.max(...idle));
    probe.loop = probe.poll();
    return probe;
  }

  get boundMs(): number {
    return this.idleMs + 100;
  }

  /** The request being handled now (undefined between requests). */
  handling(request: R | undefined): void {
    this.inFlight = request;
  }

  private static async answer(h: Harness): Promise<number> {
    const started = performance.now();
    const response = await h.request('GET', '/health');
    if (response.status !== 200) throw new Error(`GET /health answered ${response.status}`);
    return performance.now() - started;
  }

  private async poll(): Promise<void> {
    while (this.running) {
      const first = this.inFlight;
      const ms = await HealthProbe.answer(this.h);
      this.latencies.push(ms);
      const during = [...new Set([first, this.inFlight])].filter((request): request is R => request !== undefined);
      if (ms >= this.boundMs) this.stalls.push({ ms: Math.round(ms), during });
      // A pause between probes, short beside the 100 ms a stall must add: back to back, the probe
      // took as much of the in-process API as the fuzzing did.
      await new Promise((resolve) => setTimeout(resolve, PROBE_GAP_MS));
    }
  }

  /** Stops polling; the answers seen: how many, the 99th percentile and the slowest. */
  async stop() {
    this.running = false;
    await this.loop;
    const sorted = [...this.latencies].sort((a, b) => a - b);
    return {
      idle_ms: Math.round(this.idleMs),
      answers: sorted.length,
      p99_ms: Math.round(sorted[Math.floor(sorted.length * 0.99)] ?? 0),
      slowest_ms: Math.round(sorted.at(-1) ?? 0),
      stalls: this.stalls.length,
    };
  }

  /** The slowest /health answer while `work` runs (after stop). */
  async slowestDuring(work: () => Promise<unknown>): Promise<number> {
    let done = false;
    let slowest = 0;
    const polling = (async () => {
      do slowest = Math.max(slowest, await HealthProbe.answer(this.h));
      while (!done);
    })();
    await work().finally(() => (done = true));
    await polling;
    return slowest;
  }
}

describe('every endpoint under bad input (fast-check)', () => {
  let h: Harness;
  /** The run roots' queue and every tool queue: a one-tool task's run is a job in its tool's queue. */
  let jobQueues: Queue[];
  const ids: string[] = [];
  let tried = 0;
  /** Answers 2xx: a fuzz run that accepts nothing proves nothing about accepted input. */
  let accepted = 0;
  const statuses = new Map<number, number>();
  const prototypeKeysBefore = Object.getOwnPropertyNames(Object.prototype).sort();
  let health: HealthProbe<RawRequest>;
  let consoleDir: string | undefined;

  beforeAll(async () => {
    // No worker: nothing changes the database behind the test's back between two requests.
    // A built console, as a deployment has (run from its sources, /console answers 503: build it).
    consoleDir = mkdtempSync(path.join(tmpdir(), 'console-'));
    writeFileSync(path.join(consoleDir, 'index.html'), '<!doctype html><title>console</title>');
    h = await createHarness({
      worker: false,
      tools: testTools,
      env: { BODY_LIMIT: `${BODY_LIMIT_BYTES}b`, RESULT_WAIT_MAX_S: '1', CONSOLE_DIR: consoleDir },
    });
    jobQueues = [TIMERS_QUEUE, ...h.registry.names().map(toolQueueName)].map((name) => new Queue(name, { connection: h.redis, prefix: h.config.QUEUE_PREFIX }));
    // Real ids among the generated ones: a queued task and a cancelled one.
    ids.push(await submit(h, { task_type: 'echo', params: { real: 1 } }));
    const cancelled = await submit(h, { task_type: 'echo', params: { real: 2 } });
    expect((await h.request('POST', `/tasks/${cancelled}/cancel`)).status).toBe(200);
    ids.push(cancelled);
    // A workflow whose first step takes a parameter 900 times: any value over about a kilobyte
    // makes an input over STEP_INPUT_MAX_BYTES. (No generated definition can take its name: they
    // have no "-".)
    const amplify = await h.request('POST', '/workflows', {
      name: 'fuzz-amplify',
      parameters: [{ name: 'big', type: 'string' }],
      steps: [{ id: 'a', tool: 'echo', input: { f0: '{{params.big}}'.repeat(450), f1: '{{params.big}}'.repeat(450) } }],
    });
    expect(amplify.status).toBe(201);
    health = await HealthProbe.start<RawRequest>(h);
  });
  afterAll(async () => {
    const seen = await health?.stop();
    for (const queue of jobQueues ?? []) await queue.close();
    await h?.close();
    if (consoleDir) rmSync(consoleDir, { recursive: true, force: true });
    console.log(
      `[fuzz endpoints] inputs_tried=${tried} statuses=${JSON.stringify(Object.fromEntries([...statuses].sort(([a], [b]) => a - b)))} health=${JSON.stringify(seen)}`,
    );
  });

  async function counts(): Promise<string> {
    const { rows } = await h.db.pool.query(
      `SELECT (SELECT count(*) FROM tasks) AS tasks, (SELECT count(*) FROM steps) AS steps,
              (SELECT count(*) FROM workflows) AS workflows, (SELECT count(*) FROM dead_letters) AS dead_letters`,
    );
    // The queues at once: one round trip's wait, not one per queue, twice per request.
    const perQueue = await Promise.all(
      jobQueues.map((queue) => queue.getJobCountByTypes('waiting', 'delayed', 'prioritized', 'waiting-children', 'active', 'completed', 'failed')),
    );
    return JSON.stringify({ ...rows[0], jobs: perQueue.reduce((sum, count) => sum + count, 0) });
  }

  function send(request: RawRequest): Promise<RawResponse> {
    const url = new URL(h.url);
    const started = Date.now();
    return new Promise((resolve, reject) => {
      const req = http.request(
        {
          host: url.hostname,
          port: url.port,
          method: request.method,
          path: request.path,
          headers: { ...request.headers, ...(request.body ? { 'content-length': String(request.body.length) } : {}) },
          timeout: ANSWER_MS,
          agent: false,
        },
        (res) => {
          const chunks: Buffer[] = [];
          // An event stream only ends with its task: its headers are the answer.
          if (String(res.headers['content-type']).startsWith('text/event-stream')) {
            res.destroy();
            resolve({ status: res.statusCode!, headers: res.headers, text: '', ms: Date.now() - started });
            return;
          }
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('end', () =>
            resolve({ status: res.statusCode!, headers: res.headers, text: Buffer.concat(chunks).toString('utf8'), ms: Date.now() - started }),
          );
          res.on('error', reject);
        },
      );
      req.on('timeout', () => req.destroy(new Error(`no answer within ${ANSWER_MS} ms`)));
      req.on('error', reject);
      req.end(request.body);
    });
  }

  /** Sends a request and checks the properties every answer must have. */
  async function check(request: RawRequest, htmlAnswers: ReadonlySet<number> = new Set()): Promise<RawResponse> {
    const before = await counts();
    health.handling(request);
    const response = await send(request).finally(() => health.handling(undefined));
    tried += 1;
    statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1);
    if (response.status >= 200 && response.status < 300) accepted += 1;
    const what = `${request.method} ${request.path.slice(0, 300)} -> ${response.status} ${response.text.slice(0, 300)}`;
    expect(response.status, what).toBeLessThan(500);
    if (response.status >= 400) {
      // A page for people (an approval link's) answers its refusals as pages, as documented.
      // (Other methods on its path get the contract's error body like any unknown route.)
      if (htmlAnswers.has(response.status) && String(response.headers['content-type']).startsWith('text/html')) {
        if (request.method !== 'HEAD') expect(response.text, what).toMatch(/<h1>[^<]+<\/h1>/);
      } else if (request.method !== 'HEAD') {
        let body: any;
        expect(() => (body = JSON.parse(response.text)), `${what}: the error body is not JSON`).not.toThrow();
        expect(typeof body?.error?.code, `${what}: error.code`).toBe('string');
        expect(body.error.code, what).toMatch(ERROR_CODE);
        expect(typeof body.error.message, `${what}: error.message`).toBe('string');
      }
      expect(await counts(), `${what}: a refused request changed what is stored`).toBe(before);
    }
    return response;
  }

  /** The statuses an operation documents as HTML pages. */
  const htmlAnswers = (operation: (typeof ROUTES)[number]) =>
    new Set(
      Object.entries(operation.responses)
        .filter(([, reply]) => reply.mediaType === 'text/html')
        .map(([status]) => Number(status)),
    );

  it.each(ROUTES.map((operation) => [`${operation.method.toUpperCase()} ${operation.path}`, operation] as const))(
    '%s: never a 5xx, always the error body, nothing stored when refused',
    async (_name, operation) => {
      // ?wait on a real task and its event stream hold the request on purpose: unknown ids there.
      const usable = operation.path === '/result/{task_id}' || operation.path === '/tasks/{task_id}/events' ? ['00000000-0000-4000-8000-000000000000'] : ids;
      await fc.assert(
        fc.asyncProperty(requestFor(operation, { ids: usable }), async (request) => {
          await check(request, htmlAnswers(operation));
        }),
        { numRuns: RUNS, ...(SEED !== undefined ? { seed: SEED } : {}) },
      );
    },
    300_000,
  );

  it('answers odd methods, content types and encodings on any path with a contract error, never a 5xx', async () => {
    const anyPath = fc.oneof(
      fc.constantFrom(
        '/',
        '/assign-task/',
        '/assign-task//',
        '//assign-task',
        '/ASSIGN-TASK',
        '/tasks/',
        '/nope',
        '/admin',
        '/metrics/x',
        '/docs/../tools',
        '/%2e%2e/tools',
      ),
      segment.map((value) => `/${value}`),
    );
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          method: fc.constantFrom(...ODD_METHODS, 'POST', 'GET'),
          path: anyPath,
          contentType,
          encoding: fc.constantFrom('gzip', 'deflate', 'br', 'identity', 'nonsense', undefined),
          body: fc.option(bodyFor(ROUTES[0]!), { nil: undefined }),
        }),
        async ({ method, path, contentType: type, encoding, body }) => {
          const carries = body !== undefined && method !== 'GET' && method !== 'HEAD';
          await check({
            method,
            path,
            headers: { ...(carries && type ? { 'content-type': type } : {}), ...(carries && encoding ? { 'content-encoding': encoding } : {}) },
            ...(carries ? { body } : {}),
          });
        },
      ),
      { numRuns: RUNS * 2, ...(SEED !== undefined ? { seed: SEED } : {}) },
    );
  }, 300_000);

  it('stores, unchanged, or cleanly refuses well-formed requests carrying nasty values (templates, unicode, odd keys)', async () => {
    const wellFormed = fc.oneof(
      wellFormedAssignBody.map((body) => ({ path: '/assign-task', body: body as Record<string, unknown> })),
      wellFormedWorkflowBody.map((body) => ({ path: '/workflows', body: body as Record<string, unknown> })),
      fc.record({ value: nastyString }).map((parameters) => ({ path: '/workflows/diamond/execute', body: { parameters } as Record<string, unknown> })),
    );
    await fc.assert(
      fc.asyncProperty(wellFormed, async ({ path, body }) => {
        const text = JSON.stringify(body);
        const response = await check({ method: 'POST', path, headers: { 'content-type': 'application/json' }, body: Buffer.from(text, 'utf8') });
        if (response.status !== 202 || body.task_type !== 'echo') return;
        // Accepted params are stored as sent: template syntax stays text, odd keys stay keys. (A
        // top-level "__proto__" key is dropped by zod's record parsing, which keeps prototypes safe.)
        const sent = JSON.parse(text).params as Record<string, unknown>;
        // biome-ignore lint/suspicious/noProto: the key sent, not the prototype accessor, is what goes
        delete sent.__proto__;
        const { rows } = await h.db.pool.query<{ params: unknown }>(`SELECT params FROM tasks WHERE id = $1`, [JSON.parse(response.text).task_id]);
        expect(rows[0]?.params).toEqual(sent);
      }),
      { numRuns: RUNS * 2, ...(SEED !== undefined ? { seed: SEED } : {}) },
    );
  }, 300_000);

  it('answers a request the HTTP parser refuses (unknown method, broken header) with 400 and stays up', async () => {
    const url = new URL(h.url);
    for (const head of ['FOO /tools HTTP/1.1', 'GET /tools HTTP/1.1\r\nBad Header', 'GET /to ols HTTP/1.1']) {
      const answer = await rawExchange(url, `${head}\r\nHost: x\r\n\r\n`);
      tried += 1;
      expect(answer, head).toMatch(/^HTTP\/1\.1 400 /);
    }
    expect((await h.request('GET', '/health')).status).toBe(200);
  });

  it('answers a request the HTTP parser refuses with the contract error body', async () => {
    const answer = await rawExchange(new URL(h.url), 'FOO /tools HTTP/1.1\r\nHost: x\r\n\r\n');
    const body = answer.slice(answer.indexOf('\r\n\r\n') + 4);
    expect(JSON.parse(body).error.code).toBe('bad_request');
  });

  /** A 4xx with the contract's error body. */
  function expectClientError(response: { status: number; body: any }, what: string) {
    expect(response.status, `${what}: ${JSON.stringify(response.body).slice(0, 300)}`).toBeGreaterThanOrEqual(400);
    expect(response.status, what).toBeLessThan(500);
    expect(response.body?.error?.code, what).toMatch(ERROR_CODE);
    expect(typeof response.body.error.message, what).toBe('string');
  }

  it('answers a path parameter with a broken percent-encoding with a 4xx, not a 500', async () => {
    for (const path of [
      '/result/%ZZ',
      '/tasks/%E0%A4%A',
      '/tasks/%/cancel',
      '/workflows/%C0%AF',
      '/workflows/%ED%A0%80/versions',
      '/dead-letters/%ZZ/replay',
    ]) {
      const method = path.endsWith('cancel') || path.endsWith('replay') ? 'POST' : 'GET';
      expectClientError(await h.request(method, path), `${method} ${path}`);
    }
  });

  it('answers deeply nested JSON (10,000 levels) with a 4xx, not a 500', async () => {
    const deep = `${'['.repeat(10_000)}1${']'.repeat(10_000)}`;
    for (const [path, body] of [
      ['/assign-task', `{"task_type":"echo","params":{"deep":${deep}}}`],
      ['/workflows', `{"name":"deep_flow","steps":[{"id":"a","tool":"echo","input":{"deep":${deep}}}]}`],
      ['/workflows/diamond/execute', `{"parameters":{"value":${deep}}}`],
    ] as const) {
      expectClientError(await h.request('POST', path, body), path);
    }
  });

  it('answers a lone surrogate in params, keys, idempotency keys or definitions with a 4xx, not a 500', async () => {
    for (const [path, body] of [
      ['/assign-task', '{"task_type":"echo","params":{"x":"\\ud800"}}'],
      ['/assign-task', '{"task_type":"echo","params":{"\\udfff":1}}'],
      ['/assign-task', '{"task_type":"echo","params":{},"idempotency_key":"key-\\ud800"}'],
      ['/workflows', '{"name":"surrogate_flow","description":"\\ud800","steps":[{"id":"a","tool":"echo","input":{}}]}'],
    ] as const) {
      expectClientError(await h.request('POST', path, body), `${path} ${body}`);
    }
  });

  it('stores a "__proto__": null key inside a workflow definition as a plain key (201), not a 500', async () => {
    for (const [body, where] of [
      ['{"name":"proto_output","steps":[{"id":"a","tool":"echo","input":{}}],"output":{"__proto__":null}}', (stored: any) => stored.output],
      ['{"name":"proto_input","steps":[{"id":"a","tool":"echo","input":{"x":{"__proto__":null}}}]}', (stored: any) => stored.steps[0].input.x],
    ] as const) {
      const response = await h.request('POST', '/workflows', body);
      expect(response.status, `${body}: ${JSON.stringify(response.body).slice(0, 300)}`).toBe(201);
      const stored = where((await h.request('GET', `/workflows/${response.body.name}`)).body);
      expect(Object.getOwnPropertyDescriptor(stored, '__proto__')?.value, body).toBeNull();
      expect(Object.getPrototypeOf(stored), body).toBe(Object.prototype);
    }
  });

  it('answers dates before year 1 with a 4xx, not a 500', async () => {
    for (const path of [
      '/tasks?created_after=0000-01-01T00:00:00Z',
      '/tasks?created_before=0001-01-01T00:00:00%2B14:00',
      '/stats?since=0000-01-01T00:00:00Z',
      '/stats?window=999999d',
    ]) {
      expectClientError(await h.request('GET', path), path);
    }
  });

  it('answers pathological templates, size amplification and quadratic-regex text at once: refused (4xx) or accepted, never held', async () => {
    const MIB = 1_048_576;
    const definitions = fc.oneof(
      // Many references to one parameter: over TEMPLATE_MAX_REFERENCES (1,000) or within it.
      fc.record({ fields: fc.integer({ min: 1, max: 9 }), references: fc.integer({ min: 1, max: 450 }) }).map(({ fields, references }) => ({
        expected: fields * references > 1_000 ? 400 : 201,
        body: {
          name: 'fuzz_references',
          parameters: [{ name: 'big', type: 'string' }],
          steps: [
            {
              id: 'a',
              tool: 'echo',
              input: Object.fromEntries(Array.from({ length: fields }, (_, index) => [`f${index}`, '{{params.big}}'.repeat(references)])),
            },
          ],
        },
      })),
      // Text that made a regular expression backtrack, where templates are scanned.
      pathologicalString().map((text) => ({
        expected: undefined,
        body: { name: 'fuzz_pathological', steps: [{ id: 'a', tool: 'echo', input: { text } }], output: { text } },
      })),
    );
    const requests = fc.oneof(
      definitions.map(({ expected, body }) => ({ path: '/workflows', expected, body })),
      // fuzz-amplify takes `big` 900 times: refused once its input would pass STEP_INPUT_MAX_BYTES.
      fc.integer({ min: 0, max: 60_000 }).map((size) => ({
        path: '/workflows/fuzz-amplify/execute',
        expected: 17 + 900 * size > MIB ? 400 : 202,
        body: { parameters: { big: 'x'.repeat(size) } },
      })),
      pathologicalString().map((text) => ({ path: '/assign-task', expected: 202, body: { task_type: 'echo', params: { text } } })),
    );
    let acceptedHere = 0;
    await fc.assert(
      fc.asyncProperty(requests, async ({ path, expected, body }) => {
        const response = await check({
          method: 'POST',
          path,
          headers: { 'content-type': 'application/json' },
          body: Buffer.from(JSON.stringify(body), 'utf8'),
        });
        if (expected !== undefined) expect(response.status, `${path} ${response.text.slice(0, 300)}`).toBe(expected);
        if (response.status < 300) acceptedHere += 1;
      }),
      { numRuns: RUNS, ...(SEED !== undefined ? { seed: SEED } : {}) },
    );
    expect(acceptedHere, 'requests accepted').toBeGreaterThanOrEqual(RUNS / 4);
  }, 300_000);

  it('accepted a fair share of the inputs, and none of them held /health up', async () => {
    expect(accepted, `2xx answers of ${tried}`).toBeGreaterThanOrEqual(Math.max(20, tried / 10));
    const seen = await health.stop();
    expect(seen.answers).toBeGreaterThan(0);
    // A slow /health answer is the input's doing only if handling the same request again slows
    // /health again, by 100 ms more than /health is slow right then without it (measured over
    // as long), three times out of three: this machine is shared, and its pauses do not follow
    // the input. A super-linear input stalls every time, by far more.
    const confirmed: string[] = [];
    for (const request of new Set(health.stalls.flatMap((stall) => stall.during))) {
      let excess = Number.POSITIVE_INFINITY;
      for (let i = 0; i < 3 && excess >= 100; i += 1) {
        const started = performance.now();
        const withInput = await health.slowestDuring(() => send(request));
        const without = await health.slowestDuring(() => new Promise((resolve) => setTimeout(resolve, performance.now() - started)));
        excess = Math.min(excess, withInput - without);
      }
      if (excess >= 100)
        confirmed.push(
          `${Math.round(excess)} ms over idle: ${request.method} ${request.path.slice(0, 100)} ${request.body?.subarray(0, 200).toString('utf8') ?? ''}`,
        );
    }
    expect(confirmed, `inputs that held /health 100 ms longer than it took without them (idle: ${seen.idle_ms} ms)`).toEqual([]);
  });

  it('is still alive and unpolluted afterwards', async () => {
    const health = await h.request('GET', '/health');
    expect(health.status).toBe(200);
    expect(health.body.checks).toEqual({ redis: 'up', database: 'up' });
    expect(Object.getOwnPropertyNames(Object.prototype).sort()).toEqual(prototypeKeysBefore);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    // It still does its job.
    expect((await h.request('POST', '/assign-task', { task_type: 'echo', params: { after: 'fuzzing' } })).status).toBe(202);
  });
});
