import dns from 'node:dns';
import http from 'node:http';
import https from 'node:https';
import type { LookupFunction } from 'node:net';
import { NonRetryableError, RetryableError } from '../errors.js';
import type { HostPolicy } from './host-policy.js';

/** The request went to, or was redirected to, a host the policy refuses. Never retried. */
export class HostRefusedError extends NonRetryableError {
  override name = 'HostRefusedError';
}

export interface OutboundRequest {
  method: string;
  url: string;
  headers?: Record<string, string>;
  body?: string;
  timeoutMs: number;
  signal?: AbortSignal;
  /** @defaultValue 5 */
  maxRedirects?: number;
  /** Larger answers fail the request. @defaultValue 10 MiB */
  maxResponseBytes?: number;
}

export interface OutboundResponse {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
  /** After redirects. */
  url: string;
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

function guardedLookup(policy: HostPolicy): LookupFunction {
  return (hostname, options, callback) => {
    dns.lookup(hostname, { ...options, all: true }, (error, addresses) => {
      if (error) return callback(error, '', 4);
      for (const { address } of addresses) {
        const refused = policy.checkAddress(hostname, address);
        if (refused) return callback(new HostRefusedError(refused), '', 4);
      }
      if ((options as { all?: boolean }).all) return (callback as unknown as (e: null, a: dns.LookupAddress[]) => void)(null, addresses);
      const first = addresses[0]!;
      return callback(null, first.address, first.family);
    });
  };
}

function once(policy: HostPolicy, url: URL, request: OutboundRequest, method: string, body: string | undefined, signal: AbortSignal) {
  const client = url.protocol === 'https:' ? https : http;
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
        lookup: guardedLookup(policy),
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
    if (next.origin !== url.origin) {
      // Credentials are for the origin they were given to.
      headers = Object.fromEntries(Object.entries(headers).filter(([key]) => !/^(authorization|cookie)$/i.test(key)));
    }
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
