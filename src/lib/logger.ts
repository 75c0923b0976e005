import winston from 'winston';
import type { Config } from './config.js';
import { requestContext } from './request-context.js';

export type Logger = winston.Logger;

/** Keys whose values never reach a log line, wherever they appear in the metadata. */
const SECRET_KEY = /authorization|password|passwd|secret|token|api[-_]?key|cookie|credential/i;
const MAX_DEPTH = 6;

function redact(value: unknown, depth = 0): unknown {
  if (depth > MAX_DEPTH || value === null || typeof value !== 'object') return value;
  if (value instanceof Error) return value;
  if (Array.isArray(value)) return value.map((item) => redact(item, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [key, inner] of Object.entries(value)) {
    out[key] = SECRET_KEY.test(key) ? '[redacted]' : redact(inner, depth + 1);
  }
  return out;
}

/**
 * The values under secret-looking keys of a task's params (at any depth). The key-based
 * redaction above cannot see them once a template has copied them into another field, or an
 * adapter has quoted them in an error message: the worker removes these values from what it logs.
 */
export function secretValues(value: unknown): string[] {
  const found = new Set<string>();
  const stack: [unknown, boolean, number][] = [[value, false, 0]];
  while (stack.length > 0) {
    const [current, secret, depth] = stack.pop()!;
    if (typeof current === 'string') {
      if (secret && current.length >= 4) found.add(current);
    } else if (current !== null && typeof current === 'object' && depth < MAX_DEPTH) {
      for (const [key, inner] of Object.entries(current)) stack.push([inner, secret || SECRET_KEY.test(key), depth + 1]);
    }
  }
  return [...found];
}

/** A log line's fields with secret-named keys redacted, as the process's log writes them (a step's kept lines). */
export function redactFields(value: unknown): unknown {
  return redact(value);
}

/** `text` with every occurrence of the given secrets replaced. */
export function redactValues(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const secret of secrets) out = out.split(secret).join('[redacted]');
  return out;
}

const redactSecrets = winston.format((info) => {
  for (const key of Object.keys(info)) {
    if (key === 'level' || key === 'message') continue;
    info[key] = SECRET_KEY.test(key) ? '[redacted]' : redact(info[key]);
  }
  return info;
});

/** Every line written while serving a request carries its request id. */
const withRequestId = winston.format((info) => {
  const context = requestContext.getStore();
  if (context && info.request_id === undefined) info.request_id = context.requestId;
  return info;
});

const pretty = winston.format.printf(({ level, message, timestamp, stack, ...meta }) => {
  const rest = Object.keys(meta).length > 0 ? ` ${JSON.stringify(meta)}` : '';
  return `${String(timestamp)} ${level} ${String(message)}${rest}${stack ? `\n${String(stack)}` : ''}`;
});

/**
 * `destination` replaces the console (tests read what would have been printed). Pretty lines are
 * coloured only on a terminal: redirected to a file or a pipe (`npm start > app.log`) they carry no
 * escape codes, and NO_COLOR (no-color.org) turns colour off everywhere.
 */
export function createLogger(config: Pick<Config, 'LOG_LEVEL' | 'LOG_FORMAT' | 'LOG_FILE'>, destination?: NodeJS.WritableStream): Logger {
  const base = [winston.format.errors({ stack: true }), withRequestId(), redactSecrets(), winston.format.timestamp()];
  const json = winston.format.combine(...base, winston.format.json());
  const terminal = ((destination ?? process.stdout) as { isTTY?: boolean }).isTTY === true && !process.env.NO_COLOR;
  const format = config.LOG_FORMAT === 'json' ? json : winston.format.combine(...base, ...(terminal ? [winston.format.colorize()] : []), pretty);
  const transports: winston.transport[] = [
    destination ? new winston.transports.Stream({ stream: destination, format }) : new winston.transports.Console({ format }),
  ];
  if (config.LOG_FILE) {
    transports.push(
      new winston.transports.File({
        filename: config.LOG_FILE,
        format: json,
        maxsize: 10 * 1024 * 1024,
        maxFiles: 5,
        tailable: true,
      }),
    );
  }
  // Each transport formats what it writes: the logger's own format passes lines on as they are.
  // Its default (JSON) turned every line into JSON before the transports dropped those below
  // LOG_LEVEL: 1-2 % of the worker's busy time in the closed loop at 32 clients.
  return winston.createLogger({ level: config.LOG_LEVEL, format: passThrough(), transports });
}

const passThrough = winston.format((info) => info);

/** A logger that drops everything: for tests that do not look at logs. */
export function silentLogger(): Logger {
  return winston.createLogger({ silent: true, transports: [new winston.transports.Console()] });
}
