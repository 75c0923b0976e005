import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { REFERENCE, render, settings } from '../../scripts/config-reference.js';
import { loadConfig } from '../../src/lib/config.js';

/** docs/config-reference.md is what src/lib/config.ts says: written from it, checked here. */
describe('the configuration reference', () => {
  it('is current (npm run docs:config writes it) and names every setting the service reads', () => {
    const page = readFileSync(REFERENCE, 'utf8');
    expect(page, 'docs/config-reference.md is out of date: run npm run docs:config').toBe(render());
    const listed = [...page.matchAll(/^\| `([A-Z][A-Z0-9_]*)` \|/gm)].map((match) => match[1]);
    // Every key a loaded configuration has (those computed from others aside) is a row.
    const keys = Object.keys(loadConfig({})).filter((key) => /^[A-Z][A-Z0-9_]*$/.test(key));
    expect(keys.filter((key) => !listed.includes(key))).toEqual([]);
    expect(new Set(listed).size).toBe(listed.length);
  });

  it("docs/configuration.md's counts are the reference's", () => {
    const all = settings();
    const internal = all.filter((setting) => setting.internal).length;
    const text = readFileSync(new URL('../../docs/configuration.md', import.meta.url), 'utf8').replace(/\s+/g, ' ');
    expect(text).toContain(`There are ${all.length} settings: ${all.length - internal} a deployment may vary`);
    expect(text).toContain(`documents with their defaults, and ${internal} constants of the code tagged`);
  });
});
