import type { components } from './openapi.js';

/** The body of a completion callback: the event, the owner and URL it was signed for, and the task. */
export interface CallbackPayload {
  /** `task.waiting`: a step (`step_id`) started waiting for a signal or an approval; the others: the task's end. */
  event: 'task.completed' | 'task.failed' | 'task.cancelled' | 'task.waiting';
  /** With `task.waiting`: the step that waits (its `waiting_for` holds the signal and the approval links). */
  step_id?: string;
  delivery_id: string;
  attempt: number;
  owner: string;
  callback_url: string;
  task: components['schemas']['TaskView'];
}

export interface VerifyCallbackOptions {
  /** This key's callback secret (`client.callbackSecret()`, GET /callback-secret). */
  secret: string;
  /** The body exactly as received, before any JSON parsing. */
  body: string;
  /** The request's headers (a fetch `Headers`, or Node's `req.headers`). */
  headers: Headers | Record<string, string | string[] | undefined>;
  /** The URL the receiver was given as `callback_url`; when set, the signed body must name it. */
  url?: string;
  /** Oldest (and furthest ahead) timestamp accepted, in seconds. @defaultValue 300 */
  toleranceS?: number;
  /** Now, in ms (tests). @defaultValue Date.now() */
  now?: number;
}

export type VerifiedCallback = { ok: true; payload: CallbackPayload } | { ok: false; reason: string };

function header(headers: VerifyCallbackOptions['headers'], name: string): string | undefined {
  if (typeof (headers as Headers).get === 'function') return (headers as Headers).get(name) ?? undefined;
  const value = (headers as Record<string, string | string[] | undefined>)[name];
  return Array.isArray(value) ? value[0] : value;
}

/** Equal strings, compared in time that does not depend on where they differ. */
function sameText(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let difference = 0;
  for (let index = 0; index < a.length; index += 1) difference |= a.charCodeAt(index) ^ b.charCodeAt(index);
  return difference === 0;
}

async function hmacHex(secret: string, text: string): Promise<string> {
  const encoder = new TextEncoder();
  const key = await globalThis.crypto.subtle.importKey('raw', encoder.encode(secret), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  const signature = new Uint8Array(await globalThis.crypto.subtle.sign('HMAC', key, encoder.encode(text)));
  return Array.from(signature, (byte) => byte.toString(16).padStart(2, '0')).join('');
}

/**
 * Checks a completion callback as a receiver must: the signature and timestamp headers are
 * there, the timestamp is within `toleranceS` of now (an old delivery replayed is refused), the
 * signature is this key's over `<timestamp>.<body>`, and the body names the URL it was sent to.
 * Works in browsers and Node (Web Crypto).
 */
export async function verifyCallback(options: VerifyCallbackOptions): Promise<VerifiedCallback> {
  const signature = header(options.headers, 'x-orchestrator-signature');
  const timestamp = header(options.headers, 'x-orchestrator-timestamp');
  if (!signature || !timestamp) return { ok: false, reason: 'the signature or timestamp header is missing' };
  if (!/^\d{1,12}$/.test(timestamp)) return { ok: false, reason: 'the timestamp is not a number of seconds' };
  const ageS = Math.abs((options.now ?? Date.now()) / 1000 - Number(timestamp));
  if (ageS > (options.toleranceS ?? 300)) return { ok: false, reason: 'the timestamp is outside the replay window' };
  const expected = `sha256=${await hmacHex(options.secret, `${timestamp}.${options.body}`)}`;
  if (!sameText(signature, expected)) return { ok: false, reason: 'the signature does not match' };
  let payload: CallbackPayload;
  try {
    payload = JSON.parse(options.body) as CallbackPayload;
  } catch {
    return { ok: false, reason: 'the body is not JSON' };
  }
  if (options.url !== undefined && payload.callback_url !== options.url) return { ok: false, reason: 'the callback was signed for another URL' };
  return { ok: true, payload };
}
