import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import {
  CONDITION_MAX_CHARS,
  CONDITION_MAX_DEPTH,
  CONDITION_PATTERN_MAX_CHARS,
  type ConditionData,
  type ConditionScope,
  checkCondition,
  conditionCacheStats,
  evaluateCondition,
} from '../../src/engine/condition.js';
import { ConditionError, NonRetryableError, toErrorRecord } from '../../src/lib/errors.js';

const data: ConditionData = {
  params: { notify: true, region: 'eu-west-1', min: 2, tags: ['urgent', 'billing'], limits: { max: 10 } },
  steps: {
    total: {
      status: 'completed',
      output: {
        amount: 1500,
        currency: 'EUR',
        items: [
          { sku: 'a1', qty: 2 },
          { sku: 'b2', qty: 1 },
        ],
      },
    },
    fraction: { status: 'completed', output: { amount: 1500.5 } },
    skipped: { status: 'skipped', output: null },
    broken: { status: 'failed', output: null, error: { name: 'NonRetryableError', message: 'boom' } },
    bare: { status: 'completed' },
  },
};

const evaluate = (expression: string, on: ConditionData = data) => evaluateCondition(expression, on);

/** The ConditionError `expression` throws: its message. */
function failure(expression: string, on: ConditionData = data): string {
  try {
    evaluateCondition(expression, on);
  } catch (error) {
    expect(error).toBeInstanceOf(ConditionError);
    return (error as ConditionError).message;
  }
  throw new Error(`${expression} did not fail`);
}

