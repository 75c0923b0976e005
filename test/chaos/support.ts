import { randomBytes } from 'node:crypto';
import { observationKey, type RecordedCall } from '../fixtures/tools.js';
import { type NodeProcess, runEntry } from '../helpers/child-process.js';
import type { Harness } from '../helpers/harness.js';

/**
 * Shared parts of the chaos suites: size knobs, a fleet of worker processes that can be killed
 * and replaced, a mixed workload with known expected outcomes, and the check of what
 * PostgreSQL recorded against what the test tools observed.
 */

/** `CHAOS_PROFILE=full` (npm run test:chaos) runs the sizes of issue 6; without it, the CI sizes. */
export const FULL = process.env.CHAOS_PROFILE === 'full';

/** A size knob: the environment variable wins, else the value of the profile. */
export function knob(name: string, ci: number, full: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return FULL ? full : ci;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < 0) throw new Error(`${name} must be a non-negative number (got ${JSON.stringify(raw)})`);
  return value;
}

/**
 * Settings of every chaos harness. Small BullMQ retention, so the sweep can tell the finished
 * jobs Redis is meant to keep from orphans. The reconciler looks every 5 s at runs older than
 * 15 s (defaults: every 30 s, older than 60 s): what it repairs after a fault (a per-key lease
 * whose holder's report was cut off, a job lost with Redis) is then repaired within seconds, and
 * the suites wait for that instead of idling up to 90 s (postgres-faults' tasks took 64 s to end
 * after its faults, on a busy machine, with the defaults). What it repairs, and that nothing is
 * lost or run twice, is the same at any interval.
 */
export const CHAOS_ENV: Record<string, string> = {
  QUEUE_KEEP_COMPLETED: '50',
  QUEUE_KEEP_FAILED: '50',
  EVENTS_TTL_S: '600',
  WORKER_SHUTDOWN_TIMEOUT_MS: '10000',
  RECONCILE_INTERVAL_MS: '5000',
  RECONCILE_AFTER_MS: '15000',
};

/** mulberry32: a small seeded generator, so a workload can be replayed from the seed it prints. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function chaosSeed(): number {
  return process.env.CHAOS_SEED ? Number(process.env.CHAOS_SEED) : randomBytes(4).readUInt32LE(0);
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------------------------
// Worker processes

export const WORKER_ENTRY = 'test/fixtures/worker-entry.ts';

/** A process that died although nobody stopped it: always a finding. */
export interface Crash {
  pid: number | undefined;
  /** The end of what it printed. */
  output: string;
}

/**
 * Worker processes (test/fixtures/worker-entry.ts) that a test starts, kills and replaces. A
 * worker that dies by itself is counted as a crash (always a finding).
 */
export class WorkerFleet {
  /** Every process started, alive or not. */
  readonly all: NodeProcess[] = [];
  /** Processes that run and were not told to stop. */
  readonly live: NodeProcess[] = [];
  readonly crashes: Crash[] = [];
  kills = 0;
  private readonly meant = new Set<NodeProcess>();

  constructor(private readonly env: Record<string, string>) {}

  /** Starts a worker process and waits until its workers listen. */
  async add(extraEnv: Record<string, string> = {}): Promise<NodeProcess> {
    const child = runEntry(WORKER_ENTRY, { ...this.env, ...extraEnv });
    this.all.push(child);
    void child.exited.then(() => {
      if (this.meant.has(child)) return;
      this.release(child);
      this.crashes.push({ pid: child.child.pid, output: child.output.slice(-4_000) });
    });
    await child.waitForOutput(/^ready$/m, 60_000);
    this.live.push(child);
    return child;
  }

  async start(count: number): Promise<void> {
    await Promise.all(Array.from({ length: count }, () => this.add()));
  }

  /** Takes a process out of the live set: what happens to it next is the test's doing. */
  release(child: NodeProcess): void {
    const index = this.live.indexOf(child);
    if (index >= 0) this.live.splice(index, 1);
    this.meant.add(child);
  }

  /** SIGKILLs a random live worker and resolves with its pid once it is gone. */
  async killRandom(random: () => number): Promise<number> {
    const victim = this.live[Math.floor(random() * this.live.length)]!;
    this.release(victim);
    await victim.kill();
    this.kills += 1;
    return victim.child.pid!;
  }

  /** Cleanup: SIGKILL whatever still runs. Safe to call at any time, twice. */
  async destroy(): Promise<void> {
    for (const child of this.all) this.meant.add(child);
    this.live.splice(0);
    await Promise.all(this.all.map((child) => child.kill()));
  }
}

/**
 * The API in a process of its own (test/fixtures/api-entry.ts) on a fixed port, restarted when
 * it dies by itself, so that an API crash is a counted finding instead of the end of the test run.
 */
export class ApiProcess {
  readonly crashes: Crash[] = [];
  readonly url: string;
  private current?: NodeProcess;
  private stopped = false;

  constructor(
    private readonly env: Record<string, string>,
    readonly port: number,
  ) {
    this.url = `http://127.0.0.1:${port}`;
  }

  /** Starts the API and resolves once it listens; later crashes restart it in the background. */
  async start(): Promise<void> {
    const child = runEntry('test/fixtures/api-entry.ts', { ...this.env, PORT: String(this.port) });
    this.current = child;
    void child.exited.then(() => {
      if (this.stopped || this.current !== child) return;
      this.crashes.push({ pid: child.child.pid, output: child.output.slice(-4_000) });
      this.current = undefined;
      // A restart may fail while a dependency is down: it exits, and lands here again.
      void sleep(250).then(() => (this.stopped ? undefined : this.start().catch(() => undefined)));
    });
    await child.waitForOutput(/^listening /m, 30_000);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    const child = this.current;
    if (!child) return;
    child.child.kill('SIGTERM');
    await child.waitForExit(15_000).catch(() => child.kill());
  }

