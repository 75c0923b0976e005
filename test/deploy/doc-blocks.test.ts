import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { z } from 'zod';
import { stepSchema, workflowDefinitionSchema } from '../../src/engine/workflow-definition.js';
import { createScheduleSchema } from '../../src/schedules/schedule-request.js';
import { serviceBodySchema } from '../../src/services/service-request.js';

/**
 * The guides' JSON examples are what the API takes: each step, workflow, schedule and service
 * a ```json block, an ```http request or a shell block's `curl -d '…'` of docs/ and the README
 * shows parses with the schema its endpoint
 * validates with, so an example cannot drift from the contract. (The README's shell blocks run
 * against a live service: readme-commands.test.ts; a file a block names, such as
 * src/schedules/examples/nightly-report.json, is parsed the same way.)
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

function examples(path: string): Example[] {
  const text = read(path);
  const found: Example[] = [];
  const add = (index: number, block: string) => {
    const line = text.slice(0, index).split('\n').length;
    for (const value of values(block)) found.push({ where: `${path}:${line}`, value: value as Record<string, unknown> });
  };
  for (const match of text.matchAll(/```(json|http)\n([\s\S]*?)```/g)) add(match.index, match[2]!);
  // The bodies a shell block sends: curl … -d '{…}'.
  for (const match of text.matchAll(/```sh\n([\s\S]*?)```/g)) {
    for (const body of match[1]!.matchAll(/-d '([\s\S]*?)'/g)) add(match.index + body.index, body[1]!);
  }
  return found;
}

describe("the guides' JSON examples", () => {
  const all = ['README.md', 'docs/workflows.md', 'docs/tools-and-workers.md', 'docs/http-api.md', 'docs/configuration.md', 'docs/getting-started.md'].flatMap(
    examples,
  );
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
    expect(createScheduleSchema.safeParse(file).success).toBe(true);
    expect(read('docs/workflows.md')).toContain('-d @src/schedules/examples/nightly-report.json');
  });

  it('would catch an example that drifted from the contract', () => {
    expect(stepSchema.safeParse({ id: 'poll', tool: 'x', repeat: { until: 'true' } }).success).toBe(false);
    expect(values('{"a": "}{"}\n{"b": [1, {"c": 2}]}')).toEqual([{ a: '}{' }, { b: [1, { c: 2 }] }]);
  });
});
