import { REPORTS_PER_REQUEST_MAX, type StepReport } from '../../src/fleet/protocol.js';
import { Batcher } from '../../src/lib/batcher.js';
import type { StepLedger, StepRef } from '../../src/tasks/step-ledger.js';

/** Calls the API: resolves with the answer's JSON, throws (with the API's message) on anything but 2xx. */
export type ApiCall = (method: string, path: string, body?: unknown) => Promise<unknown>;

function wire(ref: StepRef) {
  return {
    task_id: ref.taskId,
    run: ref.run,
    step_id: ref.stepId,
    ...(ref.item !== undefined ? { item: ref.item } : {}),
    tool: ref.tool,
    ...(ref.single ? { single: true } : {}),
    ...(ref.limited ? { limited: true } : {}),
  };
}

/**
 * Report requests one worker process has on their way at once. A step holds its BullMQ slot
 * until its result is acknowledged, so the time a report waits for the request before it is
 * slot time: with one request at a time, a step's result waited for the one ahead of it and
 * then for its own (W1U's steps held their slot about 1.5 round trips). The API group-commits
 * across requests anyway (src/tasks/runs/reports.ts), so several requests cost no extra
 * PostgreSQL transactions, only HTTP; measured in docs/performance.md ("This round: a user's worker").
 */
export const REPORT_REQUESTS_IN_FLIGHT = 4;

export interface RemoteLedgerOptions {
  /** @defaultValue REPORT_REQUESTS_IN_FLIGHT */
  inFlight?: number;
}

/**
 * The step ledger of a worker without a database: each claim, result and note is a request to
 * the API (`POST /workers/{worker_id}/steps`), which applies them with the built-in worker's own
 * rules (src/tasks/step-ledger.ts runsLedger). A request that fails throws, as PostgreSQL away
 * does in-process: the step processor parks the result in its job and the job comes back.
 * Reports are group-sent: up to `inFlight` requests at a time, and the reports that queue while
 * they are all on their way go together in the next (`{reports: [...]}`), as the built-in
 * worker's writes are group-committed; a report that finds a request free leaves at once (with
 * those added in the same turn of the event loop). What the step processor must see in order
 * (a claim's answer before the result, log lines before the result) it awaits before sending
 * the next, so requests overtaking each other reorder nothing that matters (the reports of one
 * request are applied side by side anyway). Notes (progress, a failed try) are nobody's wait and
 * one step's may follow each other closely: they go one request at a time, in order, so a later
 * progress is never overwritten by an earlier one.
 */
export function remoteLedger(call: ApiCall, workerId: string, options: RemoteLedgerOptions = {}): StepLedger {
  const path = `/workers/${encodeURIComponent(workerId)}/steps`;
  // Typed by the protocol's input (what the API parses): StepReport['op'] names the kinds.
  type Report = { op: StepReport['op'] } & Record<string, unknown>;
  const post = async (reports: Report[]): Promise<boolean[]> => {
    if (reports.length === 1) return [((await call('POST', path, reports[0])) as { ok: boolean }).ok];
    return ((await call('POST', path, { reports })) as { answers: { ok: boolean }[] }).answers.map((answer) => answer.ok);
  };
  const batcher = new Batcher<Report, boolean>(post, { maxSize: REPORTS_PER_REQUEST_MAX, maxInFlight: options.inFlight ?? REPORT_REQUESTS_IN_FLIGHT });
  const notes = new Batcher<Report, boolean>(post, { maxSize: REPORTS_PER_REQUEST_MAX });
  const send = (report: Report) => batcher.add(report);
  return {
    claim: (claim) =>
      send({
        op: 'claim',
        ...wire({ taskId: claim.taskId, run: claim.run, stepId: claim.stepId, ...(claim.item !== undefined ? { item: claim.item } : {}), tool: claim.tool }),
        attempt: claim.attempt,
        try: claim.try ?? 1,
        ...(claim.jobId !== undefined ? { job_id: claim.jobId } : {}),
        at: claim.at.toISOString(),
      }),
    finish: (ref, result) =>
      send({
        op: 'result',
        ...wire(ref),
        attempt: result.attempt,
        try: result.try,
        ...(result.jobId !== undefined ? { job_id: result.jobId } : {}),
        status: result.status,
        ...(result.output !== undefined ? { output: result.output } : {}),
        ...(result.error !== undefined ? { error: result.error } : {}),
        ...(result.input !== undefined ? { input: result.input } : {}),
        started_at: result.startedAt.toISOString(),
        finished_at: result.finishedAt.toISOString(),
      }),
    settle: async (ref) => {
      await send({ op: 'settle', ...wire(ref) });
    },
    logs: async (entry) => {
      await send({
        op: 'logs',
        ...wire({ taskId: entry.taskId, run: entry.run, stepId: entry.stepId, ...(entry.item !== undefined ? { item: entry.item } : {}), tool: entry.tool }),
        attempt: entry.attempt,
        ...(entry.try !== undefined ? { try: entry.try } : {}),
        lines: entry.lines,
        dropped: entry.dropped,
      });
    },
    note: async (note) => {
      await notes.add({
        op: 'note',
        ...wire({ taskId: note.taskId, run: note.run, stepId: note.stepId, ...(note.item !== undefined ? { item: note.item } : {}), tool: note.tool }),
        ...(note.attempt !== undefined ? { attempt: note.attempt } : {}),
        ...(note.try !== undefined ? { try: note.try } : {}),
        ...(note.jobId !== undefined ? { job_id: note.jobId } : {}),
        ...(note.error !== undefined ? { error: note.error } : {}),
        ...(note.progress !== undefined ? { progress: note.progress } : {}),
        ...(note.delayMs !== undefined ? { delay_ms: note.delayMs } : {}),
        ...(note.startedAt !== undefined ? { started_at: note.startedAt.toISOString() } : {}),
        ...(note.finishedAt !== undefined ? { finished_at: note.finishedAt.toISOString() } : {}),
      });
    },
  };
}
