import type { RequestHandler, Response } from 'express';
import type { Logger } from '../lib/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { finishedStepsKey } from '../queue/event-log.js';
import type { RedisClient } from '../queue/redis.js';
import type { Shards } from '../queue/shards.js';
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
}

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

  constructor(
    private readonly redis: RedisClient,
    private readonly shards: Shards,
    /** The queues whose waiting jobs are the backlog (the tool queues), in every shard. */
    private readonly queueNames: () => string[],
    private readonly settings: AdmissionSettings,
    private readonly metrics: Metrics,
    private readonly logger: Logger,
  ) {}

  get enabled(): boolean {
    return this.settings.maxWaitMs > 0 || this.settings.maxInFlight > 0;
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

  /** Undefined to admit; else the seconds the client should wait. */
  refusal(): number | undefined {
    if (this.settings.maxWaitMs === 0) return undefined;
    const limit = this.limit();
    if (this.backlog <= limit) return undefined;
    const drainS = this.ratePerS > 0 ? (this.backlog - limit) / this.ratePerS : MAX_RETRY_AFTER_S;
    return Math.min(MAX_RETRY_AFTER_S, Math.max(1, Math.ceil(drainS)));
  }

  /** For POST /assign-task, after authentication and before the body is read. */
  middleware(): RequestHandler {
    return (_req, res, next) => {
      const retryAfterS = this.refusal();
      if (retryAfterS !== undefined) {
        return this.refuse(res, retryAfterS, 'more work is waiting than the workers finish in ADMISSION_MAX_WAIT_MS', {
          backlog: this.backlog,
          limit: this.limit(),
        });
      }
      const { maxInFlight } = this.settings;
      if (maxInFlight > 0) {
        if (this.inFlight >= maxInFlight) {
          return this.refuse(res, 1, 'this API process is handling ADMISSION_MAX_IN_FLIGHT submissions already', {
            in_flight: this.inFlight,
            max_in_flight: maxInFlight,
          });
        }
        this.inFlight += 1;
        // 'close' follows every response, answered or cut off.
        res.once('close', () => (this.inFlight -= 1));
      }
      next();
    };
  }

  private refuse(res: Response, retryAfterS: number, why: string, details: Record<string, number>): void {
    this.metrics.admissionRefused.inc();
    res.setHeader('retry-after', String(retryAfterS));
    res.status(503).json(errorBody('overloaded', `${why}; nothing was created, retry after the Retry-After seconds`, details));
  }
}
