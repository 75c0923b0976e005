import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { uuidv7 } from '../../src/lib/uuid7.js';
import { KeyQuotas, newClaimant } from '../../src/queue/key-quotas.js';
import { Shards } from '../../src/queue/shards.js';
import { createHarness, type Harness, poll } from '../helpers/harness.js';

/**
 * Quotas per API key (QUOTA_MAX_BACKLOG_PER_KEY, QUOTA_MAX_BYTES_PER_KEY) and the front door:
 * a key's slow uploads hold no submission slot, a key over its share does not shut the others
 * out, and what is refused before the key is checked carries no figures.
 */

const KEY_A = 'client@alice:quota-test-key-alice-0123456789';
const KEY_B = 'client@bob:quota-test-key-bob-0123456789';
const KEY_C = 'client@carol:quota-test-key-carol-0123456789';
const bearer = (entry: string) => ({ authorization: `Bearer ${entry.slice(entry.indexOf(':') + 1)}` });
/** A second view of the harness's quota counts (maxTasks 3, as its API is set), as another process holds them. */
const quotasOf = (h: Harness) => new KeyQuotas(h.redis, Shards.of(h.config), { maxTasks: 3, maxBytes: 0 }, h.logger);

async function storedWith(h: Harness, marker: string): Promise<number> {
  const { rows } = await h.db.pool.query<{ n: string }>(`SELECT count(*) AS n FROM tasks WHERE params ? $1`, [marker]);
  return Number(rows[0]!.n);
}

describe('quotas per API key', () => {
  let h: Harness;
  beforeAll(async () => {
    // No worker at first: nothing ends, so what a key submits stays unfinished.
    h = await createHarness({
      worker: false,
      env: { API_KEYS: `${KEY_A},${KEY_B},${KEY_C}`, QUOTA_MAX_BACKLOG_PER_KEY: '3', QUOTA_MAX_BYTES_PER_KEY: '3000', ADMISSION_MAX_WAIT_MS: '0' },
    });
  });
  afterAll(async () => {
    await h.close();
  });

  it('answers 429 quota_exceeded with Retry-After naming the limit, stores nothing, leaves other keys alone, and admits again once tasks end', async () => {
    const accepted: string[] = [];
    // A delayed task counts like any other.
    for (const body of [{ n: 1 }, { n: 2 }, { n: 3 }]) {
      const response = await h.request('POST', '/assign-task', { task_type: 'echo', params: body, delay_ms: body.n === 1 ? 600_000 : 0 }, bearer(KEY_A));
      expect(response.status).toBe(202);
      accepted.push(response.body.task_id);
    }
    const refused = await h.request('POST', '/assign-task', { task_type: 'echo', params: { over_backlog: true } }, bearer(KEY_A));
    expect(refused.status).toBe(429);
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(refused.body.error).toMatchObject({ code: 'quota_exceeded', details: { limit: 'QUOTA_MAX_BACKLOG_PER_KEY', max: 3, held: 3 } });
    expect(refused.body.error.message).toContain('QUOTA_MAX_BACKLOG_PER_KEY');
    expect(await storedWith(h, 'over_backlog')).toBe(0);
    // The same through /workflows/:name/execute.
    const executed = await h.request('POST', '/workflows/diamond/execute', { parameters: {} }, bearer(KEY_A));
    expect(executed.status).toBe(429);

    // Another key is not affected.
    const other = await h.request('POST', '/assign-task', { task_type: 'echo', params: { small: 1 } }, bearer(KEY_B));
    expect(other.status).toBe(202);

    // Bytes: params of 2,000 bytes fit once in 3,000, not twice.
    const big = 'x'.repeat(2_000);
    expect((await h.request('POST', '/assign-task', { task_type: 'echo', params: { big } }, bearer(KEY_C))).status).toBe(202);
    const tooBig = await h.request('POST', '/assign-task', { task_type: 'echo', params: { big, over_bytes: true } }, bearer(KEY_C));
    expect(tooBig.status).toBe(429);
    expect(tooBig.body.error).toMatchObject({ code: 'quota_exceeded', details: { limit: 'QUOTA_MAX_BYTES_PER_KEY', max: 3000 } });
    expect(await storedWith(h, 'over_bytes')).toBe(0);

    // An idempotent replay is no new task: it is answered, and counts nothing more.
    const replayKey = { task_type: 'echo', params: { replay: 1 }, idempotency_key: 'quota-replay' };
    expect((await h.request('POST', '/assign-task', replayKey, bearer(KEY_B))).status).toBe(202);
    expect((await h.request('POST', '/assign-task', replayKey, bearer(KEY_B))).status).toBe(200);
    expect((await h.request('POST', '/assign-task', { task_type: 'echo', params: { third: 1 } }, bearer(KEY_B))).status).toBe(202);

    // Tasks end (a worker runs them, the delayed one is cancelled): the key is admitted again.
    expect((await h.request('POST', `/tasks/${accepted[0]}/cancel`, undefined, bearer(KEY_A))).status).toBe(200);
    await h.startWorker();
    for (const id of accepted.slice(1)) {
      const ended = await poll(
        async () => {
          const { body } = await h.request('GET', `/result/${id}?wait=5`, undefined, bearer(KEY_A));
          return body.status === 'completed' ? body : undefined;
        },
        { label: `task ${id} completed`, timeoutMs: 20_000 },
      );
      expect(ended.status).toBe('completed');
    }
    await poll(async () => (await h.request('POST', '/assign-task', { task_type: 'echo', params: { again: true } }, bearer(KEY_A))).status === 202, {
      label: 'key A admitted once its tasks ended',
      timeoutMs: 15_000,
    });
  });
});

