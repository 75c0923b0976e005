import { ATTEMPT_LOG_MAX_BYTES, ATTEMPT_LOG_MAX_LINES } from '../../src/ledger/attempt-logs.js';
import { type Logger, redactFields } from '../../src/lib/logger.js';

/** One line's message and fields are cut to this many characters each. */
const LINE_MAX_CHARS = 2_000;

export interface AttemptLogLine {
  at: string;
  level: string;
  message: string;
  fields?: unknown;
}

export interface AttemptLog {
  lines: AttemptLogLine[];
  dropped: number;
}

/**
 * The logger a tool gets as ctx.logger: every line goes to the process's log as before, and is
 * also kept for the attempt (bounded), so GET /tasks/{id}/steps/{step}/logs shows what the tool
 * said. Secret-named fields are redacted as on the process's log.
 */
export function capturingLogger(logger: Logger): { logger: Logger; take(): AttemptLog } {
  const lines: AttemptLogLine[] = [];
  let bytes = 0;
  let dropped = 0;
  const keep = (level: string, message: unknown, meta: unknown[]) => {
    const [first] = meta;
    const fields = first !== null && typeof first === 'object' && !(first instanceof Error) ? redactFields(first) : undefined;
    const line: AttemptLogLine = {
      at: new Date().toISOString(),
      level,
      message: String(message instanceof Error ? message.message : message).slice(0, LINE_MAX_CHARS),
    };
    if (fields !== undefined) {
      const text = JSON.stringify(fields) ?? '';
      line.fields = text.length <= LINE_MAX_CHARS ? fields : { truncated: text.slice(0, LINE_MAX_CHARS) };
    }
    const size = JSON.stringify(line).length;
    if (lines.length >= ATTEMPT_LOG_MAX_LINES || bytes + size > ATTEMPT_LOG_MAX_BYTES) {
      dropped += 1;
      return;
    }
    lines.push(line);
    bytes += size;
  };
  // Every call (info, warn, log, …) ends in write(info) with the call's own fields merged: one
  // place sees each line once. Made the way winston makes a child (its write is read-only).
  const parent = logger as unknown as { write(info: Record<string, unknown>): unknown };
  const child = Object.create(logger, {
    write: {
      value(info: Record<string, unknown>) {
        const { level, message, ...rest } = info;
        keep(String(level), message, Object.keys(rest).length > 0 ? [rest] : []);
        return parent.write(info);
      },
    },
  }) as Logger;
  return { logger: child, take: () => ({ lines: lines.splice(0), dropped }) };
}
