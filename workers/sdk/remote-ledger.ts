import type { StepReport } from '../../src/fleet/protocol.js';
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
 */
export function remoteLedger(call: ApiCall, workerId: string): StepLedger {
  // Typed by the protocol's input (what the API parses): StepReport['op'] names the kinds.
  const send = async (report: { op: StepReport['op'] } & Record<string, unknown>) =>
    ((await call('POST', `/workers/${encodeURIComponent(workerId)}/steps`, report)) as { ok: boolean }).ok;
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
