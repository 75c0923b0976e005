import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NonRetryableError } from '../../src/lib/errors.js';
import type { ServiceOperation } from '../../src/tools/openapi-operations.js';
import { operationRequest, pathProblems, runtimeType, type ServiceTarget } from '../../src/tools/openapi-tools.js';
import { closeTestConnections } from '../fixtures/tools.js';
import { createHarness, type Harness, submit, waitForTask } from '../helpers/harness.js';
import { json, startServer, type TestServer } from '../helpers/http-server.js';

/**
 * Issue 28, finding 6: `encodeURIComponent("..")` is `..`, and `new URL` resolves it, so a path
 * parameter could climb out of the service's base_url (`/tenants/42` reached `/tenants/43`, with
 * the operator's credentials). A value that would change the path's structure is refused at
 * submit and again at call time, and the final URL must stay under base_url's path.
 */

const TEMPLATES = ['/a/{x}/{y}', '/{x}', '/{x}/items/{y}', '/a/{x}{y}.json', '/files/{x}', '/{x}{y}'];
const BASES = ['http://service.test/v1', 'http://service.test/tenants/42/', 'http://service.test'];

function operation(path: string): ServiceOperation {
  const names = [...path.matchAll(/\{([^}]+)\}/g)].map((match) => match[1]!);
  const inputSchema = {
    type: 'object',
    properties: { path: { type: 'object', properties: Object.fromEntries(names.map((name) => [name, { type: 'string' }])), required: names } },
    required: ['path'],
  };
  return {
    operationId: 'op',
    tool: 'svc.op',
    method: 'GET',
    path,
    summary: path,
    parameters: names.map((name) => ({ name, in: 'path' as const, required: true, schema: { type: 'string' } })),
    inputSchema: inputSchema as ServiceOperation['inputSchema'],
    outputSchema: {},
  };
}

const target = (baseUrl: string): ServiceTarget => ({ name: 'svc', baseUrl, headers: {}, timeoutMs: 1_000 });
const basePath = (baseUrl: string) => new URL(baseUrl).pathname.replace(/\/+$/, '');

/** A value of a path parameter: any text, weighted towards what could climb or split a path. */
const segmentValue = fc.oneof(
  fc.constantFrom('.', '..', '...', '', '/', '../', '/..', '..\\', '%2e%2e', '%2E.', '.%2e', '..;', '?', '#', ' ', '\u3002', '..%00', 'ok'),
  fc.string({ unit: fc.constantFrom('.', '/', '\\', '%', '2', 'e', 'E', 'f', 'F', '?', '#', ';', 'a') }),
  fc.string({ unit: 'grapheme' }),
);

describe('path parameters stay in their segment', () => {
  it('never leaves the base path, for any value: a request that would is refused, and submit refuses the same values (property)', () => {
    fc.assert(
      fc.property(fc.constantFrom(...TEMPLATES), fc.constantFrom(...BASES), segmentValue, segmentValue, (template, baseUrl, x, y) => {
        const input = { path: { x, y } };
        const submitted = runtimeType(operation(template).inputSchema, (value) => pathProblems(template, (value as typeof input).path)).safeParse(input);
        let url: URL;
        try {
          url = new URL(operationRequest(target(baseUrl), operation(template), input).url);
        } catch (error) {
          expect(error).toBeInstanceOf(NonRetryableError);
          // What the call refuses, submit refused already.
          expect(submitted.success).toBe(false);
          return;
        }
        expect(submitted.success).toBe(true);
        const base = basePath(baseUrl);
        expect(url.origin).toBe('http://service.test');
        expect(url.pathname.startsWith(`${base}/`)).toBe(true);
        // As many segments as the template has: no value added, removed or climbed one.
        expect(url.pathname.slice(base.length).split('/').length).toBe(template.split('/').length);
        expect(url.search).toBe('');
        expect(url.hash).toBe('');
      }),
      { numRuns: 2_000 },
    );
  });

  it('refuses `..` and `.` in every position of the template, at submit with the parameter and at call time', () => {
    const template = '/a/{x}/{y}/b';
    const cases: [Record<string, string>, string[]][] = [
      [{ x: '..', y: 'ok' }, ['x']],
      [{ x: 'ok', y: '..' }, ['y']],
      [{ x: '..', y: '..' }, ['x', 'y']],
      [{ x: '.', y: 'ok' }, ['x']],
      [{ x: 'ok', y: '.' }, ['y']],
      [{ x: '', y: 'ok' }, ['x']],
    ];
    for (const [path, names] of cases) {
      expect(
        pathProblems(template, path).map((problem) => problem.path),
        JSON.stringify(path),
      ).toEqual(names.map((name) => ['path', name]));
      expect(() => operationRequest(target('http://service.test/tenants/42'), operation(template), { path }), JSON.stringify(path)).toThrow(NonRetryableError);
    }
    // Two parameters that only together make `..` are both named.
    expect(pathProblems('/a/{x}{y}', { x: '.', y: '.' }).map((problem) => problem.path)).toEqual([
      ['path', 'x'],
      ['path', 'y'],
    ]);
    expect(pathProblems('/{x}', { x: '..' })).toHaveLength(1);
    expect(pathProblems('/{x}.json', { x: '..' })).toEqual([]);
    // A slash stays in its segment, encoded: it is a value, not a separator.
    expect(operationRequest(target('http://service.test/tenants/42'), operation('/a/{x}'), { path: { x: '../43' } }).url).toBe(
      'http://service.test/tenants/42/a/..%2F43',
    );
  });
});

