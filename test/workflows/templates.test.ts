import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { findReferences, hasTemplates, parseReference, resolveTemplates, type TemplateContext } from '../../src/workflows/templates.js';

const context: TemplateContext = {
  params: {
    n: 42,
    pi: 3.5,
    yes: true,
    no: false,
    nothing: null,
    text: 'hello',
    empty: '',
    obj: { a: 1, b: [true, null] },
    list: [1, 'two', { three: 3 }],
    a: { b: [{ c: 'deep' }] },
    secret: 'TOP-SECRET',
    injected: '{{params.secret}}',
    dollars: '$& $1 $$',
  },
  steps: {
    fetch: { status: 'completed', output: { status: 200, body: 'doc', headers: { 'content-type': 'text/plain' }, items: [10, 20] } },
    broken: { status: 'failed', error: { name: 'Error', message: 'boom' } },
  },
};

const resolve = (value: unknown, ctx: TemplateContext = context) => resolveTemplates(value, ctx);

describe('resolveTemplates: a string that is exactly one template keeps the type', () => {
  it.each([
    ['number', '{{params.n}}', 42],
    ['fraction', '{{params.pi}}', 3.5],
    ['true', '{{params.yes}}', true],
    ['false', '{{params.no}}', false],
    ['string', '{{params.text}}', 'hello'],
    ['empty string', '{{params.empty}}', ''],
    ['object', '{{params.obj}}', { a: 1, b: [true, null] }],
    ['array', '{{params.list}}', [1, 'two', { three: 3 }]],
    ['null', '{{params.nothing}}', null],
    ['step output number', '{{steps.fetch.output.status}}', 200],
    ['step output object', '{{steps.fetch.output.headers}}', { 'content-type': 'text/plain' }],
    ['step status', '{{steps.fetch.status}}', 'completed'],
    ['step error', '{{steps.broken.error.message}}', 'boom'],
  ])('%s', (_label, template, expected) => {
    expect(resolve(template)).toStrictEqual(expected);
  });

  it('turns a missing value into null, never undefined', () => {
    for (const template of ['{{params.missing}}', '{{params.n.deeper}}', '{{params.list[9]}}', '{{steps.nope.output}}', '{{steps.fetch.output.nope.x}}', '{{steps.broken.output}}']) {
      const resolved = resolve({ value: template }) as Record<string, unknown>;
      expect(Object.hasOwn(resolved, 'value'), template).toBe(true);
      expect(resolved.value, template).toBeNull();
    }
  });

  it('resolves templates nested in objects and arrays, leaving other values alone', () => {
    const input = { url: '{{params.text}}', options: { retries: '{{params.n}}', flags: ['{{params.yes}}', 'literal', 7, null, false] } };
    expect(resolve(input)).toStrictEqual({ url: 'hello', options: { retries: 42, flags: [true, 'literal', 7, null, false] } });
    // The definition is not modified.
    expect(input.options.flags[0]).toBe('{{params.yes}}');
  });
});

describe('resolveTemplates: a template inside a longer string is interpolated as text', () => {
  it.each([
    ['number', 'n={{params.n}}', 'n=42'],
    ['boolean', '{{params.yes}}!', 'true!'],
    ['string', 'say {{params.text}} twice', 'say hello twice'],
    ['object as JSON', 'obj: {{params.obj}}', 'obj: {"a":1,"b":[true,null]}'],
    ['array as JSON', 'list: {{params.list}}', 'list: [1,"two",{"three":3}]'],
    ['missing as empty', '[{{params.missing}}]', '[]'],
    ['null as empty', '[{{params.nothing}}]', '[]'],
    ['two templates side by side', '{{params.n}}{{params.text}}', '42hello'],
    ['several templates', '{{params.text}}, {{steps.fetch.output.status}} and {{steps.fetch.output.items[1]}}', 'hello, 200 and 20'],
  ])('%s', (_label, template, expected) => {
    expect(resolve(template)).toBe(expected);
  });

  it('does not treat replacement patterns in a value as special', () => {
    expect(resolve('<{{params.dollars}}>')).toBe('<$& $1 $$>');
  });
});

