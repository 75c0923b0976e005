import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BROWSER_PATHS, isOpenPath, PAGE_PATHS } from '../../src/api/middleware.js';
import { isRedisUnavailable } from '../../src/queue/redis.js';
import { createHarness, type Harness, submit, uniqueName, waitForTask } from '../helpers/harness.js';

/**
 * Inputs that cost a backtracking regular expression or an unbounded copy seconds, minutes or
 * the whole heap, sent to the real API with a worker in the same process (so a stalled worker
 * shows in the API's answers too), with the default limits:
 * - template syntax that made the template scanner backtrack (`{{` and 3,000 spaces held the
 *   API for 8 s), at 3,000 characters and up to the body limit;
 * - text that made text_stats' sentence count quadratic, through a real worker;
 * - size amplification: 20 fields of 450 references to a 900 kB parameter (8 GB if built), in
 *   step inputs, in steps that become ready later, and in the task's output.
 * Each is answered (or run) within 100 ms of what a benign input of the same size costs, is
 * refused cleanly where it is over a limit, and GET /health, polled all along, never takes more
 * than 250 ms beyond its idle latency. The heap stays far from the gigabytes. The file runs
 * last, alone (the `alone` project, vitest.config.ts): its bounds are tens of milliseconds.
 */

/**
 * What a pathological input may cost beyond its benign twin, at the least: on a machine whose idle
 * /health already stalls longer (the slowest of 30 idle answers), twice that stall is the margin,
 * since a pause of the machine lands on either request and the slowest of 30 answers understates
 * the rarer ones (CI on a slow VM, 2026-11-29: idle 197 ms, twins 101 and 153 ms apart in their
 * best runs; idle 111 ms, 115 ms apart). What this guards against costs seconds.
 */
const MARGIN_MS = 100;
/**
 * What /health may take beyond its idle latency while an input is handled. Wider than MARGIN_MS:
 * a legitimate 1 MB body holds the event loop while it is parsed and checked, and on a loaded
 * 2-core machine that alone reached 151 ms over idle (landing CI, 2026-11-25). What this guards
 * against costs seconds: the backtracking scanner held the API 8 s at 3,000 characters.
 */
const HEALTH_MARGIN_MS = 250;
const HEAP_GROWTH_MAX = 256 * 1024 * 1024;
/** Runs of a scenario, the best of which must be within the bounds (see `measured`). */
const RUNS = 3;

interface Run {
  /** Slowest /health answer while the scenario ran. */
  slowestMs: number;
  answers: number;
  /** How much longer the pathological request took than its benign twin, when the scenario compares. */
  extraMs: number;
}

