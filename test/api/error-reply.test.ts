import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { toErrorReply } from '../../src/api/http.js';
import { DependencyUnavailableError } from '../../src/lib/errors.js';
import { createLogger } from '../../src/lib/logger.js';

/** The JSON lines a logger at `info` writes while `act` runs. */
async function logged(act: (logger: ReturnType<typeof createLogger>) => void): Promise<Record<string, unknown>[]> {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk, _encoding, done) {
      lines.push(String(chunk));
      done();
    },
  });
  act(createLogger({ LOG_LEVEL: 'info', LOG_FORMAT: 'json' }, stream));
  await new Promise((resolve) => setImmediate(resolve));
  return lines.map((line) => JSON.parse(line) as Record<string, unknown>);
}

describe('a 503 for a dependency', () => {
  it('says nothing in the log when the dependency is away, and the cause when it refused for another reason', async () => {
    const away = await logged((logger) => {
      const reply = toErrorReply(new DependencyUnavailableError('redis', new Error('Connection is closed.')), logger);
      expect(reply.status).toBe(503);
    });
    expect(away).toEqual([]);
    // BullMQ refusing an option (as it refused priority 2,097,152) came back as "the queue is unavailable" with nothing logged.
    const refused = await logged((logger) => {
      const reply = toErrorReply(new DependencyUnavailableError('redis', new Error('Priority should be between 0 and 2097151')), logger);
      expect(reply.status).toBe(503);
      expect(reply.body).toMatchObject({ error: { code: 'service_unavailable' } });
    });
    expect(refused).toEqual([expect.objectContaining({ level: 'warn', dependency: 'redis', error: 'Priority should be between 0 and 2097151' })]);
  });
});