describe('path parameters against a local service', () => {
  let h: Harness;
  let service: TestServer;
  const document = {
    openapi: '3.0.3',
    info: { title: 'Tenants', version: '1' },
    paths: {
      '/users/{user}/files/{file}': {
        get: {
          operationId: 'getFile',
          parameters: [
            { name: 'user', in: 'path', required: true, schema: { type: 'string', pattern: '^[a-z0-9-]+$' } },
            { name: 'file', in: 'path', required: true, schema: { type: 'string' } },
          ],
          responses: { '200': { description: 'a file', content: { 'application/json': { schema: { type: 'object' } } } } },
        },
      },
    },
  };

  beforeAll(async () => {
    service = await startServer((request, res) => (request.path === '/openapi.json' ? json(res, 200, document) : json(res, 200, { path: request.path })));
    h = await createHarness({ env: { HTTP_TOOL_ALLOWED_HOSTS: `127.0.0.1:${service.port}`, SERVICE_HEALTH_INTERVAL_MS: '0' } });
    const registered = await h.request('POST', '/services', {
      name: 'tenant',
      base_url: `${service.origin}/tenants/42`,
      openapi_url: `${service.origin}/openapi.json`,
    });
    expect(registered.status, JSON.stringify(registered.body)).toBe(201);
  });
  afterAll(async () => {
    await h?.close();
    await service?.close();
    await closeTestConnections();
  });

  it('answers 400 at submit naming the parameter, for `..`, `.` and a value its pattern refuses; a fair value is called under base_url', async () => {
    for (const [path, where] of [
      [{ user: 'alice', file: '..' }, 'params.path.file'],
      [{ user: '..', file: '..' }, 'params.path.user'],
      [{ user: 'alice', file: '.' }, 'params.path.file'],
      [{ user: 'Alice', file: 'a.txt' }, 'params.path.user'],
    ] as const) {
      const refused = await h.request('POST', '/assign-task', { task_type: 'tenant.getFile', params: { path } });
      expect(refused.status, JSON.stringify(path)).toBe(400);
      expect(refused.body.error.code).toBe('invalid_params');
      expect(refused.body.error.details.map((problem: { path: string }) => problem.path)).toContain(where);
    }
    const done = await waitForTask(h, await submit(h, { task_type: 'tenant.getFile', params: { path: { user: 'alice', file: '../43' } } }));
    expect(done.status).toBe('completed');
    expect(done.result).toEqual({ path: '/tenants/42/users/alice/files/..%2F43' });
  });

  it('fails a templated `..` at call time, without retry and without calling the service', async () => {
    const stored = await h.request('POST', '/workflows', {
      name: 'read_file',
      parameters: [{ name: 'file', type: 'string', required: true }],
      steps: [{ id: 'read', tool: 'tenant.getFile', input: { path: { user: 'alice', file: '{{params.file}}' } } }],
    });
    expect(stored.status, JSON.stringify(stored.body)).toBe(201);
    const before = service.requests.length;
    const run = await h.request('POST', '/workflows/read_file/execute', { parameters: { file: '..' } });
    const task = await waitForTask(h, run.body.task_id);
    expect(task.status).toBe('failed');
    expect(task.steps[0]).toMatchObject({ status: 'failed', attempts: 1, error: { retryable: false } });
    expect(JSON.stringify(task.steps[0].error)).toMatch(/climb out/);
    expect(service.requests.length).toBe(before);
  });
});
