import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHarness, type Harness } from '../helpers/harness.js';

/**
 * What Postman's importer or Portman do with /openapi.json, done by a small generator: one
 * request per operation, in the document's order, built from the document alone (its path,
 * query and header examples, its first request body example, and its security requirement, for
 * which the key is supplied). Each must answer a status the document lists for it, never 401,
 * 403, 429 or 5xx; an operation whose path names no task, step or dead letter (their examples are
 * ids of a documentation run) must succeed.
 */

const KEY = 'collection-admin-key-0123456789';
// An approval link's token names a record too (its task's step), and is signed: no example can open one.
// A compatibility route's execution and session are tasks.
const RECORD_IDS = /\{(task_id|step_id|id|token|execution_id|session_id)\}/;

interface Parameter {
  name: string;
  in: 'path' | 'query' | 'header';
  required?: boolean;
  example?: unknown;
}
interface Operation {
  parameters?: Parameter[];
  requestBody?: { content: Record<string, { examples?: Record<string, { value: unknown }> }> };
  responses: Record<string, unknown>;
  security?: Record<string, string[]>[];
}

describe('a collection generated from the live /openapi.json', () => {
  let h: Harness;
  // A built console, as a deployment has (tests run the API from its sources, where /console says to build it: 503).
  const consoleDir = mkdtempSync(path.join(tmpdir(), 'console-'));
  beforeAll(async () => {
    writeFileSync(path.join(consoleDir, 'index.html'), '<!doctype html><title>console</title>');
    h = await createHarness({ env: { API_KEYS: KEY, CALLBACK_SECRET: 'collection-callback-secret-0123', CONSOLE_DIR: consoleDir } });
  });
  afterAll(async () => {
    await h?.close();
    rmSync(consoleDir, { recursive: true, force: true });
  });

  it('passes against the live service with the key supplied', async () => {
    const auth = { authorization: `Bearer ${KEY}` };
    const document = (await (await fetch(`${h.url}/openapi.json`, { headers: auth })).json()) as { paths: Record<string, Record<string, Operation>> };
    const failures: string[] = [];
    let sent = 0;
    for (const [template, operations] of Object.entries(document.paths)) {
      for (const [method, operation] of Object.entries(operations)) {
        const parameters = operation.parameters ?? [];
        const path = template.replace(/\{([^}]+)\}/g, (_, name: string) => {
          const example = parameters.find((parameter) => parameter.in === 'path' && parameter.name === name)?.example;
          // Ids of records: any well-formed one (Postman's placeholder); other parameters need an example.
          if (example === undefined && !RECORD_IDS.test(`{${name}}`))
            failures.push(`${method.toUpperCase()} ${template}: no example for path parameter ${name}`);
          return encodeURIComponent(String(example ?? (name === 'step_id' ? 'a' : randomUUID())));
        });
        const query = new URLSearchParams(
          parameters
            .filter((parameter) => parameter.in === 'query' && parameter.example !== undefined)
            .map((parameter): [string, string] => [parameter.name, String(parameter.example)]),
        );
        const headers: Record<string, string> = Object.fromEntries(
          parameters
            .filter((parameter) => parameter.in === 'header' && parameter.example !== undefined)
            .map((parameter) => [parameter.name, String(parameter.example)]),
        );
        // Postman takes the first requirement: a bearer key when it is bearerAuth.
        if (operation.security?.[0]?.bearerAuth) Object.assign(headers, auth);
        const examples = operation.requestBody?.content['application/json']?.examples;
        const body = examples ? Object.values(examples)[0]?.value : undefined;
        if (body !== undefined) headers['content-type'] = 'application/json';
        const response = await fetch(`${h.url}${path}${query.size > 0 ? `?${query}` : ''}`, {
          method: method.toUpperCase(),
          headers,
          redirect: 'manual',
          signal: AbortSignal.timeout(15_000),
          ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        });
        await response.body?.cancel();
        sent += 1;
        const where = `${method.toUpperCase()} ${path}: ${response.status}`;
        if (!(String(response.status) in operation.responses) && !(response.status === 301 && template === '/docs'))
          failures.push(`${where} is not documented`);
        if ([401, 403, 429].includes(response.status) || response.status >= 500) failures.push(where);
        const namesRecords = RECORD_IDS.test(template);
        // A route that only says where to go instead (410, a compatibility route that means nothing here) has no success to reach.
        const succeeds = Object.keys(operation.responses).some((status) => status.startsWith('2'));
        if (!namesRecords && succeeds && response.status >= 400) failures.push(`${where}: the examples alone should succeed`);
      }
    }
    expect(failures).toEqual([]);
    expect(sent).toBeGreaterThan(20);
  });
});
