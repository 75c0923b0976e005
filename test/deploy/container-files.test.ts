import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { settings as configSettings } from '../../scripts/config-reference.js';
import { CLOSED_BY_DEFAULT, openKeyRing } from '../../src/api/api-keys.js';
import { ConfigError, loadConfig } from '../../src/lib/config.js';
import { silentLogger } from '../../src/lib/logger.js';
import { PACKAGE_ROOT } from '../../src/lib/package-root.js';
import { FUNCTIONS_DIR, MIGRATIONS_DIR } from '../../src/persistence/migrate.js';

/**
 * Checks Dockerfile, docker-compose.yml, .dockerignore and .env.template without a Docker
 * engine (none runs on CI): they must agree with the repository and with src/lib/config.ts, so a
 * renamed file or a renamed setting breaks this test instead of a user's deployment.
 */

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const read = (file: string) => readFileSync(path.join(ROOT, file), 'utf8');

// ---- src/lib/config.ts -------------------------------------------------------------------------

/**
 * Whether src/lib/config.ts reads `name`. The schema is not exported and silently drops unknown
 * keys, so probe: a known key either shows up in the parsed config or is named in the
 * ConfigError for a value it rejects; an unknown key does neither.
 */
function isConfigKey(name: string): boolean {
  try {
    return Object.hasOwn(loadConfig({ [name]: 'probe' }), name);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    return error.message.split('\n').some((line) => line.trimStart().startsWith(`${name}:`));
  }
}

// ---- docker-compose.yml --------------------------------------------------------------------

type Env = Record<string, string>;

interface ComposeService {
  env_file?: { path: string; required?: boolean }[];
  image?: string;
  build?: unknown;
  command?: string | string[];
  environment?: Record<string, string | number | boolean | null> | string[];
  ports?: unknown[];
  container_name?: string;
  depends_on?: Record<string, { condition?: string }> | string[];
  healthcheck?: { test?: string | string[]; disable?: boolean };
  stop_grace_period?: string;
}

interface ComposeFile {
  services: Record<string, ComposeService & { profiles?: string[]; volumes?: string[] }>;
}

/** What a user puts in .env for compose: the variables it requires. */
const SECRETS: Env = { POSTGRES_PASSWORD: 'pg-superuser-pw', ORCHESTRATOR_DB_PASSWORD: 'app-db-pw', REDIS_PASSWORD: 'redis-pw' };

/**
 * Compose's interpolation with the shell environment `shell`: `${VAR:-default}`, `${VAR-default}`,
 * `${VAR}`, `${VAR:?message}` (an error when VAR is unset or empty), `$$`.
 */
function interpolate(value: string, shell: Env = SECRETS): string {
  return value.replace(
    /\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*)|(:?\?)([^}]*))?\}/g,
    (match, name: string, _dash, fallback: string | undefined, required: string | undefined, message: string | undefined) => {
      if (match === '$$') return '$';
      const set = shell[name];
      if (required !== undefined && !set) throw new Error(`required variable ${name} is missing a value: ${message}`);
      return set || (fallback ?? '');
    },
  );
}

function environmentOf(service: ComposeService, shell: Env = SECRETS): Env {
  const raw = service.environment ?? {};
  const entries = Array.isArray(raw)
    ? raw.map((item) => {
        const [key = '', ...rest] = item.split('=');
        return [key, rest.join('=')] as const;
      })
    : Object.entries(raw).map(([key, value]) => [key, value === null ? '' : String(value)] as const);
  return Object.fromEntries(entries.map(([key, value]) => [key, interpolate(value, shell)]));
}

/** A compose duration (`45s`, `1m30s`, `1500ms`) in milliseconds. */
function durationMs(value: string): number {
  const parts = [...value.matchAll(/(\d+(?:\.\d+)?)(h|ms|m|s|us)/g)];
  expect(parts.map((part) => part[0]).join(''), `duration ${value}`).toBe(value);
  const unit = { h: 3_600_000, m: 60_000, s: 1_000, ms: 1, us: 0.001 } as const;
  return parts.reduce((total, [, amount, suffix]) => total + Number(amount) * unit[suffix as keyof typeof unit], 0);
}

const commandText = (command: string | string[] | undefined) => (Array.isArray(command) ? command.join(' ') : (command ?? ''));