describe('evaluateCondition', () => {
  it.each([
    ['a boolean parameter', 'params.notify', true],
    ['a step output compared with an int', 'steps.total.output.amount > 1000 && params.notify', true],
    ['a status', 'steps.skipped.status == "skipped"', true],
    ['a skipped step: null output', 'steps.skipped.output == null', true],
    ['a skipped step: has() on its null output', 'has(steps.skipped.output.amount)', false],
    ['has() of a field that is there', 'has(steps.total.output.currency)', true],
    ['a step that reported no output', 'steps.bare.output == null && steps.bare.error == null', true],
    ['a failed step under continue: its error', 'steps.broken.status == "failed" && steps.broken.error.message == "boom"', true],
    ['||, !', '!params.notify || steps.total.output.currency == "USD"', false],
    ['in a list', '"urgent" in params.tags', true],
    ['in a map', '"max" in params.limits && !("min" in params.limits)', true],
    ['a step id in steps', '"total" in steps && !("elsewhere" in steps)', true],
    ['size()', 'size(params.tags) == 2 && params.region.size() == 9 && size(steps.total.output.items) == 2', true],
    ['string functions', 'params.region.startsWith("eu-") && params.region.endsWith("-1") && params.region.contains("west")', true],
    ['matches() (RE2)', 'params.region.matches("^[a-z]{2}-[a-z]+-[0-9]$")', true],
    ['exists() over output items', 'steps.total.output.items.exists(item, item.sku == "b2" && item.qty == 1)', true],
    ['all()', 'steps.total.output.items.all(item, item.qty > 0)', true],
    ['exists_one()', 'params.tags.exists_one(tag, tag.startsWith("u"))', true],
    ['filter() and map()', 'steps.total.output.items.filter(item, item.qty > 1).map(item, item.sku) == ["a1"]', true],
    ['a map parameter', 'params.limits.max >= 10 && params.limits["max"] < 11', true],
    ['indexing', 'steps.total.output.items[1].sku == "b2" && params.tags[params.min - 1.0] == "billing"', true],
    ['the ternary', '(params.notify ? steps.total.output.amount : 0.0) == 1500', true],
  ])('%s', (_label, expression, expected) => {
    expect(evaluate(expression)).toBe(expected);
  });

  describe('JSON numbers are doubles, and compare with ints naturally', () => {
    it.each([
      ['steps.total.output.amount > 1000', true, true],
      ['steps.total.output.amount >= 1500', true, true],
      ['steps.total.output.amount == 1500', true, false],
      ['steps.total.output.amount == 1500.0', true, false],
      ['steps.total.output.amount < 1500.5', true, false],
      ['int(steps.total.output.amount) == 1500', true, true],
      ['steps.total.output.amount + 1.0 > 1500.9', true, true],
      ['size(params.tags) < steps.total.output.amount', true, true],
      ['params.min == 2 && params.min > 1 && params.min < 3u', true, true],
    ])('%s: %s for 1500, %s for 1500.5', (expression, whole, fraction) => {
      expect(evaluate(expression)).toBe(whole);
      expect(evaluate(expression.replaceAll('steps.total.', 'steps.fraction.'))).toBe(fraction);
    });

    it('does not mix them in arithmetic, at run time as when checked', () => {
      expect(failure('steps.total.output.amount + 1 > 0')).toBe("could not be evaluated: found no matching overload for '_+_' applied to '(double, int)'");
    });
  });

  describe('fails with a ConditionError that says why', () => {
    it.each([
      ['a missing key', 'steps.total.output.missing == 1', 'could not be evaluated: field not found: missing'],
      ['a step it was not given', 'steps.elsewhere.status == "completed"', 'could not be evaluated: field not found: elsewhere'],
      ["a field of a skipped step's null output", 'steps.skipped.output.amount > 1', 'could not be evaluated:'],
      ['division by zero', '1 / 0 == 0', 'could not be evaluated: int divide by zero'],
      ['an index out of range', 'params.tags[5] == "x"', 'could not be evaluated: index 5 out of bounds'],
      ['a type mismatch', 'params.region > 1', "could not be evaluated: found no matching overload for '_>_' applied to '(string, int)'"],
      ['a bad pattern from the data', 'params.region.matches(params.region + "(")', 'could not be evaluated: error parsing regexp: missing closing )'],
      ['an unknown function', 'params.region.shout() == ""', 'could not be evaluated: unbound function: shout'],
      ['a string result', 'params.region', 'gives a string, not a boolean'],
      ['an int result', 'size(params.tags)', 'gives an int (2), not a boolean'],
      ['a null result', 'steps.skipped.output', 'gives null, not a boolean'],
      ['a text that does not parse', 'params.notify &&', 'does not parse: 1:'],
    ])('%s', (_label, expression, message) => {
      expect(failure(expression)).toContain(message);
    });

    it('a named, non-retryable error, recorded as such', () => {
      let thrown: unknown;
      try {
        evaluate('1 / 0 == 0');
      } catch (error) {
        thrown = error;
      }
      expect(thrown).toBeInstanceOf(NonRetryableError);
      expect(toErrorRecord(thrown)).toEqual({ name: 'ConditionError', message: 'could not be evaluated: int divide by zero' });
    });
  });

  it('reads only what the expression names: the rest of the data may be anything', () => {
    const odd = { status: 'completed', output: { when: new Date(0), fn: () => 1, gone: undefined, deep: { a: [undefined, { b: 1 }] } } };
    const on = { params: {}, steps: { odd } };
    expect(evaluate('steps.odd.output.when == "1970-01-01T00:00:00.000Z"', on)).toBe(true);
    expect(evaluate('steps.odd.output.fn == null && !has(steps.odd.output.gone)', on)).toBe(true);
    expect(evaluate('steps.odd.output.deep.a[0] == null && steps.odd.output.deep.a[1].b == 1', on)).toBe(true);
    expect(evaluate('size(steps.odd.output) == 3', on)).toBe(true);
  });

  it('never reads inherited properties or numeric keys of a JSON object', () => {
    expect(failure('params.constructor == null')).toContain('field not found: constructor');
    expect(evaluate('!("toString" in params)')).toBe(true);
    expect(
      failure('steps.total.output.items[0][0] == 1', { params: {}, steps: { total: { status: 'completed', output: { items: [{ '0': 1 }] } } } }),
    ).toContain('could not be evaluated');
  });
});

