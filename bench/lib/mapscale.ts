import type { Redis } from 'ioredis';
import { median, percentile } from './stats.js';
import type { RunningSystem } from './systems/system.js';
import { epochNow, poll, sleep } from './util.js';

/**
 * MAPSCALE: does a map of 1,000 items make GET /result, its items' pages or cancelling slow?
 * Everything is compared with a baseline measured in the same run, in the same window:
 *
 * - GET /result/:id of the map's task while its items run, and once it has finished, each request
 *   alternating with one for a finished one-tool echo task (the baseline), sequentially;
 * - GET /tasks/:id/steps/each/items?limit=100, the first page and a middle one (by the cursor the
 *   API gave), alternating with the same baseline, once the map has finished;
 * - POST /tasks/:id/cancel of a map in flight (max_parallel 20: 20 items queued or running, the
 *   rest pending in PostgreSQL; max_parallel 1,000: every item a job in Redis), against a running
 *   3-step chain: how long the answer takes, then until PostgreSQL shows the task cancelled with
 *   no step or item left pending, queued or running, until no job of the task waits in Redis, and
 *   until none is active any more (the running ones aborted).
 */

/** The tool the map and chain run: `sleep` holds a worker slot for `ms`, so items stay in flight. */
const TOOL = 'sleep';
const TOOL_QUEUE = `tool.${TOOL}`;
/** The map's step id (the items endpoint's path names it). */
const STEP = 'each';
const UNSETTLED = ['pending', 'queued', 'running'];

export interface MapScalePlan {
  /** Items of the map (MAP_MAX_ITEMS allows 1,000 by default). */
  items: number;
  /** Sequential requests per series (each alternating with a baseline request). */
  samples: number;
  /** Cancellations of each kind (chain, maps), interleaved. */
  cancelRounds: number;
  /** The map read while in flight: each item sleeps this long, at most `maxParallel` at once. */
  sleepMs: number;
  maxParallel: number;
  /** The tasks cancelled: each step or item sleeps this long (under 1 s: the tool reports no progress). */
  cancelSleepMs: number;
  /** max_parallel of the maps cancelled. */
  cancelMaxParallel: number[];
  /** Give up waiting for a task to start, finish or settle after this long. */
  timeoutMs: number;
  /** Our targets, carried into the report: see MapScaleWorkload. */
  targets: { resultRatio: number; cancelRatio: number };
}

/** Latency of a series of sequential requests, in ms, and the size of the last answer's body. */
export interface Series {
  count: number;
  p50: number;
  p95: number;
  max: number;
  bytes: number;
}

/** A map's item counts as GET /result shows them. */
export interface ItemCounts {
  total: number;
  done: number;
  running: number;
  failed: number;
}

export interface ResultWindow {
  /** The map's task. */
  map: Series;
  /** The finished echo task, its requests alternating with the map's. */
  baseline: Series;
  /** p50 over p50, and p95 over p95, both from this window. */
  ratioP50: number;
  ratioP95: number;
}

export interface CancelSample {
  /** POST sent -> answer received. */
  answerMs: number;
  /** POST sent -> PostgreSQL shows the task cancelled, no step or item pending, queued or running. */
  pgSettledMs: number;
  /** POST sent -> no job of the task in the tool queue's wait, paused, prioritized or delayed lists. */
  redisClearMs: number;
  /** POST sent -> no job of the task active either (its running steps or items aborted). */
  stoppedMs: number;
  /** Already settled in PostgreSQL at the first look after the answer. */
  pgSettledAtAnswer: boolean;
  /** Already clear in Redis at the first look after the answer. */
  redisClearAtAnswer: boolean;
  /** Just before the POST: the task's items (map) or steps (chain) by status, and its jobs in Redis. */
  before: { byStatus: Record<string, number>; jobsWaiting: number; jobsActive: number };
}

export interface CancelKind {
  id: string;
  title: string;
  maxParallel?: number;
  samples: CancelSample[];
  /** Medians over the samples. */
  answerMs: number;
  pgSettledMs: number;
  redisClearMs: number;
  stoppedMs: number;
  /** The median answer over the chain's median answer, in this run (absent for the chain). */
  answerRatioToChain?: number;
}