describe('pathological inputs, with /health polled throughout', () => {
  let h: Harness;
  let idleMs: number;
  const observed: string[] = [];

  beforeAll(async () => {
    h = await createHarness();
    // Idle latency of /health on this machine, now: the slowest of 30 answers.
    const samples: number[] = [];
    for (let i = 0; i < 30; i += 1) samples.push(await timed(() => h.request('GET', '/health')));
    idleMs = Math.max(...samples);
  });
  afterAll(async () => {
    await h?.close();
    console.log(
      `[pathological] idle /health: slowest ${idleMs.toFixed(0)} ms of 30; bound ${(idleMs + HEALTH_MARGIN_MS).toFixed(0)} ms. Best run of each input:\n  ${observed.join('\n  ')}`,
    );
  });

  async function timed(work: () => Promise<unknown>): Promise<number> {
    const started = performance.now();
    await work();
    return performance.now() - started;
  }

  /**
   * Runs `scenario` (which checks its own answers, and returns how much longer its pathological
   * request took than its benign twin, if it compares) while GET /health is polled back to back.
   * Checks that the heap stays far from the gigabytes, and that /health never took more than
   * HEALTH_MARGIN_MS beyond its idle latency nor the pathological request more than MARGIN_MS (or twice the idle stall) beyond
   * its twin. The machine is shared, so a run can catch a pause that has nothing to do with the
   * input: up to RUNS runs are made and the best one counts. A super-linear input is slow in all.
   */
  const extraMarginMs = () => Math.max(MARGIN_MS, 2 * idleMs);
  const within = (run: Run) => run.slowestMs < idleMs + HEALTH_MARGIN_MS && run.extraMs < extraMarginMs();

  // biome-ignore lint/suspicious/noConfusingVoidType: a scenario without a benign twin to compare with returns nothing
  async function measured(scenario: () => Promise<number | void>): Promise<void> {
    const runs: Run[] = [];
    for (let i = 0; i < RUNS; i += 1) {
      const heapBefore = process.memoryUsage().heapUsed;
      let heapPeak = heapBefore;
      let running = true;
      let slowestMs = 0;
      let answers = 0;
      const polling = (async () => {
        while (running) {
          const ms = await timed(async () => expect((await h.request('GET', '/health')).status).toBe(200));
          slowestMs = Math.max(slowestMs, ms);
          answers += 1;
          heapPeak = Math.max(heapPeak, process.memoryUsage().heapUsed);
        }
      })();
      let extraMs: number | undefined;
      try {
        extraMs = (await scenario()) ?? undefined;
      } finally {
        running = false;
        await polling;
      }
      expect(answers, 'GET /health answered while the input was handled').toBeGreaterThan(0);
      expect(heapPeak - heapBefore, 'heap growth').toBeLessThan(HEAP_GROWTH_MAX);
      runs.push({ slowestMs, answers, extraMs: extraMs ?? 0 });
      if (within(runs.at(-1)!)) break;
    }
    // A run within both bounds is the best (the last made); without one, the one nearest to them
    // (which fails). Ranking by the larger excess alone could pass over a run within both for an
    // earlier one that is not (a loaded CI run: /health 152 ms and 119 ms over the twin, ranked
    // above 187 ms and 53 ms).
    const best = runs.find(within) ?? runs.reduce((a, b) => (Math.max(b.slowestMs - idleMs, b.extraMs) < Math.max(a.slowestMs - idleMs, a.extraMs) ? b : a));
    observed.push(
      `${expect.getState().currentTestName?.split(' > ').at(-1)}: /health slowest ${best.slowestMs.toFixed(0)} ms of ${best.answers}, ${best.extraMs.toFixed(0)} ms over its twin (${runs.length} run${runs.length > 1 ? 's' : ''})`,
    );
    const all = JSON.stringify(runs.map((run) => ({ health_ms: Math.round(run.slowestMs), extra_ms: Math.round(run.extraMs) })));
    expect(best.slowestMs, `slowest /health answer (idle: ${idleMs.toFixed(0)} ms), best of ${all}`).toBeLessThan(idleMs + HEALTH_MARGIN_MS);
    expect(best.extraMs, `time beyond the benign twin (idle: ${idleMs.toFixed(0)} ms), best of ${all}`).toBeLessThan(extraMarginMs());
  }

  /**
   * Posts `body` to `path`, then its benign twin (as large) to `twinPath`; returns the first
   * answer and how much longer it took.
   */
  async function againstTwin(path: string, body: () => unknown, twin: () => unknown, twinPath = path) {
    let answer: { status: number; body: any } | undefined;
    // Each once first, so that both measured requests find their code warm: the pathological one
    // runs code its twin does not (a reference's check against a tool's output schema, converted
    // on first use), and cold it took 40-90 ms more on a quiet machine, all of it paid once.
    expect((await h.request('POST', path, body())).status).toBeLessThan(500);
    expect((await h.request('POST', twinPath, twin())).status).toBeLessThan(500);
    const pathologicalMs = await timed(async () => (answer = await h.request('POST', path, body())));
    const benignMs = await timed(async () => expect((await h.request('POST', twinPath, twin())).status).toBeLessThan(500));
    return { answer: answer!, extraMs: pathologicalMs - benignMs };
  }

  const definition = (text: string) => ({ name: uniqueName('pathological'), steps: [{ id: 'a', tool: 'echo', input: { text } }] });

  it.each([
    ['{{ and 3,000 spaces', `{{${' '.repeat(3_000)}`, 201],
    ['{{ and 60,000 spaces', `{{${' '.repeat(60_000)}`, 201],
    ['{{ and 100,000 spaces (over TEMPLATE_STRING_MAX_CHARS)', `{{${' '.repeat(100_000)}`, 400],
    ['{{ and whitespace of every kind', `{{${'\t\n\r\u00a0\u2028 '.repeat(10_000)}`, 201],
    ['{{ 30,000 times', '{{'.repeat(30_000), 201],
    ['{{{ 20,000 times', '{{{'.repeat(20_000), 201],
    ['"{{ " 20,000 times', '{{ '.repeat(20_000), 201],
    ['{{x} 15,000 times', '{{x}'.repeat(15_000), 201],
  ])('POST /workflows with a step input holding %s', async (_label, text, status) => {
    // The same text without its braces: as large, but nothing for a scanner to chew on.
    const twin = text.replace(/[{}]/g, 'x');
    await measured(async () => {
      const { answer, extraMs } = await againstTwin(
        '/workflows',
        () => definition(text),
        () => definition(twin),
      );
      expect(answer.status, JSON.stringify(answer.body).slice(0, 300)).toBe(status);
      if (status === 400) {
        expect(answer.body.error).toMatchObject({
          code: 'invalid_workflow',
          details: [{ path: 'steps[0].input.text', message: expect.stringMatching(/TEMPLATE_STRING_MAX_CHARS/) }],
        });
      }
      return extraMs;
    });
  });

  it('POST /workflows with 60,000 characters of paths in two templates, and running it', async () => {
    const parameters = [{ name: 'p', type: 'array' }];
    const input = { v: `{{params.p${'[0]'.repeat(10_000)}}}`, w: `{{params.p${'.x'.repeat(15_000)}}}` };
    const twin = { v: `x${'y'.repeat(30_000)}`, w: `x${'y'.repeat(30_000)}` };
    let name = '';
    await measured(async () => {
      name = uniqueName('long_paths');
      const { answer, extraMs } = await againstTwin(
        '/workflows',
        () => ({ name, parameters, steps: [{ id: 'a', tool: 'echo', input }] }),
        () => ({ name: uniqueName('twin'), parameters, steps: [{ id: 'a', tool: 'echo', input: twin }] }),
      );
      expect(answer.status, JSON.stringify(answer.body).slice(0, 300)).toBe(201);
      return extraMs;
    });
    await measured(async () => {
      const task = await waitForTask(h, await submit(h, { task_type: name, params: { p: [[[1]]] } }));
      expect(task).toMatchObject({ status: 'completed', result: { a: { v: null, w: null } } });
    });
  });

  it('POST /workflows with 1,000 references to fields of a step output (TEMPLATE_MAX_REFERENCES), each checked against its schema', async () => {
    const fields = (text: string) => Object.fromEntries(Array.from({ length: 1_000 }, (_, index) => [`f${index}`, text]));
    const steps = (input: Record<string, string>) => [
      { id: 'a', tool: 'text_stats', input: { text: 'hi' } },
      { id: 'b', tool: 'echo', depends_on: ['a'], input },
    ];
    await measured(async () => {
      const { answer, extraMs } = await againstTwin(
        '/workflows',
        () => ({ name: uniqueName('references'), steps: steps(fields('{{steps.a.output.top_words[0].word}}')) }),
        () => ({ name: uniqueName('twin'), steps: steps(fields('xxsteps.a.output.top_words[0].wordxx')) }),
      );
      expect(answer.status, JSON.stringify(answer.body).slice(0, 300)).toBe(201);
      return extraMs;
    });
  });

  it('text_stats on 60,000 "!" then a letter, through a worker', async () => {
    const run = async (text: string) => {
      const task = await waitForTask(h, await submit(h, { task_type: 'text_stats', params: { text } }));
      expect(task.status).toBe('completed');
      return task;
    };
    await measured(async () => {
      const benign = await run('Hi. '.repeat(15_000));
      const tasks = [await run(`${'!'.repeat(60_000)}x`), await run(`${'.?!'.repeat(20_000)}a`)];
      for (const task of tasks) expect(task.result).toMatchObject({ characters: 60_001, sentences: 0 });
      return Math.max(...tasks.map((task) => task.steps[0].duration_ms - benign.steps[0].duration_ms));
    });
  });

  describe('size amplification: 450 references to a 900 kB parameter', () => {
    const big = 'x'.repeat(900_000);
    const fields = (count: number) => Object.fromEntries(Array.from({ length: count }, (_, index) => [`f${index}`, '{{params.big}}'.repeat(450)]));
    const parameters = [{ name: 'big', type: 'string' }];

    it('20 fields of them are refused when the definition is posted (TEMPLATE_MAX_REFERENCES)', async () => {
      await measured(async () => {
        const response = await h.request('POST', '/workflows', {
          name: uniqueName('amplify'),
          parameters,
          steps: [{ id: 'a', tool: 'echo', input: fields(20) }],
        });
        expect(response.status).toBe(400);
        expect(response.body.error).toMatchObject({
          code: 'invalid_workflow',
          details: [{ path: 'steps[0].input.f2', message: expect.stringMatching(/9000 template references.*TEMPLATE_MAX_REFERENCES/) }],
        });
      });
    });

    it('in a first step: refused at submit (STEP_INPUT_MAX_BYTES), nothing built, nothing stored', async () => {
      const name = uniqueName('amplify_root');
      expect((await h.request('POST', '/workflows', { name, parameters, steps: [{ id: 'a', tool: 'echo', input: fields(2) }] })).status).toBe(201);
      // The twin is as large and refused too, but before any template is resolved: its parameter
      // has another type. (Accepting 900 kB would add the cost of running a task to the measure.)
      const twin = uniqueName('amplify_root_twin');
      expect(
        (
          await h.request('POST', '/workflows', {
            name: twin,
            parameters: [{ name: 'big', type: 'integer' }],
            steps: [{ id: 'a', tool: 'echo', input: fields(2) }],
          })
        ).status,
      ).toBe(201);
      await measured(async () => {
        const { answer, extraMs } = await againstTwin(
          `/workflows/${name}/execute`,
          () => ({ parameters: { big } }),
          () => ({ parameters: { big } }),
          `/workflows/${twin}/execute`,
        );
        expect(answer.status).toBe(400);
        expect(answer.body.error).toMatchObject({
          code: 'invalid_params',
          details: [{ path: 'parameters', message: expect.stringMatching(/step 'a'.*STEP_INPUT_MAX_BYTES/) }],
        });
        return extraMs;
      });
      expect(await h.db.prisma.task.count({ where: { taskType: name } })).toBe(0);
    });

    it('in a step that becomes ready later: that step fails with StepInputTooLarge, nothing built', async () => {
      const name = uniqueName('amplify_later');
      const steps = [
        { id: 'first', tool: 'echo', input: { n: 1 } },
        { id: 'a', tool: 'echo', depends_on: ['first'], input: fields(2) },
      ];
      expect((await h.request('POST', '/workflows', { name, parameters, steps })).status).toBe(201);
      await measured(async () => {
        const task = await waitForTask(h, await submit(h, { task_type: name, params: { big } }));
        expect(task.status).toBe('failed');
        // The engine found it when the step became ready: it failed without a job, without running.
        expect(task.steps[1]).toMatchObject({
          id: 'a',
          status: 'failed',
          attempts: 0,
          error: { name: 'StepInputTooLarge', details: { setting: 'STEP_INPUT_MAX_BYTES' } },
        });
      });
    });

    it("in the task's output: the task fails with TaskResultTooLarge, nothing built", async () => {
      const name = uniqueName('amplify_output');
      expect((await h.request('POST', '/workflows', { name, parameters, steps: [{ id: 'a', tool: 'echo', input: { n: 1 } }], output: fields(2) })).status).toBe(
        201,
      );
      await measured(async () => {
        const task = await waitForTask(h, await submit(h, { task_type: name, params: { big } }));
        expect(task.status).toBe('failed');
        expect(task.error).toMatchObject({ name: 'TaskResultTooLarge', details: { setting: 'TASK_RESULT_MAX_BYTES' } });
      });
    });
  });

  it('is alive and still does its job afterwards', async () => {
    expect((await h.request('GET', '/health')).body.checks).toEqual({ redis: 'up', database: 'up' });
    expect((await waitForTask(h, await submit(h, { task_type: 'echo', params: { after: 'all that' } }))).status).toBe('completed');
  });
});

