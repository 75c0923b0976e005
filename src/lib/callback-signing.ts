import { createHmac, hkdfSync } from 'node:crypto';

/** The headers of a completion callback. */
export const CALLBACK_HEADERS = {
  signature: 'x-orchestrator-signature',
  timestamp: 'x-orchestrator-timestamp',
  owner: 'x-orchestrator-owner',
} as const;

/** Bound to this use: the same CALLBACK_SECRET elsewhere gives other keys. */
const SALT = 'orchestrator/callbacks/v1';

/**
 * The secret that signs the callbacks of the tasks `owner` (an API key's id, '' without keys)
 * submits: HKDF-SHA256 of CALLBACK_SECRET with the owner as info, 32 bytes as hex. A client reads
 * its own (GET /callback-secret) and cannot compute another's, so it cannot sign as them.
 */
export function callbackSecretFor(callbackSecret: string, owner: string): string {
  return Buffer.from(hkdfSync('sha256', callbackSecret, SALT, `owner:${owner}`, 32)).toString('hex');
}

/**
 * HMAC-SHA256 with the owner's secret over `${timestamp}.${body}`, hex, sent as `sha256=<hex>`.
 * The body names the owner and the callback URL, so both are signed.
 */
export function signCallback(secret: string, timestamp: number, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')}`;
}

/** The hosts `owner`'s callbacks may reach: its own list in CALLBACK_ALLOWED_HOSTS_BY_KEY, else HTTP_TOOL_ALLOWED_HOSTS. */
export function callbackHostsFor(
  config: { HTTP_TOOL_ALLOWED_HOSTS: readonly string[]; CALLBACK_ALLOWED_HOSTS_BY_KEY: Readonly<Record<string, readonly string[]>> },
  owner: string,
): readonly string[] {
  return Object.hasOwn(config.CALLBACK_ALLOWED_HOSTS_BY_KEY, owner) ? config.CALLBACK_ALLOWED_HOSTS_BY_KEY[owner]! : config.HTTP_TOOL_ALLOWED_HOSTS;
}
