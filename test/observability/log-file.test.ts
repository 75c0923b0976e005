import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { loadConfig } from '../../src/lib/config.js';
import { createLogger, type Logger } from '../../src/lib/logger.js';

/** A stream that keeps what it is given, and says whether it is a terminal. */
function sink(isTTY: boolean): { stream: Writable; text: () => string } {
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
  return { stream, text: () => chunks.join('') };
}

/** Ends the logger once its transports have written everything (the file's stream included). */
async function ended(logger: Logger): Promise<void> {
  const finished = new Promise((resolve) => logger.once('finish', resolve));
  logger.end();
  await finished;
  // The file transport closes its stream after the logger's finish.
  await new Promise((resolve) => setImmediate(resolve));
}

/** What an operator gets in a file: never a terminal's colour codes, whatever the terminal beside it shows. */
describe('log lines in a file', () => {
  const dirs: string[] = [];
  afterEach(() => {
    vi.unstubAllEnvs();
    for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  });

  it('LOG_FILE gets JSON lines without colour codes while the terminal beside it is coloured', async () => {
    vi.stubEnv('NO_COLOR', '');
    const dir = mkdtempSync(path.join(tmpdir(), 'orchestrator-log-'));
    dirs.push(dir);
    const file = path.join(dir, 'app.log');
    const terminal = sink(true);
    const logger = createLogger({ LOG_LEVEL: 'info', LOG_FORMAT: 'pretty', LOG_FILE: file }, terminal.stream);
    logger.warn('Redis unreachable', { down_ms: 3 });
    await ended(logger);
    expect(terminal.text()).toContain('\u001b[33mwarn\u001b[39m');
    const written = readFileSync(file, 'utf8');
    expect(written).not.toContain('\u001b[');
    const line = JSON.parse(written.trim().split('\n').at(-1)!);
    expect(line).toMatchObject({ level: 'warn', message: 'Redis unreachable', down_ms: 3 });
  });

  it('LOG_FORMAT=json writes one JSON object a line, also to a terminal, and production chooses it by default', async () => {
    vi.stubEnv('NO_COLOR', '');
    const terminal = sink(true);
    const logger = createLogger({ LOG_LEVEL: 'info', LOG_FORMAT: 'json', LOG_FILE: undefined }, terminal.stream);
    logger.info('API listening', { port: 3000 });
    await ended(logger);
    expect(terminal.text()).not.toContain('\u001b[');
    expect(JSON.parse(terminal.text().trim())).toMatchObject({ level: 'info', message: 'API listening', port: 3000 });
    expect(loadConfig({ NODE_ENV: 'production' }).LOG_FORMAT).toBe('json');
    expect(loadConfig({}).LOG_FORMAT).toBe('pretty');
  });
});
