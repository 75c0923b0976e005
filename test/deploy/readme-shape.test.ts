import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

/**
 * The README is the first contact (issue 33): short enough to read in one sitting, the commands
 * to run at its top, how long the tests take, and every guide one link away.
 */
describe('the README', () => {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');

  it('has at most 4,000 words (wc -w)', () => {
    expect(readme.split(/\s+/).filter(Boolean).length).toBeLessThanOrEqual(4000);
  });

  it('gives npm install, npm start and npm test, and how long npm test takes, in its first 40 lines', () => {
    const top = readme.split('\n').slice(0, 40).join('\n');
    for (const command of ['npm install', 'npm start', 'npm test']) expect(top, command).toContain(command);
    expect(top).toMatch(/npm test[\s\S]*?about[\s#]*\d+ minutes/);
  });

  it('links every guide in docs/ (each one link away)', () => {
    const guides = [
      'getting-started',
      'workflows',
      'tools-and-workers',
      'http-api',
      'client-and-cli',
      'operations',
      'security',
      'configuration',
      'architecture',
      'performance',
    ];
    for (const guide of guides) expect(readme, guide).toContain(`](docs/${guide}.md)`);
  });
});