describe('other regular expressions: error text, request paths', () => {
  it('tells a Redis error from a message repeating ECONNREFUSED in well under 100 ms (the test was quadratic)', () => {
    expect(isRedisUnavailable(new Error('connect ECONNREFUSED 127.0.0.1:6379'))).toBe(true);
    expect(isRedisUnavailable(new Error('connect ECONNREFUSED ::1:6379'))).toBe(true);
    expect(isRedisUnavailable(new Error('connect ECONNREFUSED 127.0.0.1:5432'))).toBe(false);
    const message = `${'ECONNREFUSED '.repeat(20_000)}x`;
    let fastest = Number.POSITIVE_INFINITY;
    for (let i = 0; i < 3; i += 1) {
      const started = performance.now();
      expect(isRedisUnavailable(new Error(message))).toBe(false);
      fastest = Math.min(fastest, performance.now() - started);
    }
    expect(fastest).toBeLessThan(100);
  });

  it("matches a request's path against the routes' path patterns (open, browser pages, HTML pages) in well under 100 ms at 200,000 characters", () => {
    expect(PAGE_PATHS.test('/approvals/abc.def')).toBe(true);
    expect(PAGE_PATHS.test('/assign-task')).toBe(false);
    expect(isOpenPath('/approvals/abc.def')).toBe(true);
    expect(BROWSER_PATHS.test('/admin/queues/api')).toBe(true);
    // A parameter's segment that never ends as the pattern wants, many of them, and no slash at all.
    for (const path of [`/approvals/${'a'.repeat(200_000)}\n`, `/approvals${'/a'.repeat(100_000)}`, `/${'x'.repeat(200_000)}`]) {
      let fastest = Number.POSITIVE_INFINITY;
      for (let i = 0; i < 3; i += 1) {
        const started = performance.now();
        PAGE_PATHS.test(path);
        BROWSER_PATHS.test(path);
        isOpenPath(path);
        fastest = Math.min(fastest, performance.now() - started);
      }
      expect(fastest, path.slice(0, 20)).toBeLessThan(100);
    }
  });
});
