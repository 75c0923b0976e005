import type { Decision, HistoryEvent } from '../engine/state.js';
import type { SqlRunner, TransactionRunner } from './sql.js';

/** What applying a decision did to map items: those its sweeps queued (with their inputs: their jobs are made) and moved (with the status they had). */
export interface Applied {
  started: { taskId: string; stepId: string; item: number; input: unknown }[];
  moved: { taskId: string; stepId: string; item: number; from: string }[];
}

/**
 * The applier: writes one decision of the engine (src/engine/decide.ts) in one call
 * (prisma/functions/ledger_apply.sql) to tasks that ledger_load locked in the same
 * transaction. What the runtime does besides (jobs, timers, child tasks, events, callbacks) is
 * carried out once this commits. `commit`: the transaction ends with this statement, which then
 * carries its COMMIT in the same round trip.
 */
export async function applyDecision(
  tx: SqlRunner | TransactionRunner,
  decision: Decision,
  options: { history?: boolean; commit?: boolean } = {},
): Promise<Applied> {
  const events = options.history === false ? [] : decision.history;
  const nothing =
    decision.tasks.length +
      decision.steps.length +
      decision.newItems.length +
      decision.items.length +
      decision.sweeps.length +
      decision.deadLetters.length +
      events.length ===
    0;
  if (nothing) return { started: [], moved: [] };
  const query = options.commit && '$queryAndCommit' in tx ? tx.$queryAndCommit.bind(tx) : tx.$queryRawUnsafe.bind(tx);
  const [row] = await query<
    {
      applied: {
        started: { task_id: string; step_id: string; item: number; input: unknown }[];
        moved: { task_id: string; step_id: string; item: number; from: string }[];
      };
    }[]
  >(
    'SELECT ledger_apply($1::jsonb) AS applied',
    JSON.stringify({
      tasks: decision.tasks.map((change) => ({ task_id: change.taskId, created_at: change.createdAt, set: change.set })),
      steps: decision.steps.map((change) => ({ task_id: change.taskId, created_at: change.createdAt, step_id: change.stepId, set: change.set })),
      new_items: decision.newItems.map(newItemRow),
      items: decision.items.map((change) => ({
        task_id: change.taskId,
        created_at: change.createdAt,
        step_id: change.stepId,
        item: change.item,
        set: change.set,
      })),
      sweeps: decision.sweeps.map((sweep) => ({
        task_id: sweep.taskId,
        created_at: sweep.createdAt,
        step_id: sweep.stepId,
        ...(sweep.start !== undefined ? { start: sweep.start } : {}),
        ...(sweep.delete ? { delete: true } : {}),
        ...(sweep.from ? { from: sweep.from, to: sweep.to, run: sweep.run ?? null, reset: sweep.reset ?? false } : {}),
      })),
      dead_letters: decision.deadLetters.map((letter) => ({
        task_id: letter.taskId,
        created_at: letter.createdAt,
        step_id: letter.stepId,
        run: letter.run,
        tool: letter.tool,
        input: letter.input ?? null,
        error: letter.error,
        attempts: letter.attempts,
      })),
      ...(events.length > 0 ? { events: events.map(eventRow) } : {}),
    }),
  );
  const applied = row!.applied;
  return {
    started: applied.started.map((item) => ({ taskId: item.task_id, stepId: item.step_id, item: item.item, input: item.input })),
    moved: applied.moved.map((item) => ({ taskId: item.task_id, stepId: item.step_id, item: item.item, from: item.from })),
  };
}

/** A history event as the ledger's functions take it (`events`, in order). */
export function eventRow(event: HistoryEvent) {
  return {
    task_id: event.taskId,
    created_at: event.createdAt,
    run: event.run,
    step_id: event.stepId ?? null,
    item: event.item ?? null,
    type: event.type,
    attempt: event.attempt ?? null,
    at: event.at,
    data: event.data ?? null,
  };
}

/** A new item as ledger_apply and ledger_create store it. */
export function newItemRow(item: Decision['newItems'][number]) {
  return {
    task_id: item.taskId,
    created_at: item.createdAt,
    step_id: item.stepId,
    item: item.item,
    run: item.run,
    status: item.status ?? 'pending',
    input: item.input,
    ...(item.childTaskId ? { child_task_id: item.childTaskId } : {}),
    ...(item.startedAt ? { started_at: item.startedAt } : {}),
  };
}
