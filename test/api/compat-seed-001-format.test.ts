import { describe, expect, it } from 'vitest';
import { idOf, postedPath, seed001WorkflowSchema, translateSeed001 } from '../../src/api/routes/compat/seed-001-format.js';
import { ValidationError } from '../../src/lib/errors.js';
import { documentAnalysis } from '../fixtures/seed-001.js';

/**
 * Seed 001's format translated into the product's definition (src/api/routes/compat/seed-001-format.ts),
 * without a server: names, templates, problems' paths, and the worst inputs a client can send.
 */

const translate = (workflow: Record<string, unknown>) => translateSeed001(seed001WorkflowSchema.parse(workflow));
const problemsOf = (workflow: Record<string, unknown>) => {
  try {
    translate(workflow);
  } catch (error) {
    if (error instanceof ValidationError) return error.details as { path: string; message: string }[];
    throw error;
  }
  throw new Error('translated without a problem');
};

describe("seed 001's format", () => {
  it('makes an id of a name that is not one, and keeps the name as the display name', () => {
    expect(idOf('Simple Notification')).toEqual({ id: 'simple-notification', displayName: 'Simple Notification' });
    expect(idOf('DataPipeline')).toEqual({ id: 'DataPipeline', displayName: null });
    expect(idOf('  Équipe — Rapport (v2)!  ')).toEqual({ id: 'equipe-rapport-v2', displayName: '  Équipe — Rapport (v2)!  ' });
    expect(idOf('2024 report')).toEqual({ id: 'w-2024-report', displayName: '2024 report' });
    expect(idOf(`${'a '.repeat(40)}`)?.id).toMatch(/^[a-z][a-z0-9-]{0,63}$/);
    expect(idOf('a '.repeat(40))?.id.endsWith('-')).toBe(false);
    expect(idOf('!!! ???')).toBeUndefined();
  });

  it('rewrites templates: a parameter, an action’s response, text around them, native ones kept', () => {
    const { definition } = translate({
      ...documentAnalysis,
      actions: [
        ...documentAnalysis.actions,
        {
          action_id: 'report',
          action_type: 'tool',
          config: {
            tool: 'echo',
            input: {
              whole: '{{analyze_doc.response}}',
              indexed: '{{ fetch_doc.response.lines[0] }}',
              mixed: 'type={{analysis_type}}, words={{analyze_doc.response.word_count}}, {{params.document_url}}',
              list: ['{{document_url}}', { deep: '{{analysis_type}}' }],
            },
          },
          depends_on: ['analyze_doc'],
        },
      ],
    });
    expect((definition.steps as { input?: unknown }[])[3]!.input).toEqual({
      whole: '{{steps.analyze_doc.output}}',
      indexed: '{{steps.fetch_doc.output.lines[0]}}',
      mixed: 'type={{params.analysis_type}}, words={{steps.analyze_doc.output.word_count}}, {{params.document_url}}',
      list: ['{{params.document_url}}', { deep: '{{params.analysis_type}}' }],
    });
  });

  it('puts a POST’s parameters in its body but for the endpoint’s path parameters, and leaves a GET’s and the native form alone', () => {
    const call = (config: Record<string, unknown>) =>
      (
        translate({ name: 'calls', parameters: [{ name: 'id', type: 'string' }], actions: [{ action_id: 'c', action_type: 'service_call', config }] })
          .definition.steps as { service_call: unknown }[]
      )[0]!.service_call;
    expect(call({ service: 's', endpoint: '/items/{id}/notes', method: 'post', parameters: { id: '{{id}}', text: 'hi' } })).toMatchObject({
      parameters: { id: '{{params.id}}', body: { text: 'hi' } },
    });
    expect(call({ service: 's', endpoint: '/items/{id}', method: 'GET', parameters: { id: '{{id}}', verbose: true } })).toMatchObject({
      parameters: { id: '{{params.id}}', verbose: true },
    });
    expect(call({ service: 's', endpoint: '/items', method: 'POST', parameters: { body: { a: 1 }, dry_run: true } })).toMatchObject({
      parameters: { body: { a: 1 }, dry_run: true },
    });
  });

  it('maps the problems the checks find back to where they were posted', () => {
    const origins = [
      { action: 0, type: 'service_call' as const },
      { action: 1, type: 'notification' as const },
      { action: 1, type: 'notification' as const },
      { action: 2, type: 'tool' as const },
    ];
    expect(postedPath('steps[0].service_call', { origins })).toBe('actions[0].config');
    expect(postedPath('steps[0].input.body.url', { origins })).toBe('actions[0].config.parameters.body.url');
    expect(postedPath('steps[2].input.url', { origins })).toBe('actions[1].config.url');
    expect(postedPath('steps[2].input.channel', { origins })).toBe('actions[1].config.channels');
    expect(postedPath('steps[3].input.x[2]', { origins })).toBe('actions[2].config.input.x[2]');
    expect(postedPath('steps[3].tool', { origins })).toBe('actions[2].config.tool');
    expect(postedPath('steps[1].tool', { origins })).toBe('actions[1].action_type');
    expect(postedPath('steps[3].depends_on[1]', { origins })).toBe('actions[2].depends_on');
    expect(postedPath('steps[3]', { origins })).toBe('actions[2]');
    expect(postedPath('parameters[1].enum[0]', { origins })).toBe('parameters[1].allowed_values[0]');
    expect(postedPath('name', { origins })).toBe('name');
    expect(postedPath('steps[9].input', { origins })).toBe('steps[9].input');
  });

  it('answers the worst inputs in linear time: template syntax, long names, many templates', () => {
    const started = performance.now();
    const text = (unit: string) => unit.repeat(20_000);
    const problems = problemsOf({
      name: `${'\u0301'.repeat(199)}a`,
      parameters: [{ name: 'm', type: 'string' }],
      actions: [
        {
          action_id: 'a',
          action_type: 'tool',
          config: {
            tool: 'echo',
            input: {
              open: `{{${' '.repeat(60_000)}`,
              braces: text('{{{'),
              unclosed: text('{{m'),
              many: text('{{m}}'),
              bad: text('{{nobody}}'),
              path: `{{m${'.a'.repeat(30_000)}}}`,
            },
          },
        },
      ],
    });
    expect(performance.now() - started).toBeLessThan(2_000);
    // One problem per string, whatever the number of templates in it.
    expect(problems.filter((problem) => problem.path === 'actions[0].config.input.bad')).toEqual([
      { path: 'actions[0].config.input.bad', message: '{{nobody}} names no declared parameter and no action' },
    ]);
    expect(idOf(`${'\u0301'.repeat(199)}a`)).toEqual({ id: 'a', displayName: `${'\u0301'.repeat(199)}a` });
  });
});
