import type { IncomingMessage, ServerResponse } from 'node:http';
import type { RequestHandler, Response } from 'express';
import type { Logger } from '../lib/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { finishedStepsKey } from '../queue/event-log.js';
import type { RedisClient } from '../queue/redis.js';
import type { Shards } from '../queue/shards.js';
import { clientOf } from './client-slots.js';
import { errorBody } from './http.js';

export interface AdmissionSettings {
  /** Refuse once the backlog is more than the workers drain in this long. 0: admission control off. */
  maxWaitMs: number;
  /** The backlog always admitted, whatever the drain rate (an idle system has measured none yet). */
  minBacklog: number;
  /** A fixed ceiling on the backlog, whatever the drain rate. 0: none. */
  maxBacklog: number;
  /** How often the backlog and the drain rate are read from Redis. */
  sampleMs: number;
  /** Most submissions this process handles at once (admitted, not yet answered). 0: no limit. */
  maxInFlight: number;
  /** Of those, most one client (API key, or address without keys) may hold. 0: no limit. @defaultValue 0 */
  maxInFlightPerKey?: number;
  /**
   * How long the front door holds a refusal before answering it. A client that retries at once
   * (most do, whatever Retry-After says) then sends one request per this long on each connection
   * instead of hundreds, and the process keeps its event loop for the work it took. 0: at once.
   * @defaultValue 0
   */
  refusalDelayMs?: number;
}

/** What the front door needs beyond the settings; each part optional. */
export interface AdmissionFront {
  /** Unfinished tasks per client (`key:<id>`, `ip:<address>`), read with the backlog: a client under its fair share is admitted past the limit. */
  counts?: () => Promise<Map<string, number>>;
  /** The client a raw request comes from, as clientOf names it once authenticated; undefined when it cannot be told cheaply. */
  identify?: (req: IncomingMessage) => string | undefined;
  /** Paths (with the query cut off) of POST requests that create tasks. */
  paths?: RegExp;
}

/** Front-door refusals: written whole, with no figures (they may be answered before the key is checked). */
function rawRefusal(status: number, code: string, message: string, retryAfterS: number) {
  const body = Buffer.from(JSON.stringify(errorBody(code, `${message}; nothing was created, retry after the Retry-After seconds`)));
  return {
    status,
    body,
    headers: { 'content-type': 'application/json; charset=utf-8', 'content-length': String(body.length), 'retry-after': String(retryAfterS) },
  };
}
const OVERLOADED = 'the service is taking no new tasks from this client now';
const BUSY = 'this API process is handling as many submissions as it takes at once';
const KEY_BUSY = 'this API key has ADMISSION_MAX_IN_FLIGHT_PER_KEY submissions in flight in this API process';

/** Weight of the newest drain-rate reading in the moving average. */
const SMOOTHING = 0.3;
/** Longest Retry-After a refusal asks for, in seconds. */
const MAX_RETRY_AFTER_S = 30;

/**
 * Admission control for new tasks: while the step jobs waiting in the tool queues are more than
 * the workers drain in ADMISSION_MAX_WAIT_MS, POST /assign-task answers 503 `overloaded` with a
 * Retry-After, before reading the body or writing anything. Accepting past that point only makes
 * the API take the CPU and connections the workers need, so fewer tasks finish (goodput falls).
 *
 * The backlog (queue lengths) and the drain rate (a counter the workers bump with every step
 * result, in the pipeline that publishes its events) live in Redis, so every API replica decides
 * from the same figures. Each process reads them every `sampleMs` and decides from its latest
 * reading: a refusal costs no I/O. If Redis cannot be read, tasks are admitted and the submit path
 * answers for Redis itself.
 *
 * The backlog only grows once tasks are created, and a flood of clients can swamp the API before
 * it does: 1,024 connections at twice the maximum rate had every one of them admitted at once,
 * and refusals waited 11 s behind them. So each process also bounds the submissions it has
 * admitted and not yet answered (`maxInFlight`): past that, it refuses at once, which costs a
 * small part of what creating a task costs, and keeps the CPU for the tasks it took.
 */
export class Admission {
  private backlog = 0;
  private ratePerS = 0;
  private last: { count: number; at: number } | undefined;
  private timer: NodeJS.Timeout | undefined;
  private inFlight = 0;
  private readonly inFlightOf = new Map<string, number>();
  /**
   * Submissions per client let through the front door whose slot is not taken yet (their body is
   * arriving): counted against their own client's cap, so that a flood does not pass the door in
   * the time a body takes to parse, while slow uploads of one client only hold that client back.
   */
  private readonly arrivingOf = new Map<string, number>();
  private readonly arriving = new WeakMap<IncomingMessage, string>();
  /** Unfinished tasks per client, their sum, and how many clients hold any, as last read. */
  private counts = new Map<string, number>();
  private countsTotal = 0;
  private readonly refusals = new Map<string, ReturnType<typeof rawRefusal>>();

