import { request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sendJson } from '../../src/api/http.js';

/** The answer as it went over the wire: status, raw header lines (names as written) and body. */
function raw(port: number, method: string, path: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: string[]; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ port, host: '127.0.0.1', method, path, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => {
        const lines: string[] = [];
        for (let i = 0; i < res.rawHeaders.length; i += 2)
          if (res.rawHeaders[i]!.toLowerCase() !== 'date') lines.push(`${res.rawHeaders[i]}: ${res.rawHeaders[i + 1]}`);
        resolve({ status: res.statusCode ?? 0, headers: lines, body: Buffer.concat(chunks).toString('utf8') });
      });
    });
    req.on('error', reject);
    req.end();
  });
}

describe('sendJson writes what res.status(status).json(body) writes', () => {
  const cases: Record<string, { status: number; body: unknown; headers?: Record<string, string> }> = {
    object: { status: 200, body: { task_id: 'x', nested: { list: [1, 'two', null, true] } } },
    accepted: { status: 202, body: { message: 'Task \u00e9\u4e2d\u{1f600} assigned', at: new Date(0) } },
    refused: { status: 429, body: { error: { code: 'rate_limited' } }, headers: { 'retry-after': '3' } },
    text: { status: 200, body: 'a string' },
    nothing: { status: 200, body: null },
    number: { status: 201, body: 42 },
    absent: { status: 200, body: undefined },
    empty: { status: 204, body: { ignored: true } },
  };
  let server: Server;
  let port: number;
  beforeAll(async () => {
    const app = express();
    app.set('etag', false);
    app.disable('x-powered-by');
    for (const [name, { status, body, headers }] of Object.entries(cases)) {
      app.all(`/lean/${name}`, (req, res) => {
        if (headers) res.set(headers);
        sendJson(req, res, status, body);
      });
      app.all(`/express/${name}`, (_req, res) => {
        if (headers) res.set(headers);
        res.status(status).json(body);
      });
    }
    server = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
  });

  it.each(Object.keys(cases))('%s, to GET, POST, HEAD and a conditional GET', async (name) => {
    for (const [method, headers] of [
      ['GET', {}],
      ['POST', {}],
      ['HEAD', {}],
      ['GET', { 'if-none-match': '*' }],
    ] as [string, Record<string, string>][]) {
      const lean = await raw(port, method, `/lean/${name}`, headers);
      const plain = await raw(port, method, `/express/${name}`, headers);
      expect(lean, `${method} ${JSON.stringify(headers)}`).toEqual(plain);
    }
  });
});