describe('checkCondition', () => {
  const outputOf = (schema: z.ZodType) => z.toJSONSchema(schema, { io: 'output', unrepresentable: 'any' });
  const scope: ConditionScope = {
    params: { notify: 'boolean', region: 'string', min: 'integer', ratio: 'number', tags: 'array', limits: 'object' },
    steps: {
      total: {
        output: outputOf(
          z.object({
            amount: z.number(),
            currency: z.string().nullable(),
            items: z.array(z.object({ sku: z.string(), qty: z.int() })),
            meta: z.record(z.string(), z.unknown()),
          }),
        ),
      },
      free: { output: { type: 'object', properties: { known: { type: 'string' } }, additionalProperties: true } },
      unknown: {},
    },
  };
  const check = (expression: string) => checkCondition(expression, scope);

  it.each([
    'steps.total.output.amount > 1000 && params.notify',
    'steps.total.status == "skipped" || steps.total.output == null',
    'has(steps.total.output.currency) && steps.total.output.currency == "EUR"',
    'steps.total.output.items.exists(item, item.sku.startsWith("a") && item.qty >= params.min)',
    'steps.total.output.items.map(item, item.qty).all(qty, qty > 0)',
    'steps.total.output.meta.anything.goes == 1',
    'steps.free.output.known == "x" && steps.free.output.other.deeper > 1',
    'steps.unknown.output.whatever[3].x + 1 == 2',
    'steps.total.error.message == "boom"',
    '"urgent" in params.tags && params.limits.max > 3',
    'params.ratio * 2.0 > 1.0 && int(params.min) + 1 > 2',
    'steps.exists(id, steps[id].status == "failed")',
    'type(steps.unknown.output) == map',
  ])('accepts %s', (expression) => {
    expect(check(expression)).toEqual([]);
  });

  it.each([
    ['too long', `params.notify || ${'true || '.repeat(250)}true`, [`is 2021 characters long, more than ${CONDITION_MAX_CHARS}`]],
    ['nested too deep', `${'('.repeat(65)}true${')'.repeat(65)}`, [`nests deeper than ${CONDITION_MAX_DEPTH} levels`]],
    ['not parsing', 'params.notify && && true', ['does not parse: 1:15: found & but expecting end of input']],
    ['an undeclared parameter', 'params.notfy', ['params.notfy is not a declared parameter']],
    ['a step that is not an ancestor', 'steps.later.status == "completed"', ['steps.later is not one of the steps this step depends on']],
    ['a field a step does not have', 'steps.total.outputs.amount > 1', ['steps.total has no field outputs (a step has output, status and error)']],
    ['a field the output schema does not have', 'steps.total.output.amout > 1000', ['steps.total.output has no field amout']],
    [
      'a field of a list item the schema does not have',
      'steps.total.output.items.all(i, i.quantity > 0)',
      ['steps.total.output.items[] has no field quantity'],
    ],
    ['a field of a string', 'params.region.name == "x"', ['params.region is a string; it has no field name']],
    ['a string parameter compared with a number', 'params.region > 1', ["params.region > 1: no '>' between string and int"]],
    ['a string parameter equal to a number', 'params.region == 1', ['params.region == 1 compares a string with an int, which are never equal']],
    [
      'int arithmetic on a JSON number',
      'steps.total.output.amount + 1 > 2',
      ["steps.total.output.amount + 1: no '+' between double and int (JSON numbers are doubles: write 1.0, or convert with int() or double())"],
    ],
    [
      'an integer parameter is a double too',
      'params.min % 2 == 0',
      ["params.min % 2: no '%' between double and int (JSON numbers are doubles; % takes ints: convert with int())"],
    ],
    ['a non-boolean in &&', 'params.notify && params.region', ['params.region is a string, not a boolean']],
    ['a non-boolean predicate', 'params.tags.exists(t, size(t))', ['size(t) is an int, not a boolean']],
    ['a result that is not a boolean', 'steps.total.output.amount', ['the result is a double, not a boolean']],
    ['a function that does not exist', 'params.region.shout() == "EU"', ['unknown function shout']],
    ['a macro the library does not have', 'cel.bind(x, 1, x > 0)', ['unknown function cel.bind']],
    ['a function given the wrong type', 'size(params.notify) > 0', ['size(params.notify): size does not take a bool']],
    ['a name that is neither params nor steps', 'region == "eu"', ['unknown name region (a condition sees params and steps)']],
    ['iterating over a string', 'params.region.all(c, c == "e")', ['cannot iterate over params.region, a string']],
    [
      'a pattern that does not compile',
      'params.region.matches("eu-(west")',
      ['"eu-(west" is not a pattern matches() can use: error parsing regexp: missing closing ): `eu-(west`'],
    ],
    [
      'a pattern too long',
      `params.region.matches("${'a'.repeat(CONDITION_PATTERN_MAX_CHARS + 1)}")`,
      [expect.stringContaining(`is not a pattern matches() can use: the pattern is 513 characters long, more than ${CONDITION_PATTERN_MAX_CHARS}`)],
    ],
    [
      'every problem at once',
      'params.nope == steps.later.output && params.region > 1',
      [
        'params.nope is not a declared parameter',
        'steps.later is not one of the steps this step depends on',
        "params.region > 1: no '>' between string and int",
      ],
    ],
  ])('reports %s', (_label, expression, problems) => {
    expect(check(expression)).toEqual(problems);
  });

  it('reads a nullable field as its type, and an unknown output as anything', () => {
    expect(check('steps.total.output.currency > 1')).toEqual(["steps.total.output.currency > 1: no '>' between string and int"]);
    expect(check('steps.unknown.output > 1 && steps.unknown.output.a.b == "x"')).toEqual([]);
  });
});

