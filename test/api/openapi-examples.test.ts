import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildOpenApiDocument, type OpenApiDocument } from '../../src/api/openapi.js';
import type { Route } from '../../src/api/route.js';
import { ROUTES } from '../../src/api/routes/index.js';
import { createHarness, type Harness, waitForTask } from '../helpers/harness.js';
import { DocumentSchemas, pointerSegment } from '../helpers/openapi.js';

/**
 * The examples of the API description cannot rot: each fits its schema (a request example the
 * zod schema its route validates with), and each request example, sent as Swagger UI's
 * "Try it out" sends it, succeeds on a default install.
 */

const doc: OpenApiDocument = JSON.parse(JSON.stringify(buildOpenApiDocument()));
const schemas = new DocumentSchemas(doc);
const name = (operation: Route) => `${operation.method.toUpperCase()} ${operation.path}`;
const documented = (operation: Route) => doc.paths[operation.path]![operation.method]! as Record<string, any>;
const pointer = (operation: Route, ...rest: string[]) => ['', 'paths', operation.path, operation.method, ...rest].map(pointerSegment).join('/');

/** The URL "Try it out" calls: path parameters filled in with their examples, and the query parameters that have one. */
function exampleUrl(operation: Route): string {
  const path = operation.path.replace(/\{(\w+)\}/g, (_match, parameter: string) => {
    const value = operation.paramExamples?.[parameter];
    if (value === undefined) throw new Error(`${name(operation)}: no example for {${parameter}}`);
    return encodeURIComponent(String(value));
  });
  const query = Object.entries(operation.paramExamples ?? {}).filter(([parameter]) => operation.query?.shape[parameter] !== undefined);
  return query.length === 0 ? path : `${path}?${new URLSearchParams(query.map(([parameter, value]): [string, string] => [parameter, String(value)]))}`;
}

/** Answers only errors, 410 among them: a seed's route with no counterpart here (src/api/routes/compat). */
const gone = (operation: Route) => operation.responses[410] !== undefined && Object.keys(operation.responses).every((status) => Number(status) >= 400);

const tryable = (operation: Route) =>
  !gone(operation) &&
  (!/\{(\w+)\}/.test(operation.path) ||
    [...operation.path.matchAll(/\{(\w+)\}/g)].every(([, parameter]) => operation.paramExamples?.[parameter!] !== undefined));

