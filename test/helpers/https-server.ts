import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { TLSSocket } from 'node:tls';

/** A self-signed certificate for `name` (its own CA), made with the openssl command line. */
export function selfSignedCertificate(name: string): { key: string; cert: string } {
  const dir = mkdtempSync(path.join(tmpdir(), 'orch-tls-'));
  try {
    const keyFile = path.join(dir, 'key.pem');
    const certFile = path.join(dir, 'cert.pem');
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-days',
        '1',
        '-subj',
        `/CN=${name}`,
        '-addext',
        `subjectAltName=DNS:${name}`,
        '-keyout',
        keyFile,
        '-out',
        certFile,
      ],
      { stdio: 'ignore' },
    );
    return { key: readFileSync(keyFile, 'utf8'), cert: readFileSync(certFile, 'utf8') };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export interface TestHttpsServer {
  port: number;
  /** The certificate, to trust it as a CA. */
  cert: string;
  /** TCP connections accepted, whether or not TLS completed. */
  connections: number;
  /** The SNI of each TLS handshake that completed (`false`: none was sent). */
  serverNames: (string | false)[];
  /** Host header of each request answered. */
  hosts: (string | undefined)[];
  close(): Promise<void>;
}

/** An HTTPS server on 127.0.0.1 with a certificate for `name`, answering 200 `{ok: true}`. */
export async function startHttpsServer(name: string): Promise<TestHttpsServer> {
  const { key, cert } = selfSignedCertificate(name);
  const server = https.createServer({ key, cert }, (req, res) => {
    state.hosts.push(req.headers.host);
    res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
  });
  const state: TestHttpsServer = {
    port: 0,
    cert,
    connections: 0,
    serverNames: [],
    hosts: [],
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  server.on('connection', () => {
    state.connections += 1;
  });
  server.on('secureConnection', (socket: TLSSocket) => {
    state.serverNames.push((socket as TLSSocket & { servername: string | false }).servername);
  });
  // A client that refuses the certificate ends the handshake: not an error of the server's.
  server.on('tlsClientError', () => undefined);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  state.port = (server.address() as AddressInfo).port;
  return state;
}
