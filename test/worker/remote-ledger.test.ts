import { describe, expect, it } from 'vitest';
import type { ApiCall } from '../../workers/sdk/remote-ledger.js';
import { REPORT_REQUESTS_IN_FLIGHT, remoteLedger } from '../../workers/sdk/remote-ledger.js';

/**
 * The SDK's step ledger (workers/sdk/remote-ledger.ts) on its own, against an API stand-in that
 * holds each request until the test answers it: how many report requests are on their way at
 * once, how the reports that queue meanwhile are grouped, and what a failed request fails. The
 * API side of the same requests runs against Redis and PostgreSQL in user-worker.test.ts.
 */

interface Held {
  body: { op?: string; reports?: { op: string; step_id: string }[]; step_id?: string };
  answer(value: unknown): void;
  fail(error: Error): void;
}

function heldApi() {
  const requests: Held[] = [];
  const waiters: (() => void)[] = [];
  const call: ApiCall = (_method, _path, body) =>
    new Promise((resolve, reject) => {
      requests.push({ body: body as Held['body'], answer: resolve, fail: reject });
      for (const wake of waiters.splice(0)) wake();
    });
  /** Resolves once `count` requests have arrived in all. */
  const arrived = async (count: number) => {
    while (requests.length < count) await new Promise<void>((resolve) => waiters.push(resolve));
  };
  return { call, requests, arrived };
}

const at = new Date('2026-11-25T09:00:00.000Z');
const ref = (stepId: string) => ({ taskId: '0193a0c2-7b1e-7c3a-9d4f-2a1b3c4d5e6f', run: 1, stepId, tool: 'shout', single: true });
const result = { attempt: 1, try: 1, worker: 'w', status: 'completed' as const, output: {}, startedAt: at, finishedAt: at };
const stepsOf = (held: Held) => (held.body.reports ? held.body.reports.map((report) => report.step_id) : [held.body.step_id]);
const okFor = (held: Held) => (held.body.reports ? { answers: held.body.reports.map(() => ({ ok: true })) } : { ok: true });

describe('the SDK’s step ledger', () => {
  it('has several report requests on their way at once; the reports that queue while all are out go together in the next', async () => {
    const api = heldApi();
    const ledger = remoteLedger(api.call, 'w-1', { inFlight: 2 });
    const first = ledger.finish(ref('a'), result);
    await api.arrived(1);
    // The first request is out: the next result does not wait for it.
    const second = ledger.finish(ref('b'), result);
    await api.arrived(2);
    expect(api.requests.map(stepsOf)).toEqual([['a'], ['b']]);
    // Both out: these queue, and leave together once a request comes back.
    const rest = [ledger.finish(ref('c'), result), ledger.finish(ref('d'), result)];
    await new Promise((resolve) => setImmediate(resolve));
    expect(api.requests).toHaveLength(2);
    api.requests[1]!.answer({ ok: false });
    expect(await second).toBe(false);
    await api.arrived(3);
    expect(stepsOf(api.requests[2]!)).toEqual(['c', 'd']);
    api.requests[2]!.answer({ answers: [{ ok: true }, { ok: false }] });
    expect(await Promise.all(rest)).toEqual([true, false]);
    api.requests[0]!.answer({ ok: true });
    expect(await first).toBe(true);
  });

  it(`has ${REPORT_REQUESTS_IN_FLIGHT} by default; a failed request fails its own reports only`, async () => {
    const api = heldApi();
    const ledger = remoteLedger(api.call, 'w-1');
    const results: Promise<boolean>[] = [];
    for (let index = 0; index < REPORT_REQUESTS_IN_FLIGHT; index += 1) {
      results.push(ledger.finish(ref(`s${index}`), result));
      await api.arrived(index + 1);
    }
    const queued = ledger.finish(ref('queued'), result);
    await new Promise((resolve) => setImmediate(resolve));
    expect(api.requests).toHaveLength(REPORT_REQUESTS_IN_FLIGHT);
    api.requests[0]!.fail(new Error('POST /workers/w-1/steps answered 503'));
    await expect(results[0]).rejects.toThrow(/503/);
    await api.arrived(REPORT_REQUESTS_IN_FLIGHT + 1);
    expect(stepsOf(api.requests.at(-1)!)).toEqual(['queued']);
    for (const held of api.requests.slice(1)) held.answer(okFor(held));
    expect(await Promise.all([...results.slice(1), queued])).toEqual(Array(REPORT_REQUESTS_IN_FLIGHT).fill(true));
  });

  it('sends notes one request at a time, in order, beside the results', async () => {
    const api = heldApi();
    const ledger = remoteLedger(api.call, 'w-1');
    const note = (percent: number) => ledger.note({ tool: 'shout', taskId: ref('p').taskId, run: 1, stepId: 'p', progress: { percent } });
    const first = note(10);
    await api.arrived(1);
    const second = note(20);
    // A result is not held back by the note on its way.
    const finished = ledger.finish(ref('r'), result);
    await api.arrived(2);
    expect(api.requests[1]!.body.op).toBe('result');
    api.requests[1]!.answer({ ok: true });
    expect(await finished).toBe(true);
    await new Promise((resolve) => setImmediate(resolve));
    // The second note waits for the first.
    expect(api.requests).toHaveLength(2);
    api.requests[0]!.answer({ ok: true });
    await first;
    await api.arrived(3);
    expect(api.requests[2]!.body).toMatchObject({ op: 'note', progress: { percent: 20 } });
    api.requests[2]!.answer({ ok: true });
    await second;
  });
});
