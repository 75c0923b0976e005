import { createHash, timingSafeEqual } from 'node:crypto';
import client from 'prom-client';

/**
 * `read` at most once per `ms`: the scrapes of a burst share one reading, even while it is in
 * flight. A reading that fails is not kept, so the next scrape tries again.
 */
function throttled<T>(read: () => Promise<T>, ms: number): () => Promise<T> {
  let last: { at: number; value: Promise<T> } | undefined;
  return () => {
    const now = Date.now();
    if (!last || now - last.at >= ms) {
      const value = read();
      const reading = { at: now, value };
      last = reading;
      value.catch(() => {
        if (last === reading) last = undefined;
      });
    }
    return last.value;
  };
}

/** Whether a scrape's Authorization header carries METRICS_TOKEN (always, when no token is set). */
export function scrapeAuthorized(token: string | undefined, authorization: string | undefined): boolean {
  if (token === undefined) return true;
  const presented = /^bearer\s+(.+)$/i.exec(authorization ?? '')?.[1]?.trim();
  if (presented === undefined) return false;
  const digest = (value: string) => createHash('sha256').update(value).digest();
  return timingSafeEqual(digest(presented), digest(token));
}

const SECONDS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];

/**
 * Prometheus metrics of one process. The API and each worker process have their own (a
 * scraper reads every process: the API at /metrics, workers at WORKER_METRICS_PORT); `npm start`
 * runs both in one process and shares one instance.
 */
export class Metrics {
  readonly registry = new client.Registry();