export interface MapScaleReport {
  items: number;
  samples: number;
  sleepMs: number;
  maxParallel: number;
  cancelSleepMs: number;
  /** The map read in flight, from its start to its end (tasks.started_at -> finished_at), and the sleeping alone: items / max_parallel x sleep. */
  mapRunMs: number;
  sleepingMs: number;
  targets: { resultRatio: number; cancelRatio: number };
  result: {
    inFlight: ResultWindow & { itemsAtStart: ItemCounts; itemsAtEnd: ItemCounts; statusAtEnd: string; inFlightThroughout: boolean };
    finished: ResultWindow;
    /** The echo task's p50 while the map ran over its p50 once it had finished: what the map's work costs other readers. */
    baselineInFlightOverFinished: number;
  };
  pages: {
    first: Series;
    middle: Series;
    baseline: Series;
    /** The cursor of the middle page, as the API gave it. */
    middleCursor: string;
    ratioFirstP50: number;
    ratioMiddleP50: number;
    /** Walking every page once: what was wrong with them, if anything. */
    problems: string[];
  };
  cancel: { rounds: number; kinds: CancelKind[] };
  problems: string[];
}

function series(latencies: number[], bytes: number): Series {
  const sorted = [...latencies].sort((a, b) => a - b);
  const round = (value: number) => Math.round(value * 100) / 100;
  return { count: sorted.length, p50: round(percentile(sorted, 50)), p95: round(percentile(sorted, 95)), max: round(sorted.at(-1) ?? Number.NaN), bytes };
}

const round2 = (value: number) => Math.round(value * 100) / 100;

/** The definitions, made through the API like any user's. */
function mapDefinition(name: string, maxParallel: number) {
  return {
    name,
    description: `Benchmark (MAPSCALE): one for_each step of ${TOOL} over params.items, max_parallel ${maxParallel}.`,
    parameters: [
      { name: 'items', type: 'array', required: true },
      { name: 'ms', type: 'integer', default: 100 },
    ],
    steps: [{ id: STEP, tool: TOOL, for_each: '{{params.items}}', max_parallel: maxParallel, input: { ms: '{{params.ms}}' } }],
  };
}

const CHAIN = {
  name: 'bench_mapscale_chain',
  description: `Benchmark (MAPSCALE): three ${TOOL} steps in a row, the baseline of cancelling.`,
  parameters: [{ name: 'ms', type: 'integer', default: 900 }],
  steps: [
    { id: 's1', tool: TOOL, input: { ms: '{{params.ms}}' } },
    { id: 's2', tool: TOOL, depends_on: ['s1'], input: { ms: '{{params.ms}}' } },
    { id: 's3', tool: TOOL, depends_on: ['s2'], input: { ms: '{{params.ms}}' } },
  ],
};

const mapName = (maxParallel: number) => `bench_mapscale_${maxParallel}`;

class Api {
  constructor(private readonly system: RunningSystem) {}

  async post(path: string, body: unknown, expect: number[]): Promise<{ json: unknown; ms: number }> {
    if (!this.system.post) throw new Error(`${this.system.kind} has no HTTP API`);
    const started = epochNow();
    const answer = await this.system.post(path, body);
    const ms = epochNow() - started;
    if (!expect.includes(answer.status)) throw new Error(`POST ${path} answered ${answer.status}: ${JSON.stringify(answer.json).slice(0, 500)}`);
    return { json: answer.json, ms };
  }

  async get(path: string): Promise<{ json: unknown; ms: number; bytes: number }> {
    if (!this.system.get) throw new Error(`${this.system.kind} has no HTTP API`);
    const started = epochNow();
    const answer = await this.system.get(path);
    const ms = epochNow() - started;
    if (answer.status !== 200) throw new Error(`GET ${path} answered ${answer.status}: ${JSON.stringify(answer.json).slice(0, 500)}`);
    return { json: answer.json, ms, bytes: answer.bytes };
  }

  async submit(body: unknown): Promise<string> {
    const { json } = await this.post('/assign-task', body, [202]);
    return (json as { task_id: string }).task_id;
  }
}

interface TaskView {
  status: string;
  started_at?: string | null;
  finished_at?: string | null;
  steps: { id: string; status: string; items?: ItemCounts }[];
}

const FINISHED = new Set(['completed', 'failed', 'cancelled']);