describe('bounds: the worst inputs finish quickly or fail with a ConditionError', () => {
  const nums = (n: number) => Array.from({ length: n }, (_, i) => i);

  /**
   * Evaluates, asserts it finished in seconds, and returns the boolean or the ConditionError's
   * message (anything else thrown fails the test). The bound tells linear work from runaway work
   * (catastrophic backtracking on these inputs would take far longer); it is loose because a busy
   * machine slows linear work too (a 1 s bound failed under load in CI-like runs).
   */
  function bounded(expression: string, on: ConditionData): { result: boolean | string; ms: number } {
    const started = performance.now();
    let result: boolean | string;
    try {
      result = evaluateCondition(expression, on);
    } catch (error) {
      if (!(error instanceof ConditionError)) throw error;
      result = error.message;
    }
    const ms = performance.now() - started;
    expect(ms, expression.slice(0, 80)).toBeLessThan(5_000);
    return { result, ms };
  }
  const overBudget = expect.stringMatching(/^does more work than a condition may/);

  it('the longest expression allowed, and one character more', () => {
    const clauses = Array.from({ length: 200 }, (_, i) => `params.n${i % 10} >= 0.0`);
    let expression = clauses.join(' && ');
    expression = expression.slice(0, expression.lastIndexOf(' && ', CONDITION_MAX_CHARS));
    expression += ' '.repeat(CONDITION_MAX_CHARS - expression.length);
    expect(expression.length).toBe(CONDITION_MAX_CHARS);
    const on = { params: Object.fromEntries(nums(10).map((i) => [`n${i}`, i])), steps: {} };
    expect(bounded(expression, on).result).toBe(true);
    expect(bounded(`${expression} `, on).result).toBe(`is ${CONDITION_MAX_CHARS + 1} characters long, more than ${CONDITION_MAX_CHARS}`);
  });

  it('deep nesting: brackets, unary chains, member chains, long left-leaning sums', () => {
    const tooDeep = `nests deeper than ${CONDITION_MAX_DEPTH} levels`;
    const on = { params: {}, steps: {} };
    expect(bounded(`${'('.repeat(CONDITION_MAX_DEPTH)}true${')'.repeat(CONDITION_MAX_DEPTH)}`, on).result).toBe(true);
    expect(bounded(`${'('.repeat(995)}true${')'.repeat(995)}`, on).result).toBe(tooDeep);
    expect(bounded(`${'['.repeat(995)}${']'.repeat(995)} == []`, on).result).toBe(tooDeep);
    expect(bounded(`${'{"a": '.repeat(280)}1${'}'.repeat(280)} == {}`, on).result).toBe(tooDeep);
    expect(bounded(`${'!'.repeat(1995)}true`, on).result).toBe(false);
    expect(bounded(`${'-'.repeat(1990)}1 == 0`, on).result).toBe(false);
    expect(bounded(`has(params${'.a'.repeat(990)})`, on).result).toBe(tooDeep);
    expect(bounded(`${'1 + '.repeat(495)}1 > 0`, on).result).toBe(tooDeep);
    // A bracket inside a string literal is text.
    expect(bounded(`"${'('.repeat(500)}".size() == 500`, on).result).toBe(true);
  });

  it('nested comprehensions over thousands of elements are refused before they run', () => {
    const on = { params: { l: nums(3000) }, steps: {} };
    expect(bounded('params.l.all(x, params.l.all(y, x + y >= 0.0))', on).result).toEqual(overBudget);
    expect(bounded('params.l.all(x, params.l.all(y, params.l.all(z, x + y + z >= 0.0)))', on).result).toEqual(overBudget);
    expect(bounded('params.l.exists(x, params.l.exists(y, params.l.map(z, z).size() < 0))', on).result).toEqual(overBudget);
    // One loop over half a million items is paid for before its first item.
    const { result, ms } = bounded('params.l.all(x, x >= 0.0)', { params: { l: nums(500_000) }, steps: {} });
    expect(result).toEqual(overBudget);
    expect(ms).toBeLessThan(200);
  });

  it('a loop that fits the budget runs, map() and filter() included', () => {
    const on = { params: { l: nums(10_000).map((i) => ({ id: `i${i}`, n: i })) }, steps: {} };
    expect(bounded('params.l.exists(x, x.id == "i9999")', on).result).toBe(true);
    expect(bounded('params.l.map(x, x.n).filter(n, n >= 5000.0).size() == 5000', on).result).toBe(true);
  });

  it('matches() stays linear on a catastrophic-backtracking pattern, and pays for text times pattern', () => {
    const text = (n: number) => ({ params: { s: `${'a'.repeat(n)}b` }, steps: {} });
    expect(bounded('params.s.matches("^(a+)+$")', text(30)).result).toBe(false);
    expect(bounded('params.s.matches("^(a+)+$")', text(50_000)).result).toBe(false);
    expect(bounded('params.s.matches("^(a|aa)*$")', text(50_000)).result).toBe(false);
    expect(bounded('params.s.matches("^(a+)+$")', text(1_000_000)).result).toEqual(overBudget);
    // A small pattern whose program is large: 4,000 instructions times 10,000 characters.
    expect(bounded(`params.s.matches("${'[a-z]{1000}'.repeat(4)}")`, text(10_000)).result).toEqual(overBudget);
    // Patterns from the data, each compiled anew.
    const patterns = { params: { s: 'abc', p: nums(200).map((i) => `${'[a-z]{1000}'.repeat(40)}${i}`) }, steps: {} };
    expect(bounded('params.p.exists(p, params.s.matches(p))', patterns).result).toEqual(overBudget);
  });

  it('string and list concatenation blow-ups', () => {
    const on = { params: { s: 'x'.repeat(1_000_000), l: nums(1000), big: nums(100_000) }, steps: {} };
    const tree = (depth: number): string => (depth === 0 ? 'params.s' : `(${tree(depth - 1)} + ${tree(depth - 1)})`);
    expect(bounded(`size(${tree(6)}) > 0`, on).result).toEqual(overBudget);
    expect(bounded(`params.l.map(x, ${Array(40).fill('params.s').join(' + ')}).size() > 0`, on).result).toEqual(overBudget);
    expect(bounded('params.l.map(x, params.big + params.big).size() > 0', on).result).toEqual(overBudget);
    expect(bounded('params.l.all(x, params.s.contains("y") == false)', on).result).toEqual(overBudget);
  });

  it('deep equality and membership over large data, in a loop', () => {
    const output = { list: nums(10_000).map((i) => ({ i, name: `n${i}` })) };
    const on = { params: { l: nums(10_000), big: nums(500_000) }, steps: { a: { status: 'completed', output } } };
    expect(bounded('params.l.all(x, steps.a.output == steps.a.output)', on).result).toEqual(overBudget);
    expect(bounded('499999.0 in params.big', on).result).toBe(true);
    expect(bounded('params.l.all(x, 499999.0 in params.big)', on).result).toEqual(overBudget);
  });

  it('data nested a thousand levels deep', () => {
    let deep: unknown = 1;
    for (let i = 0; i < 1000; i++) deep = { a: [deep] };
    const on = { params: {}, steps: { a: { status: 'completed', output: deep } } };
    const { result } = bounded('steps.a.output == steps.a.output && has(steps.a.output.a)', on);
    expect(result).toBe(true);
  });
});