describe('resolveTemplates: syntax', () => {
  it('allows whitespace inside the braces', () => {
    expect(resolve('{{ params.n }}')).toBe(42);
    expect(resolve('{{\tparams.obj\n}}')).toEqual({ a: 1, b: [true, null] });
    expect(resolve('x{{  params.text  }}y')).toBe('xhelloy');
  });

  it('follows paths with fields and indexes: {{params.a.b[0].c}}', () => {
    expect(resolve('{{params.a.b[0].c}}')).toBe('deep');
    expect(resolve('{{params.a.b[0]}}')).toEqual({ c: 'deep' });
    expect(resolve('{{params.list[2].three}}')).toBe(3);
    expect(resolve('{{steps.fetch.output.items[0]}}')).toBe(10);
    expect(resolve('{{params.a.b[1].c}}')).toBeNull();
    expect(parseReference('params.a.b[0].c')).toEqual({ reference: { kind: 'params', name: 'a', path: ['b', '0', 'c'] } });
    expect(parseReference('steps.s1.output.rows[3][1].x')).toEqual({ reference: { kind: 'steps', step: 's1', field: 'output', path: ['rows', '3', '1', 'x'] } });
  });

  it('leaves a malformed template as it is written', () => {
    expect(resolve('{{params}}')).toBe('{{params}}');
    expect(resolve('a {{nope.x}} b {{params.n}}')).toBe('a {{nope.x}} b 42');
  });
});

describe('resolveTemplates: templates are data', () => {
  it('does not evaluate templates that arrive inside params values', () => {
    expect(context.params.injected).toBe('{{params.secret}}');
    expect(resolve('{{params.injected}}')).toBe('{{params.secret}}');
    expect(resolve('value: {{params.injected}}')).toBe('value: {{params.secret}}');
    expect(resolve({ nested: ['{{params.injected}}'] })).toEqual({ nested: ['{{params.secret}}'] });
    const viaStep = resolve('{{steps.s.output.v}}', { params: { secret: 'x' }, steps: { s: { status: 'completed', output: { v: 'a {{params.secret}}' } } } });
    expect(viaStep).toBe('a {{params.secret}}');
  });

  it('resolves inherited names to null: own properties only', () => {
    for (const name of ['constructor', '__proto__', 'toString', 'hasOwnProperty', 'valueOf']) {
      expect(resolve(`{{params.${name}}}`), name).toBeNull();
      expect(resolve(`<{{params.${name}}}>`), name).toBe('<>');
      expect(resolve(`{{params.obj.${name}}}`), name).toBeNull();
      expect(resolve(`{{steps.fetch.output.${name}}}`), name).toBeNull();
      expect(resolve(`{{steps.${name}.output}}`), name).toBeNull();
    }
    expect(resolve('{{params.text.length}}')).toBeNull();
    expect(resolve('{{params.constructor.prototype}}')).toBeNull();
  });

  it('keeps a "__proto__" key of an input as a plain own key, without changing the prototype', () => {
    const input = JSON.parse('{"__proto__": {"polluted": "{{params.text}}"}, "a": "{{params.n}}"}') as Record<string, unknown>;
    const resolved = resolve(input) as Record<string, unknown>;
    expect(Object.getPrototypeOf(resolved)).toBe(Object.prototype);
    expect(Object.hasOwn(resolved, '__proto__')).toBe(true);
    expect(Object.getOwnPropertyDescriptor(resolved, '__proto__')?.value).toEqual({ polluted: 'hello' });
    expect((resolved as { polluted?: unknown }).polluted).toBeUndefined();
    expect(resolved.a).toBe(42);
    expect(({} as { polluted?: unknown }).polluted).toBeUndefined();
    expect(JSON.parse(JSON.stringify(resolved))).toEqual(JSON.parse('{"__proto__": {"polluted": "hello"}, "a": 42}'));
  });
});

describe('findReferences', () => {
  it('finds every template with where it sits', () => {
    const found = findReferences({ url: 'x{{params.url}}', list: ['{{steps.a.output.items[0]}}', 'plain'], 'odd-key': { b: '{{ params.b }} {{params.c}}' } });
    expect(found.map(({ at, expression, reference }) => ({ at, expression, reference }))).toEqual([
      { at: 'url', expression: 'params.url', reference: { kind: 'params', name: 'url', path: [] } },
      { at: 'list[0]', expression: 'steps.a.output.items[0]', reference: { kind: 'steps', step: 'a', field: 'output', path: ['items', '0'] } },
      { at: '["odd-key"].b', expression: 'params.b', reference: { kind: 'params', name: 'b', path: [] } },
      { at: '["odd-key"].b', expression: 'params.c', reference: { kind: 'params', name: 'c', path: [] } },
    ]);
    for (const entry of found) expect(entry.problem).toBeUndefined();
    expect(hasTemplates({ a: ['no', { b: 'none here' }] })).toBe(false);
    expect(hasTemplates({ a: ['no', { b: 'one {{params.x}}' }] })).toBe(true);
  });

  it.each([
    ['no root field', '{{params}}'],
    ['an empty parameter name', '{{params.}}'],
    ['an unknown root', '{{env.HOME}}'],
    ['a bare word', '{{foo}}'],
    ['nothing at all', '{{}}'],
    ['only whitespace', '{{   }}'],
    ['a step without field', '{{steps.a}}'],
    ['a step field that does not exist', '{{steps.a.result}}'],
    ['a path under status', '{{steps.a.status.x}}'],
    ['a space inside the path', '{{params.a b}}'],
    ['a non-numeric index', '{{params.a[x]}}'],
    ['an unclosed index', '{{params.a[0}}'],
    ['double dots', '{{params..a}}'],
    ['a call', '{{params.a()}}'],
    ['an expression', '{{params.a + 1}}'],
  ])('reports a malformed template with a problem: %s', (_label, template) => {
    const found = findReferences({ field: [`pre ${template}`] });
    expect(found).toHaveLength(1);
    expect(found[0]!.at).toBe('field[0]');
    expect(found[0]!.reference).toBeUndefined();
    expect(found[0]!.problem).toEqual(expect.any(String));
    expect(found[0]!.problem!.length).toBeGreaterThan(0);
  });
});

