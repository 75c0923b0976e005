import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { z } from 'zod';
import { workerRegistrationSchema } from '../../src/fleet/protocol.js';
import { BUILT_IN_OWNER, HEARTBEAT_MS, type WorkerFleet } from '../../src/fleet/worker-fleet.js';
import type { Config } from '../../src/lib/config.js';
import { ConflictError } from '../../src/lib/errors.js';
import type { Logger } from '../../src/lib/logger.js';
import { PACKAGE } from '../../src/lib/package-root.js';
import type { ToolRegistry } from '../../src/tools/tool.js';
import { type RunningSteps, toolRegistration } from './tool-registration.js';

export interface BuiltInRegistration {
  /** The id it registered under (GET /workers): `<host>-<pid>-<random>`, as the SDK names its workers. */
  readonly id: string;
  /** Stops the heartbeat. */
  stop(): void;
  /** Stops the heartbeat and leaves the fleet (WorkerFleet.leave). */
  close(): Promise<void>;
}

export interface BuiltInRegistrationOptions {
  fleet: WorkerFleet;
  /** The tools this process runs (narrowed by WORKER_TOOLS): what it registers. */
  tools: ToolRegistry;
  config: Config;
  logger: Logger;
  running: RunningSteps;
  /** Called once, after the first registration that went through. */
  onRegistered(): Promise<void>;
}

/**
 * The built-in worker registers its tools as a user's worker does (name, description, JSON
 * Schemas, retry, timeout; its host, pid, version, concurrency), and again every HEARTBEAT_MS
 * with the steps it runs: that is how the API, which imports no adapter, knows them. Trusted (it
 * holds DATABASE_URL), it goes through WorkerFleet.register directly, the code PUT /workers/{id}
 * runs, as owner BUILT_IN_OWNER.
 *
 * Versions: its first registration asks to replace, so a release whose adapter changed its schema
 * (or description, retry, timeout) stores a new version of the tool even while workers of the
 * release before still run (a rolling deploy). Its heartbeats do not ask to replace: an older
 * worker's heartbeat is then refused (it says so once and shows as not live in GET /workers; it
 * still drains its jobs), and two workers of different releases never take turns storing their
 * versions. The registration is awaited at start, before the worker takes jobs, so the tools are
 * known (and announced to the API) by the time it does; PostgreSQL away then only delays it to a
 * later heartbeat.
 */
export async function registerBuiltIns(options: BuiltInRegistrationOptions): Promise<BuiltInRegistration> {
  const { fleet, config, logger, running } = options;
  const id = `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
  const parsed = workerRegistrationSchema.safeParse({
    host: hostname(),
    pid: process.pid,
    version: PACKAGE.version,
    concurrency: config.WORKER_CONCURRENCY,
    tools: options.tools.adapters().map(toolRegistration),
    replace: true,
  });
  // A tool whose schemas cannot be registered (one larger than 64 kB, or recursive: $ref) stops the worker at boot.
  if (!parsed.success) throw new Error(`the built-in tools cannot be registered: ${z.prettifyError(parsed.error)}`);
  const { replace: _first, ...heartbeat } = parsed.data;
  const none = new Set<string>();
  let registered = false;
  let failing = false;
  let beating: Promise<void> | undefined;

  const register = async () => {
    const tools = await fleet.register(id, BUILT_IN_OWNER, { ...(registered ? heartbeat : parsed.data), ...running.report() }, none);
    if (failing) logger.info('heartbeat registered again', { worker_id: id });
    failing = false;
    if (registered) return;
    registered = true;
    logger.info('built-in tools registered', { worker_id: id, tools: tools.map((tool) => `${tool.name}@${tool.version}`) });
    await options.onRegistered().catch((error: Error) => logger.warn('could not load the example workflows', { error: error.message }));
  };
  const beat = () => {
    // One at a time: a registration that waits on PostgreSQL is not joined by the next ones.
    beating ??= register()
      .catch((error: Error) => {
        if (failing) return;
        failing = true;
        if (error instanceof ConflictError)
          logger.warn('a newer release registered other versions of these tools: this worker’s heartbeats are refused until it stops', {
            worker_id: id,
            error: error.message,
          });
        else logger.warn('could not register the built-in tools; trying again at each heartbeat', { worker_id: id, error: error.message });
      })
      .finally(() => {
        beating = undefined;
      });
    return beating;
  };

  await beat();
  const timer = setInterval(beat, HEARTBEAT_MS);
  timer.unref();
  return {
    id,
    stop() {
      clearInterval(timer);
    },
    async close() {
      clearInterval(timer);
      await beating;
      await fleet.leave(id).catch((error: Error) => logger.warn('could not leave the fleet', { worker_id: id, error: error.message }));
    },
  };
}