  async destroy(): Promise<void> {
    this.stopped = true;
    await this.current?.kill();
  }
}

// ---------------------------------------------------------------------------------------------
// Workload

/** What a task is meant to end with, and where the test tools recorded its steps' calls. */
export interface PlannedTask {
  kind: string;
  body: Record<string, unknown>;
  /** Set for a task meant to fail: the step that fails for good. */
  failsAt?: string;
  /** Steps of the record tool: their observation key and the attempt they succeed on. */
  records: Record<string, { key: string; succeedOn: number }>;
  /** Steps that may end skipped, or completed if they were already running, when the task fails. */
  mayBeSkipped?: string[];
  /** for_each steps of the record tool: each item's observation key, in item order. */
  maps?: Record<string, string[]>;
  /** repeat steps of the record tool: each iteration's observation key, in order (the step's output is the last one's). */
  repeats?: Record<string, string[]>;
  /** Sub-workflow steps: what their child task is meant to do. */
  children?: Record<string, PlannedTask>;
  /** Repeated sub-workflow steps: what each iteration's child task is meant to do, in order (no more children than these). */
  repeatedChildren?: Record<string, PlannedTask[]>;
  /** Sub-workflow steps with for_each: what each item's child task is meant to do, in item order (one child per item, no more). */
  mappedChildren?: Record<string, PlannedTask[]>;
}

const record = (key: string, extra: Record<string, unknown> = {}) => ({ tool: 'record', input: { key, ms: '{{params.ms}}', ...extra } });
const keyParams = [
  { name: 'key', type: 'string', required: true },
  { name: 'ms', type: 'integer', default: 50 },
  { name: 'flaky', type: 'integer', default: 1 },
];

/**
 * The workflows of the mixed workload. Their outputs quote the tokens of the record steps, so
 * the check can compare a task's stored result with its steps' stored outputs.
 */
