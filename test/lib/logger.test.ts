import { Writable } from 'node:stream';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createLogger } from '../../src/lib/logger.js';

/** What a logger writes to `stream`, once `write` has logged. */
async function written(isTTY: boolean, write: (logger: ReturnType<typeof createLogger>) => void): Promise<string> {
  const chunks: string[] = [];
  const stream = Object.assign(
    new Writable({
      write(chunk, _encoding, done) {
        chunks.push(String(chunk));
        done();
      },
    }),
    { isTTY },
  );
  const logger = createLogger({ LOG_LEVEL: 'info', LOG_FORMAT: 'pretty' }, stream);
  write(logger);
  await new Promise((resolve) => setImmediate(resolve));
  return chunks.join('');
}

describe('pretty log lines', () => {
  afterEach(() => {
    vi.unstubAllEnvs();
  });

  it('carry no terminal colour codes when they go to a file or a pipe', async () => {
    const text = await written(false, (logger) => logger.warn('Redis unreachable', { down_ms: 3 }));
    expect(text).toContain('warn Redis unreachable {"down_ms":3}');
    expect(text).not.toContain('\u001b[');
  });

  it('are coloured on a terminal, unless NO_COLOR is set', async () => {
    vi.stubEnv('NO_COLOR', '');
    const text = await written(true, (logger) => logger.warn('Redis unreachable'));
    expect(text).toContain('\u001b[33mwarn\u001b[39m');
    vi.stubEnv('NO_COLOR', '1');
    expect(await written(true, (logger) => logger.warn('Redis unreachable'))).not.toContain('\u001b[');
  });
});
