import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { z } from 'zod';
import { stepSchema, workflowDefinitionSchema } from '../../src/engine/workflow-definition.js';
import { createScheduleSchema } from '../../src/schedules/schedule-request.js';
import { serviceBodySchema } from '../../src/services/service-request.js';
import { curlRequest, docBlocks, docPages, readPage, shellCommands } from '../helpers/doc-commands.js';

/**
 * The guides' JSON examples are what the API takes: each step, workflow, schedule and service
 * a ```json block, an ```http request or a shell block's `curl -d '…'` (or `-d @FILE`) of README.md
 * and docs/ shows parses with the schema its endpoint validates with, so an example cannot drift
 * from the contract, run or not. (The blocks that call the API also run against a live service:
 * doc-commands.test.ts, whose reader of blocks and curls, test/helpers/doc-commands.ts, this one
 * uses too.)
 */

const read = (path: string) => readFileSync(new URL(`../../${path}`, import.meta.url), 'utf8');

/** The top-level JSON values of a block: objects written one after another, each over one or more lines. */
function values(block: string): unknown[] {
  const found: unknown[] = [];
  let depth = 0;
  let start = -1;
  let inString = false;
  for (let i = 0; i < block.length; i += 1) {
    const char = block[i];
    if (inString) {
      if (char === '\\') i += 1;
      else if (char === '"') inString = false;
      continue;
    }
    if (char === '"') inString = true;
    else if (char === '{') {
      if (depth === 0) start = i;
      depth += 1;
    } else if (char === '}') {
      depth -= 1;
      if (depth === 0) found.push(JSON.parse(block.slice(start, i + 1)));
    }
  }
  return found;
}

/** Which endpoint's schema a value is an example of, by its fields; undefined: a fragment (an answer, a part of one). */
function schemaOf(value: Record<string, unknown>): [string, z.ZodType] | undefined {
  if ('steps' in value && 'name' in value) return ['a workflow definition (POST /workflows)', workflowDefinitionSchema];
  if ('id' in value && ['tool', 'workflow', 'sleep', 'wait', 'terminate', 'service_call'].some((kind) => kind in value)) return ['a step', stepSchema];
  if ('task_type' in value && ('cron' in value || 'every_ms' in value)) return ['a schedule (POST /schedules)', createScheduleSchema];
  if ('base_url' in value && 'name' in value) return ['a service (POST /services)', serviceBodySchema];
  return undefined;
}

interface Example {
  where: string;
  value: Record<string, unknown>;
}

function examples(page: string): Example[] {
  const found: Example[] = [];
  const add = (line: number, text: string) => {
    for (const value of values(text)) found.push({ where: `${page}:${line}`, value: value as Record<string, unknown> });
  };
  for (const block of docBlocks(page, readPage(page))) {
    if (block.lang === 'json' || block.lang === 'http') add(block.line, block.text);
    // The bodies a shell block's curls send.
    if (block.lang !== 'sh') continue;
    for (const command of shellCommands(block.text)) {
      if (command.words[0] !== 'curl') continue;
      const { body } = curlRequest(command);
      if (body !== undefined) add(block.line + command.line, body);
    }
  }
  return found;
}

describe("the guides' JSON examples", () => {
  const all = docPages().flatMap(examples);
  const typed = all.flatMap((example) => {
    const schema = schemaOf(example.value);
    return schema ? [{ ...example, what: schema[0], schema: schema[1] }] : [];
  });

  it('are many, and of every kind the guides show', () => {
    const kinds = new Set(typed.map((example) => example.what));
    expect(kinds).toEqual(new Set(['a step', 'a workflow definition (POST /workflows)', 'a schedule (POST /schedules)', 'a service (POST /services)']));
    expect(typed.filter((example) => example.what === 'a step').length).toBeGreaterThanOrEqual(8);
  });

  it('each parse with the schema their endpoint validates with', () => {
    for (const example of typed) {
      const parsed = example.schema.safeParse(example.value);
      expect(parsed.success, `${example.where}: ${example.what} ${JSON.stringify(example.value).slice(0, 120)}: ${parsed.error?.message}`).toBe(true);
    }
  });

  it('include the schedule file a block posts', () => {
    const file = JSON.parse(read('src/schedules/examples/nightly-report.json'));
    expect(read('docs/workflows.md')).toContain('-d @src/schedules/examples/nightly-report.json');
    expect(typed.filter((example) => example.where.startsWith('docs/workflows.md:')).map((example) => example.value)).toContainEqual(file);
  });

  it('would catch an example that drifted from the contract', () => {
    expect(stepSchema.safeParse({ id: 'poll', tool: 'x', repeat: { until: 'true' } }).success).toBe(false);
    expect(values('{"a": "}{"}\n{"b": [1, {"c": 2}]}')).toEqual([{ a: '}{' }, { b: [1, { c: 2 }] }]);
  });
});