describe('resolveTemplates: properties', () => {
  const text = fc.string({ unit: fc.constantFrom('{', '}', ' ', 'p', 'a', 'r', 'm', 's', '.', '$', '&', '[', '0', ']', 'é', '😀') });
  const noTemplateString = fc.oneof(text, fc.string()).filter((value) => !value.includes('{{'));
  const { json } = fc.letrec<{ json: unknown }>((tie) => ({
    json: fc.oneof(
      { depthSize: 'small', withCrossShrink: true },
      fc.constant(null),
      fc.boolean(),
      fc.integer(),
      fc.double({ noNaN: true, noDefaultInfinity: true }),
      noTemplateString,
      fc.array(tie('json'), { maxLength: 5 }),
      fc.dictionary(fc.oneof(noTemplateString, fc.constantFrom('__proto__', 'constructor', 'toString')), tie('json'), { maxKeys: 5, noNullPrototype: true }),
    ),
  }));
  const withoutTemplates = fc.oneof(json, fc.jsonValue().filter((value) => !JSON.stringify(value).includes('{{')));

  /**
   * Structural equality of JSON values: same own keys, same prototypes, Object.is on primitives.
   * (toStrictEqual compares `.constructor`, which an own "constructor" key of the data fools.)
   */
  const sameJson = (a: unknown, b: unknown): boolean => {
    if (a === null || typeof a !== 'object' || b === null || typeof b !== 'object') return Object.is(a, b);
    if (Array.isArray(a) !== Array.isArray(b) || Object.getPrototypeOf(a) !== Object.getPrototypeOf(b)) return false;
    const keys = Reflect.ownKeys(a);
    if (keys.length !== Reflect.ownKeys(b).length) return false;
    return keys.every((key) => Object.hasOwn(b, key) && sameJson((a as Record<PropertyKey, unknown>)[key], (b as Record<PropertyKey, unknown>)[key]));
  };

  /** Every array and object of `copy` is a new one: changing the result cannot change the definition. */
  const sharesNothing = (original: unknown, copy: unknown): boolean => {
    if (original === null || typeof original !== 'object') return true;
    if (original === copy) return false;
    return Object.keys(original).every((key) => sharesNothing((original as Record<string, unknown>)[key], (copy as Record<string, unknown>)[key]));
  };

  it('returns a deep-equal copy of any JSON value without "{{"', () => {
    fc.assert(
      fc.property(withoutTemplates, (value) => {
        const resolved = resolveTemplates(value, context);
        expect(sameJson(resolved, value)).toBe(true);
        expect(sharesNothing(value, resolved)).toBe(true);
      }),
      { numRuns: 500 },
    );
  });

  it('substitutes any JSON value of a parameter with its type, and as text only once', () => {
    fc.assert(
      fc.property(fc.jsonValue(), fc.string(), (value, text) => {
        const ctx: TemplateContext = { params: { v: value, t: text, secret: 'never' }, steps: { s: { status: 'completed', output: { v: value } } } };
        expect(sameJson(resolveTemplates('{{params.v}}', ctx), value)).toBe(true);
        expect(sameJson(resolveTemplates('{{ steps.s.output.v }}', ctx), value)).toBe(true);
        expect(resolveTemplates('<{{params.t}}>', ctx)).toBe(`<${text}>`);
        expect(resolveTemplates('{{params.t}}', ctx)).toBe(text);
      }),
      { numRuns: 300 },
    );
  });
});
