import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHarness, type Harness } from '../helpers/harness.js';

/**
 * POST /workflows/check: the checks of POST /workflows, answered as a list (200) and never
 * stored, for the console's editor. The problems must be exactly those POST /workflows refuses with.
 */

interface Problem {
  path: string;
  message: string;
}

const KEYS = 'admin:admin-key-0123456789,read:read-key-0123456789';
const read = { authorization: 'Bearer read-key-0123456789' };
const admin = { authorization: 'Bearer admin-key-0123456789' };

describe('POST /workflows/check', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness({ env: { API_KEYS: KEYS, BODY_LIMIT: '64kb' }, worker: false });
  });
  afterAll(async () => {
    await h?.close();
  });

  async function check(body: unknown): Promise<{ valid: boolean; problems: Problem[] }> {
    const response = await h.request('POST', '/workflows/check', body, read);
    expect(response.status, JSON.stringify(response.body)).toBe(200);
    return response.body;
  }

  /** The problems POST /workflows answers for the same body: check must list the same ones. */
  async function refusedWith(body: unknown): Promise<Problem[]> {
    const response = await h.request('POST', '/workflows', body, admin);
    expect(response.status).toBe(400);
    expect(response.body.error.code).toBe('invalid_workflow');
    return response.body.error.details;
  }

  it('answers valid for a definition POST /workflows would store, and stores nothing', async () => {
    const definition = { name: 'checked_only', steps: [{ id: 'a', tool: 'echo', input: { text: 'x' } }] };
    expect(await check(definition)).toEqual({ valid: true, problems: [] });
    expect((await h.request('GET', '/workflows/checked_only', undefined, read)).status).toBe(404);
  });

  it('lists each kind of problem at its path, exactly as POST /workflows refuses it', async () => {
    const cases: { body: unknown; path: string; message: RegExp }[] = [
      { body: { name: 'w', steps: [{ id: 'a', tool: 'no_such_tool' }] }, path: 'steps[0].tool', message: /no_such_tool/ },
      { body: { name: 'w', steps: [{ id: 'a', tool: 'echo', depends_on: ['ghost'] }] }, path: 'steps[0].depends_on[0]', message: /ghost/ },
      {
        body: {
          name: 'w',
          steps: [
            { id: 'a', tool: 'echo', depends_on: ['b'] },
            { id: 'b', tool: 'echo', depends_on: ['a'] },
          ],
        },
        path: 'steps',
        message: /cycle/,
      },
      {
        body: {
          name: 'w',
          steps: [
            { id: 'a', tool: 'echo' },
            { id: 'a', tool: 'echo' },
          ],
        },
        path: 'steps[1].id',
        message: /duplicate/,
      },
      { body: { name: 'w', steps: [{ id: 'a', tool: 'echo', input: { x: '{{params.nope}}' } }] }, path: 'steps[0].input.x', message: /nope/ },
      { body: { name: 'w', steps: [{ id: 'a', tool: 'sleep', input: { ms: 'soon' } }] }, path: 'steps[0].input.ms', message: /.+/ },
      // Schema problems are answers too: a half-typed definition is what the editor sends.
      { body: { name: 'w', steps: [{ id: 'a', tool: 'echo', retry: { attempts: 0 } }] }, path: 'steps[0].retry.attempts', message: /.+/ },
      { body: { steps: [] }, path: 'name', message: /.+/ },
      { body: { name: 'w', steps: [{ id: 'a', tool: 'echo', bogus: 1 }] }, path: 'steps[0].bogus', message: /not a known field/ },
    ];
    for (const { body, path, message } of cases) {
      const answer = await check(body);
      expect(answer.valid, JSON.stringify(body)).toBe(false);
      expect(answer.problems, JSON.stringify(body)).toContainEqual({ path: expect.stringContaining(path), message: expect.stringMatching(message) });
      expect(answer.problems).toEqual(await refusedWith(body));
    }
  });

  it('reports every problem at once', async () => {
    const answer = await check({
      name: 'w',
      steps: [
        { id: 'a', tool: 'no_such_tool' },
        { id: 'b', tool: 'echo', depends_on: ['ghost'] },
      ],
    });
    expect(answer.problems.map((problem) => problem.path)).toEqual(expect.arrayContaining(['steps[0].tool', 'steps[1].depends_on[0]']));
  });

  it('may be called by a read key, which may not store', async () => {
    expect((await h.request('POST', '/workflows', { name: 'w', steps: [{ id: 'a', tool: 'echo' }] }, read)).status).toBe(403);
    expect((await h.request('POST', '/workflows/check', { name: 'w', steps: [{ id: 'a', tool: 'echo' }] }, read)).status).toBe(200);
    expect((await h.request('POST', '/workflows/check', { name: 'w', steps: [] })).status).toBe(401);
  });

  it('refuses a body that is not JSON, or not an object, with the contract error body', async () => {
    const malformed = await fetch(`${h.url}/workflows/check`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...read },
      body: '{"name": "w", "steps": [',
    });
    expect(malformed.status).toBe(400);
    expect(((await malformed.json()) as { error: unknown }).error).toMatchObject({ code: 'invalid_json', message: expect.any(String) });

    // The JSON parser is strict: a bare string or number is not a body.
    for (const body of ['"text"', '42']) {
      const response = await fetch(`${h.url}/workflows/check`, { method: 'POST', headers: { 'content-type': 'application/json', ...read }, body });
      expect(response.status, body).toBe(400);
      expect(((await response.json()) as { error: { code: string } }).error.code).toBe('invalid_json');
    }
    const list = await h.request('POST', '/workflows/check', [], read);
    expect(list.status).toBe(400);
    expect(list.body.error).toMatchObject({ code: 'validation_error', details: [{ path: '$', message: expect.any(String) }] });
  });

  it('has the body limit of POST /workflows: a body over BODY_LIMIT is 413, one just under it is checked', async () => {
    const step = (index: number) => ({ id: `s${index}`, tool: 'echo', depends_on: index > 0 ? [`s${index - 1}`] : [], input: { text: 'x'.repeat(20) } });
    const huge = { name: 'huge', steps: Array.from({ length: 2_000 }, (_, index) => step(index)) };
    const refused = await h.request('POST', '/workflows/check', huge, read);
    expect(refused.status).toBe(413);
    expect(refused.body.error.code).toBe('payload_too_large');

    // The most steps a definition may have, chained, under the limit: checked like a small one; one more is a problem.
    const big = { name: 'big', steps: Array.from({ length: 500 }, (_, index) => step(index)) };
    expect(JSON.stringify(big).length).toBeLessThan(64 * 1024);
    expect(await check(big)).toEqual({ valid: true, problems: [] });
    const tooMany = await check({ ...big, steps: [...big.steps, step(500)] });
    expect(tooMany.problems).toEqual([{ path: 'steps', message: expect.stringContaining('500') }]);
  });
});
