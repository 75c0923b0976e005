import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHarness, type Harness, submit, waitForTask } from '../helpers/harness.js';

interface Problem {
  path: string;
  message: string;
}

/** A valid one-step definition to build on. */
function minimal(name: string, extra: Record<string, unknown> = {}) {
  return { name, steps: [{ id: 'a', tool: 'echo', input: { value: 'x' } }], ...extra };
}

describe('workflow definitions over HTTP', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness();
  });
  afterAll(async () => {
    await h.close();
  });

  /** Posts a definition that must be rejected; returns its problems after checking the error body. */
  async function rejected(body: unknown): Promise<Problem[]> {
    const response = await h.request('POST', '/workflows', body);
    expect(response.status, JSON.stringify(response.body)).toBe(400);
    expect(response.body.error.code).toBe('invalid_workflow');
    expect(Array.isArray(response.body.error.details)).toBe(true);
    for (const problem of response.body.error.details) {
      expect(problem).toEqual({ path: expect.any(String), message: expect.any(String) });
      expect(problem.message.length).toBeGreaterThan(0);
    }
    return response.body.error.details;
  }

  async function accepted(body: Record<string, unknown>) {
    const response = await h.request('POST', '/workflows', body);
    expect(response.status, JSON.stringify(response.body)).toBe(201);
    return response.body;
  }

  async function expectAbsent(name: string) {
    const response = await h.request('GET', `/workflows/${name}`);
    expect(response.status).toBe(404);
    expect(response.body.error.code).toBe('workflow_not_found');
  }

  describe('lifecycle: versions and archiving', () => {
    const name = 'lifecycle';
    const v1 = { name, description: 'first', steps: [{ id: 'a', tool: 'echo', input: { says: 'one' } }] };
    const v2 = {
      name,
      description: 'second',
      steps: [
        { id: 'a', tool: 'echo', input: { says: 'two' } },
        { id: 'b', tool: 'echo', depends_on: ['a'], input: { got: '{{steps.a.output.says}}' } },
      ],
    };

    it('stores version 1, then version 2 for the same name', async () => {
      const first = await h.request('POST', '/workflows', v1);
      expect(first.status).toBe(201);
      expect(first.body).toMatchObject({ name, version: 1, description: 'first', archived_at: null });
      expect(Date.parse(first.body.created_at)).not.toBeNaN();
      // Stored as parsed, defaults filled in.
      expect(first.body.steps).toEqual([{ id: 'a', tool: 'echo', input: { says: 'one' }, depends_on: [], on_failure: 'fail' }]);
      expect(first.body.parameters).toEqual([]);

      const second = await h.request('POST', '/workflows', v2);
      expect(second.status).toBe(201);
      expect(second.body).toMatchObject({ name, version: 2, description: 'second' });
    });

    it('lists the name once with its latest version', async () => {
      const { status, body } = await h.request('GET', '/workflows');
      expect(status).toBe(200);
      const entries = body.workflows.filter((w: { name: string }) => w.name === name);
      expect(entries).toHaveLength(1);
      expect(entries[0]).toMatchObject({ name, version: 2, description: 'second', steps: 2 });
    });

    it('returns the latest definition, or the one asked for with ?version', async () => {
      const latest = await h.request('GET', `/workflows/${name}`);
      expect(latest.status).toBe(200);
      expect(latest.body).toMatchObject({ name, version: 2, description: 'second' });
      expect(latest.body.steps.map((s: { id: string }) => s.id)).toEqual(['a', 'b']);

      const first = await h.request('GET', `/workflows/${name}?version=1`);
      expect(first.status).toBe(200);
      expect(first.body).toMatchObject({ name, version: 1, description: 'first' });
      expect(first.body.steps).toHaveLength(1);
      expect(first.body.steps[0].input).toEqual({ says: 'one' });

      const missing = await h.request('GET', `/workflows/${name}?version=9`);
      expect(missing.status).toBe(404);
      expect(missing.body.error.code).toBe('workflow_not_found');
      const bad = await h.request('GET', `/workflows/${name}?version=first`);
      expect(bad.status).toBe(400);
    });

    it('lists every version, newest first', async () => {
      const { status, body } = await h.request('GET', `/workflows/${name}/versions`);
      expect(status).toBe(200);
      expect(body.name).toBe(name);
      expect(body.versions.map((v: { version: number }) => v.version)).toEqual([2, 1]);
      expect(body.versions[0]).toMatchObject({ version: 2, description: 'second', archived_at: null });
      expect(body.versions[1]).toMatchObject({ version: 1, description: 'first', archived_at: null });
    });

    it('archives: the name is gone, its history stays, and it can no longer be assigned', async () => {
      const archived = await h.request('DELETE', `/workflows/${name}`);
      expect(archived.status).toBe(200);
      expect(archived.body).toMatchObject({ name, archived: true, versions: 2 });

      await expectAbsent(name);
      const list = await h.request('GET', '/workflows');
      expect(list.body.workflows.map((w: { name: string }) => w.name)).not.toContain(name);

      const versions = await h.request('GET', `/workflows/${name}/versions`);
      expect(versions.status).toBe(200);
      expect(versions.body.versions.map((v: { version: number }) => v.version)).toEqual([2, 1]);
      for (const version of versions.body.versions) expect(Date.parse(version.archived_at)).not.toBeNaN();

      const before = await h.db.prisma.task.count();
      const assign = await h.request('POST', '/assign-task', { task_type: name, params: {} });
      expect(assign.status).toBe(404);
      expect(assign.body.error.code).toBe('unknown_task_type');
      expect(assign.body.error.details.workflows).not.toContain(name);
      const execute = await h.request('POST', `/workflows/${name}/execute`, { parameters: {} });
      expect(execute.status).toBe(404);
      expect(execute.body.error.code).toBe('workflow_not_found');
      expect(await h.db.prisma.task.count()).toBe(before);
    });

    it('posting the name again after archiving makes it active again as version 3', async () => {
      const again = await h.request('POST', '/workflows', { ...v1, description: 'third' });
      expect(again.status).toBe(201);
      expect(again.body).toMatchObject({ name, version: 3, archived_at: null });

      const current = await h.request('GET', `/workflows/${name}`);
      expect(current.status).toBe(200);
      expect(current.body).toMatchObject({ version: 3, description: 'third' });
      const list = await h.request('GET', '/workflows');
      expect(list.body.workflows.find((w: { name: string }) => w.name === name)).toMatchObject({ version: 3 });
      const versions = await h.request('GET', `/workflows/${name}/versions`);
      expect(versions.body.versions.map((v: { version: number; archived_at: string | null }) => [v.version, v.archived_at === null])).toEqual([
        [3, true],
        [2, false],
        [1, false],
      ]);

      const id = await submit(h, { task_type: name, params: {} });
      const task = await waitForTask(h, id);
      expect(task.status).toBe('completed');
      expect(task.workflow).toEqual({ name, version: 3 });
    });
  });

  describe('unknown names', () => {
    it('answer 404 workflow_not_found for GET, versions, DELETE and execute', async () => {
      for (const [method, path, body] of [
        ['GET', '/workflows/no_such_flow', undefined],
        ['GET', '/workflows/no_such_flow/versions', undefined],
        ['DELETE', '/workflows/no_such_flow', undefined],
        ['POST', '/workflows/no_such_flow/execute', { parameters: {} }],
        // A tool is not a workflow.
        ['POST', '/workflows/echo/execute', { parameters: {} }],
      ] as const) {
        const response = await h.request(method, path, body);
        expect(response.status, `${method} ${path}`).toBe(404);
        expect(response.body.error.code, `${method} ${path}`).toBe('workflow_not_found');
      }
    });

    it('the 404 of an unknown task_type lists workflows too', async () => {
      await accepted(minimal('listed_flow'));
      const response = await h.request('POST', '/assign-task', { task_type: 'no_such_type', params: {} });
      expect(response.status).toBe(404);
      expect(response.body.error.code).toBe('unknown_task_type');
      expect(response.body.error.details.workflows).toEqual(expect.arrayContaining(['listed_flow', 'diamond']));
      expect(response.body.error.details.workflows).not.toContain('echo');
      expect(response.body.error.details.tools).toContain('echo');
      expect(response.body.error.details.known_task_types).toEqual(expect.arrayContaining(['listed_flow', 'echo']));
    });
  });

  it('concurrent posts of one name each get their own version', async () => {
    const posts = await Promise.all(
      Array.from({ length: 5 }, (_, i) => h.request('POST', '/workflows', { ...minimal('concurrent'), description: `writer ${i}` })),
    );
    expect(posts.map((post) => post.status)).toEqual([201, 201, 201, 201, 201]);
    expect(posts.map((post) => post.body.version).sort()).toEqual([1, 2, 3, 4, 5]);
    const versions = await h.request('GET', '/workflows/concurrent/versions');
    expect(versions.body.versions.map((v: { version: number }) => v.version)).toEqual([5, 4, 3, 2, 1]);
    const byVersion = new Map(posts.map((post) => [post.body.version, post.body.description]));
    for (const version of versions.body.versions) expect(version.description).toBe(byVersion.get(version.version));
  });

  describe('a NUL character (PostgreSQL cannot store it in text or jsonb)', () => {
    it('in a workflow name answers 404, not 500', async () => {
      for (const [method, path, body] of [
        ['GET', '/workflows/a%00b', undefined],
        ['GET', '/workflows/a%00b/versions', undefined],
        ['DELETE', '/workflows/a%00b', undefined],
        ['POST', '/workflows/a%00b/execute', { parameters: {} }],
      ] as const) {
        const response = await h.request(method, path, body);
        expect(response.status, `${method} ${path}`).toBe(404);
        expect(response.body.error.code).toBe('workflow_not_found');
      }
    });

    it('in a task_type answers 404 unknown_task_type, not 500', async () => {
      const response = await h.request('POST', '/assign-task', { task_type: 'a\u0000b', params: {} });
      expect(response.status).toBe(404);
      expect(response.body.error.code).toBe('unknown_task_type');
    });

    it('inside a definition answers 400 with its path, not 500', async () => {
      for (const [body, path] of [
        [{ ...minimal('nul_description'), description: 'a\u0000b' }, 'description'],
        [{ name: 'nul_input', steps: [{ id: 'a', tool: 'echo', input: { v: 'a\u0000b' } }] }, 'steps[0].input.v'],
        [minimal('nul_default', { parameters: [{ name: 'p', type: 'string', default: '\u0000' }] }), 'parameters[0].default'],
      ] as const) {
        const response = await h.request('POST', '/workflows', body);
        expect(response.status, path).toBe(400);
        expect(response.body.error.details).toEqual([{ path, message: expect.any(String) }]);
      }
    });

    it('in the params of a run answers 400 invalid_params, not 500', async () => {
      await accepted({ name: 'nul_params', parameters: [{ name: 'x', type: 'string' }], steps: [{ id: 'a', tool: 'echo', input: { v: '{{params.x}}' } }] });
      const before = await h.db.prisma.task.count();
      const response = await h.request('POST', '/workflows/nul_params/execute', { parameters: { x: 'a\u0000b' } });
      expect(await h.db.prisma.task.count()).toBe(before);
      expect(response.status).toBe(400);
      expect(response.body.error).toMatchObject({ code: 'invalid_params', details: [{ path: 'parameters.x' }] });
    });
  });

  describe('static checks', () => {
    /** Rejects `body` and expects exactly one problem at `path` whose message matches. */
    async function oneProblem(body: { name: string; [field: string]: unknown }, path: string, message: RegExp) {
      const problems = await rejected(body);
      expect(problems, JSON.stringify(problems)).toEqual([{ path, message: expect.stringMatching(message) }]);
      await expectAbsent(body.name);
    }

    it('duplicate step ids', async () => {
      await oneProblem(
        {
          name: 'dup_ids',
          steps: [
            { id: 'a', tool: 'echo' },
            { id: 'a', tool: 'echo' },
          ],
        },
        'steps[1].id',
        /duplicate step id a/,
      );
    });

    it('unknown tool', async () => {
      await oneProblem({ name: 'unknown_tool', steps: [{ id: 'a', tool: 'teleport' }] }, 'steps[0].tool', /unknown tool teleport/);
    });

    it('missing dependency', async () => {
      await oneProblem(
        {
          name: 'missing_dep',
          steps: [
            { id: 'a', tool: 'echo' },
            { id: 'b', tool: 'echo', depends_on: ['a'] },
            { id: 'c', tool: 'echo', depends_on: ['ghost', 'b'] },
          ],
        },
        'steps[2].depends_on[0]',
        /ghost/,
      );
    });

    it('self-dependency', async () => {
      await oneProblem(
        {
          name: 'self_dep',
          steps: [
            { id: 'a', tool: 'echo' },
            { id: 'b', tool: 'echo', depends_on: ['a', 'b'] },
          ],
        },
        'steps[1].depends_on[1]',
        /itself/,
      );
    });

    it('a cycle a -> b -> c -> a, named in the message', async () => {
      const body = {
        name: 'cyclic',
        steps: [
          { id: 'start', tool: 'echo' },
          { id: 'a', tool: 'echo', depends_on: ['start', 'c'] },
          { id: 'b', tool: 'echo', depends_on: ['a'] },
          { id: 'c', tool: 'echo', depends_on: ['b'] },
        ],
      };
      const problems = await rejected(body);
      expect(problems).toHaveLength(1);
      const [problem] = problems;
      expect(problem!.path).toMatch(/^steps\[[1-3]\]\.depends_on$/);
      const cycle = /cycle: (.+)$/.exec(problem!.message)?.[1]?.split(/\s*->\s*/);
      expect(cycle, problem!.message).toBeDefined();
      // A closed walk through exactly a, b and c, each arrow an edge of the definition (either direction of reading).
      expect(cycle).toHaveLength(4);
      expect(cycle![0]).toBe(cycle![3]);
      expect(new Set(cycle!.slice(0, 3))).toEqual(new Set(['a', 'b', 'c']));
      const dependsOn = new Map(body.steps.map((s) => [s.id, s.depends_on ?? []]));
      const pairs = cycle!.slice(0, 3).map((from, i) => [from, cycle![i + 1]!] as const);
      const forward = pairs.every(([from, to]) => dependsOn.get(from)!.includes(to));
      const backward = pairs.every(([from, to]) => dependsOn.get(to)!.includes(from));
      expect(forward || backward, problem!.message).toBe(true);
      const index = Number(/^steps\[(\d)\]/.exec(problem!.path)![1]);
      expect(cycle![0]).toBe(body.steps[index]!.id);
      await expectAbsent('cyclic');
    });

    it('a template referring to an undeclared parameter', async () => {
      await oneProblem(
        { name: 'undeclared_param', parameters: [{ name: 'uri', type: 'string' }], steps: [{ id: 'fetch', tool: 'echo', input: { url: '{{params.url}}' } }] },
        'steps[0].input.url',
        /parameter url is not declared/,
      );
    });

    it('a template referring to a step that is not a dependency', async () => {
      await oneProblem(
        {
          name: 'not_a_dependency',
          steps: [
            { id: 'a', tool: 'echo' },
            { id: 'b', tool: 'echo' },
            { id: 'c', tool: 'echo', depends_on: ['b'], input: { nested: { from_a: 'got {{steps.a.output.value}}' } } },
          ],
        },
        'steps[2].input.nested.from_a',
        /c refers to a but does not depend on it/,
      );
    });

    it('a template referring to a transitive dependency is allowed', async () => {
      const body = await accepted({
        name: 'transitive',
        steps: [
          { id: 'a', tool: 'echo', input: { value: 'from-a' } },
          { id: 'b', tool: 'echo', depends_on: ['a'], input: { value: 'from-b' } },
          { id: 'c', tool: 'echo', depends_on: ['b'], input: { a: '{{steps.a.output.value}}', b: '{{steps.b.output.value}}' } },
        ],
        output: { c: '{{steps.c.output}}' },
      });
      expect(body.version).toBe(1);
      const task = await waitForTask(h, await submit(h, { task_type: 'transitive' }));
      expect(task.status).toBe('completed');
      expect(task.result).toEqual({ c: { a: 'from-a', b: 'from-b' } });
    });

    it('a template referring to an unknown step', async () => {
      await oneProblem(
        { name: 'unknown_step_ref', steps: [{ id: 'a', tool: 'echo', input: { list: ['ok', '{{steps.zed.output.value}}'] } }] },
        'steps[0].input.list[1]',
        /no step is named zed/,
      );
    });

    it('a template referring to its own step', async () => {
      await oneProblem({ name: 'own_output', steps: [{ id: 'a', tool: 'echo', input: { me: '{{steps.a.output}}' } }] }, 'steps[0].input.me', /own output/);
    });

    it('a template path the tool output schema does not have', async () => {
      const steps = (input: Record<string, unknown>) => [
        { id: 's', tool: 'text_stats', input: { text: 'some words here' } },
        { id: 'e', tool: 'echo', input: { any: 1 } },
        { id: 'use', tool: 'echo', depends_on: ['s', 'e'], input },
      ];
      await oneProblem({ name: 'bad_output_path', steps: steps({ x: '{{steps.s.output.nope}}' }) }, 'steps[2].input.x', /step s.s output has no field nope/);
      await oneProblem({ name: 'bad_output_path', steps: steps({ x: 'n={{steps.s.output.words.value}}' }) }, 'steps[2].input.x', /words/);
      await oneProblem({ name: 'bad_output_path', steps: steps({ x: '{{steps.s.output.top_words.word}}' }) }, 'steps[2].input.x', /top_words/);
      await oneProblem({ name: 'bad_output_path', steps: steps({ x: '{{steps.s.output.top_words[0].nope}}' }) }, 'steps[2].input.x', /top_words\.0\.nope/);

      // Paths the schemas allow: fixed fields of text_stats, anything under echo's record.
      const ok = await accepted({
        name: 'good_output_path',
        steps: steps({ words: '{{steps.s.output.words}}', word: '{{steps.s.output.top_words[0].word}}', any: '{{steps.e.output.whatever.deep[3].x}}' }),
      });
      expect(ok.version).toBe(1);
    });

    it('a literal input that does not fit the tool input schema; a templated value there is accepted', async () => {
      await oneProblem({ name: 'bad_literal', steps: [{ id: 'nap', tool: 'sleep', input: { ms: 'soon' } }] }, 'steps[0].input.ms', /sleep tool's input schema/);
      await oneProblem({ name: 'bad_literal', steps: [{ id: 'nap', tool: 'sleep', input: {} }] }, 'steps[0].input.ms', /sleep tool's input schema/);
      await oneProblem({ name: 'bad_literal', steps: [{ id: 'nap', tool: 'sleep', input: { ms: -5 } }] }, 'steps[0].input.ms', /sleep tool's input schema/);

      const ok = await accepted({
        name: 'templated_literal',
        parameters: [{ name: 'delay', type: 'integer', default: 1 }],
        steps: [{ id: 'nap', tool: 'sleep', input: { ms: '{{params.delay}}' } }],
      });
      expect(ok.version).toBe(1);
    });

    it('a malformed template', async () => {
      await oneProblem({ name: 'malformed', steps: [{ id: 'a', tool: 'echo', input: { v: 'x {{params}} y' } }] }, 'steps[0].input.v', /./);
      await oneProblem({ name: 'malformed', steps: [{ id: 'a', tool: 'echo', input: { v: '{{env.HOME}}' } }] }, 'steps[0].input.v', /params\., steps\./);
    });

    it('a step of no kind, or of two', async () => {
      await oneProblem({ name: 'kindless', steps: [{ id: 'a' }] }, 'steps[0]', /exactly one of tool, workflow, sleep, wait or terminate/);
      await oneProblem(
        { name: 'two_kinds', steps: [{ id: 'a', tool: 'echo', sleep: { ms: 5 } }] },
        'steps[0]',
        /exactly one of tool, workflow, sleep, wait or terminate/,
      );
    });

    it('a when that does not parse, names what it may not, or cannot be true or false: each at steps[i].when', async () => {
      const base = (when: string) => ({
        name: 'bad_when',
        parameters: [{ name: 'n', type: 'integer' }],
        steps: [
          { id: 'a', tool: 'text_stats', input: { text: 'x' } },
          { id: 'b', tool: 'echo', depends_on: ['a'], when },
          { id: 'c', tool: 'echo' },
        ],
      });
      await oneProblem(base('steps.a.output.words >'), 'steps[1].when', /./);
      await oneProblem(base('params.nope'), 'steps[1].when', /nope/);
      await oneProblem(base("steps.c.status == 'completed'"), 'steps[1].when', /\bc\b/);
      await oneProblem(base('steps.a.output.not_a_field > 1'), 'steps[1].when', /not_a_field/);
      await oneProblem(base('params.n + 1'), 'steps[1].when', /./);
      await oneProblem(base('x'.repeat(2_001)), 'steps[1].when', /./);
    });

    it('for_each that is not a list nor one template, max_parallel without it, {{item}} outside a map', async () => {
      await oneProblem(
        { name: 'bad_map', parameters: [{ name: 'x', type: 'array' }], steps: [{ id: 'a', tool: 'echo', for_each: 'items: {{params.x}}' }] },
        'steps[0].for_each',
        /exactly one template/,
      );
      await oneProblem({ name: 'bad_map', steps: [{ id: 'a', tool: 'echo', max_parallel: 2 }] }, 'steps[0].max_parallel', /goes with for_each/);
      await oneProblem(
        { name: 'bad_map', steps: [{ id: 'a', tool: 'echo', input: { v: '{{item}}' } }] },
        'steps[0].input.v',
        /only defined in the input of a for_each step/,
      );
      await oneProblem(
        { name: 'bad_map', steps: [{ id: 'a', tool: 'echo', for_each: '{{item}}' }] },
        'steps[0].for_each',
        /only defined in the input of a for_each step/,
      );
      // A map's output is the list of the items' outputs: a reference must index it.
      await oneProblem(
        {
          name: 'bad_map',
          steps: [
            { id: 'a', tool: 'text_stats', for_each: [1, 2], input: { text: 'x' } },
            { id: 'b', tool: 'echo', depends_on: ['a'], input: { w: '{{steps.a.output.words}}' } },
          ],
        },
        'steps[1].input.w',
        /it is a list/,
      );
    });

    it('a sleep with input, a retry, or a time that is neither a number nor a template', async () => {
      await oneProblem({ name: 'bad_sleep', steps: [{ id: 'a', sleep: { ms: 5 }, input: { x: 1 } }] }, 'steps[0].input', /takes no input/);
      await oneProblem({ name: 'bad_sleep', steps: [{ id: 'a', sleep: { ms: 5 }, retry: { attempts: 2 } }] }, 'steps[0].retry', /has no retry/);
      await oneProblem(
        { name: 'bad_sleep', steps: [{ id: 'a', sleep: { until: 'tomorrow' } }] },
        'steps[0].sleep.until',
        /neither an ISO 8601 time nor a template/,
      );
      await oneProblem({ name: 'bad_sleep', steps: [{ id: 'a', sleep: { ms: 'soon' } }] }, 'steps[0].sleep.ms', /whole number of milliseconds/);
    });

    it('a sub-workflow that is not stored, of a version it does not have, or given params it does not take', async () => {
      await oneProblem({ name: 'bad_sub', steps: [{ id: 'a', workflow: 'nowhere' }] }, 'steps[0].workflow', /no active workflow is named nowhere/);
      await h.request('POST', '/workflows', {
        name: 'sub_target',
        parameters: [{ name: 'n', type: 'integer', required: true }],
        steps: [{ id: 'a', tool: 'echo' }],
      });
      await oneProblem({ name: 'bad_sub', steps: [{ id: 'a', workflow: 'sub_target', version: 7, input: { n: 1 } }] }, 'steps[0].version', /has no version 7/);
      await oneProblem({ name: 'bad_sub', steps: [{ id: 'a', workflow: 'sub_target' }] }, 'steps[0].input', /needs parameter n/);
      await oneProblem({ name: 'bad_sub', steps: [{ id: 'a', workflow: 'sub_target', input: { n: 'one' } }] }, 'steps[0].input.n', /of type integer/);
      await oneProblem({ name: 'bad_sub', steps: [{ id: 'a', workflow: 'sub_target', input: { n: 1, m: 2 } }] }, 'steps[0].input.m', /has no parameter m/);
      await oneProblem(
        { name: 'bad_sub', steps: [{ id: 'a', workflow: 'sub_target', input: { n: 1 }, retry: { attempts: 2 } }] },
        'steps[0].retry',
        /has no retry/,
      );
    });

    it('a cycle between workflows, named by its path, and nesting deeper than SUBWORKFLOW_MAX_DEPTH', async () => {
      expect((await h.request('POST', '/workflows', { name: 'ring_a', steps: [{ id: 'a', tool: 'echo' }] })).status).toBe(201);
      expect((await h.request('POST', '/workflows', { name: 'ring_b', steps: [{ id: 'b', workflow: 'ring_a' }] })).status).toBe(201);
      // ring_a calling ring_b would close the ring: ring_a -> ring_b -> ring_a.
      const cycle = await rejected({ name: 'ring_a', steps: [{ id: 'a', workflow: 'ring_b' }] });
      expect(cycle).toEqual([{ path: 'steps[0].workflow', message: 'workflow cycle: ring_a -> ring_b -> ring_a' }]);
      expect((await rejected({ name: 'selfish', steps: [{ id: 'a', workflow: 'selfish' }] }))[0]).toEqual({
        path: 'steps[0].workflow',
        message: 'workflow cycle: selfish -> selfish',
      });
      // Five levels below a task are allowed (the default), a sixth is not.
      let below = 'ring_a';
      for (const level of [1, 2, 3, 4, 5]) {
        const name = `deep_${level}`;
        expect((await h.request('POST', '/workflows', { name, steps: [{ id: 's', workflow: below }] })).status).toBe(201);
        below = name;
      }
      const deep = await rejected({ name: 'deep_6', steps: [{ id: 's', workflow: below }] });
      expect(deep).toEqual([{ path: 'steps[0].workflow', message: expect.stringMatching(/nest 6 deep .*at most 5 \(SUBWORKFLOW_MAX_DEPTH\)/) }]);
    });

    it('a workflow named like a tool', async () => {
      await oneProblem(minimal('echo'), 'name', /tool is already named echo/);
      const echo = await h.request('POST', '/assign-task', { task_type: 'echo', params: { still: 'a tool' } });
      expect(echo.status).toBe(202);
    });

    it('a parameter default of the wrong type', async () => {
      await oneProblem(minimal('bad_default', { parameters: [{ name: 'n', type: 'integer', default: 'five' }] }), 'parameters[0].default', /integer/);
      await oneProblem(
        minimal('bad_default', {
          parameters: [
            { name: 'ok', type: 'boolean', default: true },
            { name: 'list', type: 'array', default: { not: 'a list' } },
          ],
        }),
        'parameters[1].default',
        /array/,
      );
    });

    it('output templates are checked too', async () => {
      await oneProblem(minimal('bad_output', { output: { x: '{{params.nope}}' } }), 'output.x', /parameter nope is not declared/);
      await oneProblem(minimal('bad_output', { output: { list: [{ y: '{{steps.ghost.output}}' }] } }), 'output.list[0].y', /no step is named ghost/);
      await oneProblem(minimal('bad_output', { output: '{{steps.a.result}}' }), 'output', /./);
    });

    it('reports every problem of one definition at once', async () => {
      const problems = await rejected({
        name: 'sleep',
        parameters: [{ name: 'n', type: 'number', default: 'many' }],
        steps: [
          { id: 'a', tool: 'teleport', input: { x: '{{params.missing}}' } },
          { id: 'a', tool: 'echo' },
          { id: 'b', tool: 'echo', depends_on: ['ghost', 'b'], input: { y: '{{steps.nowhere.output}}' } },
          { id: 'nap', tool: 'sleep', input: { ms: 'soon' } },
          { id: 'p', tool: 'echo', depends_on: ['q'] },
          { id: 'q', tool: 'echo', depends_on: ['p'] },
        ],
        output: { z: '{{params.absent}}', w: '{{oops}}' },
      });
      const paths = problems.map((problem) => problem.path);
      expect(paths).toEqual(
        expect.arrayContaining([
          'name',
          'parameters[0].default',
          'steps[0].tool',
          'steps[0].input.x',
          'steps[1].id',
          'steps[2].depends_on[0]',
          'steps[2].depends_on[1]',
          'steps[2].input.y',
          'steps[3].input.ms',
          'output.z',
          'output.w',
        ]),
      );
      expect(paths.filter((path) => /^steps\[[45]\]\.depends_on$/.test(path))).toHaveLength(1);
      expect(problems.length).toBe(12);
      await expectAbsent('sleep');
    });

    it('stored nothing for any rejected definition', async () => {
      const names = (await h.db.prisma.workflow.findMany({ select: { name: true } })).map((row) => row.name);
      for (const name of [
        'dup_ids',
        'unknown_tool',
        'missing_dep',
        'self_dep',
        'cyclic',
        'undeclared_param',
        'not_a_dependency',
        'unknown_step_ref',
        'own_output',
        'bad_output_path',
        'bad_literal',
        'malformed',
        'echo',
        'sleep',
        'bad_default',
        'bad_output',
      ]) {
        expect(names, name).not.toContain(name);
      }
    });
  });

  describe('params of a run', () => {
    const name = 'typed_params';
    beforeAll(async () => {
      await accepted({
        name,
        parameters: [
          { name: 'url', type: 'string', required: true },
          { name: 'count', type: 'integer', default: 3 },
          { name: 'loud', type: 'boolean', default: false },
          { name: 'tags', type: 'array', default: ['a', 'b'] },
          { name: 'note', type: 'string' },
        ],
        steps: [{ id: 'a', tool: 'echo', input: { url: '{{params.url}}', count: '{{params.count}}' } }],
        output: {
          url: '{{params.url}}',
          count: '{{params.count}}',
          loud: '{{params.loud}}',
          tags: '{{params.tags}}',
          note: '{{params.note}}',
          text: '{{params.count}}x',
        },
      });
    });

    const cases = [
      ['a missing required parameter', {}, 'url'],
      ['a wrong type', { url: 'u', count: 'three' }, 'count'],
      ['a fraction for an integer', { url: 'u', count: 1.5 }, 'count'],
      ['an object for a string', { url: { href: 'u' } }, 'url'],
    ] as const;

    for (const [label, params, field] of cases) {
      it(`execute: ${label} is 400 invalid_params at parameters.${field}, nothing enqueued`, async () => {
        const before = await h.db.prisma.task.count();
        const response = await h.request('POST', `/workflows/${name}/execute`, { parameters: params });
        expect(response.status).toBe(400);
        expect(response.body.error.code).toBe('invalid_params');
        expect(response.body.error.details).toEqual([{ path: `parameters.${field}`, message: expect.any(String) }]);
        expect(await h.db.prisma.task.count()).toBe(before);
      });

      it(`assign-task: ${label} is 400 invalid_params at params.${field}, nothing enqueued`, async () => {
        const before = await h.db.prisma.task.count();
        const response = await h.request('POST', '/assign-task', { task_type: name, params });
        expect(response.status).toBe(400);
        expect(response.body.error.code).toBe('invalid_params');
        expect(response.body.error.details).toEqual([{ path: `params.${field}`, message: expect.any(String) }]);
        expect(await h.db.prisma.task.count()).toBe(before);
      });
    }

    it('an undeclared parameter is 400 invalid_params, nothing enqueued', async () => {
      const before = await h.db.prisma.task.count();
      const execute = await h.request('POST', `/workflows/${name}/execute`, { parameters: { url: 'u', colour: 'red' } });
      expect(execute.status).toBe(400);
      expect(execute.body.error.code).toBe('invalid_params');
      expect(execute.body.error.details).toHaveLength(1);
      expect(execute.body.error.details[0].path).toMatch(/^parameters/);
      expect(execute.body.error.details[0].message).toContain('colour');
      const assign = await h.request('POST', '/assign-task', { task_type: name, params: { url: 'u', colour: 'red' } });
      expect(assign.status).toBe(400);
      expect(assign.body.error.code).toBe('invalid_params');
      expect(assign.body.error.details[0].path).toMatch(/^params/);
      expect(assign.body.error.details[0].message).toContain('colour');
      expect(await h.db.prisma.task.count()).toBe(before);
    });

    it('an undeclared parameter is reported at its own path, one entry per parameter', async () => {
      const execute = await h.request('POST', `/workflows/${name}/execute`, { parameters: { url: 'u', colour: 'red', size: 2 } });
      expect(execute.status).toBe(400);
      expect(execute.body.error.details.map((p: Problem) => p.path).sort()).toEqual(['parameters.colour', 'parameters.size']);
      const assign = await h.request('POST', '/assign-task', { task_type: name, params: { url: 'u', colour: 'red' } });
      expect(assign.status).toBe(400);
      expect(assign.body.error.details.map((p: Problem) => p.path)).toEqual(['params.colour']);
    });

    it('reports every problem of the params at once', async () => {
      const response = await h.request('POST', `/workflows/${name}/execute`, { parameters: { count: 'x', loud: 'yes', tags: 'a,b' } });
      expect(response.status).toBe(400);
      const paths = response.body.error.details.map((p: Problem) => p.path).sort();
      expect(paths).toEqual(['parameters.count', 'parameters.loud', 'parameters.tags', 'parameters.url']);
    });

    it('applies defaults, visible through the output template', async () => {
      const executed = await h.request('POST', `/workflows/${name}/execute`, { parameters: { url: 'https://example.test/doc' } });
      expect(executed.status).toBe(202);
      expect(executed.body).toMatchObject({ status: 'assigned', message: `Task '${name}' successfully assigned` });
      const task = await waitForTask(h, executed.body.task_id);
      expect(task.status).toBe('completed');
      expect(task.workflow).toEqual({ name, version: 1 });
      expect(task.result).toStrictEqual({ url: 'https://example.test/doc', count: 3, loud: false, tags: ['a', 'b'], note: null, text: '3x' });
      expect(task.steps[0].output).toEqual({ url: 'https://example.test/doc', count: 3 });

      const given = await waitForTask(h, await submit(h, { task_type: name, params: { url: 'u', count: 7, loud: true, tags: [], note: 'n' } }));
      expect(given.result).toStrictEqual({ url: 'u', count: 7, loud: true, tags: [], note: 'n', text: '7x' });
    });
  });
});