  constructor(
    private readonly redis: RedisClient,
    private readonly shards: Shards,
    /** The queues whose waiting jobs are the backlog (the tool queues), in every shard. */
    private readonly queueNames: () => string[],
    private readonly settings: AdmissionSettings,
    private readonly metrics: Metrics,
    private readonly logger: Logger,
    private readonly door: AdmissionFront = {},
  ) {}

  get enabled(): boolean {
    return this.settings.maxWaitMs > 0 || this.settings.maxInFlight > 0 || (this.settings.maxInFlightPerKey ?? 0) > 0;
  }

  /** Submissions this process has admitted and not yet answered. */
  get inFlightNow(): number {
    return this.inFlight;
  }

  /** The backlog admitted now: what the workers drain in maxWaitMs, within [minBacklog, maxBacklog]. */
  limit(): number {
    const draining = Math.floor((this.ratePerS * this.settings.maxWaitMs) / 1000);
    const limit = Math.max(this.settings.minBacklog, draining);
    return this.settings.maxBacklog > 0 ? Math.min(limit, this.settings.maxBacklog) : limit;
  }

  start(): void {
    if (this.settings.maxWaitMs === 0 || this.timer) return;
    const tick = () => {
      this.sample()
        .catch((error: Error) => this.logger.debug('admission: could not read the backlog', { error: error.message }))
        .finally(() => {
          if (this.timer) this.timer = setTimeout(tick, this.settings.sampleMs).unref();
        });
    };
    this.timer = setTimeout(tick, 0).unref();
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  /**
   * One reading: every queue's waiting jobs and the finished-steps counter, summed over the
   * shards, in one round trip per shard (a cluster pipeline stays within one slot).
   */
  async sample(now = Date.now()): Promise<void> {
    const names = this.queueNames();
    const readings = await Promise.all(
      this.shards.prefixes.map(async (prefix) => {
        const pipeline = this.redis.pipeline();
        for (const name of names) {
          pipeline.llen(`${prefix}:${name}:wait`);
          pipeline.zcard(`${prefix}:${name}:prioritized`);
          // Delayed jobs too (delay_ms, backoffs): they hold Redis and come back as work.
          pipeline.zcard(`${prefix}:${name}:delayed`);
        }
        pipeline.get(finishedStepsKey(prefix));
        const results = (await pipeline.exec()) ?? [];
        const failed = results.find(([error]) => error);
        if (failed) throw failed[0];
        const values = results.map(([, value]) => Number(value ?? 0));
        const count = values.pop()!;
        return { backlog: values.reduce((sum, value) => sum + value, 0), count };
      }),
    );
    if (this.door.counts) {
      this.counts = await this.door.counts();
      this.countsTotal = [...this.counts.values()].reduce((sum, value) => sum + value, 0);
    }
    const count = readings.reduce((sum, reading) => sum + reading.count, 0);
    this.backlog = readings.reduce((sum, reading) => sum + reading.backlog, 0);
    if (this.last && now > this.last.at && count >= this.last.count) {
      const instant = ((count - this.last.count) * 1000) / (now - this.last.at);
      this.ratePerS = this.ratePerS === 0 ? instant : this.ratePerS * (1 - SMOOTHING) + instant * SMOOTHING;
    }
    this.last = { count, at: now };
    this.metrics.admissionBacklog.set(this.backlog);
    this.metrics.admissionLimit.set(this.limit());
  }

  /**
   * Undefined to admit; else the seconds the client should wait. Past the limit a client that
   * holds less than an equal share of the unfinished tasks is still admitted: one client's flood
   * does not shut out the others.
   */
  refusal(client?: string): number | undefined {
    if (this.settings.maxWaitMs === 0) return undefined;
    const limit = this.limit();
    if (this.backlog <= limit) return undefined;
    if (client !== undefined && this.counts.size > 0 && (this.counts.get(client) ?? 0) * this.counts.size < this.countsTotal) return undefined;
    const drainS = this.ratePerS > 0 ? (this.backlog - limit) / this.ratePerS : MAX_RETRY_AFTER_S;
    return Math.min(MAX_RETRY_AFTER_S, Math.max(1, Math.ceil(drainS)));
  }

  /**
   * Whether `client`'s new task should wait behind other clients' work: it holds more than an
   * equal share of the unfinished tasks of two or more clients while work waits in the queues (as
   * last read). Admitting a polite client past a flood's backlog is not enough: its tasks would
   * join the end of that backlog and wait ADMISSION_MAX_WAIT_MS for it. Its jobs go in at the
   * lowest BullMQ priority instead, so every other client's jobs (without a priority) run first.
   */
  behindOthers(client: string): boolean {
    if (this.backlog === 0 || this.counts.size < 2) return false;
    return (this.counts.get(client) ?? 0) * this.counts.size > this.countsTotal;
  }

  /**
   * The front door, in the HTTP server's request handler ahead of Express: refuses a submission
   * from what the last reading and this process's counts say, with nothing parsed, logged or
   * routed (a refusal costs next to nothing, or a retry storm takes the CPU the work needs).
   * True when it answered. What it lets through is checked again once authenticated (middleware).
   */
  front(req: IncomingMessage, res: ServerResponse): boolean {
    if (req.method !== 'POST' || !this.door.paths) return false;
    const url = req.url ?? '';
    const query = url.indexOf('?');
    if (!this.door.paths.test(query < 0 ? url : url.slice(0, query))) return false;
    const client = this.door.identify?.(req);
    const retryAfterS = this.refusal(client);
    if (retryAfterS !== undefined) return this.rawRefuse(res, 503, retryAfterS, 'overloaded', OVERLOADED);
    const perKey = this.capOf(client);
    if (client !== undefined && perKey > 0 && (this.inFlightOf.get(client) ?? 0) + (this.arrivingOf.get(client) ?? 0) >= perKey) {
      return this.rawRefuse(res, 429, 1, 'too_many_in_flight', KEY_BUSY);
    }
    if (this.settings.maxInFlight > 0 && this.inFlight >= this.settings.maxInFlight) return this.rawRefuse(res, 503, 1, 'overloaded', BUSY);
    if (client !== undefined && perKey > 0) {
      this.arrivingOf.set(client, (this.arrivingOf.get(client) ?? 0) + 1);
      this.arriving.set(req, client);
      // Answered or cut off before its slot was taken (a 401, a bad body, a timeout).
      res.once('close', () => this.arrived(req));
    }
    return false;
  }

  /**
   * The in-flight cap of a client: API keys only. Without keys every caller of one address would
   * share it (a backend serving many users from one host), and slow uploads hold no slot anyway.
   */
  private capOf(client: string | undefined): number {
    return client?.startsWith('key:') ? (this.settings.maxInFlightPerKey ?? 0) : 0;
  }

  /** A request let through the front door has its body (or ended): it no longer counts as arriving. */
  private arrived(req: IncomingMessage): void {
    const client = this.arriving.get(req);
    if (client === undefined) return;
    this.arriving.delete(req);
    const left = (this.arrivingOf.get(client) ?? 1) - 1;
    if (left > 0) this.arrivingOf.set(client, left);
    else this.arrivingOf.delete(client);
  }

  private rawRefuse(res: ServerResponse, status: number, retryAfterS: number, code: string, message: string): true {
    const key = `${status} ${retryAfterS} ${message}`;
    let refusal = this.refusals.get(key);
    if (!refusal) {
      refusal = rawRefusal(status, code, message, retryAfterS);
      this.refusals.set(key, refusal);
    }
    this.metrics.admissionRefused.inc();
    const answer = refusal;
    const delay = this.settings.refusalDelayMs ?? 0;
    if (delay > 0) {
      setTimeout(() => {
        if (res.destroyed) return;
        res.writeHead(answer.status, answer.headers);
        res.end(answer.body);
      }, delay);
      return true;
    }
    res.writeHead(refusal.status, refusal.headers);
    res.end(refusal.body);
    return true;
  }

  /**
   * For POST /assign-task, after authentication and once the body is read: takes the
   * submission's in-flight slot (of the process, and of its client), so that slow uploads hold
   * none; the backlog is checked again with the client known.
   */
  middleware(): RequestHandler {
    return (req, res, next) => {
      this.arrived(req);
      const client = clientOf(req);
      const retryAfterS = this.refusal(client);
      if (retryAfterS !== undefined) {
        return this.refuse(res, 503, 'overloaded', retryAfterS, 'more work is waiting than the workers finish in ADMISSION_MAX_WAIT_MS', {
          backlog: this.backlog,
          limit: this.limit(),
        });
      }
      const { maxInFlight } = this.settings;
      const perKey = this.capOf(client);
      const held = this.inFlightOf.get(client) ?? 0;
      if (perKey > 0 && held >= perKey) {
        return this.refuse(res, 429, 'too_many_in_flight', 1, KEY_BUSY, { in_flight: held, max_in_flight_per_key: perKey });
      }
      if (maxInFlight > 0 && this.inFlight >= maxInFlight) {
        return this.refuse(res, 503, 'overloaded', 1, 'this API process is handling ADMISSION_MAX_IN_FLIGHT submissions already', {
          in_flight: this.inFlight,
          max_in_flight: maxInFlight,
        });
      }
      if (this.behindOthers(client)) {
        req.behindOthers = true;
        this.metrics.admissionBehind.inc();
      }
      this.inFlight += 1;
      this.inFlightOf.set(client, held + 1);
      // 'close' follows every response, answered or cut off.
      res.once('close', () => {
        this.inFlight -= 1;
        const left = (this.inFlightOf.get(client) ?? 1) - 1;
        if (left > 0) this.inFlightOf.set(client, left);
        else this.inFlightOf.delete(client);
      });
      next();
    };
  }

  private refuse(res: Response, status: number, code: string, retryAfterS: number, why: string, details: Record<string, number>): void {
    this.metrics.admissionRefused.inc();
    res.setHeader('retry-after', String(retryAfterS));
    res.status(status).json(errorBody(code, `${why}; nothing was created, retry after the Retry-After seconds`, details));
  }
}