describe('the examples of the OpenAPI document', () => {
  it('cover every request body and the main answer of every operation', () => {
    for (const operation of ROUTES) {
      if (operation.body) expect(Object.keys(operation.bodyExamples ?? {}), `${name(operation)}: request body examples`).not.toHaveLength(0);
      // A seed's route that means nothing here exists to answer 410 with the routes to use: it has no main answer.
      if (gone(operation)) continue;
      const main = Object.entries(operation.responses)
        .filter(([status, reply]) => Number(status) < 300 && reply.body)
        .sort(([a], [b]) => Number(a) - Number(b))[0];
      expect(main, `${name(operation)} has no 2xx answer with a body`).toBeDefined();
      expect(Object.keys(main![1].examples ?? {}), `${name(operation)} ${main![0]}: examples`).not.toHaveLength(0);
    }
  });

  it('request bodies pass the zod schema their route validates with, and the schema of the document', () => {
    let checked = 0;
    for (const operation of ROUTES) {
      for (const [label, example] of Object.entries(operation.bodyExamples ?? {})) {
        const parsed = operation.body!.safeParse(example.value);
        expect(parsed.success, `${name(operation)} example ${label}: ${parsed.error?.message}`).toBe(true);
        expect(
          schemas.problems(pointer(operation, 'requestBody', 'content', 'application/json', 'schema'), example.value),
          `${name(operation)} example ${label}`,
        ).toEqual([]);
        // "Try it out" on a default install: callbacks are off there, and a delay would leave
        // the task waiting long after the click.
        expect(example.value, `${name(operation)} example ${label}`).not.toHaveProperty('callback_url');
        expect(example.value, `${name(operation)} example ${label}`).not.toHaveProperty('delay_ms');
        checked += 1;
      }
    }
    expect(checked).toBeGreaterThanOrEqual(6);
  });

  it('parameter examples fit their zod schema and the schema of the document', () => {
    let checked = 0;
    for (const operation of ROUTES) {
      for (const [parameter, value] of Object.entries(operation.paramExamples ?? {})) {
        const schema = operation.params?.shape[parameter] ?? operation.query?.shape[parameter];
        expect(schema, `${name(operation)}: ${parameter} is not one of its parameters`).toBeDefined();
        expect((schema as { safeParse(value: unknown): { success: boolean } }).safeParse(value).success, `${name(operation)} ${parameter}`).toBe(true);
        const index = (documented(operation).parameters as { name: string }[]).findIndex((candidate) => candidate.name === parameter);
        expect(schemas.problems(pointer(operation, 'parameters', String(index), 'schema'), value), `${name(operation)} ${parameter}`).toEqual([]);
        checked += 1;
      }
    }
    expect(checked).toBeGreaterThan(0);
  });

  it('every answer example in the document fits the schema it illustrates', () => {
    let checked = 0;
    for (const [path, operations] of Object.entries(doc.paths)) {
      for (const [method, operation] of Object.entries(operations)) {
        for (const [status, reply] of Object.entries(
          (operation as { responses: Record<string, { content?: Record<string, { examples?: Record<string, { value: unknown }> }> }> }).responses,
        )) {
          for (const [mediaType, content] of Object.entries(reply.content ?? {})) {
            for (const [label, example] of Object.entries(content.examples ?? {})) {
              const at = ['', 'paths', path, method, 'responses', status, 'content', mediaType, 'schema'].map(pointerSegment).join('/');
              expect(schemas.problems(at, example.value), `${method.toUpperCase()} ${path} ${status} ${mediaType} example ${label}`).toEqual([]);
              checked += 1;
            }
          }
        }
      }
    }
    expect(checked).toBeGreaterThanOrEqual(ROUTES.length);
  });

  describe('sent to a default install (no API keys, no callbacks)', () => {
    let h: Harness;
    beforeAll(async () => {
      h = await createHarness();
    });
    afterAll(async () => {
      await h?.close();
    });

    it('every request example succeeds as "Try it out" sends it, and every task it starts completes', async () => {
      // In the document's order, so the workflow its POST /workflows example stores exists when
      // its execute example runs; archiving comes last.
      // A body sent to a task that must exist first (a signal to a waiting step) cannot be tried blind.
      const withBodies = ROUTES.filter((operation) => operation.bodyExamples && tryable(operation));
      const tasks: string[] = [];
      for (const operation of withBodies) {
        for (const [label, example] of Object.entries(operation.bodyExamples!)) {
          const response = await h.request(operation.method.toUpperCase(), exampleUrl(operation), example.value);
          expect(response.status, `${name(operation)} example ${label}: ${JSON.stringify(response.body)}`).toBeGreaterThanOrEqual(200);
          expect(response.status, `${name(operation)} example ${label}: ${JSON.stringify(response.body)}`).toBeLessThan(300);
          if (response.body.task_id) tasks.push(response.body.task_id);
        }
      }
      expect(tasks.length).toBeGreaterThanOrEqual(4);
      for (const id of tasks) expect((await waitForTask(h, id)).status, `task ${id}`).toBe('completed');

      // The operations without a body whose parameters all have examples: reads, then archiving.
      const rest = ROUTES.filter((operation) => !operation.body && operation.paramExamples && tryable(operation));
      expect(rest.length).toBeGreaterThan(0);
      for (const operation of [...rest.filter((operation) => operation.method !== 'delete'), ...rest.filter((operation) => operation.method === 'delete')]) {
        const response = await h.request(operation.method.toUpperCase(), exampleUrl(operation));
        expect(response.status, `${name(operation)}: ${JSON.stringify(response.body)}`).toBe(200);
      }
    });
  });
});
