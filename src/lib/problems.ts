import { jsonPath, type Problem } from './errors.js';

export { jsonPath, zodProblems } from './errors.js';

/**
 * Problems with a value, each at its JSON path: what a refused request, workflow definition or
 * step output reports. Here, below the API, the services and the workers, since all of them report them.
 */

/** Why PostgreSQL could not store this text, if it could not. */
function unstorable(text: string): string | undefined {
  if (text.includes('\u0000')) return 'must not contain the NUL character (U+0000)';
  if (!text.isWellFormed()) return 'must be well-formed Unicode (a lone surrogate cannot be stored)';
  return undefined;
}

/**
 * PostgreSQL can store neither a NUL character (U+0000) nor a lone UTF-16 surrogate in text or
 * jsonb: find them (in keys too) before a write, so the client hears where instead of a failed
 * insert. Callers bound the depth first (MAX_JSON_DEPTH).
 */
export function unstorableProblems(value: unknown, prefix: PropertyKey[] = []): Problem[] {
  if (typeof value === 'string') {
    const message = unstorable(value);
    return message ? [{ path: jsonPath(prefix), message }] : [];
  }
  if (Array.isArray(value)) return value.flatMap((item, index) => unstorableProblems(item, [...prefix, index]));
  if (value !== null && typeof value === 'object') {
    return Object.entries(value).flatMap(([key, item]) => {
      const message = unstorable(key);
      return message ? [{ path: jsonPath([...prefix, key]), message: `a key ${message}` }] : unstorableProblems(item, [...prefix, key]);
    });
  }
  return [];
}
