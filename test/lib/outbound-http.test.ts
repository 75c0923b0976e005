import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NonRetryableError, RetryableError } from '../../src/lib/errors.js';
import { HostPolicy } from '../../src/lib/host-policy.js';
import { HostRefusedError, outboundRequest, parseRetryAfter } from '../../src/lib/outbound-http.js';
import { json, startServer, type TestServer } from '../helpers/http-server.js';
import { startHttpsServer, type TestHttpsServer } from '../helpers/https-server.js';

describe('outboundRequest', () => {
  let server: TestServer;
  let policy: HostPolicy;

  beforeAll(async () => {
    server = await startServer((request, res) => {
      const url = new URL(request.path, 'http://local');
      if (url.pathname === '/big') return json(res, 200, { blob: 'x'.repeat(5_000) });
      if (url.pathname === '/silent') return; // never answers
      if (url.pathname === '/cut') {
        // Headers and half a body, then the connection drops.
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': '100' });
        res.write('{"half":');
        setTimeout(() => res.socket?.destroy(), 20);
        return;
      }
      if (url.pathname === '/see-other') {
        res.writeHead(303, { location: '/seen' });
        return res.end();
      }
      return json(res, 200, { method: request.method, body: request.body });
    });
    policy = new HostPolicy([`127.0.0.1:${server.port}`]);
  });
  afterAll(async () => {
    await server.close();
  });

  const request = (path: string, extra: Partial<Parameters<typeof outboundRequest>[1]> = {}) =>
    outboundRequest(policy, { method: 'GET', url: `${server.origin}${path}`, timeoutMs: 5_000, ...extra });

  it('checks the resolved address at connect time, so a name the URL check let through cannot reach loopback', async () => {
    // As if DNS had answered 127.0.0.1 for a wildcard-matched name: the URL check passes, the
    // address check must still refuse, before any byte is sent.
    class UrlCheckPasses extends HostPolicy {
      override checkUrl(): undefined {
        return undefined;
      }
    }
    const before = server.requests.length;
    const attempt = outboundRequest(new UrlCheckPasses(['*.example.com']), { method: 'GET', url: `http://localhost:${server.port}/rebound`, timeoutMs: 5_000 });
    await expect(attempt).rejects.toBeInstanceOf(HostRefusedError);
    await expect(attempt).rejects.toThrow(/localhost resolves to 127\.0\.0\.1, a private or link-local address/);
    expect(server.requests.length).toBe(before);
  });

  it('holds a name allowlisted with a port to that port when it resolves to loopback', async () => {
    const other = await startServer((_request, res) => json(res, 200, { reached: true }));
    try {
      class UrlCheckPasses extends HostPolicy {
        override checkUrl(): undefined {
          return undefined;
        }
      }
      const attempt = outboundRequest(new UrlCheckPasses([`localhost:${server.port}`]), {
        method: 'GET',
        url: `http://localhost:${other.port}/other-port`,
        timeoutMs: 5_000,
      });
      await expect(attempt).rejects.toBeInstanceOf(HostRefusedError);
      await expect(attempt).rejects.toThrow(new RegExp(`not explicitly allowlisted on port ${other.port}`));
      expect(other.requests).toHaveLength(0);
    } finally {
      await other.close();
    }
  });

  it('lets an exactly allowlisted name resolve to loopback', async () => {
    const response = await outboundRequest(new HostPolicy([`localhost:${server.port}`]), {
      method: 'GET',
      url: `http://localhost:${server.port}/named`,
      timeoutMs: 5_000,
    });
    expect(response.status).toBe(200);
  });

  it('with HTTP_TOOL_PRIVATE_NAMES=refuse, refuses that name resolving to loopback before sending anything; an IP entry still reaches it', async () => {
    const before = server.requests.length;
    const attempt = outboundRequest(new HostPolicy([`localhost:${server.port}`], 'refuse'), {
      method: 'GET',
      url: `http://localhost:${server.port}/named-refused`,
      timeoutMs: 5_000,
    });
    await expect(attempt).rejects.toBeInstanceOf(HostRefusedError);
    await expect(attempt).rejects.toThrow(/localhost resolves to 127\.0\.0\.1, a private or link-local address: HTTP_TOOL_PRIVATE_NAMES=refuse/);
    expect(server.requests.length).toBe(before);
    const byAddress = await outboundRequest(new HostPolicy([`127.0.0.1:${server.port}`], 'refuse'), {
      method: 'GET',
      url: `${server.origin}/by-address`,
      timeoutMs: 5_000,
    });
    expect(byAddress.status).toBe(200);
  });

  it('turns a refused connection into a RetryableError', async () => {
    const closed = net.createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', () => resolve()));
    const { port } = closed.address() as net.AddressInfo;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const attempt = outboundRequest(new HostPolicy([`127.0.0.1:${port}`]), { method: 'GET', url: `http://127.0.0.1:${port}/`, timeoutMs: 5_000 });
    await expect(attempt).rejects.toBeInstanceOf(RetryableError);
    await expect(attempt).rejects.toThrow(/ECONNREFUSED/);
  });

  it('fails an answer larger than maxResponseBytes without retry', async () => {
    const attempt = request('/big', { maxResponseBytes: 1_000 });
    await expect(attempt).rejects.toBeInstanceOf(NonRetryableError);
    await expect(attempt).rejects.toThrow(/larger than 1000 bytes/);
  });

  it('fails, as retryable, an answer whose connection drops halfway instead of returning a truncated body', async () => {
    const attempt = request('/cut');
    await expect(attempt).rejects.toBeInstanceOf(RetryableError);
  });

  it('gives up after timeoutMs when the server does not answer', async () => {
    const started = Date.now();
    await expect(request('/silent', { timeoutMs: 200 })).rejects.toMatchObject({ name: 'TimeoutError' });
    expect(Date.now() - started).toBeLessThan(3_000);
  });

  it('stops when the caller aborts, with the caller reason', async () => {
    const controller = new AbortController();
    const attempt = request('/silent', { signal: controller.signal });
    const reason = new Error('stopped by the caller');
    setImmediate(() => controller.abort(reason));
    await expect(attempt).rejects.toBe(reason);
  });

  it('refuses framing and hop-by-hop headers, and malformed ones, before connecting', async () => {
    const before = server.requests.length;
    for (const [name, value] of [
      ['Host', 'internal.example.com'],
      ['content-length', '0'],
      ['Transfer-Encoding', 'chunked'],
      ['CONNECTION', 'upgrade'],
      ['keep-alive', 'timeout=5'],
      ['Upgrade', 'websocket'],
      ['TE', 'trailers'],
      ['Trailer', 'x-sum'],
      ['Expect', '100-continue'],
      ['proxy-connection', 'keep-alive'],
      ['Proxy-Authorization', 'Basic eDp5'],
      ['x-split', 'a\r\nX-Injected: 1'],
      ['x-lf', 'a\nb'],
      ['x-nul', 'a\u0000b'],
      ['x-wide', 'snowman \u2603'],
      ['bad name', '1'],
      ['x-crlf\r\nx-injected', '1'],
      ['', '1'],
    ] as const) {
      const attempt = request('/framing', { headers: { [name]: value } });
      await expect(attempt, JSON.stringify(name)).rejects.toBeInstanceOf(NonRetryableError);
      await expect(attempt, JSON.stringify(name)).rejects.toThrow(/^header /);
    }
    expect(server.requests.length).toBe(before);
  });

  it('keeps the caller headers on a same-origin redirect and drops all of them across origins', async () => {
    const other = await startServer((_request, res) => json(res, 200, { landed: true }));
    const first = await startServer((incoming, res) => {
      const to = incoming.path === '/start' ? '/same-origin' : `${other.origin}/landing`;
      res.writeHead(307, { location: to }).end();
    });
    try {
      const policy = new HostPolicy([`127.0.0.1:${first.port}`, `127.0.0.1:${other.port}`]);
      const headers = { authorization: 'Bearer secret', 'x-api-key': 'k-123', 'x-tenant': 'acme', 'content-type': 'application/json' };
      const response = await outboundRequest(policy, { method: 'POST', url: `${first.origin}/start`, headers, body: '{"a":1}', timeoutMs: 5_000 });
      expect(response).toMatchObject({ status: 200, url: `${other.origin}/landing` });
      const [sameOrigin] = first.received('/same-origin');
      expect(sameOrigin!.headers).toMatchObject({ authorization: 'Bearer secret', 'x-api-key': 'k-123', 'x-tenant': 'acme' });
      const [landed] = other.received('/landing');
      // A 307 keeps the method and the body; none of the headers given for the first origin.
      expect(landed).toMatchObject({ method: 'POST', body: '{"a":1}' });
      for (const name of Object.keys(headers)) expect(landed!.headers[name], name).toBeUndefined();
    } finally {
      await Promise.all([first.close(), other.close()]);
    }
  });

  it('follows a 303 after a POST as a GET without the body', async () => {
    const response = await request('/see-other', { method: 'POST', body: '{"a":1}', headers: { 'content-type': 'application/json' } });
    expect(response.url).toBe(`${server.origin}/seen`);
    const [seen] = server.received('/seen');
    expect(seen).toMatchObject({ method: 'GET', body: '' });
  });
});

