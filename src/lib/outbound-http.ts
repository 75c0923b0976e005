import dns from 'node:dns';
import http from 'node:http';
import https from 'node:https';
import net, { type LookupFunction } from 'node:net';
import tls from 'node:tls';
import { NonRetryableError, RetryableError } from './errors.js';
import type { HostPolicy } from './host-policy.js';

/** The request went to, or was redirected to, a host the policy refuses. Never retried. */
export class HostRefusedError extends NonRetryableError {
  override name = 'HostRefusedError';
}

export interface OutboundRequest {
  method: string;
  url: string;
  /** Checked by headerProblem: framing and hop-by-hop headers are the client's business, not the caller's. */
  headers?: Record<string, string>;
  body?: string;
  timeoutMs: number;
  signal?: AbortSignal;
  /** @defaultValue 5 */
  maxRedirects?: number;
  /** Larger answers fail the request. @defaultValue 10 MiB */
  maxResponseBytes?: number;
  /** CA certificates to trust instead of Node's bundled roots (tests with a local HTTPS server). */
  ca?: string;
}

export interface OutboundResponse {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
  /** After redirects. */
  url: string;
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

/**
 * Headers that decide how the message is framed or routed, or that concern one connection:
 * the HTTP client sets them (Host from the URL, Content-Length from the body). A caller's
 * value could smuggle a second request, reach another virtual host than the one checked, or
 * turn the connection into something else.
 */
const RESERVED_HEADERS = new Set([
  'host',
  'content-length',
  'transfer-encoding',
  'connection',
  'keep-alive',
  'upgrade',
  'te',
  'trailer',
  'expect',
  'proxy-connection',
  'proxy-authorization',
  'proxy-authenticate',
  'http2-settings',
]);
/** RFC 9110 token. */
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** Visible ASCII, Latin-1 and spaces or tabs: no CR, LF, NUL or other control characters. */
const HEADER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

/** Why a caller may not send this header, or undefined. */
export function headerProblem(name: string, value: string): string | undefined {
  if (!HEADER_NAME.test(name)) return 'is not a valid header name';
  if (RESERVED_HEADERS.has(name.toLowerCase())) return `${name} is set by the HTTP client and cannot be given`;
  if (!HEADER_VALUE.test(value)) return 'the value holds a line break, a control character or a character outside Latin-1';
  return undefined;
}

function guardedLookup(policy: HostPolicy, port: number, defaultPort: number): LookupFunction {
  return (hostname, options, callback) => {
    dns.lookup(hostname, { ...options, all: true }, (error, addresses) => {
      if (error) return callback(error, '', 4);
      for (const { address } of addresses) {
        const refused = policy.checkAddress(hostname, address, port, defaultPort);
        if (refused) return callback(new HostRefusedError(refused), '', 4);
      }
      if ((options as { all?: boolean }).all) return (callback as unknown as (e: null, a: dns.LookupAddress[]) => void)(null, addresses);
      const first = addresses[0]!;
      return callback(null, first.address, first.family);
    });
  };
}

/**
 * TLS bound to the URL's host name: it is the SNI sent (none for an IP address) and the name the
 * certificate must match, whatever else the request carries.
 */
function tlsOptions(url: URL, ca: string | undefined): https.RequestOptions {
  const hostname = url.hostname.replace(/^\[|\]$/g, '');
  return {
    servername: net.isIP(hostname) ? '' : hostname,
    checkServerIdentity: (_name, cert) => tls.checkServerIdentity(hostname, cert),
    ...(ca !== undefined ? { ca } : {}),
  };
}

function once(policy: HostPolicy, url: URL, request: OutboundRequest, method: string, body: string | undefined, signal: AbortSignal) {
  const secure = url.protocol === 'https:';
  const client = secure ? https : http;
  const port = Number(url.port || (secure ? 443 : 80));
  const limit = request.maxResponseBytes ?? 10 * 1024 * 1024;
  return new Promise<OutboundResponse>((resolve, reject) => {
    // Settled once: after an oversized answer is cut off, its 'end' must not resolve a truncated body.
    let failed = false;
    const fail = (error: unknown) => {
      if (failed) return;
      failed = true;
      reject(error);
    };
    const req = client.request(
      url,
      {
        method,
        headers: { ...(body !== undefined ? { 'content-length': String(Buffer.byteLength(body)) } : {}), ...request.headers },
        lookup: guardedLookup(policy, port, secure ? 443 : 80),
        ...(secure ? tlsOptions(url, request.ca) : {}),
        signal,
        // A fresh connection per request: a pooled socket would skip the address check.
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          if (failed) return;
          size += chunk.length;
          if (size > limit) {
            fail(new NonRetryableError(`response larger than ${limit} bytes`));
            req.destroy();
            return;
          }
          chunks.push(chunk);
        });
        res.on('error', fail);
        res.on('end', () => {
          if (failed) return;
          const headers: Record<string, string> = {};
          for (const [key, value] of Object.entries(res.headers)) {
            if (value !== undefined) headers[key] = Array.isArray(value) ? value.join(', ') : value;
          }
          resolve({ status: res.statusCode ?? 0, headers, body: Buffer.concat(chunks), url: url.toString() });
        });
      },
    );
    req.on('error', fail);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

/**
 * One HTTP request under a host policy, following redirects itself so that every hop is
 * checked. Network failures become RetryableError; refused hosts become HostRefusedError.
 * The answer's status is returned as is: the caller decides what a 4xx or 5xx means.
 */
export async function outboundRequest(policy: HostPolicy, request: OutboundRequest): Promise<OutboundResponse> {
  for (const [name, value] of Object.entries(request.headers ?? {})) {
    const problem = headerProblem(name, value);
    if (problem) throw new NonRetryableError(`header ${JSON.stringify(name)}: ${problem}`);
  }
  const timeout = AbortSignal.timeout(request.timeoutMs);
  const signal = request.signal ? AbortSignal.any([request.signal, timeout]) : timeout;
  let url = new URL(request.url);
  let method = request.method.toUpperCase();
  let body = request.body;
  let headers = { ...request.headers };
  const maxRedirects = request.maxRedirects ?? 5;
  for (let hop = 0; ; hop += 1) {
    const refused = policy.checkUrl(url);
    if (refused) throw new HostRefusedError(hop === 0 ? refused : `redirect refused: ${refused}`);
    let response: OutboundResponse;
    try {
      response = await once(policy, url, { ...request, headers }, method, body, signal);
    } catch (error) {
      if (error instanceof HostRefusedError && hop > 0) throw new HostRefusedError(`redirect refused: ${error.message}`);
      if (error instanceof NonRetryableError) throw error;
      if (signal.aborted) throw signal.reason ?? error;
      throw new RetryableError(`request to ${url.host} failed: ${(error as Error).message}`);
    }
    const location = response.headers.location;
    if (!REDIRECTS.has(response.status) || !location) return response;
    if (hop >= maxRedirects) throw new NonRetryableError(`more than ${maxRedirects} redirects`);
    const next = new URL(location, url);
    if (response.status === 303 || ((response.status === 301 || response.status === 302) && method !== 'GET' && method !== 'HEAD')) {
      method = 'GET';
      body = undefined;
    }
    // Every header the caller gave was meant for its origin (credentials are only the obvious
    // case: API keys, tenant ids, signatures travel in headers of any name).
    if (next.origin !== url.origin) headers = {};
    url = next;
  }
}

/** Milliseconds to wait from a Retry-After header (seconds or an HTTP date), if it has one. */
export function parseRetryAfter(value: string | undefined, now = Date.now()): number | undefined {
  if (!value) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}
