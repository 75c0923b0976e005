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
 * The step ledger of a worker without a database: each claim, result and note is a request to
 * the API (`POST /workers/{worker_id}/steps`), which applies them with the built-in worker's own
 * rules (src/tasks/step-ledger.ts runsLedger). A request that fails throws, as PostgreSQL away
 * does in-process: the step processor parks the result in its job and the job comes back.
 * Reports are group-sent: one request at a time, and those that queue meanwhile go together in
 * the next (`{reports: [...]}`), as the built-in worker's writes are group-committed; alone, a
 * report leaves at once.
 */
export function remoteLedger(call: ApiCall, workerId: string): StepLedger {
  const path = `/workers/${encodeURIComponent(workerId)}/steps`;
  // Typed by the protocol's input (what the API parses): StepReport['op'] names the kinds.
  type Report = { op: StepReport['op'] } & Record<string, unknown>;
  const batcher = new Batcher<Report, boolean>(
    async (reports) => {
      if (reports.length === 1) return [((await call('POST', path, reports[0])) as { ok: boolean }).ok];
      return ((await call('POST', path, { reports })) as { answers: { ok: boolean }[] }).answers.map((answer) => answer.ok);
    },
    { maxSize: REPORTS_PER_REQUEST_MAX },
  );
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
      await send({
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
