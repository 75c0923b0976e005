import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { freePort } from '../helpers/ports.js';
import { redisServerArgs } from '../helpers/redis-server.js';

const run = promisify(execFile);
const HOST = '127.0.0.1';

export interface RedisClusterOptions {
  masters: number;
  /** Replicas per master. @defaultValue 0 */
  replicas?: number;
  /** cluster-node-timeout: how long a master may be unreachable before its replica takes over. @defaultValue 5000 */
  nodeTimeoutMs?: number;
}

export interface ClusterNode {
  port: number;
  process: ChildProcess;
  exited: Promise<void>;
}

export interface RedisCluster {
  /** `host:port` of every node, comma-separated (REDIS_CLUSTER_NODES). */
  seeds: string;
  nodes: ClusterNode[];
  /** redis-cli against one node. */
  cli(port: number, ...args: string[]): Promise<string>;
  /** Stops every node still running and removes the cluster's files. */
  stop(): Promise<void>;
}

async function cli(port: number, ...args: string[]): Promise<string> {
  const { stdout } = await run('redis-cli', ['-h', HOST, '-p', String(port), ...args], { timeout: 10_000 });
  return stdout;
}

async function waitFor(label: string, check: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      if (await check()) return;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`Redis Cluster: timed out waiting for ${label}${last ? ` (${(last as Error).message})` : ''}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/**
 * Starts a private Redis Cluster from `redis-server` on free ports of 127.0.0.1, with its files
 * in a temporary directory: `masters` masters that split the slots evenly (redis-cli --cluster
 * create), each with `replicas` replicas. Resolves once every node reports cluster_state:ok and
 * knows every other node.
 */
export async function startRedisCluster(options: RedisClusterOptions): Promise<RedisCluster> {
  const replicas = options.replicas ?? 0;
  const size = options.masters * (1 + replicas);
  const dir = await mkdtemp(path.join(tmpdir(), 'orchestrator-cluster-'));
  const nodes: ClusterNode[] = [];
  // If the process dies without stopping the cluster, do not leave the nodes running.
  const killAll = () => {
    for (const node of nodes) if (node.process.exitCode === null && node.process.signalCode === null) node.process.kill('SIGKILL');
  };
  process.once('exit', killAll);
  const stop = async () => {
    process.off('exit', killAll);
    for (const node of nodes) if (node.process.exitCode === null && node.process.signalCode === null) node.process.kill('SIGTERM');
    await Promise.all(nodes.map((node) => node.exited));
    await rm(dir, { recursive: true, force: true });
  };
  try {
    const ports = new Set<number>();
    // Client ports and cluster-bus ports, all distinct.
    while (ports.size < size * 2) ports.add(await freePort());
    const [clientPorts, busPorts] = [[...ports].slice(0, size), [...ports].slice(size)];
    for (const [index, port] of clientPorts.entries()) {
      const child = spawn(
        'redis-server',
        redisServerArgs(port, dir, path.join(dir, `redis-${port}.log`), [
          '--cluster-enabled',
          'yes',
          '--cluster-port',
          String(busPorts[index]),
          '--cluster-config-file',
          path.join(dir, `nodes-${port}.conf`),
          '--cluster-node-timeout',
          String(options.nodeTimeoutMs ?? 5_000),
          // While a master fails over, the other masters keep serving their slots (the
          // service's other queue shards) instead of refusing every command (CLUSTERDOWN).
          '--cluster-require-full-coverage',
          'no',
          '--appendonly',
          'no',
        ]),
        { stdio: 'ignore' },
      );
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      nodes.push({ port, process: child, exited });
    }
    for (const node of nodes) {
      await waitFor(`redis-server on port ${node.port} to answer`, async () => {
        if (node.process.exitCode !== null) {
          const log = await readFile(path.join(dir, `redis-${node.port}.log`), 'utf8').catch(() => '');
          throw new Error(`redis-server on port ${node.port} exited (${node.process.exitCode}):\n${log}`);
        }
        return (await cli(node.port, 'PING')).trim() === 'PONG';
      });
    }
    await run('redis-cli', ['--cluster', 'create', ...clientPorts.map((port) => `${HOST}:${port}`), '--cluster-replicas', String(replicas), '--cluster-yes'], {
      timeout: 30_000,
    });
    for (const node of nodes) {
      await waitFor(`node ${node.port} to report cluster_state:ok with ${options.masters} masters`, async () => {
        const info = await cli(node.port, 'CLUSTER', 'INFO');
        return (
          /cluster_state:ok/.test(info) &&
          new RegExp(`cluster_size:${options.masters}\\b`).test(info) &&
          new RegExp(`cluster_known_nodes:${size}\\b`).test(info)
        );
      });
    }
    // A replica that has not finished its first sync cannot take over from its master.
    for (const node of nodes) {
      await waitFor(`node ${node.port} to be a master or a replica in sync`, async () => {
        const replication = await cli(node.port, 'INFO', 'replication');
        return /role:master/.test(replication) || /master_link_status:up/.test(replication);
      });
    }
  } catch (error) {
    await stop();
    throw error;
  }
  return { seeds: nodes.map((node) => `${HOST}:${node.port}`).join(','), nodes, cli, stop };
}