describe('a reservation answered beside the insert', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness({ worker: false, env: { API_KEYS: `${KEY_A},${KEY_B}`, QUOTA_MAX_BACKLOG_PER_KEY: '3', ADMISSION_MAX_WAIT_MS: '0' } });
  });
  afterAll(async () => {
    await h.close();
  });

  it('a key that another API process filled is refused by a process that had not heard of it: the task stored meanwhile is removed, no job is added, nothing more is counted', async () => {
    // Another API process: it counts three tasks of alice's in every shard, so whichever shard
    // the next task lands in is full. This process has no reply about alice yet, so it stores
    // her next task while its reservation is on its way.
    const shards = Shards.of(h.config);
    const other = new KeyQuotas(h.redis, shards, { maxTasks: 3, maxBytes: 0 }, h.logger);
    const theirs: string[] = [];
    for (let made = 0; new Set(theirs.map((id) => shards.indexOf(id))).size < shards.count || made < 3 * shards.count; made += 1) {
      const id = uuidv7();
      if (theirs.filter((mine) => shards.indexOf(mine) === shards.indexOf(id)).length < Math.ceil(3 / shards.count)) theirs.push(id);
    }
    for (const id of theirs) expect(await other.reserve('key:alice', id, 10, 0, 1, newClaimant())).toBeUndefined();
    // That process knows alice is at her limit (its next reservation for her is waited for
    // before her task is stored); of bob it knows nothing, which counts as far from it.
    expect(theirs.every((id) => other.isNear('key:alice', id))).toBe(true);
    expect(other.isNear('key:bob', theirs[0]!)).toBe(false);
    const jobsBefore = await h.redis.keys(`${h.config.QUEUE_PREFIX}*`);

    const refused = await h.request('POST', '/assign-task', { task_type: 'echo', params: { beside_insert: true } }, bearer(KEY_A));
    expect(refused.status).toBe(429);
    expect(refused.body.error).toMatchObject({ code: 'quota_exceeded', details: { limit: 'QUOTA_MAX_BACKLOG_PER_KEY', max: 3 } });
    expect(await storedWith(h, 'beside_insert')).toBe(0);
    // Its steps and history went with it, and no job or queue key was made for it.
    const { rows } = await h.db.pool.query<{ n: string }>(`SELECT (SELECT count(*) FROM steps) + (SELECT count(*) FROM task_events) AS n`);
    expect(Number(rows[0]!.n)).toBe(0);
    expect((await h.redis.keys(`${h.config.QUEUE_PREFIX}*`)).filter((key) => !jobsBefore.includes(key) && !key.includes(':quota:'))).toEqual([]);
    expect((await other.counts()).get('key:alice')).toBe(theirs.length);

    // Another key is admitted as before, and alice is once the other process's tasks end.
    expect((await h.request('POST', '/assign-task', { task_type: 'echo', params: { bob: 1 } }, bearer(KEY_B))).status).toBe(202);
    for (const id of theirs) other.release(id, 1);
    await other.settled();
    const again = await h.request('POST', '/assign-task', { task_type: 'echo', params: { after_release: true } }, bearer(KEY_A));
    expect(again.status).toBe(202);
    expect(await storedWith(h, 'after_release')).toBe(1);
    expect((await other.counts()).get('key:alice')).toBe(1);
    // Far from the limit again by that process's next answer for her: 2 of 3 held, under 90 %
    // (one shard: this file does not run against the cluster).
    expect(shards.count).toBe(1);
    expect(await other.reserve('key:alice', theirs[0]!, 10, 0, 1, newClaimant())).toBeUndefined();
    expect(other.isNear('key:alice', theirs[0]!)).toBe(false);
  });
});

