// Writes docs/config-reference.md from the settings' schema in src/lib/config.ts: each setting's
// name, default, what it accepts and its doc comment, read with the TypeScript compiler (the
// comments are the schema's documentation). `--check` writes nothing and exits 1 when the file
// is not what the schema says (test/config/config-reference.test.ts runs it in CI).
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const root = fileURLToPath(new URL('..', import.meta.url));
const SOURCE = `${root}src/lib/config.ts`;
export const REFERENCE = `${root}docs/config-reference.md`;

export interface Setting {
  name: string;
  defaultValue: string;
  accepts: string;
  meaning: string;
  /**
   * Tagged `@internal` in src/lib/config.ts: a tuning constant whose default is right for almost
   * every deployment. It can still be set, but .env.template does not list it.
   */
  internal: boolean;
}

/** The settings of `configSchema = z.object({...})`, in the order they are declared. */
export function settings(): Setting[] {
  const text = readFileSync(SOURCE, 'utf8');
  const file = ts.createSourceFile(SOURCE, text, ts.ScriptTarget.Latest, true);
  let literal: ts.ObjectLiteralExpression | undefined;
  const visit = (node: ts.Node) => {
    if (ts.isVariableDeclaration(node) && node.name.getText() === 'configSchema' && node.initializer && ts.isCallExpression(node.initializer)) {
      const [argument] = node.initializer.arguments;
      if (argument && ts.isObjectLiteralExpression(argument)) literal = argument;
    }
    ts.forEachChild(node, visit);
  };
  visit(file);
  if (!literal) throw new Error('configSchema = z.object({...}) not found in src/lib/config.ts');
  return literal.properties.filter(ts.isPropertyAssignment).map((property) => {
    // One line, a chain's `.method` joined to what it follows: `z.string().regex(…)` whatever its layout.
    const initializer = property.initializer.getText().replace(/\s+/g, ' ').replace(/ \./g, '.');
    const doc = ts
      .getJSDocCommentsAndTags(property)
      .map((comment) => (typeof comment.comment === 'string' ? comment.comment : (comment.comment ?? []).map((part) => part.getText()).join('')))
      .join(' ')
      .replace(/\s+/g, ' ')
      .trim();
    const internal = ts.getJSDocTags(property).some((tag) => tag.tagName.text === 'internal');
    return { name: property.name.getText(), defaultValue: defaultOf(initializer), accepts: acceptsOf(initializer), meaning: doc, internal };
  });
}

/** The argument of the chain's `.default(...)`, as written; `unset` without one. */
function defaultOf(initializer: string): string {
  const match = /\.default\(((?:[^()]|\([^()]*\))*)\)/.exec(initializer);
  if (!match) return 'unset';
  const value = match[1]!.trim();
  return value === '[]' ? 'empty' : value.replace(/^'(.*)'$/, '$1');
}

function acceptsOf(initializer: string): string {
  const integer = /^integer\(([^,]+), ([^)]+)\)/.exec(initializer);
  if (integer) return `integer ${integer[1]} to ${integer[2]}`;
  const choices = /z\.enum\(\[([^\]]+)\]/.exec(initializer);
  if (choices)
    return choices[1]!
      .replace(/'/g, '')
      .split(',')
      .map((choice) => choice.trim())
      .join(' | ');
  if (initializer.startsWith('csv')) return 'comma-separated list';
  if (/z\.url\(/.test(initializer)) return 'URL';
  if (/z\.string\(/.test(initializer)) return 'text';
  return 'see src/lib/config.ts';
}

/** A table cell: one line, pipes escaped. */
const cell = (text: string) => text.replace(/\|/g, '\\|').replace(/\n/g, ' ');

export function render(): string {
  const all = settings();
  const table = (list: Setting[]) => [
    '| Setting | Default | Accepts | Meaning |',
    '|---|---|---|---|',
    ...list.map(
      (setting) =>
        `| \`${setting.name}\` | ${cell(setting.defaultValue === 'unset' ? 'unset' : `\`${setting.defaultValue}\``)} | ${cell(setting.accepts)} | ${cell(setting.meaning || '—')} |`,
    ),
  ];
  const operators = all.filter((setting) => !setting.internal);
  const internal = all.filter((setting) => setting.internal);
  return [
    '# Configuration reference',
    '',
    `Every setting the service reads from its environment: ${all.length} of them, in the order \`src/lib/config.ts\` declares them, written from that file by \`npm run docs:config\` (a test fails when this page is out of date). Which ones a deployment sets, and why: [Configuration](configuration.md). Back to the [README](../README.md).`,
    '',
    `## For operators (${operators.length})`,
    '',
    `What a deployment may vary: addresses, secrets, access, limits per key, retention, observability. \`.env.template\` lists exactly these.`,
    '',
    ...table(operators),
    '',
    `## Internal tuning (${internal.length})`,
    '',
    'Constants of the code, tagged `@internal` in `src/lib/config.ts`: their defaults are right for almost every deployment, and the tests and benchmarks set them. Each can still be set from the environment; `.env.template` does not list them.',
    '',
    ...table(internal),
    '',
  ].join('\n');
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const page = render();
  if (process.argv.includes('--check')) {
    const current = readFileSync(REFERENCE, 'utf8');
    if (current !== page) {
      console.error('docs/config-reference.md is out of date: run npm run docs:config');
      process.exit(1);
    }
  } else {
    writeFileSync(REFERENCE, page);
    console.log(`wrote docs/config-reference.md (${page.split('\n').length} lines)`);
  }
}