  readonly circuitTransitions = new client.Counter({
    name: 'orchestrator_circuit_transitions_total',
    help: "Transitions of services' circuit breakers this process made, by service, from and to (closed, open, half_open).",
    labelNames: ['service', 'from', 'to'] as const,
    registers: [this.registry],
  });
  readonly circuitState = new client.Gauge({
    name: 'orchestrator_circuit_open',
    help: "1 while a service's circuit is open or half-open as this process last saw it, else 0.",
    labelNames: ['service', 'state'] as const,
    registers: [this.registry],
  });
  readonly serviceUp = new client.Gauge({
    name: 'orchestrator_service_up',
    help: "1 when a registered service's last health check (health_path) answered 2xx, 0 when it did not.",
    labelNames: ['service'] as const,
    registers: [this.registry],
  });
  readonly serviceCallsHeld = new client.Counter({
    name: 'orchestrator_service_calls_held_total',
    help: "Deliveries of steps held back because their service's circuit was open (the step waits, reason circuit_open).",
    labelNames: ['service'] as const,
    registers: [this.registry],
  });
  readonly httpRequests = new client.Counter({
    name: 'orchestrator_http_requests_total',
    help: 'HTTP requests answered, by route and status.',
    labelNames: ['method', 'route', 'status'] as const,
    registers: [this.registry],
  });
  readonly httpHotRequests = new client.Counter({
    name: 'orchestrator_http_hot_requests_total',
    help: "Requests of the seed's loop (POST /assign-task, GET /result/{task_id}) served without Express's router (HTTP_HOT_ROUTES); the others of those routes went through Express.",
    labelNames: ['route'] as const,
    registers: [this.registry],
  });
  readonly httpDuration = new client.Histogram({
    name: 'orchestrator_http_request_duration_seconds',
    help: 'Time to answer an HTTP request (a long-poll or event stream counts its whole duration).',
    labelNames: ['method', 'route'] as const,
    buckets: SECONDS,
    registers: [this.registry],
  });
  readonly tasksSubmitted = new client.Counter({
    name: 'orchestrator_tasks_submitted_total',
    help: 'Tasks accepted by the API, by task type.',
    labelNames: ['task_type'] as const,
    registers: [this.registry],
  });
  readonly tasksFinished = new client.Counter({
    name: 'orchestrator_tasks_finished_total',
    help: 'Tasks that ended, by task type and final status.',
    labelNames: ['task_type', 'status'] as const,
    registers: [this.registry],
  });
  readonly taskDuration = new client.Histogram({
    name: 'orchestrator_task_duration_seconds',
    help: 'From acceptance to the end of a task, by task type and final status.',
    labelNames: ['task_type', 'status'] as const,
    buckets: SECONDS,
    registers: [this.registry],
  });
  readonly policyDuration = new client.Histogram({
    name: 'orchestrator_policy_duration_seconds',
    help: 'Calls to the policy service (POLICY_URL), by outcome: allow, deny, or error (a timeout, a failure, an answer that is not a decision). Cached decisions are not calls.',
    labelNames: ['outcome'] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  readonly policyCacheHits = new client.Counter({
    name: 'orchestrator_policy_cache_hits_total',
    help: 'Submissions decided by a cached policy decision (POLICY_CACHE_TTL_MS) instead of a call.',
    registers: [this.registry],
  });
  /** A task ended: counted, and its time from acceptance observed. */
  taskEnded(taskType: string, status: string, createdAt: Date): void {
    this.tasksFinished.inc({ task_type: taskType, status });
    this.taskDuration.observe({ task_type: taskType, status }, (Date.now() - createdAt.getTime()) / 1000);
  }

  readonly stepsFinished = new client.Counter({
    name: 'orchestrator_steps_finished_total',
    help: 'Steps that ended, by tool and status (completed, failed, cancelled).',
    labelNames: ['tool', 'status'] as const,
    registers: [this.registry],
  });
  readonly stepDuration = new client.Histogram({
    name: 'orchestrator_step_duration_seconds',
    help: "Time a step's last attempt ran, by tool and status.",
    labelNames: ['tool', 'status'] as const,
    buckets: SECONDS,
    registers: [this.registry],
  });
  readonly stepRetries = new client.Counter({
    name: 'orchestrator_step_retries_total',
    help: 'Failed attempts that will be retried, by tool.',
    labelNames: ['tool'] as const,
    registers: [this.registry],
  });
  readonly stepsPostponed = new client.Counter({
    name: 'orchestrator_steps_postponed_total',
    help: 'Step jobs put back for later because PostgreSQL or Redis could not be reached (not counted as attempts), by tool.',
    labelNames: ['tool'] as const,
    registers: [this.registry],
  });
  readonly deadLetters = new client.Counter({
    name: 'orchestrator_dead_letters_total',
    help: 'Steps that exhausted their retries (dead letters written), by tool.',
    labelNames: ['tool'] as const,
    registers: [this.registry],
  });
  readonly callbackDeliveries = new client.Counter({
    name: 'orchestrator_callback_deliveries_total',
    help: 'Completion callback delivery attempts, by outcome (delivered, failed).',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });

  readonly admissionRefused = new client.Counter({
    name: 'orchestrator_admission_refused_total',
    help: 'POST /assign-task refused with 503 overloaded by admission control.',
    registers: [this.registry],
  });
  readonly admissionBehind = new client.Counter({
    name: 'orchestrator_admission_behind_total',
    help: "Submissions put behind other clients' work (BullMQ's lowest priority): their client held more than an equal share of the unfinished tasks while work waited.",
    registers: [this.registry],
  });
  readonly admissionBacklog = new client.Gauge({
    name: 'orchestrator_admission_backlog',
    help: 'Step jobs waiting in the tool queues, as admission control last read them.',
    registers: [this.registry],
  });
  readonly admissionLimit = new client.Gauge({
    name: 'orchestrator_admission_limit',
    help: 'The backlog admission control admits now: what the workers drain in ADMISSION_MAX_WAIT_MS.',
    registers: [this.registry],
  });

  constructor(options: { defaultMetrics?: boolean } = {}) {
    if (options.defaultMetrics ?? true) client.collectDefaultMetrics({ register: this.registry, prefix: 'orchestrator_' });
  }

  /**
   * Gauges read when scraped, from where the truth is: queue depth from BullMQ, active tasks and
   * open dead letters from PostgreSQL. Registered by the API only (one reading per deployment).
   * Each source is read at most once per `cacheMs` (METRICS_CACHE_MS), so scrapers in a burst
   * (several Prometheus replicas, a dashboard) cost one round of queries.
   */
  addGauges(
    sources: {
      queueDepth: () => Promise<{ queue: string; state: string; count: number }[]>;
      activeTasks: () => Promise<{ status: string; count: number }[]>;
      openDeadLetters: () => Promise<number>;
    },
    options: { cacheMs: number },
  ): void {
    const read = {
      queueDepth: throttled(sources.queueDepth, options.cacheMs),
      activeTasks: throttled(sources.activeTasks, options.cacheMs),
      openDeadLetters: throttled(sources.openDeadLetters, options.cacheMs),
    };
    new client.Gauge({
      name: 'orchestrator_queue_jobs',
      help: 'Jobs in each BullMQ queue, by state.',
      labelNames: ['queue', 'state'] as const,
      registers: [this.registry],
      async collect() {
        this.reset();
        for (const row of await read.queueDepth()) this.set({ queue: row.queue, state: row.state }, row.count);
      },
    });
    new client.Gauge({
      name: 'orchestrator_active_tasks',
      help: 'Tasks queued or running now.',
      labelNames: ['status'] as const,
      registers: [this.registry],
      async collect() {
        this.reset();
        for (const status of ['queued', 'running']) this.set({ status }, 0);
        for (const row of await read.activeTasks()) this.set({ status: row.status }, row.count);
      },
    });
    new client.Gauge({
      name: 'orchestrator_dead_letters_open',
      help: 'Dead letters not replayed yet.',
      registers: [this.registry],
      async collect() {
        this.set(await read.openDeadLetters());
      },
    });
  }
}