export const CHAOS_WORKFLOWS = [
  {
    name: 'chaos_chain',
    parameters: keyParams,
    steps: [
      { id: 'a', ...record('{{params.key}}-a') },
      { id: 'b', depends_on: ['a'], ...record('{{params.key}}-b', { succeed_on: '{{params.flaky}}' }) },
      { id: 'c', depends_on: ['b'], tool: 'echo', input: { a: '{{steps.a.output.token}}', b: '{{steps.b.output.token}}' } },
    ],
    output: { a: '{{steps.a.output.token}}', b: '{{steps.b.output.token}}', c: '{{steps.c.output}}' },
  },
  {
    name: 'chaos_diamond',
    parameters: keyParams,
    steps: [
      { id: 'a', ...record('{{params.key}}-a') },
      { id: 'b', depends_on: ['a'], ...record('{{params.key}}-b', { succeed_on: '{{params.flaky}}' }) },
      { id: 'c', depends_on: ['a'], tool: 'sleep', input: { ms: '{{params.ms}}' } },
      {
        id: 'd',
        depends_on: ['b', 'c'],
        tool: 'echo',
        input: { a: '{{steps.a.output.token}}', b: '{{steps.b.output.token}}', slept: '{{steps.c.output.slept_ms}}' },
      },
    ],
    output: { a: '{{steps.a.output.token}}', b: '{{steps.b.output.token}}', d: '{{steps.d.output}}' },
  },
  {
    name: 'chaos_fan',
    parameters: keyParams,
    steps: [
      { id: 'root', tool: 'echo', input: { key: '{{params.key}}' } },
      ...['n1', 'n2', 'n3', 'n4'].map((id) => ({ id, depends_on: ['root'], ...record(`{{params.key}}-${id}`) })),
      {
        id: 'join',
        depends_on: ['n1', 'n2', 'n3', 'n4'],
        tool: 'echo',
        input: Object.fromEntries(['n1', 'n2', 'n3', 'n4'].map((id) => [id, `{{steps.${id}.output.token}}`])),
      },
    ],
    output: { join: '{{steps.join.output}}' },
  },
  {
    name: 'chaos_map',
    parameters: keyParams,
    steps: [
      { id: 'list', tool: 'echo', input: { items: [0, 1, 2, 3, 4, 5] } },
      {
        id: 'each',
        depends_on: ['list'],
        tool: 'record',
        for_each: '{{steps.list.output.items}}',
        max_parallel: 3,
        input: { key: '{{params.key}}-each-{{item}}', ms: '{{params.ms}}' },
      },
    ],
    output: { each: '{{steps.each.output}}' },
  },
  {
    // Three iterations of a poll, a durable delay between them: a SIGKILL or an outage in a delay loses nothing and runs no iteration twice.
    name: 'chaos_poll',
    parameters: keyParams,
    steps: [
      {
        id: 'poll',
        tool: 'record',
        input: { key: '{{params.key}}-poll-{{iteration}}', ms: '{{params.ms}}' },
        repeat: { until: 'iteration >= 2.0', max_iterations: 5, delay_ms: 150 },
      },
      { id: 'after', depends_on: ['poll'], tool: 'echo', input: { last: '{{steps.poll.output.token}}' } },
    ],
    output: { last: '{{steps.poll.output.token}}', after: '{{steps.after.output}}' },
  },
  {
    // Two iterations of a sub-workflow, a child task each: a SIGKILL or an outage between them loses nothing and starts no child twice.
    name: 'chaos_rounds',
    parameters: keyParams,
    steps: [
      {
        id: 'rounds',
        workflow: 'chaos_chain',
        input: { key: '{{params.key}}-r{{iteration}}', ms: '{{params.ms}}' },
        repeat: { until: 'iteration >= 1.0', max_iterations: 4 },
      },
    ],
    output: { last: '{{steps.rounds.output}}' },
  },
  {
    // A map over a sub-workflow: a chaos_chain child per item, two at a time, then a join. A SIGKILL or an outage while
    // children run loses none and starts no item's child twice; the output is the children's results in item order.
    name: 'chaos_children',
    parameters: keyParams,
    steps: [
      { id: 'fan', workflow: 'chaos_chain', for_each: [0, 1, 2], max_parallel: 2, input: { key: '{{params.key}}-f{{item}}', ms: '{{params.ms}}' } },
      { id: 'join', depends_on: ['fan'], tool: 'echo', input: { results: '{{steps.fan.output}}' } },
    ],
    output: { each: '{{steps.fan.output}}', join: '{{steps.join.output}}' },
  },
  {
    name: 'chaos_nap',
    parameters: keyParams,
    steps: [
      { id: 'a', ...record('{{params.key}}-a') },
      { id: 'nap', depends_on: ['a'], sleep: { ms: '{{params.ms}}' } },
      { id: 'b', depends_on: ['nap'], ...record('{{params.key}}-b') },
    ],
    output: { a: '{{steps.a.output.token}}', b: '{{steps.b.output.token}}' },
  },
  {
    name: 'chaos_parent',
    parameters: keyParams,
    steps: [
      { id: 'sub', workflow: 'chaos_chain', input: { key: '{{params.key}}-sub', ms: '{{params.ms}}' } },
      { id: 'after', depends_on: ['sub'], tool: 'echo', input: { chain: '{{steps.sub.output}}' } },
    ],
    output: { sub: '{{steps.sub.output}}', after: '{{steps.after.output}}' },
  },
  {
    name: 'chaos_doomed',
    parameters: keyParams,
    steps: [
      { id: 'a', ...record('{{params.key}}-a') },
      {
        id: 'b',
        depends_on: ['a'],
        tool: 'broken',
        input: { retryable: true, message: 'doomed on purpose' },
        retry: { attempts: 2, backoff: { type: 'fixed', delay_ms: 20 } },
      },
      { id: 'x', depends_on: ['a'], ...record('{{params.key}}-x') },
      { id: 'c', depends_on: ['b', 'x'], ...record('{{params.key}}-c') },
    ],
  },
  {
    // A saga that always fails at its last step: what a and b did is undone, b first (docs/tools-and-workers.md "Compensation (sagas)").
    name: 'chaos_saga',
    parameters: keyParams,
    steps: [
      { id: 'a', ...record('{{params.key}}-a'), compensate: { tool: 'record', input: { key: '{{params.key}}-a-undo' } } },
      {
        id: 'b',
        depends_on: ['a'],
        ...record('{{params.key}}-b'),
        compensate: { tool: 'record', input: { key: '{{params.key}}-b-undo', ms: '{{params.ms}}' } },
      },
      {
        id: 'c',
        depends_on: ['b'],
        tool: 'broken',
        input: { retryable: true, message: 'the saga fails here' },
        retry: { attempts: 2, backoff: { type: 'fixed', delay_ms: 20 } },
      },
    ],
  },
];

export async function defineChaosWorkflows(h: Harness): Promise<void> {
  for (const definition of CHAOS_WORKFLOWS) {
    const response = await h.request('POST', '/workflows', definition);
    if (response.status !== 201) throw new Error(`POST /workflows ${definition.name}: ${response.status} ${JSON.stringify(response.body)}`);
  }
}

/** Kinds of task in the mix, with their weight. */
const MIX: [string, number][] = [
  ['record', 20],
  ['record_flaky', 10],
  ['record_limited', 8],
  ['sleep', 8],
  ['echo', 8],
  ['broken', 3],
  ['chaos_chain', 16],
  ['chaos_diamond', 16],
  ['chaos_fan', 14],
  ['chaos_doomed', 5],
  ['chaos_map', 10],
  ['chaos_poll', 8],
  ['chaos_rounds', 5],
  ['chaos_children', 4],
  ['chaos_nap', 6],
  ['chaos_parent', 6],
  ['chaos_saga', 5],
];

/**
 * `count` tasks of the mixed workload: single tools and DAG workflows, steps sleeping 10-200 ms,
 * some failing on purpose before they succeed (retries), a few failing for good.
 */
export function mixedWorkload(count: number, random: () => number, tag = randomBytes(3).toString('hex')): PlannedTask[] {
  const total = MIX.reduce((sum, [, weight]) => sum + weight, 0);
  const pick = () => {
    let roll = random() * total;
    for (const [kind, weight] of MIX) {
      roll -= weight;
      if (roll < 0) return kind;
    }
    return MIX[0]![0];
  };
  return Array.from({ length: count }, (_, index) => {
    const kind = pick();
    const key = `${tag}-${index}`;
    const ms = 10 + Math.floor(random() * 191);
    const task = plan(kind, key, index, ms, random);
    // A client that did not hear the answer asks again with the same key (see submitPaced).
    task.body.idempotency_key = key;
    return task;
  });
}