// `docker compose config` validates a file against the Compose specification without an
// engine. CI machines have the docker client but not always its compose plugin (this one has
// neither an engine nor the plugin), so only those checks are skipped when it is missing; the
// Compose specification's JSON Schema is checked everywhere by `npm run lint:compose` (dclint, in
// CI's static checks).
const composeProbe = spawnSync('docker', ['compose', 'version'], { encoding: 'utf8' });
const composeMissing = composeProbe.error ? 'no docker binary on PATH' : composeProbe.status !== 0 ? 'docker has no compose plugin' : '';

// `<<` merge keys are YAML 1.1; docker compose supports them, the yaml package when asked.
const compose = parse(read('docker-compose.yml'), { merge: true }) as ComposeFile;
const services = compose.services;
const APP_SERVICES = ['api', 'worker'] as const;

// ---- Dockerfile ----------------------------------------------------------------------------

interface Instruction {
  keyword: string;
  args: string;
  stage: number;
}

/** Instructions in order, continuation lines joined, comments dropped, each with its stage index. */
function dockerfileInstructions(text: string): Instruction[] {
  const logical: string[] = [];
  let current = '';
  for (const line of text.split('\n')) {
    if (/^\s*#/.test(line)) continue;
    if (line.trimEnd().endsWith('\\')) {
      current += `${line.trimEnd().slice(0, -1)} `;
      continue;
    }
    current += line;
    if (current.trim()) logical.push(current.trim());
    current = '';
  }
  if (current.trim()) logical.push(current.trim());
  let stage = -1;
  return logical.map((line) => {
    const [, keyword = '', args = ''] = /^(\S+)\s*(.*)$/s.exec(line) ?? [];
    if (keyword.toUpperCase() === 'FROM') stage += 1;
    return { keyword: keyword.toUpperCase(), args: args.trim(), stage };
  });
}

/** Arguments of a shell-form or JSON-form instruction. */
function splitArgs(args: string): string[] {
  return args.startsWith('[') ? (JSON.parse(args) as string[]) : args.split(/\s+/).filter(Boolean);
}

const dockerfile = dockerfileInstructions(read('Dockerfile'));

/** The TypeScript source tsconfig.build.json compiles to a dist/ file: dist/src/api/main.js <- src/api/main.ts. */
function sourceOf(compiled: string): string {
  // tsconfig.build.json has comments; tsc reads it as JSONC.
  const build = JSON.parse(read('tsconfig.build.json').replace(/^\s*\/\/.*$/gm, '')) as { compilerOptions: { outDir: string; rootDir: string } };
  expect(build.compilerOptions).toMatchObject({ outDir: 'dist', rootDir: '.' });
  return compiled.replace(/^dist\//, '').replace(/\.js$/, '.ts');
}
const froms = dockerfile.filter((instruction) => instruction.keyword === 'FROM');
const finalStage = froms.length - 1;
const inFinalStage = (keyword: string) => dockerfile.filter((i) => i.stage === finalStage && i.keyword === keyword);

const dockerignore = read('.dockerignore')
  .split('\n')
  .map((line) => line.trim())
  .filter((line) => line && !line.startsWith('#') && !line.startsWith('!'));

// ---- the tests -----------------------------------------------------------------------------

describe('docker-compose.yml', () => {
  it('defines redis, postgres, api and worker', () => {
    expect(Object.keys(services)).toEqual(expect.arrayContaining(['redis', 'postgres', 'api', 'worker']));
  });

  it('runs Redis with noeviction (BullMQ requires it) and an append-only file', () => {
    const command = commandText(services.redis?.command);
    expect(command).toMatch(/--maxmemory-policy\s+noeviction/);
    expect(command).toMatch(/--appendonly\s+yes/);
  });

  it('gives redis and postgres healthchecks, and api and worker wait for them', () => {
    for (const name of ['redis', 'postgres']) {
      expect(services[name]?.healthcheck?.test, `${name} healthcheck`).toBeTruthy();
      expect(services[name]?.healthcheck?.disable, `${name} healthcheck`).not.toBe(true);
    }
    for (const name of APP_SERVICES) {
      const dependsOn = services[name]?.depends_on;
      expect(dependsOn, `${name} depends_on`).toMatchObject({
        redis: { condition: 'service_healthy' },
        postgres: { condition: 'service_healthy' },
      });
    }
  });

  it('publishes the API on 127.0.0.1:3000 unless told otherwise, and keeps the image healthcheck on the API', () => {
    const ports = services.api?.ports?.map(String) ?? [];
    expect(ports.map((port) => interpolate(port))).toEqual(['127.0.0.1:3000:3000']);
    expect(ports.map((port) => interpolate(port, { ...SECRETS, API_BIND: '0.0.0.0', API_PORT: '8080' }))).toEqual(['0.0.0.0:8080:3000']);
    expect(services.api?.healthcheck?.disable).not.toBe(true);
  });

  it('requires the database and Redis passwords: no defaults to fall back on', () => {
    for (const name of Object.keys(SECRETS)) {
      const without = { ...SECRETS, [name]: '' };
      let users = 0;
      for (const service of [...APP_SERVICES, 'postgres', 'redis']) {
        const texts = [JSON.stringify(services[service]?.environment ?? {}), commandText(services[service]?.command)];
        if (!texts.some((text) => text.includes(`\${${name}`))) continue;
        users += 1;
        expect(() => {
          for (const text of texts) interpolate(text, without);
        }, `${service} without ${name}`).toThrow(new RegExp(`${name} is missing`));
      }
      expect(users, `services using ${name}`).toBeGreaterThan(0);
    }
    expect(services.postgres?.environment).toMatchObject({ POSTGRES_PASSWORD: expect.stringMatching(/^\$\{POSTGRES_PASSWORD:\?/) });
  });

  it('runs Redis with a password, and the services connect with it', () => {
    const command = interpolate(commandText(services.redis?.command));
    expect(command).toMatch(/--requirepass redis-pw( |$)/);
    // The healthcheck's redis-cli authenticates through REDISCLI_AUTH.
    expect(environmentOf(services.redis!).REDISCLI_AUTH).toBe('redis-pw');
    for (const name of APP_SERVICES) expect(new URL(loadConfig(environmentOf(services[name]!)).REDIS_URL).password).toBe('redis-pw');
  });

  it('connects the services with a database role of their own, created by the mounted init script', () => {
    const postgres = environmentOf(services.postgres!);
    for (const name of APP_SERVICES) {
      const url = new URL(loadConfig(environmentOf(services[name]!)).DATABASE_URL);
      expect(url.username, name).not.toBe(postgres.POSTGRES_USER);
      expect(url.username).toBe(postgres.ORCHESTRATOR_DB_USER);
      expect(url.password).toBe('app-db-pw');
      expect(url.pathname).toBe(`/${postgres.POSTGRES_DB}`);
    }
    const mount = (services.postgres as { volumes?: string[] }).volumes?.find((volume) => volume.includes('/docker-entrypoint-initdb.d'));
    expect(mount).toBeDefined();
    const directory = mount!.split(':')[0]!;
    expect(existsSync(path.join(ROOT, directory, '10-orchestrator-role.sql')), `${directory}/10-orchestrator-role.sql`).toBe(true);
  });

  it('starts the API closed: without API_KEYS it refuses to start, unless AUTH_DISABLED=true', async () => {
    const api = (shell: Env) => loadConfig(environmentOf(services.api!, { ...SECRETS, ...shell }));
    await expect(openKeyRing(api({}), silentLogger())).rejects.toThrow(CLOSED_BY_DEFAULT);
    expect((await openKeyRing(api({ API_KEYS: 'compose-admin-key-0123456789' }), silentLogger())).required).toBe(true);
    expect((await openKeyRing(api({ AUTH_DISABLED: 'true' }), silentLogger())).required).toBe(false);
    // Only the API gets the keys.
    expect(environmentOf(services.worker!, { ...SECRETS, API_KEYS: 'compose-admin-key-0123456789' }).API_KEYS).toBeUndefined();
  });

  it("runs a user's worker only under its profile, from the example-worker stage, with Redis, the API and a worker key but no database", () => {
    const user = services['user-worker']!;
    expect(user.profiles).toEqual(['user-worker']);
    expect(user.build).toMatchObject({ context: '.', target: 'example-worker' });
    expect(dockerfile.some((i) => i.keyword === 'FROM' && /\bAS\s+example-worker$/i.test(i.args))).toBe(true);
    const env = environmentOf(user, { ...SECRETS, USER_WORKER_API_KEY: 'a-worker-key' });
    expect(Object.keys(env).sort()).toEqual(['LOG_LEVEL', 'ORCHESTRATOR_API_KEY', 'ORCHESTRATOR_URL', 'REDIS_URL']);
    expect(env.ORCHESTRATOR_URL).toBe('http://api:3000');
    expect(env.REDIS_URL).toBe(environmentOf(services.worker!).REDIS_URL);
    expect(user.depends_on).toMatchObject({ api: { condition: 'service_healthy' } });
    expect(user.ports ?? []).toEqual([]);
  });

  it("passes .env whole to api and worker (any setting reaches them; optional), never to a user's worker, which holds no database password", () => {
    for (const name of APP_SERVICES) expect(services[name]!.env_file, name).toEqual([{ path: '.env', required: false }]);
    expect(services['user-worker']!.env_file).toBeUndefined();
  });

  it('lets the worker scale: no container_name, no ports', () => {
    const worker = services.worker!;
    expect(worker).toBeDefined();
    expect(worker.container_name).toBeUndefined();
    expect(worker.ports ?? []).toEqual([]);
    // Not the image's HEALTHCHECK (the HTTP API, which a worker does not serve): its metrics port's
    // /health, on the port the service sets.
    const check = commandText(worker.healthcheck?.test);
    expect(worker.healthcheck?.disable).not.toBe(true);
    expect(check).toContain(`http://127.0.0.1:${environmentOf(worker).WORKER_METRICS_PORT}/health`);
  });

  it('runs api and worker from the same build, with compiled entry points whose sources exist', () => {
    expect(services.api?.build).toBeDefined();
    expect(services.worker?.image ?? services.worker?.build).toBeDefined();
    if (services.worker?.image) expect(services.worker.image).toBe(services.api?.image);
    const command = services.worker?.command;
    const argv = Array.isArray(command) ? command : (command ?? '').split(/\s+/);
    expect(argv[0]).toBe('node');
    const workerScript = argv.find((arg) => arg.endsWith('.js'));
    expect(workerScript).toBe('dist/workers/main.js');
    expect(existsSync(path.join(ROOT, sourceOf(workerScript!))), sourceOf(workerScript!)).toBe(true);
  });

  it('sets only environment variables that src/lib/config.ts reads, with values it accepts', () => {
    for (const name of APP_SERVICES) {
      const env = environmentOf(services[name]!);
      expect(Object.keys(env).length, `${name} environment`).toBeGreaterThan(0);
      for (const key of Object.keys(env)) expect(isConfigKey(key), `${name}: ${key} is not read by src/lib/config.ts`).toBe(true);
      // Hostnames such as `redis` and `postgres` are valid in the URLs.
      const config = loadConfig(env);
      expect(new URL(config.REDIS_URL).hostname).toBe('redis');
      expect(new URL(config.DATABASE_URL).hostname).toBe('postgres');
      expect(config.HOST, 'a container must listen on every interface').toBe('0.0.0.0');
    }
  });

  it('gives a stopping worker longer than WORKER_SHUTDOWN_TIMEOUT_MS before SIGKILL', () => {
    const worker = services.worker!;
    const timeout = loadConfig(environmentOf(worker)).WORKER_SHUTDOWN_TIMEOUT_MS;
    expect(worker.stop_grace_period, 'worker stop_grace_period').toBeDefined();
    expect(durationMs(worker.stop_grace_period!)).toBeGreaterThan(timeout);
  });

  it.skipIf(composeMissing !== '')(`passes docker compose config -q${composeMissing ? ` (skipped: ${composeMissing})` : ''}`, () => {
    const result = spawnSync('docker', ['compose', '-f', 'docker-compose.yml', 'config', '-q'], { cwd: ROOT, encoding: 'utf8' });
    expect(result.status, result.stderr).toBe(0);
  });
});

// deploy/compose.fleet.yml overrides docker-compose.yml: an environment merges key by key, and
// a `!override` (Compose 2.24.4+) replaces the value, here depends_on.
const fleet = parse(read('deploy/compose.fleet.yml'), {
  merge: true,
  customTags: [{ tag: '!override', collection: 'map', resolve: (value) => value }],
}) as ComposeFile;
const REDIS_NODES = ['redis-1', 'redis-2', 'redis-3', 'redis-4', 'redis-5', 'redis-6'];
const fleetEnvironmentOf = (name: (typeof APP_SERVICES)[number]) => ({ ...environmentOf(services[name]!), ...environmentOf(fleet.services[name]!) });

describe('deploy/compose.fleet.yml', () => {
  it('runs six Redis Cluster nodes with noeviction, an append-only file and a password, each serving its slots while another fails over', () => {
    for (const name of REDIS_NODES) {
      const node = fleet.services[name]!;
      const command = commandText(node.command);
      for (const flag of [
        '--cluster-enabled yes',
        '--maxmemory-policy noeviction',
        '--appendonly yes',
        '--cluster-require-full-coverage no',
        '--requirepass',
        '--masterauth',
      ]) {
        expect(command, `${name}: ${flag}`).toContain(flag);
      }
      expect(environmentOf(node).NODE_NAME, `${name} announces its service name`).toBe(name);
      expect(node.volumes, `${name} keeps its data`).toEqual([`${name}-data:/data`]);
      expect(node.healthcheck?.test).toBeDefined();
    }
  });

  it('joins the six nodes into three masters with a replica each, once they are up', () => {
    const init = fleet.services['redis-cluster']!;
    const command = commandText(init.command);
    expect(command).toContain('--cluster-replicas 1');
    const loop = /for n in ([\d ]+); do/.exec(command);
    expect(loop).not.toBeNull();
    expect(
      loop![1]!
        .trim()
        .split(' ')
        .map((n) => `redis-${n}`),
    ).toEqual(REDIS_NODES);
    expect(init.depends_on).toEqual(Object.fromEntries(REDIS_NODES.map((name) => [name, { condition: 'service_healthy' }])));
  });

  it('points api and worker at the cluster and at PgBouncer, and creates and migrates the database directly', () => {
    const pgbouncer = environmentOf(fleet.services.pgbouncer!);
    for (const name of APP_SERVICES) {
      const env = fleetEnvironmentOf(name);
      for (const key of Object.keys(environmentOf(fleet.services[name]!)))
        expect(isConfigKey(key), `${name}: ${key} is not read by src/lib/config.ts`).toBe(true);
      const config = loadConfig(env);
      expect(config.REDIS_CLUSTER_NODES).toEqual(REDIS_NODES.map((node) => `${node}:6379`));
      expect(config.QUEUE_SHARDS % 3, 'shards spread evenly over three masters').toBe(0);
      const pooled = new URL(config.DATABASE_URL);
      expect([pooled.hostname, pooled.port]).toEqual(['pgbouncer', pgbouncer.LISTEN_PORT]);
      expect(new URL(config.DATABASE_DIRECT_URL).host).toBe('postgres:5432');
      // PgBouncer serves the database the service uses, as the same role.
      const served = new URL(pgbouncer.DATABASE_URL!);
      expect([served.pathname, served.username]).toEqual([pooled.pathname, pooled.username]);
    }
  });

  it("runs PgBouncer in transaction mode with the README's timeouts, room for fifty processes' pools, and a healthcheck", () => {
    const pgbouncer = fleet.services.pgbouncer!;
    const env = environmentOf(pgbouncer);
    expect(env).toMatchObject({ POOL_MODE: 'transaction', QUERY_WAIT_TIMEOUT: '2', SERVER_LOGIN_RETRY: '1', AUTH_TYPE: 'scram-sha-256' });
    expect(Number(env.MAX_CLIENT_CONN)).toBeGreaterThanOrEqual(50 * loadConfig(fleetEnvironmentOf('worker')).DATABASE_POOL_SIZE);
    expect(pgbouncer.healthcheck?.test).toBeDefined();
  });

  it('makes api and worker wait for the cluster and PgBouncer, and leaves the single Redis off', () => {
    for (const name of APP_SERVICES) {
      expect(fleet.services[name]!.depends_on).toEqual({
        postgres: { condition: 'service_healthy' },
        pgbouncer: { condition: 'service_healthy' },
        'redis-cluster': { condition: 'service_completed_successfully' },
      });
    }
    expect(fleet.services.redis!.profiles?.length).toBeGreaterThan(0);
  });

  it.skipIf(composeMissing !== '')(`passes docker compose config -q with docker-compose.yml${composeMissing ? ` (skipped: ${composeMissing})` : ''}`, () => {
    const result = spawnSync('docker', ['compose', '-f', 'docker-compose.yml', '-f', 'deploy/compose.fleet.yml', 'config', '-q'], {
      cwd: ROOT,
      encoding: 'utf8',
      env: { ...process.env, ...SECRETS },
    });
    expect(result.status, result.stderr).toBe(0);
  });
});

describe('Dockerfile', () => {
  it('is multi-stage', () => {
    expect(froms.length).toBeGreaterThanOrEqual(2);
  });

  it('builds and runs on a current LTS Node, 22 or newer', () => {
    // A stage may start from an earlier one (FROM build AS sdk-pack): its image is that stage's.
    const stages = new Set(froms.map((from) => /\bAS\s+(\S+)/i.exec(from.args)?.[1]).filter(Boolean));
    for (const from of froms) {
      const image = splitArgs(from.args).find((arg) => !arg.startsWith('--'))!;
      if (stages.has(image)) continue;
      const tag = /^(?:docker\.io\/)?(?:library\/)?node:(\d+)(?:\.\d+)*-/.exec(image);
      expect(tag, `FROM ${image} must name node:<major>[.<minor>]-<variant>`).not.toBeNull();
      const major = Number(tag![1]);
      // Even majors become LTS.
      expect(major >= 22 && major % 2 === 0, `FROM ${image}`).toBe(true);
    }
  });

  it('compiles in the build stage and installs production dependencies only in the final one', () => {
    const buildRuns = dockerfile.filter((i) => i.stage < finalStage && i.keyword === 'RUN').map((i) => i.args);
    expect(buildRuns.some((run) => /npm run build\b/.test(run))).toBe(true);
    const runs = inFinalStage('RUN').map((i) => i.args);
    expect(runs.some((run) => /npm ci\b.*--omit=dev/.test(run))).toBe(true);
    // Nothing in the final stage installs or copies in dev dependencies or the TypeScript sources.
    expect(runs.filter((run) => /npm (ci|install)\b/.test(run)).every((run) => run.includes('--omit=dev'))).toBe(true);
    const copied = inFinalStage('COPY').flatMap((i) =>
      splitArgs(i.args)
        .filter((arg) => !arg.startsWith('--'))
        .slice(0, -1),
    );
    expect(copied).not.toContain('/app/node_modules');
    expect(copied.some((source) => /^(\/app\/)?src\/?$/.test(source))).toBe(false);
    expect(copied).toContain('/app/dist');
  });

  it('copies into the final stage, where the code looks for them, the migrations and the functions every process applies on start', () => {
    const normal = (file: string) => file.replace(/^\.\//, '').replace(/\/$/, '');
    const copies = inFinalStage('COPY')
      .map((i) => splitArgs(i.args))
      .filter((args) => !args.some((arg) => arg.startsWith('--from=')))
      .map((args) => args.filter((arg) => !arg.startsWith('--')).map(normal));
    const workdir = inFinalStage('WORKDIR').at(-1)?.args;
    expect(workdir).toBe('/app');
    for (const dir of [MIGRATIONS_DIR, FUNCTIONS_DIR]) {
      const relative = path.relative(PACKAGE_ROOT, dir);
      // The directory itself, or one holding it, copied to the same place under WORKDIR (the package root there).
      const copied = copies.some((args) => {
        const target = args.at(-1)!.replace(/^\/app\//, '');
        return args.slice(0, -1).some((source) => source === target && (relative === source || relative.startsWith(`${source}/`)));
      });
      expect(copied, `COPY ${relative} ./${relative} in the final stage`).toBe(true);
    }
  });

  it('runs the final stage as a user other than root', () => {
    const users = inFinalStage('USER');
    expect(users.length, 'USER in the final stage').toBeGreaterThan(0);
    const user = users.at(-1)!.args.split(':')[0];
    expect(['root', '0']).not.toContain(user);
  });

  it('has a HEALTHCHECK on /health and starts node directly (signals reach the service)', () => {
    const [healthcheck] = inFinalStage('HEALTHCHECK');
    expect(healthcheck?.args).toMatch(/\/health/);
    const cmd = inFinalStage('CMD').at(-1);
    expect(cmd?.args.startsWith('['), 'CMD in exec form').toBe(true);
    const argv = splitArgs(cmd!.args);
    expect(argv[0]).toBe('node');
    expect(argv).not.toContain('tsx');
    const script = argv.find((arg) => arg.endsWith('.js'));
    expect(script).toBe('dist/src/api/main.js');
    expect(existsSync(path.join(ROOT, sourceOf(script!))), sourceOf(script!)).toBe(true);
    expect(inFinalStage('EXPOSE').map((i) => i.args)).toContain('3000');
  });

  it('copies only paths that exist and that .dockerignore does not exclude', () => {
    const sources = dockerfile
      .filter((i) => i.keyword === 'COPY' || i.keyword === 'ADD')
      .map((i) => splitArgs(i.args))
      .filter((args) => !args.some((arg) => arg.startsWith('--from=')))
      .flatMap((args) => args.filter((arg) => !arg.startsWith('--')).slice(0, -1));
    expect(sources.length).toBeGreaterThan(0);
    for (const source of sources) {
      const relative = source.replace(/^\.\//, '').replace(/\/$/, '');
      expect(existsSync(path.join(ROOT, relative)), `COPY ${source}: not in the repository`).toBe(true);
      const excludedBy = dockerignore.find((pattern) => relative === pattern || relative.startsWith(`${pattern}/`));
      expect(excludedBy, `COPY ${source} is excluded by .dockerignore`).toBeUndefined();
    }
  });
});

describe('.env.template', () => {
  // Lines like `PORT=3000` or `# PORT=3000`.
  const documented = new Set([...read('.env.template').matchAll(/^#?\s?([A-Z][A-Z0-9_]*)=/gm)].map((match) => match[1]!));

  // What the configuration reference calls settings for operators, and internal tuning (`@internal` in src/lib/config.ts).
  const all = configSettings();
  const internal = new Set(all.filter((setting) => setting.internal).map((setting) => setting.name));

  // What docker compose refuses to start without: `${NAME:?…}` in docker-compose.yml (the passwords it hands Redis and PostgreSQL).
  const composeRequired = [...new Set([...read('docker-compose.yml').matchAll(/\$\{([A-Z][A-Z0-9_]*):\?/g)].map((match) => match[1]!))];

  it('documents only variables that src/lib/config.ts reads (and the passwords compose requires), and none of its internal tuning', () => {
    for (const key of documented) if (!composeRequired.includes(key)) expect(isConfigKey(key), `${key} is not read by src/lib/config.ts`).toBe(true);
    for (const key of documented) expect(internal.has(key), `${key} is internal tuning: docs/config-reference.md has it, .env.template does not`).toBe(false);
  });

  it('opens with the production essentials, ready to fill: the passwords compose requires, API_KEYS, then what approval links need', () => {
    const text = read('.env.template');
    const order = [...text.matchAll(/^#?\s?([A-Z][A-Z0-9_]*)=/gm)].map((match) => match[1]!);
    expect(composeRequired.sort()).toEqual(['ORCHESTRATOR_DB_PASSWORD', 'POSTGRES_PASSWORD', 'REDIS_PASSWORD']);
    expect(new Set(order.slice(0, 3))).toEqual(new Set(composeRequired));
    expect(order.slice(3, 6)).toEqual(['API_KEYS', 'APPROVAL_SECRET', 'PUBLIC_URL']);
    // Lines to fill in, not comments to find and uncomment: `cp .env.template .env`, then set them.
    for (const name of [...composeRequired, 'API_KEYS']) expect(text, name).toMatch(new RegExp(`^${name}=$`, 'm'));
    for (const name of ['API_KEYS', 'APPROVAL_SECRET', 'PUBLIC_URL'])
      expect(
        order.filter((key) => key === name),
        name,
      ).toHaveLength(1);
  });

  it("documents every operator's setting, with or without a default", () => {
    for (const { name } of all.filter((setting) => !setting.internal)) expect(documented.has(name), `${name} missing from .env.template`).toBe(true);
    // The reference reads the same schema loadConfig does.
    expect(all.map((setting) => setting.name).sort()).toEqual(expect.arrayContaining(Object.keys(loadConfig({})).sort()));
    expect(internal.size).toBeGreaterThan(0);
  });
});
