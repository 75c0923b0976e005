import { fileURLToPath } from 'node:url';

export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** Milliseconds since the epoch with sub-millisecond resolution, on the same clock as Date.now(). */
export function epochNow(): number {
  return performance.timeOrigin + performance.now();
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));
}

/**
 * Calls `check` until it returns something other than undefined/false, or fails naming `label`.
 * An error thrown by `check` ends the wait at once (a process that died will not come back).
 */
export async function poll<T>(
  check: () => Promise<T | undefined | false> | T | undefined | false,
  options: { label: string; timeoutMs: number; intervalMs?: number },
): Promise<T> {
  const deadline = Date.now() + options.timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${options.timeoutMs} ms waiting for ${options.label}`);
    await sleep(options.intervalMs ?? 100);
  }
}

export function coerceError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}

/** A short random id: database names, queue prefixes. */
export function shortId(): string {
  return Math.random().toString(36).slice(2, 8);
}