async function awaitEnd(api: Api, id: string, timeoutMs: number): Promise<TaskView> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const wait = Math.max(1, Math.min(10, Math.ceil((deadline - Date.now()) / 1000)));
    const view = (await api.get(`/result/${id}?wait=${wait}`)).json as TaskView;
    if (FINISHED.has(view.status)) return view;
    if (Date.now() > deadline) throw new Error(`task ${id} did not finish within ${timeoutMs} ms (${view.status})`);
  }
}

/**
 * Runs `paths` in turn, `samples` times (each request sequential), after one unmeasured round:
 * the series of one path and of the baseline come from the same moments.
 */
async function alternate(api: Api, paths: string[], samples: number, onLast?: (json: unknown[]) => void): Promise<Series[]> {
  for (const path of paths) await api.get(path);
  const latencies = paths.map(() => [] as number[]);
  const bytes = paths.map(() => 0);
  const last: unknown[] = paths.map(() => undefined);
  for (let sample = 0; sample < samples; sample += 1) {
    for (const [index, path] of paths.entries()) {
      const answer = await api.get(path);
      latencies[index]!.push(answer.ms);
      bytes[index] = answer.bytes;
      last[index] = answer.json;
    }
  }
  onLast?.(last);
  return paths.map((_, index) => series(latencies[index]!, bytes[index]!));
}

const counts = (view: TaskView): ItemCounts => view.steps.find((step) => step.id === STEP)?.items ?? { total: 0, done: 0, running: 0, failed: 0 };

/** Walks every page of the map's items once: each item once, in order, all completed, pages of `limit`. */
async function walkPages(api: Api, id: string, items: number, limit: number): Promise<{ cursors: string[]; problems: string[] }> {
  const cursors: string[] = [];
  const problems: string[] = [];
  const seen: number[] = [];
  let cursor: string | null = null;
  for (let page = 0; page < items / limit + 2; page += 1) {
    const path = `/tasks/${id}/steps/${STEP}/items?limit=${limit}${cursor === null ? '' : `&cursor=${encodeURIComponent(cursor)}`}`;
    const body = (await api.get(path)).json as { items: { item: number; status: string }[]; next_cursor: string | null };
    for (const entry of body.items) {
      seen.push(entry.item);
      if (entry.status !== 'completed') problems.push(`item ${entry.item} is ${entry.status}`);
    }
    if (body.next_cursor === null) break;
    if (body.items.length !== limit) problems.push(`a page of ${body.items.length} items with a next cursor (limit ${limit})`);
    cursor = body.next_cursor;
    cursors.push(cursor);
  }
  const inOrder = seen.every((item, index) => item === index);
  if (seen.length !== items || !inOrder)
    problems.push(`the pages listed ${seen.length} items${inOrder ? '' : ' out of order or with gaps'}, expected 0-${items - 1}`);
  return { cursors, problems: problems.slice(0, 5) };
}

/** The task's jobs in the tool queue: waiting (wait, paused, prioritized, delayed) and active. */
async function jobsOf(redis: Redis, prefix: string, taskId: string): Promise<{ waiting: number; active: number }> {
  const base = `${prefix}:${TOOL_QUEUE}`;
  const replies = (await redis
    .multi()
    .lrange(`${base}:wait`, 0, -1)
    .lrange(`${base}:paused`, 0, -1)
    .zrange(`${base}:prioritized`, 0, -1)
    .zrange(`${base}:delayed`, 0, -1)
    .lrange(`${base}:active`, 0, -1)
    .exec()) as [Error | null, string[]][];
  const mine = (index: number) => replies[index]![1].filter((jobId) => jobId.startsWith(`${taskId}.`)).length;
  return { waiting: mine(0) + mine(1) + mine(2) + mine(3), active: mine(4) };
}

/** The task's status, and its steps and items still pending, queued or running, from PostgreSQL. */
async function ledger(system: RunningSystem, taskId: string): Promise<{ status: string; steps: number; items: number }> {
  const rows = await system.benchClient!.query<{ status: string; steps: number; items: number }>(
    `SELECT t.status::text AS status,
            (SELECT count(*) FROM steps s WHERE s.task_id = t.id AND s.task_created_at = t.created_at AND s.status::text = ANY($2))::int AS steps,
            (SELECT count(*) FROM step_items i WHERE i.task_id = t.id AND i.task_created_at = t.created_at AND i.status::text = ANY($2))::int AS items
       FROM tasks t WHERE t.id = $1::uuid`,
    [taskId, UNSETTLED],
  );
  if (!rows[0]) throw new Error(`task ${taskId} is not in PostgreSQL`);
  return rows[0];
}

