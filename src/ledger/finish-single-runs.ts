import type { TaskStatus } from '../engine/status.js';
import { singleRunEnding } from '../engine/task-output.js';
import type { ErrorRecord } from '../lib/errors.js';
import type { Limits } from '../lib/limits.js';
import type { SqlRunner } from './sql.js';

/** A step's final result, as its worker reports it (here: a one-tool task's only step). */
export interface SingleResult {
  taskId: string;
  createdAt: Date;
  run: number;
  stepId: string;
  tool: string;
  attempt: number;
  status: 'completed' | 'failed' | 'cancelled';
  output?: unknown;
  error?: ErrorRecord;
  /** Kept with the dead letter of a step that failed for good. */
  input?: unknown;
  startedAt: Date;
  finishedAt: Date;
  /** For the history: the retry policy's try, the worker, its job's id. */
  try?: number;
  worker?: string;
  jobId?: string;
}

/** What recording one result did: nothing (an earlier result, or the task ended meanwhile), or end its task. */
export type SingleRunRecorded =
  /** `endedBefore`: the task's run had ended already (a redelivery after the ending's answer was lost, or a cancel came first). */
  | { recorded: false; endedBefore: boolean }
  | { recorded: true; taskStatus: Extract<TaskStatus, 'completed' | 'failed'>; task: { type: string; createdAt: Date; callback: boolean } };

/**
 * Records the results of one-tool tasks and ends those tasks, in one call for the whole batch
 * (ledger_finish_singles): what each task ends with is decided here by the engine, before the
 * call, and recorded only while its run is still active. Of several results of one run in a
 * batch, the first is recorded.
 */
export async function finishSingleRuns(
  db: SqlRunner,
  results: readonly SingleResult[],
  limits: Pick<Limits, 'TASK_RESULT_MAX_BYTES'>,
  options: { history?: boolean } = {},
): Promise<SingleRunRecorded[]> {
  const first = new Map<string, number>();
  results.forEach((result, index) => {
    const key = `${result.taskId}/${result.run}`;
    if (!first.has(key)) first.set(key, index);
  });
  const rows = [...first.values()].map((index) => {
    const result = results[index]!;
    const ending = singleRunEnding(result, limits);
    return {
      task_id: result.taskId,
      created_at: result.createdAt,
      run: result.run,
      step_id: result.stepId,
      tool: result.tool,
      attempt: result.attempt,
      status: result.status,
      output: result.output ?? null,
      error: result.error ?? null,
      input: result.status === 'failed' ? (result.input ?? null) : null,
      started_at: result.startedAt,
      finished_at: result.finishedAt,
      task_status: ending.status,
      task_result: ending.status === 'completed' ? ending.result : null,
      task_error: ending.status === 'failed' ? ending.error : null,
      ...(options.history !== false ? { history: true, try: result.try ?? null, worker: result.worker ?? null, job_id: result.jobId ?? null } : {}),
    };
  });
  const [row] = await db.$queryRawUnsafe<
    { answer: { ended: { id: string; status: 'completed' | 'failed'; task_type: string; created_at: string; callback: boolean }[]; before: string[] } }[]
  >('SELECT ledger_finish_singles($1::jsonb) AS answer', JSON.stringify(rows));
  const byTask = new Map(row!.answer.ended.map((ended) => [ended.id, ended]));
  const before = new Set(row!.answer.before);
  return results.map((result, index): SingleRunRecorded => {
    const ended = first.get(`${result.taskId}/${result.run}`) === index ? byTask.get(result.taskId) : undefined;
    return ended
      ? { recorded: true, taskStatus: ended.status, task: { type: ended.task_type, createdAt: new Date(ended.created_at), callback: ended.callback } }
      : { recorded: false, endedBefore: before.has(result.taskId) };
  });
}