describe('the compile cache', () => {
  it('compiles an expression once however often it runs, and a checked one not again', () => {
    const before = conditionCacheStats().compiled;
    for (let i = 0; i < 1000; i++) evaluate('steps.total.output.amount > 1000 && params.notify && "cached" != ""');
    expect(conditionCacheStats().compiled).toBe(before + 1);
    // A condition that does not compile is remembered as such.
    for (let i = 0; i < 10; i++) failure('params.notify && && "cached"');
    expect(conditionCacheStats().compiled).toBe(before + 2);
    checkCondition('params.notify || "checked" == ""', { params: { notify: 'boolean' }, steps: {} });
    evaluate('params.notify || "checked" == ""');
    expect(conditionCacheStats().compiled).toBe(before + 3);
  });

  it('keeps the most recently used expressions, up to its capacity', () => {
    const { capacity } = conditionCacheStats();
    evaluate('params.notify && "first" != ""');
    for (let i = 0; i < capacity; i++) evaluate(`params.notify || ${i} > 0`);
    evaluate(`params.notify || ${capacity - 1} > 0`);
    expect(conditionCacheStats().cached).toBe(capacity);
    const before = conditionCacheStats().compiled;
    evaluate(`params.notify || ${capacity - 1} > 0`);
    expect(conditionCacheStats().compiled).toBe(before);
    evaluate('params.notify && "first" != ""');
    expect(conditionCacheStats().compiled).toBe(before + 1);
  });
});