function plan(kind: string, key: string, index: number, ms: number, random: () => number): PlannedTask {
  switch (kind) {
    case 'record':
    case 'record_flaky': {
      const succeedOn = kind === 'record_flaky' ? 2 : 1;
      return { kind, body: { task_type: 'record', params: { key, ms, succeed_on: succeedOn } }, records: { record: { key, succeedOn } } };
    }
    case 'record_limited':
      // One key for all of them: at most two hold its slots, through the crashes and outages.
      return {
        kind,
        body: { task_type: 'record', params: { key, ms }, concurrency: { key: 'chaos-limited', limit: 2 } },
        records: { record: { key, succeedOn: 1 } },
      };
    case 'sleep':
      return { kind, body: { task_type: 'sleep', params: { ms } }, records: {} };
    case 'echo':
      return { kind, body: { task_type: 'echo', params: { n: index, key } }, records: {} };
    case 'broken':
      return {
        kind,
        body: {
          task_type: 'broken',
          params: { retryable: true, message: `broken on purpose ${key}` },
          retry: { attempts: 2, backoff: { type: 'fixed', delay_ms: 20 } },
        },
        failsAt: 'broken',
        records: {},
      };
    case 'chaos_map':
      return {
        kind,
        body: { task_type: kind, params: { key, ms } },
        records: {},
        maps: { each: [0, 1, 2, 3, 4, 5].map((item) => `${key}-each-${item}`) },
      };
    case 'chaos_poll':
      return {
        kind,
        body: { task_type: kind, params: { key, ms } },
        records: {},
        repeats: { poll: [0, 1, 2].map((iteration) => `${key}-poll-${iteration}`) },
      };
    case 'chaos_rounds':
      return {
        kind,
        body: { task_type: kind, params: { key, ms } },
        records: {},
        repeatedChildren: { rounds: [0, 1].map((iteration) => plan('chaos_chain', `${key}-r${iteration}`, index, ms, () => 1)) },
      };
    case 'chaos_children':
      return {
        kind,
        body: { task_type: kind, params: { key, ms } },
        records: {},
        mappedChildren: { fan: [0, 1, 2].map((item) => plan('chaos_chain', `${key}-f${item}`, index, ms, () => 1)) },
      };
    case 'chaos_parent': {
      const child = plan('chaos_chain', `${key}-sub`, index, ms, () => 1);
      return { kind, body: { task_type: kind, params: { key, ms } }, records: {}, children: { sub: child } };
    }
    default: {
      const flaky = kind !== 'chaos_doomed' && random() < 0.3 ? 2 : 1;
      const definition = CHAOS_WORKFLOWS.find((workflow) => workflow.name === kind)!;
      const records = Object.fromEntries(
        definition.steps
          .filter((step) => 'tool' in step && step.tool === 'record')
          .map((step) => [step.id, { key: `${key}-${step.id}`, succeedOn: 'input' in step && 'succeed_on' in step.input ? flaky : 1 }]),
      );
      // A saga's compensations record their calls too: each must run, and its output quote one of them.
      if (kind === 'chaos_saga') for (const id of ['a', 'b']) records[`${id}.compensate`] = { key: `${key}-${id}-undo`, succeedOn: 1 };
      return {
        kind,
        body: { task_type: kind, params: { key, ms, flaky } },
        records,
        ...(kind === 'chaos_doomed' ? { failsAt: 'b', mayBeSkipped: ['x', 'c'] } : {}),
        ...(kind === 'chaos_saga' ? { failsAt: 'c' } : {}),
      };
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Submitting

export interface Submitted {
  /** Accepted tasks (202, or 200 for a retried request whose first try had created it) by id. */
  accepted: Map<string, PlannedTask>;
  /** 503 answers (a dependency down): the request changed nothing. */
  unavailable: number;
  /** Slowest 503 answer, in ms. */
  slowest503Ms: number;
  /** Any other answer: always a finding. */
  unexpected: { status: number; body: unknown }[];
}

export function emptySubmitted(): Submitted {
  return { accepted: new Map(), unavailable: 0, slowest503Ms: 0, unexpected: [] };
}

/**
 * The slowest of `count` answers to the probe request (an echo submission, 100 ms apart) with
 * every dependency up, under whatever load runs: what a chaos file's "no answer hangs" bounds sit
 * on, since a busy machine slows every answer, not only refusals. The tasks join `submitted`.
 */
export async function healthyAnswerMs(h: Harness, submitted: Submitted, count: number, tag: string): Promise<number> {
  let slowest = 0;
  for (let n = 0; n < count; n += 1) {
    const body = { task_type: 'echo', params: { baseline: `${tag}-${n}` } };
    const sent = Date.now();
    const response = await h.request('POST', '/assign-task', body);
    slowest = Math.max(slowest, Date.now() - sent);
    if (response.status !== 202) throw new Error(`a baseline probe (${tag}) was answered ${response.status}: ${JSON.stringify(response.body)}`);
    submitted.accepted.set(response.body.task_id, { kind: 'echo', body, records: {} });
    await sleep(100);
  }
  return slowest;
}

/**
 * Submits `tasks` at about `perSecond` (at most `concurrency` requests in flight), recording
 * which were accepted, as a careful client does: every task has an idempotency key, and a 503
 * is asked again with the same key until it is answered otherwise (a 200 then names the task
 * that an earlier try created although its answer said 503: PostgreSQL committed the insert
 * but the API never heard so). A request without any answer is unexpected: the API must
 * answer, if only 503.
 */
export async function submitPaced(
  h: Harness,
  tasks: PlannedTask[],
  options: { perSecond: number; concurrency: number; into?: Submitted; shouldStop?: () => boolean },
): Promise<Submitted> {
  const result = options.into ?? emptySubmitted();
  const started = Date.now();
  let next = 0;
  const send = async (task: PlannedTask) => {
    for (let tries = 1; ; tries += 1) {
      const sent = Date.now();
      let response: { status: number; body: any };
      try {
        response = await h.request('POST', '/assign-task', task.body);
      } catch (error) {
        result.unexpected.push({ status: 0, body: (error as Error).message });
        return;
      }
      if (response.status === 202 || (response.status === 200 && tries > 1)) {
        result.accepted.set(response.body.task_id, task);
      } else if (response.status === 503) {
        result.unavailable += 1;
        result.slowest503Ms = Math.max(result.slowest503Ms, Date.now() - sent);
        if (tries < 240) {
          await sleep(250);
          continue;
        }
        result.unexpected.push({ status: 503, body: 'still 503 after a minute of retries' });
      } else {
        result.unexpected.push({ status: response.status, body: response.body });
      }
      return;
    }
  };
  const lane = async () => {
    for (;;) {
      if (options.shouldStop?.()) return;
      const index = next;
      next += 1;
      if (index >= tasks.length) return;
      const due = started + (index * 1000) / options.perSecond;
      if (due > Date.now()) await sleep(due - Date.now());
      await send(tasks[index]!);
    }
  };
  await Promise.all(Array.from({ length: options.concurrency }, lane));
  return result;
}

// ---------------------------------------------------------------------------------------------
// Waiting and checking

/** Waits until PostgreSQL holds no queued or running task, nor an open step of an ended one; fails naming how many are left. */
export async function waitForAllEnded(h: Harness, timeoutMs: number, label: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let active = -1;
  let open = -1;
  for (;;) {
    try {
      const { rows } = await h.db.pool.query<{ n: string }>(`SELECT count(*) AS n FROM tasks WHERE status IN ('queued', 'running')`);
      active = Number(rows[0]!.n);
      // A step still running when a sibling failed its task is closed by its own late report (its
      // job comes back once the database answers again: a result put off through an outage) or,
      // if that job was lost, by the reconciler's pass over ended tasks (RECONCILE_AFTER_MS):
      // closed, in time, not at the instant its task ended. One never closed still fails here.
      const { rows: steps } = await h.db.pool.query<{ n: string }>(
        `SELECT count(*) AS n FROM steps s JOIN tasks t ON t.id = s.task_id AND t.created_at = s.task_created_at
          WHERE t.status IN ('completed', 'failed', 'cancelled') AND s.status IN ('queued', 'running')`,
      );
      open = Number(steps[0]!.n);
      if (active === 0 && open === 0) return;
    } catch {
      // The database may be the thing under test; ask again.
    }
    if (Date.now() > deadline)
      throw new Error(
        `timed out waiting for ${label}: ${active} task(s) still queued or running, ${open} step(s) of ended tasks still open, after ${timeoutMs} ms`,
      );
    await sleep(250);
  }
}

interface TaskRow {
  id: string;
  status: string;
  task_type: string;
  result: any;
  error: any;
  parent_task_id: string | null;
  parent_step_id: string | null;
}

interface ItemRow {
  task_id: string;
  step_id: string;
  item: number;
  status: string;
  attempts: number;
  output: any;
  /** A sub-workflow map's item: the child task it runs. */
  child_task_id: string | null;
}

interface StepRow {
  task_id: string;
  step_id: string;
  kind: string;
  tool: string | null;
  status: string;
  attempts: number;
  output: any;
  error: any;
  started_at: Date | null;
  finished_at: Date | null;
}

export interface Figures {
  /** Tasks submitted (not counting the sub-workflows' child tasks). */
  tasks: number;
  /** Child tasks that sub-workflow steps started. */
  children: number;
  completed: number;
  failedAsMeant: number;
  steps: number;
  /** Calls of the record tool that ran to their end (successful or failed on purpose). */
  recordCalls: number;
  /** Steps whose record tool succeeded more than once: at-least-once delivery after a kill. */
  reexecuted: number;
  /** Steps delivered more often than their planned attempts: picked up again after a crash or outage. */
  redelivered: number;
  deadLetters: number;
}

/**
 * Checks what PostgreSQL recorded for every accepted task against what the workload meant and
 * what the record tool observed. Returns the problems found (empty: nothing lost, nothing
 * duplicated, nothing half-done) and the figures of the run.
 */
export async function checkOutcomes(h: Harness, accepted: Map<string, PlannedTask>): Promise<{ problems: string[]; figures: Figures }> {
  const problems: string[] = [];
  const problem = (message: string) => {
    if (problems.length < 50) problems.push(message);
    else if (problems.length === 50) problems.push('… more problems left out');
  };
  const { rows: tasks } = await h.db.pool.query<TaskRow>(
    `SELECT id::text AS id, status::text AS status, task_type, result, error, parent_task_id::text AS parent_task_id, parent_step_id FROM tasks`,
  );
  const { rows: steps } = await h.db.pool.query<StepRow>(
    `SELECT task_id::text AS task_id, step_id, kind, tool, status::text AS status, attempts, output, error, started_at, finished_at FROM steps ORDER BY task_id, position`,
  );
  const { rows: items } = await h.db.pool.query<ItemRow>(
    `SELECT task_id::text AS task_id, step_id, item, status::text AS status, attempts, output, child_task_id::text AS child_task_id FROM step_items`,
  );
  const { rows: letters } = await h.db.pool.query<{ task_id: string; step_id: string }>(`SELECT task_id::text AS task_id, step_id FROM dead_letters`);

  const stepsByTask = new Map<string, StepRow[]>();
  for (const step of steps) {
    const own = stepsByTask.get(step.task_id) ?? [];
    own.push(step);
    stepsByTask.set(step.task_id, own);
  }
  const letterKeys = new Set(letters.map((letter) => `${letter.task_id}/${letter.step_id}`));
  if (letterKeys.size !== letters.length) problem(`dead letters: ${letters.length - letterKeys.size} duplicate(s)`);

  // What the record tool saw, per observation key.
  const keysOf = (task: PlannedTask): string[] => [
    ...Object.values(task.records).map((entry) => entry.key),
    ...Object.values(task.maps ?? {}).flat(),
    ...Object.values(task.repeats ?? {}).flat(),
    ...Object.values(task.children ?? {}).flatMap(keysOf),
    ...Object.values(task.repeatedChildren ?? {})
      .flat()
      .flatMap(keysOf),
    ...Object.values(task.mappedChildren ?? {})
      .flat()
      .flatMap(keysOf),
  ];
  const keys = [...accepted.values()].flatMap(keysOf);
  const calls = new Map<string, RecordedCall[]>();
  for (let i = 0; i < keys.length; i += 500) {
    const pipeline = h.redis.pipeline();
    for (const key of keys.slice(i, i + 500)) pipeline.lrange(observationKey(h.config.QUEUE_PREFIX, key), 0, -1);
    const replies = (await pipeline.exec()) ?? [];
    keys.slice(i, i + 500).forEach((key, index) => {
      const [error, list] = replies[index] ?? [];
      if (error) throw error;
      calls.set(
        key,
        (list as string[]).map((entry) => JSON.parse(entry) as RecordedCall),
      );
    });
  }

  const figures: Figures = {
    tasks: tasks.filter((task) => !task.parent_task_id).length,
    children: tasks.filter((task) => task.parent_task_id).length,
    completed: 0,
    failedAsMeant: 0,
    steps: steps.length,
    recordCalls: 0,
    reexecuted: 0,
    redelivered: 0,
    deadLetters: letters.length,
  };
  for (const list of calls.values()) figures.recordCalls += list.length;
  const seen = new Set<string>();
  const byParent = new Map(tasks.filter((task) => task.parent_task_id).map((task) => [`${task.parent_task_id}/${task.parent_step_id}`, task]));
  // Every child of a step, oldest first (a UUIDv7 task id starts with its creation time): a repeated sub-workflow has one per iteration.
  const allByParent = new Map<string, TaskRow[]>();
  for (const task of [...tasks].sort((a, b) => (a.id < b.id ? -1 : 1))) {
    if (!task.parent_task_id) continue;
    const key = `${task.parent_task_id}/${task.parent_step_id}`;
    allByParent.set(key, [...(allByParent.get(key) ?? []), task]);
  }
  const itemsOf = new Map<string, ItemRow[]>();
  for (const item of items) {
    const key = `${item.task_id}/${item.step_id}`;
    itemsOf.set(key, [...(itemsOf.get(key) ?? []), item]);
  }

  /** The record tool's calls under `key`: one of them produced `output`; more than one successful is a re-execution. */
  const quoted = (where: string, key: string, output: any, succeedOn = 1) => {
    const recorded = calls.get(key) ?? [];
    const succeeded = recorded.filter((call) => call.ok);
    if (succeeded.length > 1) figures.reexecuted += 1;
    const producer = succeeded.find((call) => call.token === output?.token);
    if (!producer) problem(`${where}: stored output ${JSON.stringify(output)} was produced by none of its ${recorded.length} recorded call(s)`);
    else if (producer.attempt !== output.attempt) problem(`${where}: output attempt ${output.attempt} differs from the recorded call's ${producer.attempt}`);
    if (output && output.attempt < succeedOn) problem(`${where}: succeeded at attempt ${output.attempt}, before attempt ${succeedOn}`);
  };

  /** One task against what it was meant to do; a sub-workflow's child is checked through its parent's step. */
  const checkTask = (task: TaskRow, planned: PlannedTask, label: string) => {
    const own = stepsByTask.get(task.id) ?? [];
    const expected = planned.failsAt ? 'failed' : 'completed';
    if (task.status !== expected) {
      problem(
        `${label}: ${task.status}, meant to end ${expected}; error ${JSON.stringify(task.error)}; steps ${own.map((s) => `${s.step_id}=${s.status}/${s.attempts}`).join(' ')}`,
      );
      return;
    }
    if (expected === 'completed') figures.completed += 1;
    else figures.failedAsMeant += 1;
    if (own.length === 0) problem(`${label}: no steps stored`);

    for (const step of own) {
      const where = `${label} step ${step.step_id}`;
      const recordOf = planned.records[step.step_id];
      const recorded = recordOf ? (calls.get(recordOf.key) ?? []) : [];
      const succeeded = recorded.filter((call) => call.ok);
      const plannedAttempts = recordOf?.succeedOn ?? (step.step_id === planned.failsAt ? 2 : 1);
      if (step.attempts > plannedAttempts) figures.redelivered += 1;
      const isLetter = letterKeys.has(`${task.id}/${step.step_id}`);
      switch (step.status) {
        case 'completed': {
          if (step.output === null && step.kind === 'tool') problem(`${where}: completed without an output`);
          if (step.error !== null) problem(`${where}: completed with an error ${JSON.stringify(step.error)}`);
          if (step.kind === 'tool' && step.attempts < 1 && !planned.maps?.[step.step_id] && !planned.repeats?.[step.step_id])
            problem(`${where}: completed with ${step.attempts} attempts`);
          if (!step.started_at || !step.finished_at || step.finished_at < step.started_at)
            problem(`${where}: completed with started_at ${step.started_at} and finished_at ${step.finished_at}`);
          if (isLetter) problem(`${where}: completed but has a dead letter`);
          if (recordOf) {
            quoted(where, recordOf.key, step.output, recordOf.succeedOn);
            if (step.output && step.output.attempt > step.attempts)
              problem(`${where}: output of attempt ${step.output.attempt} but only ${step.attempts} attempts recorded`);
          }
          // A map (a repeat): every item (iteration) recorded exactly once, each output quoting a call of its own, the
          // step's output their list (the last one's).
          const repeated = planned.repeats?.[step.step_id];
          const itemKeys = planned.maps?.[step.step_id] ?? repeated;
          if (itemKeys) {
            const rows = (itemsOf.get(`${task.id}/${step.step_id}`) ?? []).sort((a, b) => a.item - b.item);
            if (rows.map((row) => row.item).join() !== itemKeys.map((_, index) => index).join())
              problem(`${where}: items ${rows.map((row) => row.item).join()}, meant ${itemKeys.length}`);
            for (const row of rows) {
              if (row.status !== 'completed') problem(`${where} item ${row.item}: ${row.status}`);
              else quoted(`${where} item ${row.item}`, itemKeys[row.item]!, row.output);
            }
            if (repeated) {
              if (JSON.stringify(step.output) !== JSON.stringify(rows.at(-1)?.output)) problem(`${where}: output is not its last iteration's`);
            } else if (JSON.stringify(step.output) !== JSON.stringify(rows.map((row) => row.output)))
              problem(`${where}: output is not its items' outputs in order`);
          }
          // A sub-workflow: its child ended as meant, and its result is the step's output.
          const childPlan = planned.children?.[step.step_id];
          if (childPlan) {
            const child = byParent.get(`${task.id}/${step.step_id}`);
            if (!child) problem(`${where}: no child task`);
            else {
              checkTask(child, childPlan, `${label} child ${child.id}`);
              if (JSON.stringify(step.output) !== JSON.stringify(child.result)) problem(`${where}: output differs from the child's result`);
            }
          }
          // A repeated sub-workflow: a child per iteration, no more (none started twice), each as meant; the output the last one's result.
          const roundPlans = planned.repeatedChildren?.[step.step_id];
          if (roundPlans) {
            const rounds = allByParent.get(`${task.id}/${step.step_id}`) ?? [];
            if (rounds.length !== roundPlans.length) problem(`${where}: ${rounds.length} child task(s), meant ${roundPlans.length}`);
            for (const [at, round] of rounds.slice(0, roundPlans.length).entries())
              checkTask(round, roundPlans[at]!, `${label} child ${round.id} (iteration ${at})`);
            if (JSON.stringify(step.output) !== JSON.stringify(rounds.at(-1)?.result)) problem(`${where}: output differs from the last child's result`);
          }
          // A map over a sub-workflow: each item completed with exactly one child of its own, the step's children being those
          // and no more (none started twice); each child ended as meant (its record steps quoting calls of their own), its
          // result the item's output; the step's output the children's results in item order.
          const itemPlans = planned.mappedChildren?.[step.step_id];
          if (itemPlans) {
            const rows = (itemsOf.get(`${task.id}/${step.step_id}`) ?? []).sort((a, b) => a.item - b.item);
            if (rows.map((row) => row.item).join() !== itemPlans.map((_, index) => index).join())
              problem(`${where}: items ${rows.map((row) => row.item).join()}, meant ${itemPlans.length}`);
            const children = new Map((allByParent.get(`${task.id}/${step.step_id}`) ?? []).map((child) => [child.id, child]));
            const claimed = new Set(rows.map((row) => row.child_task_id));
            if (children.size !== itemPlans.length) problem(`${where}: ${children.size} child task(s), meant one per item (${itemPlans.length})`);
            for (const id of children.keys()) if (!claimed.has(id)) problem(`${where}: child task ${id} belongs to no item`);
            if (claimed.size !== rows.length) problem(`${where}: items share a child task (${[...claimed].join(', ')})`);
            const results: unknown[] = [];
            for (const row of rows) {
              const child = row.child_task_id ? children.get(row.child_task_id) : undefined;
              if (row.status !== 'completed') problem(`${where} item ${row.item}: ${row.status}`);
              if (!child) {
                problem(`${where} item ${row.item}: its child task ${row.child_task_id} is not the step's`);
                continue;
              }
              checkTask(child, itemPlans[row.item]!, `${label} child ${child.id} (item ${row.item})`);
              if (JSON.stringify(row.output) !== JSON.stringify(child.result)) problem(`${where} item ${row.item}: output differs from its child's result`);
              results.push(child.result);
            }
            if (JSON.stringify(step.output) !== JSON.stringify(results)) problem(`${where}: output is not its children's results in item order`);
          }
          if (step.kind === 'sleep' && !step.output?.woke_at) problem(`${where}: a sleep completed without woke_at`);
          break;
        }
        case 'failed':
          if (step.step_id !== planned.failsAt) problem(`${where}: failed (${JSON.stringify(step.error)}), not meant to`);
          if (step.error === null) problem(`${where}: failed without an error`);
          if (step.output !== null) problem(`${where}: failed with an output`);
          if (!isLetter) problem(`${where}: failed for good without a dead letter`);
          break;
        case 'skipped':
          if (!planned.failsAt) problem(`${where}: skipped in a task meant to complete`);
          else if (!planned.mayBeSkipped?.includes(step.step_id)) problem(`${where}: skipped, not meant to be`);
          // A step that never claimed its start must not have run. One that did (attempts >= 1)
          // may have run in a worker that died, its result lost, and then been skipped because
          // its task had failed meanwhile: nothing would run it again.
          if (succeeded.length > 0 && step.attempts === 0) problem(`${where}: skipped, yet the tool ran it ${succeeded.length} time(s)`);
          if (isLetter) problem(`${where}: skipped but has a dead letter`);
          break;
        case 'cancelled':
          // Waiting out a retry's backoff (or left running by a worker that died) when a sibling
          // failed the task: its job was dropped, and it was closed as cancelled.
          if (!planned.failsAt) problem(`${where}: cancelled in a task meant to complete`);
          else if (!planned.mayBeSkipped?.includes(step.step_id)) problem(`${where}: cancelled, not meant to be`);
          if (isLetter) problem(`${where}: cancelled but has a dead letter`);
          break;
        default:
          problem(`${where}: left ${step.status} in a ${task.status} task`);
      }
    }
    if (expected === 'failed') {
      const failedStep = own.find((step) => step.step_id === planned.failsAt);
      if (failedStep?.status !== 'failed') problem(`${label}: step ${planned.failsAt} is ${failedStep?.status}, meant to fail`);
      if (task.error?.step !== planned.failsAt) problem(`${label}: task error names step ${task.error?.step}, not ${planned.failsAt}`);
      return;
    }
    if (own.some((step) => step.status !== 'completed')) problem(`${label}: completed with steps ${own.map((s) => `${s.step_id}=${s.status}`).join(' ')}`);
    checkResult(task.result, own, planned, label, problem);
  };

  for (const task of tasks) {
    seen.add(task.id);
    if (task.parent_task_id) continue;
    const planned = accepted.get(task.id);
    if (!planned) {
      problem(`task ${task.id} (${task.task_type}, ${task.status}) is stored but was never accepted (half-created by a refused request?)`);
      continue;
    }
    checkTask(task, planned, `task ${task.id} (${planned.kind})`);
  }
  for (const id of accepted.keys()) if (!seen.has(id)) problem(`task ${id} was accepted (202) but is not in PostgreSQL: lost`);
  return { problems, figures };
}

/** A completed task's result must quote exactly the outputs its steps stored. */
function checkResult(result: any, steps: StepRow[], planned: PlannedTask, label: string, problem: (message: string) => void): void {
  const output = (id: string) => steps.find((step) => step.step_id === id)?.output;
  const same = (what: string, actual: unknown, expected: unknown) => {
    if (JSON.stringify(actual) !== JSON.stringify(expected))
      problem(`${label}: result ${what} is ${JSON.stringify(actual)}, the step stored ${JSON.stringify(expected)}`);
  };
  switch (planned.kind) {
    case 'record':
    case 'record_flaky':
    case 'sleep':
    case 'echo':
      same('', result, steps[0]?.output);
      break;
    case 'chaos_chain':
      same('a', result?.a, output('a')?.token);
      same('b', result?.b, output('b')?.token);
      same('c', result?.c, output('c'));
      same('c (input of c)', output('c'), { a: output('a')?.token, b: output('b')?.token });
      break;
    case 'chaos_diamond':
      same('a', result?.a, output('a')?.token);
      same('b', result?.b, output('b')?.token);
      same('d', result?.d, output('d'));
      same('d (input of d)', output('d'), { a: output('a')?.token, b: output('b')?.token, slept: output('c')?.slept_ms });
      break;
    case 'chaos_map':
      same('each', result?.each, output('each'));
      break;
    case 'chaos_poll':
      same('last', result?.last, output('poll')?.token);
      same('after', result?.after, output('after'));
      same('after (input of after)', output('after'), { last: output('poll')?.token });
      break;
    case 'chaos_rounds':
      same('last', result?.last, output('rounds'));
      break;
    case 'chaos_children':
      same('each', result?.each, output('fan'));
      same('join', result?.join, output('join'));
      same('join (input of join)', output('join'), { results: output('fan') });
      break;
    case 'chaos_nap':
      same('a', result?.a, output('a')?.token);
      same('b', result?.b, output('b')?.token);
      break;
    case 'chaos_parent':
      same('sub', result?.sub, output('sub'));
      same('after', result?.after, output('after'));
      same('after (input of after)', output('after'), { chain: output('sub') });
      break;
    case 'chaos_fan':
      same('join', result?.join, output('join'));
      same('join (input of join)', output('join'), Object.fromEntries(['n1', 'n2', 'n3', 'n4'].map((id) => [id, output(id)?.token])));
      break;
  }
}

/** One line a person can read in the test output. */
export function report(suite: string, figures: Record<string, unknown>): void {
  const text = Object.entries(figures)
    .map(([name, value]) => `${name}=${typeof value === 'object' ? JSON.stringify(value) : String(value)}`)
    .join(' ');
  console.log(`[${suite}] ${text}`);
}