describe("a retry's count", () => {
  let h: Harness;
  beforeAll(async () => {
    // No worker: a task resumed stays queued, counted, until it is cancelled again.
    h = await createHarness({ worker: false, env: { API_KEYS: `${KEY_A},${KEY_B}`, QUOTA_MAX_BACKLOG_PER_KEY: '3', ADMISSION_MAX_WAIT_MS: '0' } });
  });
  afterAll(async () => {
    await h.close();
  });
  // Releases go out in the background: the count is awaited, not read once.
  const holds = async (client: string, count: number) => {
    const quotas = quotasOf(h);
    await poll(async () => ((await quotas.counts()).get(client) ?? 0) === count, { label: `${client} to hold ${count}` });
  };
  /** A task of alice's, cancelled and no longer counted: ready to be retried. */
  const cancelledTask = async (params: Record<string, unknown>) => {
    const submitted = await h.request('POST', '/assign-task', { task_type: 'echo', params }, bearer(KEY_A));
    const id = submitted.body.task_id as string;
    expect((await h.request('POST', `/tasks/${id}/cancel`, undefined, bearer(KEY_A))).status).toBe(200);
    await holds('key:alice', 0);
    return id;
  };
  /** The API's runs, whose resume a test replaces (and puts back). */
  const apiRuns = () => (h.api!.tasks as unknown as { deps: { runs: { resume: (...args: unknown[]) => Promise<unknown> } } }).deps.runs;
  const lost = () => Object.assign(new Error('Connection terminated unexpectedly'), { code: 'ECONNRESET' });

  it('two retries of one task at once: the one that resumes it holds the count, and the one refused (409) does not give it back', async () => {
    const submitted = await h.request('POST', '/assign-task', { task_type: 'echo', params: { twice_retried: true } }, bearer(KEY_A));
    expect(submitted.status).toBe(202);
    const id = submitted.body.task_id as string;
    await holds('key:alice', 1);
    expect((await h.request('POST', `/tasks/${id}/cancel`, undefined, bearer(KEY_A))).status).toBe(200);
    await holds('key:alice', 0);

    // Both are admitted (each reserves the run they would make), one resumes the task, the other finds it queued.
    const answers = await Promise.all([1, 2].map(() => h.request('POST', `/tasks/${id}/retry`, undefined, bearer(KEY_A))));
    expect(answers.map((answer) => answer.status).sort()).toEqual([202, 409]);
    expect(answers.find((answer) => answer.status === 409)!.body.error.code).toBe('task_not_retryable');
    await holds('key:alice', 1);

    // Its run's end gives the count back.
    expect((await h.request('POST', `/tasks/${id}/cancel`, undefined, bearer(KEY_A))).status).toBe(200);
    await holds('key:alice', 0);
  });

  it('a retry whose commit went through but whose answer was lost (503) keeps the count for the run it started; one that changed nothing gives it back', async () => {
    const id = await cancelledTask({ answer_lost: true });
    // The connection is cut after the commit (or before it): the service sees a lost connection either way.
    const runs = apiRuns();
    const resume = runs.resume;
    try {
      runs.resume = async function (this: unknown, ...args: unknown[]) {
        await resume.apply(this, args);
        throw lost();
      };
      const committed = await h.request('POST', `/tasks/${id}/retry`, undefined, bearer(KEY_A));
      expect(committed.status).toBe(503);
      expect((await h.request('GET', `/result/${id}`, undefined, bearer(KEY_A))).body.status).toBe('queued');
      await holds('key:alice', 1);
      expect((await h.request('POST', `/tasks/${id}/cancel`, undefined, bearer(KEY_A))).status).toBe(200);
      await holds('key:alice', 0);

      runs.resume = async () => {
        throw lost();
      };
      const rolledBack = await h.request('POST', `/tasks/${id}/retry`, undefined, bearer(KEY_A));
      expect(rolledBack.status).toBe(503);
      expect((await h.request('GET', `/result/${id}`, undefined, bearer(KEY_A))).body.status).toBe('cancelled');
    } finally {
      runs.resume = resume;
    }
    // Nothing was started that time: its reservation is given back.
    await holds('key:alice', 0);
  });

  /**
   * Sends a retry of `id` and holds it before its commit (until `open`); the retries after it go
   * to `later` (the real resume when not given). `restore` opens it and puts the resume back.
   */
  const heldRetry = async (id: string, later?: () => Promise<unknown>) => {
    const runs = apiRuns();
    const resume = runs.resume;
    let open!: () => void;
    const held = new Promise<void>((resolve) => (open = resolve));
    let calls = 0;
    runs.resume = async function (this: unknown, ...args: unknown[]) {
      calls += 1;
      if (calls === 1) await held;
      else if (later) return later();
      return resume.apply(this, args);
    };
    const answer = h.request('POST', `/tasks/${id}/retry`, undefined, bearer(KEY_A));
    await poll(async () => calls === 1, { label: 'the first retry to reach its commit' });
    const restore = () => {
      open();
      runs.resume = resume;
    };
    return { answer, open, restore };
  };

  it('a retry that fails while another retry of the same run is committing leaves the task counted by the other', async () => {
    const id = await cancelledTask({ raced: true });
    // The first retry is held before its commit; the second fails before its own (a connection
    // cut), so its read finds the task not yet resumed and it gives its claim back.
    const committing = await heldRetry(id, async () => {
      throw lost();
    });
    try {
      const failed = await h.request('POST', `/tasks/${id}/retry`, undefined, bearer(KEY_A));
      expect(failed.status).toBe(503);
      // The failed retry's claim is taken back (its undo sent by the API's quotas) ...
      const gate = (h.api!.tasks as unknown as { deps: { gate: { deps: { quotas: KeyQuotas } } } }).deps.gate;
      await gate.deps.quotas.settled();
      // ... and the task still counts by the other retry's claim: that retry is committing its run.
      expect((await quotasOf(h).counts()).get('key:alice')).toBe(1);
      expect((await h.redis.hget(`${Shards.of(h.config).prefixOf(id)}:quota:claims-of`, id))?.split(' ')).toHaveLength(1);
      committing.open();
      expect((await committing.answer).status).toBe(202);
    } finally {
      committing.restore();
    }
    await holds('key:alice', 1);
    expect((await h.request('POST', `/tasks/${id}/cancel`, undefined, bearer(KEY_A))).status).toBe(200);
    await holds('key:alice', 0);
  });

  it('a retry that reaches its commit after another retry made the run, and that run already ended, makes nothing (409): no run goes uncounted', async () => {
    const id = await cancelledTask({ overtaken: true });
    // The first retry read the task (run 1, cancelled) and is held before its commit ...
    const late = await heldRetry(id);
    try {
      // ... while a second makes run 2, which is cancelled: its end gives the count back.
      expect((await h.request('POST', `/tasks/${id}/retry`, undefined, bearer(KEY_A))).status).toBe(202);
      expect((await h.request('POST', `/tasks/${id}/cancel`, undefined, bearer(KEY_A))).status).toBe(200);
      await holds('key:alice', 0);
      late.open();
      const answer = await late.answer;
      expect(answer.status).toBe(409);
      expect(answer.body.error).toMatchObject({ code: 'task_not_retryable', details: { status: 'cancelled', run: 2 } });
    } finally {
      late.restore();
    }
    // Nothing more was made, and nothing is counted.
    const task = await h.request('GET', `/result/${id}`, undefined, bearer(KEY_A));
    expect(task.body).toMatchObject({ status: 'cancelled' });
    await holds('key:alice', 0);
  });

  /** One task of bob's in a second view of the counts: reserve a run of it (as a claimant), end a run, undo a claim, and what bob holds once sent. */
  const bobsTask = () => {
    const quotas = quotasOf(h);
    const id = uuidv7();
    const key = (hash: string) => `${Shards.of(h.config).prefixOf(id)}:quota:${hash}`;
    return {
      id,
      key,
      reserve: async (run: number, claimant = 'first') => expect(await quotas.reserve('key:bob', id, 10, 0, run, claimant)).toBeUndefined(),
      end: (run: number) => quotas.release(id, run),
      undo: (run: number, claimant = 'first') => quotas.undo(id, run, claimant),
      held: async () => {
        await quotas.settled();
        return (await quotas.counts()).get('key:bob') ?? 0;
      },
    };
  };

  it("each claimant of a run takes back its own reservation; the run's end drops the task whatever claims are left", async () => {
    const task = bobsTask();
    await task.reserve(2, 'a');
    await task.reserve(2, 'b');
    expect(await task.held()).toBe(1);
    task.undo(2, 'a');
    expect(await task.held()).toBe(1);
    // Taken back once is taken back: a second undo of a's takes nothing of b's.
    task.undo(2, 'a');
    expect(await task.held()).toBe(1);
    task.undo(2, 'b');
    expect(await task.held()).toBe(0);
    expect(await h.redis.hget(task.key('claims-of'), task.id)).toBeNull();

    // Two claims, one undo that arrives with the end in one flush: the end drops it.
    await task.reserve(3, 'a');
    await task.reserve(3, 'b');
    task.undo(3, 'a');
    task.end(3);
    expect(await task.held()).toBe(0);
    // An undo of an earlier run leaves the later run's count alone.
    await task.reserve(4, 'a');
    task.undo(3, 'a');
    expect(await task.held()).toBe(1);
    task.end(4);
    expect(await task.held()).toBe(0);
  });

  it("a reservation that ran twice (resent after a reconnect) is one claim; an undo whose reservation never ran takes back nobody's", async () => {
    const task = bobsTask();
    await task.reserve(1, 'resent');
    await task.reserve(1, 'resent');
    await task.reserve(1, 'other');
    expect(await h.redis.hget(task.key('claims-of'), task.id)).toBe('resent other');
    task.undo(1, 'never-ran');
    expect(await task.held()).toBe(1);
    task.undo(1, 'resent');
    expect(await task.held()).toBe(1);
    task.undo(1, 'other');
    expect(await task.held()).toBe(0);
  });

  it("a run's release that arrives after the next run reserved the task leaves the count to the new run", async () => {
    const task = bobsTask();
    await task.reserve(1);
    // Run 1 ended and its release is late; the retry's reservation for run 2 finds the task counted.
    await task.reserve(2);
    expect(await task.held()).toBe(1);
    task.end(1);
    expect(await task.held()).toBe(1);
    // Run 2's end (or a retry of it, released again) drops it.
    task.end(2);
    task.end(2);
    expect(await task.held()).toBe(0);
    expect(await h.redis.hget(task.key('run-of'), task.id)).toBeNull();
  });
});

