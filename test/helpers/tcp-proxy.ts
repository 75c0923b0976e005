import net from 'node:net';

/**
 * A TCP proxy in front of a real service (PostgreSQL, Redis), so a test can take the service
 * "down" for one client without touching the service itself.
 */
export interface TcpProxy {
  /** The port the proxy listens on (127.0.0.1). */
  port: number;
  /** Connections accepted and forwarded so far. */
  readonly accepted: number;
  /** Destroys every open connection and refuses new ones (they are reset at once). */
  pause(): void;
  /** Forwards new connections again. */
  resume(): void;
  close(): Promise<void>;
}

export async function startTcpProxy(target: { host?: string; port: number }): Promise<TcpProxy> {
  const host = target.host ?? '127.0.0.1';
  const open = new Set<net.Socket>();
  let paused = false;
  let accepted = 0;

  const server = net.createServer((client) => {
    if (paused) {
      client.resetAndDestroy();
      return;
    }
    accepted += 1;
    const upstream = net.connect(target.port, host);
    open.add(client);
    open.add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      open.delete(client);
      open.delete(upstream);
    };
    client.on('error', drop);
    upstream.on('error', drop);
    client.on('close', drop);
    upstream.on('close', drop);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });

  return {
    port: (server.address() as net.AddressInfo).port,
    get accepted() {
      return accepted;
    },
    pause() {
      paused = true;
      for (const socket of open) socket.destroy();
      open.clear();
    },
    resume() {
      paused = false;
    },
    async close() {
      paused = true;
      for (const socket of open) socket.destroy();
      open.clear();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
