import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { CLIENT_DIR, generateClientFiles } from '../../scripts/generate-client.js';

/**
 * The client is written against client/openapi.d.ts, generated from the API description the
 * server builds from its zod schemas. Committed files that differ from a fresh generation mean
 * the client no longer describes the API: run `npm run client:generate`.
 */
/** The first line (1-based) where two texts differ. */
function firstDifference(a: string, b: string): number {
  const [left, right] = [a.split('\n'), b.split('\n')];
  const index = left.findIndex((line, n) => line !== right[n]);
  return (index < 0 ? left.length : index) + 1;
}

describe('the generated client files', () => {
  it('client/openapi.json and client/openapi.d.ts are what `npm run client:generate` writes today', async () => {
    const fresh = await generateClientFiles();
    for (const [name, content] of Object.entries(fresh)) {
      const committed = readFileSync(`${CLIENT_DIR}${name}`, 'utf8');
      expect(committed === content, `client/${name} is stale from line ${firstDifference(committed, content)}: run npm run client:generate`).toBe(true);
    }
  });
});