describe('outboundRequest over TLS', () => {
  let tlsServer: TestHttpsServer;
  let policy: HostPolicy;
  beforeAll(async () => {
    tlsServer = await startHttpsServer('localhost');
    policy = new HostPolicy([`localhost:${tlsServer.port}`, `127.0.0.1:${tlsServer.port}`]);
  });
  afterAll(async () => {
    await tlsServer.close();
  });

  it("sends the URL's host name as SNI and accepts a certificate for that name", async () => {
    const response = await outboundRequest(policy, { method: 'GET', url: `https://localhost:${tlsServer.port}/sni`, timeoutMs: 5_000, ca: tlsServer.cert });
    expect(response.status).toBe(200);
    expect(tlsServer.serverNames.at(-1)).toBe('localhost');
    expect(tlsServer.hosts.at(-1)).toBe(`localhost:${tlsServer.port}`);
  });

  it('refuses a certificate that does not name the host of the URL', async () => {
    // Reached by IP: no SNI, and a certificate for "localhost" does not cover 127.0.0.1.
    const attempt = outboundRequest(policy, { method: 'GET', url: `https://127.0.0.1:${tlsServer.port}/by-ip`, timeoutMs: 5_000, ca: tlsServer.cert });
    await expect(attempt).rejects.toThrow(/IP: 127\.0\.0\.1 is not in the cert's list/);
  });

  it('never lets a Host header choose the SNI or the name the certificate is checked against', async () => {
    const connections = tlsServer.connections;
    const attempt = outboundRequest(policy, {
      method: 'GET',
      url: `https://localhost:${tlsServer.port}/spoofed`,
      headers: { host: 'bank.example.com' },
      timeoutMs: 5_000,
      ca: tlsServer.cert,
    });
    await expect(attempt).rejects.toBeInstanceOf(NonRetryableError);
    expect(tlsServer.connections).toBe(connections);
  });
});

describe('parseRetryAfter', () => {
  it('reads seconds and HTTP dates, and ignores what it cannot read', () => {
    const now = Date.parse('2026-01-01T00:00:00Z');
    expect(parseRetryAfter('1', now)).toBe(1_000);
    expect(parseRetryAfter(' 120 ', now)).toBe(120_000);
    expect(parseRetryAfter('Thu, 01 Jan 2026 00:00:30 GMT', now)).toBe(30_000);
    expect(parseRetryAfter('Wed, 31 Dec 2025 23:00:00 GMT', now)).toBe(0);
    expect(parseRetryAfter('soon', now)).toBeUndefined();
    expect(parseRetryAfter(undefined, now)).toBeUndefined();
    expect(parseRetryAfter('', now)).toBeUndefined();
  });
});