async function byStatus(system: RunningSystem, taskId: string, table: 'steps' | 'step_items'): Promise<Record<string, number>> {
  const rows = await system.benchClient!.query<{ status: string; count: number }>(
    `SELECT status::text AS status, count(*)::int AS count FROM ${table} WHERE task_id = $1::uuid GROUP BY status ORDER BY status`,
    [taskId],
  );
  return Object.fromEntries(rows.map((row) => [row.status, row.count]));
}

/** Submits a task, waits until it is well in flight (its first step, or some item, running), cancels it, and times what follows. */
async function cancelOne(
  api: Api,
  system: RunningSystem,
  redis: Redis,
  prefix: string,
  body: unknown,
  isMap: boolean,
  plan: MapScalePlan,
  problems: string[],
): Promise<CancelSample> {
  const taskId = await api.submit(body);
  const table = isMap ? 'step_items' : 'steps';
  await poll(async () => ((await byStatus(system, taskId, table)).running ?? 0) > 0, {
    label: `task ${taskId} to run`,
    timeoutMs: plan.timeoutMs,
    intervalMs: 10,
  });
  // Well inside its first step (or its first items), far from their end.
  await sleep(Math.min(200, plan.cancelSleepMs / 4));
  const [statuses, jobs] = await Promise.all([byStatus(system, taskId, table), jobsOf(redis, prefix, taskId)]);
  const sent = epochNow();
  await api.post(`/tasks/${taskId}/cancel`, {}, [200]);
  const answered = epochNow();
  let firstPg = true;
  let firstRedis = true;
  let pgSettledAtAnswer = false;
  let redisClearAtAnswer = false;
  // A look that never comes true (a job left behind) is a finding, not a failure of the bench: NaN.
  const settledAt = (label: string, check: () => Promise<number | undefined>) =>
    poll(check, { label, timeoutMs: plan.timeoutMs, intervalMs: 2 }).catch(() => Number.NaN);
  let clearAt = Number.NaN;
  const [pgAt, stoppedAt] = await Promise.all([
    settledAt(`task ${taskId} cancelled in PostgreSQL`, async () => {
      const state = await ledger(system, taskId);
      const settled = state.status === 'cancelled' && state.steps === 0 && state.items === 0;
      if (firstPg) pgSettledAtAnswer = settled;
      firstPg = false;
      return settled ? epochNow() : undefined;
    }),
    settledAt(`no job of task ${taskId} left in Redis`, async () => {
      const { waiting, active } = await jobsOf(redis, prefix, taskId);
      if (firstRedis) redisClearAtAnswer = waiting === 0;
      firstRedis = false;
      if (waiting === 0 && Number.isNaN(clearAt)) clearAt = epochNow();
      return waiting === 0 && active === 0 ? epochNow() : undefined;
    }),
  ]);
  if (Number.isNaN(pgAt) || Number.isNaN(stoppedAt)) {
    const [state, jobsLeft] = await Promise.all([ledger(system, taskId), jobsOf(redis, prefix, taskId)]);
    problems.push(
      `cancelled task ${taskId} not settled after ${plan.timeoutMs} ms: ${state.status}, ${state.steps} steps and ${state.items} items pending/queued/running, ` +
        `${jobsLeft.waiting} jobs waiting and ${jobsLeft.active} active in Redis`,
    );
  }
  return {
    answerMs: round2(answered - sent),
    pgSettledMs: round2(pgAt - sent),
    redisClearMs: round2(clearAt - sent),
    stoppedMs: round2(stoppedAt - sent),
    pgSettledAtAnswer,
    redisClearAtAnswer,
    before: { byStatus: statuses, jobsWaiting: jobs.waiting, jobsActive: jobs.active },
  };
}