describe('the front door', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness({
      worker: false,
      env: {
        API_KEYS: `${KEY_A},${KEY_B}`,
        ADMISSION_MAX_IN_FLIGHT: '4',
        ADMISSION_MAX_IN_FLIGHT_PER_KEY: '2',
        ADMISSION_MIN_BACKLOG: '5',
        ADMISSION_MAX_WAIT_MS: '2000',
        ADMISSION_SAMPLE_MS: '20',
        HTTP_REQUEST_TIMEOUT_MS: '2000',
        HTTP_HEADERS_TIMEOUT_MS: '2000',
      },
    });
  });
  afterAll(async () => {
    await h.close();
  });

  it('slow uploads from one key hold only that key back: another key still gets 202; the request timeout closes them', async () => {
    const { port } = new URL(h.url);
    const body = JSON.stringify({ task_type: 'echo', params: { slow: true } });
    const sockets: Socket[] = [];
    const answers: string[] = [];
    // Twice the process's in-flight limit, each sending its headers and part of its body, then nothing.
    for (let i = 0; i < 8; i += 1) {
      const socket = connect(Number(port), '127.0.0.1');
      await new Promise((resolve) => socket.once('connect', resolve));
      socket.on('data', (chunk) => (answers[i] = (answers[i] ?? '') + chunk.toString('utf8')));
      socket.on('error', () => undefined);
      socket.write(
        `POST /assign-task HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: ${bearer(KEY_A).authorization}\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body.slice(0, 10)}`,
      );
      sockets.push(socket);
    }
    try {
      const other = await h.request('POST', '/assign-task', { task_type: 'echo', params: { polite: true } }, bearer(KEY_B));
      expect(other.status).toBe(202);
      // Key A's own: its uploads in progress count against its own in-flight cap, only.
      const same = await h.request('POST', '/assign-task', { task_type: 'echo', params: { whole: true } }, bearer(KEY_A));
      expect(same.status).toBe(429);
      expect(same.body.error.code).toBe('too_many_in_flight');
      // The slow ones were still open meanwhile, and nothing was stored for them.
      expect(sockets.every((socket) => !socket.destroyed)).toBe(true);
      expect(await storedWith(h, 'slow')).toBe(0);
      // HTTP_REQUEST_TIMEOUT_MS ends them: 408, connection closed.
      await poll(() => sockets.every((socket) => socket.readableEnded || socket.destroyed), { label: 'slow uploads timed out', timeoutMs: 15_000 });
      // Those past key A's in-flight cap were refused at the door (429); the others timed out (408).
      const statuses = answers.map((answer) => /^HTTP\/1\.1 (\d+)/.exec(answer ?? '')?.[1]).sort();
      expect(statuses).toEqual(['408', '408', '429', '429', '429', '429', '429', '429']);
    } finally {
      for (const socket of sockets) socket.destroy();
    }
    // The server hears the last of them close: key A's in-flight count is free again (the next test fills A's backlog).
    await poll(
      async () => {
        const response = await h.request('POST', '/assign-task', { task_type: 'echo', params: { after: true } }, bearer(KEY_A));
        return response.status !== 429 || response.body.error.code !== 'too_many_in_flight';
      },
      { label: "key A's in-flight slots freed" },
    );
  });

  it('past the backlog limit, the key that fills it is refused and a key holding little is still admitted; refusals before the key is known carry no figures', async () => {
    // Key A fills the backlog (no worker drains it) until the front door refuses it.
    let refusal: { status: number; body: any; headers: Headers } | undefined;
    let n = 0;
    await poll(
      async () => {
        n += 1;
        const response = await h.request('POST', '/assign-task', { task_type: 'echo', params: { fill: n } }, bearer(KEY_A));
        if (response.status === 202) return undefined;
        refusal = response;
        return true;
      },
      { label: 'key A refused', timeoutMs: 30_000 },
    );
    expect(refusal!.status, JSON.stringify(refusal!.body)).toBe(503);
    expect(refusal!.body.error.code).toBe('overloaded');
    expect(refusal!.body.error.details).toBeUndefined();
    expect(Number(refusal!.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    // Key B holds less than an equal share: admitted.
    expect((await h.request('POST', '/assign-task', { task_type: 'echo', params: { fair: true } }, bearer(KEY_B))).status).toBe(202);
    // No key, or a wrong one: refused before authentication, with no figures.
    for (const headers of [{}, { authorization: 'Bearer not-a-key-of-this-service-000' }] as Record<string, string>[]) {
      const anonymous = await h.request('POST', '/assign-task', { task_type: 'echo', params: { anonymous: true } }, headers);
      expect(anonymous.status).toBe(503);
      expect(anonymous.body).toEqual({ error: { code: 'overloaded', message: expect.any(String) } });
    }
    // Other endpoints are not refused.
    expect((await h.request('GET', '/tools', undefined, bearer(KEY_A))).status).toBe(200);
  });
});
