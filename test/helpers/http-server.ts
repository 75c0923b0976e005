import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface RecordedRequest {
  method: string;
  /** Path and query. */
  path: string;
  headers: http.IncomingHttpHeaders;
  body: string;
  /** When the request arrived (Date.now()). */
  at: number;
}

export type Route = (request: RecordedRequest, res: http.ServerResponse) => void;

/** A local stand-in for a third-party HTTP service, recording every request it receives. */
export interface TestServer {
  port: number;
  /** `http://127.0.0.1:port` (or `http://[::1]:port` for an IPv6 server). */
  origin: string;
  requests: RecordedRequest[];
  /** Requests whose path starts with `prefix`. */
  received(prefix: string): RecordedRequest[];
  close(): Promise<void>;
}

/** Listens on `host` (port 0). `::` listens on IPv6 and IPv4 at once. */
export async function startServer(route: Route, host = '127.0.0.1'): Promise<TestServer> {
  const requests: RecordedRequest[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const recorded = { method: req.method ?? '', path: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString('utf8'), at: Date.now() };
      requests.push(recorded);
      try {
        route(recorded, res);
      } catch (error) {
        res.statusCode = 599;
        res.end(String(error));
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    port,
    origin: host.includes(':') ? `http://[::1]:${port}` : `http://127.0.0.1:${port}`,
    requests,
    received: (prefix) => requests.filter((request) => request.path.startsWith(prefix)),
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export function json(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', ...headers });
  res.end(JSON.stringify(body));
}