function cancelKind(id: string, title: string, samples: CancelSample[], maxParallel?: number): CancelKind {
  return {
    id,
    title,
    ...(maxParallel !== undefined ? { maxParallel } : {}),
    samples,
    answerMs: round2(median(samples.map((sample) => sample.answerMs)) ?? Number.NaN),
    pgSettledMs: round2(median(samples.map((sample) => sample.pgSettledMs)) ?? Number.NaN),
    redisClearMs: round2(median(samples.map((sample) => sample.redisClearMs)) ?? Number.NaN),
    stoppedMs: round2(median(samples.map((sample) => sample.stoppedMs)) ?? Number.NaN),
  };
}

export async function measureMapScale(system: RunningSystem, redis: Redis, plan: MapScalePlan, log: (line: string) => void): Promise<MapScaleReport> {
  const prefix = system.queuePrefix;
  if (!system.benchClient || !prefix) throw new Error(`${system.kind} has no database or queue prefix to read`);
  const api = new Api(system);
  const problems: string[] = [];
  for (const maxParallel of new Set([plan.maxParallel, ...plan.cancelMaxParallel]))
    await api.post('/workflows', mapDefinition(mapName(maxParallel), maxParallel), [201]);
  await api.post('/workflows', CHAIN, [201]);
  const itemsList = Array.from({ length: plan.items }, (_, index) => index);

  // The baseline: a finished one-tool echo task.
  const echoId = await api.submit({ task_type: 'echo', params: { value: 'x' } });
  await awaitEnd(api, echoId, plan.timeoutMs);
  const echoPath = `/result/${echoId}`;

  // (a) The map in flight: its items sleep, max_parallel at a time.
  const mapId = await api.submit({ task_type: mapName(plan.maxParallel), params: { items: itemsList, ms: plan.sleepMs } });
  const mapPath = `/result/${mapId}`;
  const itemsAtStart = await poll(
    async () => {
      const view = (await api.get(mapPath)).json as TaskView;
      const seen = counts(view);
      if (FINISHED.has(view.status)) throw new Error(`the map ended (${view.status}) before it was measured in flight`);
      return seen.total === plan.items && seen.done > 0 ? seen : undefined;
    },
    { label: `the map ${mapId} to run`, timeoutMs: plan.timeoutMs, intervalMs: 20 },
  );
  let lastView: TaskView | undefined;
  const [mapInFlight, echoInFlight] = await alternate(api, [mapPath, echoPath], plan.samples, (last) => {
    lastView = last[0] as TaskView;
  });
  const itemsAtEnd = counts(lastView!);
  const statusAtEnd = lastView!.status;
  const inFlightThroughout = statusAtEnd === 'running' && itemsAtEnd.done < itemsAtEnd.total;
  if (!inFlightThroughout)
    problems.push(`the map was not in flight throughout its /result series (at the end: ${statusAtEnd}, ${itemsAtEnd.done}/${itemsAtEnd.total} done)`);
  log(
    `/result, map of ${plan.items} in flight (items done ${itemsAtStart.done} -> ${itemsAtEnd.done}): p50 ${mapInFlight!.p50} ms, p95 ${mapInFlight!.p95} ms, ${mapInFlight!.bytes} B; ` +
      `echo task meanwhile p50 ${echoInFlight!.p50} ms, p95 ${echoInFlight!.p95} ms, ${echoInFlight!.bytes} B`,
  );

  // (b) The same task once finished, and its items' pages.
  const ended = await awaitEnd(api, mapId, plan.timeoutMs);
  if (ended.status !== 'completed') problems.push(`the map ended ${ended.status}`);
  const mapRunMs = Date.parse(ended.finished_at ?? '') - Date.parse(ended.started_at ?? '');
  const walked = await walkPages(api, mapId, plan.items, 100);
  problems.push(...walked.problems.map((problem) => `items pages: ${problem}`));
  // The cursor that starts the page at the middle of the list (items 500-599 of 1,000).
  const middleCursor = walked.cursors[Math.floor(walked.cursors.length / 2)] ?? walked.cursors[0] ?? '';
  const pagePath = `/tasks/${mapId}/steps/${STEP}/items?limit=100`;
  const [mapFinished, echoFinished, firstPage, middlePage] = await alternate(
    api,
    [mapPath, echoPath, pagePath, `${pagePath}&cursor=${encodeURIComponent(middleCursor)}`],
    plan.samples,
  );
  log(
    `the map ran ${mapRunMs} ms (started -> finished; ${plan.items} items / max_parallel ${plan.maxParallel} x ${plan.sleepMs} ms = ${(plan.items / plan.maxParallel) * plan.sleepMs} ms of sleeping); ` +
      `/result, the same map finished: p50 ${mapFinished!.p50} ms, p95 ${mapFinished!.p95} ms, ${mapFinished!.bytes} B; echo task meanwhile p50 ${echoFinished!.p50} ms; ` +
      `items?limit=100 first page p50 ${firstPage!.p50} ms (${firstPage!.bytes} B), middle page (cursor ${middleCursor}) p50 ${middlePage!.p50} ms`,
  );

  // Cancelling: a running 3-step chain, and maps of plan.items in flight, in turn.
  const chainSamples: CancelSample[] = [];
  const mapSamples = new Map<number, CancelSample[]>(plan.cancelMaxParallel.map((maxParallel) => [maxParallel, []]));
  for (let round = 0; round < plan.cancelRounds; round += 1) {
    chainSamples.push(await cancelOne(api, system, redis, prefix, { task_type: CHAIN.name, params: { ms: plan.cancelSleepMs } }, false, plan, problems));
    for (const maxParallel of plan.cancelMaxParallel) {
      const sample = await cancelOne(
        api,
        system,
        redis,
        prefix,
        { task_type: mapName(maxParallel), params: { items: itemsList, ms: plan.cancelSleepMs } },
        true,
        plan,
        problems,
      );
      mapSamples.get(maxParallel)!.push(sample);
      if (maxParallel > 100 && sample.before.jobsWaiting === 0)
        problems.push(`no job of a map of max_parallel ${maxParallel} was found waiting before its cancel: are the queue's keys ${prefix}:${TOOL_QUEUE}:*?`);
    }
  }
  const chain = cancelKind('chain', `a running 3-step chain of ${TOOL} steps`, chainSamples);
  const maps = plan.cancelMaxParallel.map((maxParallel) => {
    const kind = cancelKind(
      `map-${maxParallel}`,
      `a map of ${plan.items.toLocaleString('en-US')} items in flight, max_parallel ${maxParallel.toLocaleString('en-US')}`,
      mapSamples.get(maxParallel)!,
      maxParallel,
    );
    return { ...kind, answerRatioToChain: round2(kind.answerMs / chain.answerMs) };
  });
  for (const kind of [chain, ...maps]) {
    log(
      `cancel ${kind.title}: answer ${kind.answerMs} ms, settled in PostgreSQL ${kind.pgSettledMs} ms, no job waiting ${kind.redisClearMs} ms, none active ${kind.stoppedMs} ms` +
        (kind.answerRatioToChain !== undefined ? ` (answer / chain's ${kind.answerRatioToChain})` : '') +
        ` [answers ${kind.samples.map((sample) => Math.round(sample.answerMs)).join(', ')}]`,
    );
  }

  return {
    items: plan.items,
    samples: plan.samples,
    sleepMs: plan.sleepMs,
    maxParallel: plan.maxParallel,
    cancelSleepMs: plan.cancelSleepMs,
    mapRunMs,
    sleepingMs: (plan.items / plan.maxParallel) * plan.sleepMs,
    targets: plan.targets,
    result: {
      inFlight: {
        map: mapInFlight!,
        baseline: echoInFlight!,
        ratioP50: round2(mapInFlight!.p50 / echoInFlight!.p50),
        ratioP95: round2(mapInFlight!.p95 / echoInFlight!.p95),
        itemsAtStart,
        itemsAtEnd,
        statusAtEnd,
        inFlightThroughout,
      },
      finished: {
        map: mapFinished!,
        baseline: echoFinished!,
        ratioP50: round2(mapFinished!.p50 / echoFinished!.p50),
        ratioP95: round2(mapFinished!.p95 / echoFinished!.p95),
      },
      baselineInFlightOverFinished: round2(echoInFlight!.p50 / echoFinished!.p50),
    },
    pages: {
      first: firstPage!,
      middle: middlePage!,
      baseline: echoFinished!,
      middleCursor,
      ratioFirstP50: round2(firstPage!.p50 / echoFinished!.p50),
      ratioMiddleP50: round2(middlePage!.p50 / echoFinished!.p50),
      problems: walked.problems,
    },
    cancel: { rounds: plan.cancelRounds, kinds: [chain, ...maps] },
    problems,
  };
}
